#!/usr/bin/env python3
"""Drives kvmem.PagePool the way an LLM serving scheduler does.

Each step the scheduler admits requests (allocating pages for their prompts, reusing the
cached pages of a shared system prompt through the prefix index), decodes one token for every
running request (a new page every PAGE_TOKENS tokens), and finishes some requests. Finished
requests' pages are released from an I/O thread (as after a KV write-back) with
release_deferred; the scheduler drains exactly the pending count at the top of each step -
the number that tensor-parallel ranks would agree on with an all-reduce MIN.

    PYTHONPATH=build/dev/python python3 python/examples/serving_scheduler.py
"""
import queue
import random
import threading

import kvmem

PAGE_TOKENS = 16
SYSTEM_PROMPT_PAGES = 8


def main(steps=200, pool_pages=4096, seed=0):
    rng = random.Random(seed)
    pool = kvmem.PagePool(pool_pages)
    system_hashes = [1000 + i for i in range(SYSTEM_PROMPT_PAGES)]  # the chain of block hashes
    io_queue = queue.Queue()

    def io_thread():  # writes finished KV back to storage, then gives the pages back
        while (item := io_queue.get()) is not None:
            pool.release_deferred(item)

    writer = threading.Thread(target=io_thread)
    writer.start()

    running = {}  # request id -> [pages, tokens]
    next_id = admitted = rejected = prefix_hits = 0
    for step in range(steps):
        pages, _items = pool.pending_release()
        pool.drain(pages)  # ranks would all-reduce MIN(pages) first

        for _ in range(rng.randint(0, 3)):  # admit
            shared = pool.match_prefix(system_hashes)  # reuses cached system-prompt pages
            prompt_pages = rng.randint(1, 12)
            own = pool.alloc(prompt_pages)
            if own is None:
                pool.release(shared)
                rejected += 1
                continue
            if len(shared) == 0:  # first request: publish the system prompt it computed
                shared = pool.alloc(SYSTEM_PROMPT_PAGES)
                if shared is None:
                    pool.free(own)
                    rejected += 1
                    continue
                for h, p in zip(system_hashes, shared):
                    pool.publish(h, int(p))
            else:
                prefix_hits += 1
            running[next_id] = [list(shared) + list(own), (SYSTEM_PROMPT_PAGES + prompt_pages) * PAGE_TOKENS]
            next_id += 1
            admitted += 1

        for rid, state in list(running.items()):  # decode one token each
            state[1] += 1
            if state[1] % PAGE_TOKENS == 0:
                page = pool.alloc(1)
                if page is None:  # preempt: give everything back now
                    pool.release(state[0])
                    del running[rid]
                    continue
                state[0].extend(page.tolist())
            if rng.random() < 0.03:  # finished: the I/O thread releases its pages later
                io_queue.put(state[0])
                del running[rid]

        assert pool.validate()

    io_queue.put(None)
    writer.join()
    for state in running.values():
        pool.release(state[0])
    pending, _ = pool.pending_release()
    pool.drain(pending)
    stats = pool.stats()
    print(f"steps={steps} admitted={admitted} rejected={rejected} prefix_hits={prefix_hits} "
          f"available={pool.available}/{pool.capacity} cached={stats['cached_pages']} evictions={stats['evictions']}")
    assert pool.available == pool.capacity and pool.validate()


if __name__ == "__main__":
    main()
