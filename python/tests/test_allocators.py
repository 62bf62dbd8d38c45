"""OffsetAllocator and SharedArena from Python: results, errors and lifetimes."""
import random
import threading

import pytest

import kvmem


def test_offset_allocator_round_trip_and_model():
    a = kvmem.OffsetAllocator(1 << 20)
    rng = random.Random(7)
    live = []
    for _ in range(2000):
        if live and rng.random() < 0.45:
            x = live.pop(rng.randrange(len(live)))
            a.free(x)
        else:
            x = a.allocate(rng.randint(1, 5000), 1 << rng.randint(0, 6))
            if x is not None:
                live.append(x)
        assert a.used_bytes == sum(x.size for x in live)
        assert a.used_bytes + a.free_bytes == a.capacity
    spans = sorted((x.offset, x.offset + x.size) for x in live)
    assert all(e <= s for (_, e), (s, _) in zip(spans, spans[1:])), "live ranges overlap"
    assert a.validate()
    assert sorted(a.allocations(), key=lambda x: x.offset) == sorted(live, key=lambda x: x.offset)


def test_offset_allocator_whole_capacity_and_errors():
    a = kvmem.OffsetAllocator(1_000_000)
    whole = a.allocate(1_000_000)
    assert whole is not None and whole.offset == 0
    assert a.allocate(1) is None
    a.free(whole)
    with pytest.raises(kvmem.UsageError):
        a.free(whole)  # double free
    with pytest.raises(ValueError):
        a.allocate(0)
    with pytest.raises(ValueError):
        a.allocate(16, 3)  # alignment not a power of two
    other = kvmem.OffsetAllocator(1 << 20)
    with pytest.raises(kvmem.UsageError):
        other.free(a.allocate(64))  # foreign allocation
    assert a.largest_free == 1_000_000 - 64


def test_offset_allocator_serialize_and_corruption():
    a = kvmem.OffsetAllocator(1 << 30)
    kept = [a.allocate(4096 * (i + 1)) for i in range(10)]
    blob = a.serialize()
    b = kvmem.OffsetAllocator.deserialize(blob)
    assert b.used_bytes == a.used_bytes
    assert [(x.offset, x.size) for x in b.allocations()] == sorted((x.offset, x.size) for x in kept)
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0xFF
    with pytest.raises(kvmem.FormatError):
        kvmem.OffsetAllocator.deserialize(bytes(damaged))
    with pytest.raises(kvmem.FormatError):
        kvmem.OffsetAllocator.deserialize(blob[:7])


def test_offset_allocator_reserve_regions_sets_metadata_aside():
    a = kvmem.OffsetAllocator(1 << 30, reserve_regions=10_000)
    held = a.stats()["metadata_bytes_held"]
    assert held >= 10_000 * 32  # nodes for every region, and heap storage
    assert held > kvmem.OffsetAllocator(1 << 30).stats()["metadata_bytes_held"]
    rng = random.Random(3)
    live = [a.allocate(rng.randint(1, 2056)) for _ in range(3000)]
    for x in live[::2]:
        a.free(x)  # 1,500 holes: 4,500 regions at most, within the reservation
    stats = a.stats()
    assert stats["metadata_bytes_held"] == held
    assert stats["unindexed_blocks"] == 0
    assert a.validate()


def test_round_up_policy_matches_mooncake_bins():
    a = kvmem.OffsetAllocator(1 << 30, kvmem.OffsetAllocator.Policy.ROUND_UP_TO_BIN)
    assert a.allocate(145).size == 160  # Mooncake's 3-bit class above 145
    assert kvmem.OffsetAllocator(1 << 30).allocate(145).size == 145


def test_arena_handles_are_context_managers_and_survive_the_arena():
    arena = kvmem.SharedArena()
    seg = arena.add_segment(64 << 20, name="gpu0")
    with arena.allocate(1 << 20) as h:
        assert h.segment == seg and h.size == 1 << 20
        assert arena.stats()["used"] >= 1 << 20
    assert arena.stats()["used"] == 0
    assert arena.allocate(128 << 20) is None  # cannot fit anywhere: rejected
    survivor = arena.allocate(4096, segment=seg)
    del arena  # the arena dies first
    assert survivor.release() is False  # inert, no crash


def test_arena_remove_segment_policies_and_placement():
    arena = kvmem.SharedArena()
    a = arena.add_segment(32 << 20, name="a")
    b = arena.add_segment(64 << 20, name="b")
    h = arena.allocate(1 << 20, policy="largest_free")
    assert h.segment == b
    with pytest.raises(ValueError):
        arena.allocate(1, segment=a, policy="random")
    with pytest.raises(ValueError):
        arena.allocate(1, policy="nearest")
    assert arena.remove_segment(b) is False  # live handle: refused
    assert arena.remove_segment(b, detach=True) is True
    assert h.release() is False  # detached handle is inert
    assert arena.segments() == [a]
    assert arena.validate()


def test_arena_threads_allocate_and_free():
    arena = kvmem.SharedArena()
    arena.add_segment(256 << 20)
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        held = []
        try:
            for _ in range(3000):
                if held and rng.random() < 0.5:
                    held.pop(rng.randrange(len(held))).release()
                else:
                    h = arena.allocate(rng.randint(1, 1 << 16))
                    if h is not None:
                        held.append(h)
            for h in held:
                h.release()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert arena.stats()["used"] == 0 and arena.validate()
