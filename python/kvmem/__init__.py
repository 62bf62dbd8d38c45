"""kvmem: allocators, pools and caches for the memory under key-value caches.

Components (see each class's docstring for complexity, thread safety and errors):
    OffsetAllocator  O(1) byte-exact range allocator over memory it does not own
    SharedArena      its thread-safe form over many segments, with ArenaHandle context managers
    PagePool         paged KV pool with deterministic deferred frees, refcounts, LRU, prefix index
    EmbeddingCache   sharded id -> embedding row table with eviction (numpy in, numpy out)
    ObjectCache      many caches of variable-size byte values in one memory budget

Errors: ValueError for bad arguments, MemoryError for exhaustion where the C++ API throws,
kvmem.UsageError for misuse (double free, stale or foreign ids), kvmem.FormatError for
damaged snapshot bytes.
"""
from ._kvmem import (  # noqa: F401
    Allocation,
    ArenaHandle,
    EmbeddingCache,
    FormatError,
    ObjectCache,
    OffsetAllocator,
    PagePool,
    PutStatus,
    SharedArena,
    UsageError,
    Value,
)

__all__ = [
    "Allocation",
    "ArenaHandle",
    "EmbeddingCache",
    "FormatError",
    "ObjectCache",
    "OffsetAllocator",
    "PagePool",
    "PutStatus",
    "SharedArena",
    "UsageError",
    "Value",
]
