"""PagePool from Python: numpy in and out, deferred release from threads, errors."""
import threading

import numpy as np
import pytest

import kvmem


def test_alloc_returns_owned_int32_arrays_and_free_takes_arrays_or_lists():
    pool = kvmem.PagePool(1024)
    ids = pool.alloc(64)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.shape == (64,)
    assert len(set(ids.tolist())) == 64 and pool.available == 1024 - 64
    ids2 = pool.alloc(10)
    ids[:] = -1  # the caller owns the array: writing it changes nothing in the pool
    pool.free(ids2.tolist())
    assert pool.available == 1024 - 64
    assert pool.alloc(2000) is None  # all or nothing
    assert pool.available == 1024 - 64 and pool.validate()


def test_numpy_round_trip_of_dtypes():
    pool = kvmem.PagePool(256)
    ids = pool.alloc(32)
    pool.free(ids.astype(np.int64))  # any integer dtype is accepted
    assert pool.available == 256
    again = pool.alloc(32)
    assert sorted(again.tolist()) == sorted(ids.tolist())


def test_misuse_raises_usage_error_or_is_counted():
    pool = kvmem.PagePool(64)
    ids = pool.alloc(4)
    pool.free(ids)
    with pytest.raises(kvmem.UsageError):
        pool.free(ids)  # double free
    lenient = kvmem.PagePool(64, misuse="ignore")
    ids = lenient.alloc(4)
    lenient.free(ids)
    lenient.free(ids)
    assert lenient.stats()["misuse"] >= 1 and lenient.available == 64
    with pytest.raises(ValueError):
        kvmem.PagePool(64, misuse="sometimes")


def test_release_deferred_from_python_threads_then_drain_exactly():
    pool = kvmem.PagePool(100_000)
    batches = [pool.alloc(50) for _ in range(400)]
    assert pool.available == 100_000 - 20_000

    def releaser(chunk):
        for ids in chunk:
            pool.release_deferred(ids)
        pool.release_deferred(np.empty(0, dtype=np.int32))  # empty: counts as nothing

    threads = [threading.Thread(target=releaser, args=(batches[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pages, items = pool.pending_release()
    assert (pages, items) == (20_000, 400)
    assert pool.drain(1234) == 1234
    assert pool.available == 100_000 - 20_000 + 1234
    assert pool.drain(10**9) == 20_000 - 1234
    assert pool.available == 100_000 and pool.validate()


def test_ticketed_releases_drain_in_ticket_order():
    pool = kvmem.PagePool(64)
    a, b = pool.alloc(3), pool.alloc(2)
    ta, tb = pool.issue_ticket(), pool.issue_ticket()
    pool.release_ticketed(tb, b)  # arrives first, waits for ticket a
    assert pool.pending_release() == (0, 0)
    pool.release_ticketed(ta, a)
    assert pool.pending_release() == (5, 2)
    assert pool.drain(5) == 5 and pool.available == 64


def test_prefix_index_refcounts_and_reservations():
    pool = kvmem.PagePool(8)
    pages = pool.alloc(3)
    hashes = [11, 22, b"\x01" * 32]
    for h, p in zip(hashes, pages):
        assert pool.publish(h, int(p))
    pool.release(pages)  # refcount 0 with a hash: cached, still matchable
    assert pool.available == 8
    hit = pool.match_prefix(hashes + [99])
    assert hit.tolist() == pages.tolist()
    assert all(pool.refcount(int(p)) == 1 for p in hit)
    token = pool.reserve(5)
    assert token is not None and pool.reserve(1) is None
    pool.abort(token)
    committed = pool.commit(pool.reserve(5))
    assert len(committed) == 5 and pool.available == 0
    with pytest.raises(ValueError):
        pool.publish(b"short", 0)
    assert pool.validate()
