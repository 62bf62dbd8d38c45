#!/usr/bin/env python3
"""Python-level cost per call of kvmem.PagePool against a numpy reimplementation of SGLang's
host pool (HostKVCache before its lazy free lists), both measured in this process.

The SGLang algorithm, as described in shared research (llm_kv_pools.md, section 2.3):
  free_slots = arange(size); alloc(n) slices the front (and clones it: an owned array);
  free(ids) concatenates ids to the free list (an O(free list) copy per call); every method
  under a threading.RLock.

    page_pool_py_bench.py [--pages N] [--batch N] [--calls N] [--smoke]
"""
import argparse
import threading
import time

import numpy as np

import kvmem


class SGLangHostPool:
    """The free-list algorithm of SGLang's HostKVCache (page ids, page_size = 1)."""

    def __init__(self, size):
        self.lock = threading.RLock()
        self.free_slots = np.arange(size, dtype=np.int64)

    def alloc(self, n):
        with self.lock:
            if n > len(self.free_slots):
                return None
            select = self.free_slots[:n].copy()
            self.free_slots = self.free_slots[n:]
            return select

    def free(self, ids):
        with self.lock:
            self.free_slots = np.concatenate([self.free_slots, ids])
            return len(ids)


def per_call_ns(pool, batch, calls, rounds=5):
    """Median over rounds of ns per alloc(batch)+free pair, the pool kept 90% allocated."""
    results = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            ids = pool.alloc(batch)
            pool.free(ids)
        results.append((time.perf_counter_ns() - start) / calls)
    results.sort()
    return results[len(results) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="tiny run, for ctest")
    args = parser.parse_args()
    if args.smoke:
        args.pages, args.calls = 100_000, 50

    rows = []
    for name, pool in (("kvmem.PagePool", kvmem.PagePool(args.pages)), ("SGLang host pool (numpy)", SGLangHostPool(args.pages))):
        held = pool.alloc(args.pages * 9 // 10)  # a realistic, mostly full pool
        assert held is not None
        ns = per_call_ns(pool, args.batch, args.calls)
        rows.append((name, ns))
        pool.free(held)

    print(f"\nPython-level alloc({args.batch}) + free, {args.pages:,} pages, 90% allocated, median of 5 x {args.calls} calls")
    print(f"  {'pool':<28} {'ns per pair':>12} {'vs kvmem':>10}")
    base = rows[0][1]
    for name, ns in rows:
        print(f"  {name:<28} {ns:>12.0f} {ns / base:>9.1f}x")
    ratio = rows[1][1] / base
    if args.smoke:
        print("  smoke run (small pool, few calls, maybe a debug build): the ratio is not a result")
    else:
        print(f"  kvmem is {ratio:.1f}x faster per call (target: >= 20x at 1M pages)")


if __name__ == "__main__":
    main()
