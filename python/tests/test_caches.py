"""EmbeddingCache and ObjectCache from Python."""
import threading

import numpy as np
import pytest

import kvmem


def test_embedding_get_writes_into_the_callers_array():
    cache = kvmem.EmbeddingCache(dim=8, shards=4)
    ids = np.arange(100, dtype=np.int64)
    rows = np.random.default_rng(1).standard_normal((100, 8)).astype(np.float32)
    cache.set(ids, rows)
    out = np.full((101, 8), 7.0, dtype=np.float32)
    got, hits = cache.get(np.append(ids, 10**12), out)
    assert got is out  # zero-copy: the caller's array was filled in place
    assert np.array_equal(out[:100], rows) and hits[:100].all() and not hits[100]
    assert np.all(out[100] == 0.0)  # a miss is filled by the zeros initializer
    assert len(cache) == 100 and 5 in cache
    assert cache.erase(ids[:10]) == 10 and len(cache) == 90
    m = cache.metrics()
    assert m["rows"] == 90 and m["hits"] >= 100 and m["misses"] >= 1
    with pytest.raises(ValueError):
        cache.get(ids, np.zeros((100, 7), dtype=np.float32))
    with pytest.raises(ValueError):
        kvmem.EmbeddingCache(dim=8, storage="float8")


def test_embedding_export_import_round_trip():
    cache = kvmem.EmbeddingCache(dim=4)
    cache.set([1, 2, 3], np.arange(12, dtype=np.float32).reshape(3, 4))
    exported = cache.export()
    other = kvmem.EmbeddingCache(dim=4)
    other.import_rows(exported)
    got, hits = other.get([3, 2, 1])
    assert hits.all() and np.array_equal(got, np.arange(12, dtype=np.float32).reshape(3, 4)[::-1])
    assert other.validate()


def test_object_cache_values_stay_readable_while_held():
    oc = kvmem.ObjectCache(memory_limit=64 << 20, background_wash=False)
    rows = oc.register_cache("rows", priority=1.0)
    assert oc.put(rows, b"k", b"first") == kvmem.PutStatus.STORED
    held = oc.get(rows, b"k")
    view = memoryview(held)
    assert view.readonly and bytes(view) == b"first"
    oc.put(rows, b"k", b"second")  # overwrite while held
    assert bytes(held) == b"first" and bytes(oc.get(rows, b"k")) == b"second"
    assert oc.erase(rows, b"k") and oc.get(rows, b"k") is None
    assert bytes(held) == b"first"
    report = oc.memory_report()
    assert report["total"]["held"] >= report["total"]["used"]
    assert [c["name"] for c in report["caches"]] == ["rows"]
    assert oc.validate()


def test_object_cache_from_threads():
    oc = kvmem.ObjectCache(memory_limit=32 << 20, background_wash=True)
    caches = [oc.register_cache(f"tenant{i}", priority=1.0 + i) for i in range(4)]
    errors = []

    def worker(i):
        try:
            for n in range(2000):
                key = f"{i}:{n % 300}".encode()
                value = key * (1 + n % 40)
                oc.put(caches[i], key, value)
                got = oc.get(caches[i], key)
                if got is not None and not bytes(got).startswith(key):
                    errors.append(key)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and oc.validate()
