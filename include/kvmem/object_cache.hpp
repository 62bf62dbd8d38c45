#pragma once
// kvmem::ObjectCache: many named byte-string caches (block cache, row cache, one per tenant...)
// sharing one memory budget, one hash map, one node allocator and one block store.
//
// WHAT IT MANAGES
//   Values (and their keys) are appended into large memory blocks (Options::block_size,
//   default 2 MiB; smaller in small-memory mode) mapped from the OS on demand and unmapped when
//   emptied. Every block belongs to one registered cache, so per-cache min/max and per-block
//   scores hold. Each cache fills one active block at a time; a value larger than a block gets a
//   block of its own. A ValueHandle pins the block its value lives in, so the bytes stay readable
//   and unchanged until the handle is dropped, even if the key is overwritten, erased or its
//   block is evicted meanwhile (the block is unlinked at once, its memory returned when the last
//   handle drops).
//
// DATA LAYOUT (see docs/object_cache.md for the why)
//   map     : kShards = 64 shards, each with its own reader-writer spin lock (reader counts
//             striped per thread, so readers write no shared line) and its own chained
//             bucket array of 32-bit node indices, created on the first insert, doubled when the
//             shard holds more entries than buckets and halved when it holds fewer than 1/8.
//   nodes   : 32-byte nodes {hash, next, block, offset, key_len, value_len} in one shared
//             SegmentedArray (per-shard free lists, so writers of different shards never meet).
//   blocks  : one 320-byte handle per memory block (a 64-byte metadata line + 4 per-thread pin
//             stripes of 64 bytes) in a SegmentedArray grown one segment at a time with a CAS
//             publish; free handles form an intrusive free list (no pool array).
//   entry   : [hash 8 B | key_len 4 B | value_len 4 B | key | value], rounded up to 8 bytes.
//   Nothing is sized for the maximum: a cache with 16 registered caches and no data holds ~10 KB.
//
// EVICTION ("wash")
//   Each block carries score = decay * score + hits * priority, refreshed at every wash. When
//   held memory passes high_watermark * memory_limit a background thread (or wash_now()) retires
//   the lowest-score full blocks, oldest first among equals, until held <= low_watermark *
//   memory_limit, never taking a cache below its min_bytes. Before a victim is freed its hot
//   entries (Options::rescue_min_hits gets since they were put or last moved; at most half the
//   block) are copied into the cache's rescue block, so hot values in a cold block survive. A put that finds no memory washes
//   synchronously; a cache at its max_bytes washes its own blocks. A put fails (PutStatus) only
//   when nothing can be freed: every other block is active, pinned by a handle, or protected by
//   a min_bytes floor.
//
// COMPLEXITY (n = entries in one shard chain, about 1 at the default load factor)
//   get: one hash of the key, one shared lock (an increment and a decrement of this thread's
//   reader stripe), O(1 + n) node visits, one key memcmp, two relaxed increments on the block's
//   stripe for this thread; once a key has had rescue_min_hits gets, a get of it writes no cache
//   line another thread's get writes (up to 4 threads; more share the 4 stripes). put: the same under the exclusive lock, plus a bump
//   reservation under the cache's append mutex and the memcpy. erase: O(1 + n).
//   A wash round: O(blocks) to refresh scores and pick victims, O(entries in victims) to unlink.
//
// WORST-CASE WASTE
//   Per block: the tail that cannot fit the next entry (< one entry). Per cache: one partially
//   filled active block. Overwritten or erased values stay in their block until it is washed;
//   a block whose every entry was erased is returned at once (one emptied block-sized mapping
//   is kept as a spare for the next block, and is the first memory given back under pressure). Metadata: 32 B per entry (node),
//   4-8 B per entry of buckets, 64 B per block.
//
// THREAD SAFETY
//   Every member function may be called from any thread concurrently, except the destructor.
//   ValueHandle is a move-only value owned by one thread at a time; it must be dropped before
//   the ObjectCache is destroyed (the destructor aborts with a message if a handle is live).
//   validate() holds off the background wash while it runs, and is exact while no other
//   caller thread mutates (it visits the shards one at a time).
//
// FAILURE POLICY
//   Exhaustion: put returns PutStatus::kNoMemory (nothing washable) or kOverCacheMax (the
//   cache's own blocks are all pinned or active); counted in stats. get misses return nullopt.
//   Bad arguments (unknown CacheId, bad Options, a value larger than memory_limit / 2, min/max
//   that do not fit the budget): std::invalid_argument naming the argument.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kvmem/error.hpp"

namespace kvmem {

namespace detail {
struct ObjectCacheCore;
struct OcBlock;
}  // namespace detail

using CacheId = std::uint32_t;

enum class PutStatus : std::uint8_t {
  kStored = 0,        // the value is in the cache (it may already be evicted again by a racing wash)
  kNoMemory = 1,      // memory_limit reached and nothing could be washed
  kOverCacheMax = 2,  // the cache's max_bytes reached and none of its own blocks could be washed
};
const char* to_string(PutStatus status) noexcept;

// Keeps one value readable and unchanged until dropped. Move-only.
class ValueHandle {
 public:
  ValueHandle() noexcept = default;
  ValueHandle(ValueHandle&& other) noexcept;
  ValueHandle& operator=(ValueHandle&& other) noexcept;
  ValueHandle(const ValueHandle&) = delete;
  ValueHandle& operator=(const ValueHandle&) = delete;
  ~ValueHandle() { reset(); }

  [[nodiscard]] std::string_view value() const noexcept { return {data_, size_}; }
  [[nodiscard]] const char* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool valid() const noexcept { return block_ != nullptr; }
  explicit operator bool() const noexcept { return valid(); }
  void reset() noexcept;

 private:
  friend struct detail::ObjectCacheCore;
  ValueHandle(detail::ObjectCacheCore* core, detail::OcBlock* block, std::uint32_t stripe, const char* data,
              std::size_t size) noexcept
      : core_(core), block_(block), stripe_(stripe), data_(data), size_(size) {}
  detail::ObjectCacheCore* core_ = nullptr;
  detail::OcBlock* block_ = nullptr;
  std::uint32_t stripe_ = 0;  // which of the block's pin counters this handle incremented
  const char* data_ = nullptr;
  std::size_t size_ = 0;
};

struct MemoryUsage {
  std::size_t used = 0;  // bytes holding live data
  std::size_t held = 0;  // bytes obtained from the OS / the heap for it
};

struct CacheReport {
  CacheId id = 0;
  std::string name;
  double priority = 0;
  std::size_t min_bytes = 0;
  std::size_t max_bytes = 0;
  MemoryUsage values;  // used: live entries (header+key+value); held: its blocks
  MemoryUsage nodes;   // its map nodes (32 B each; used == held)
  std::size_t entries = 0;
  std::size_t blocks = 0;
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t puts = 0;
  std::uint64_t failed_puts = 0;
  std::uint64_t evicted_blocks = 0;
  std::uint64_t evicted_entries = 0;
};

// Used and held bytes per memory label, so Used/Hold can be read honestly.
struct MemoryReport {
  MemoryUsage map_buckets;    // shard bucket arrays
  MemoryUsage map_nodes;      // the shared node array
  MemoryUsage block_handles;  // the block handle array
  MemoryUsage value_blocks;   // the value blocks (used = live entry bytes; held includes the
                              // one spare emptied block kept for reuse, if any)
  MemoryUsage wash_scratch;   // victim lists of a wash in progress (0 when idle)
  MemoryUsage fixed;          // shards, cache table, the object itself
  std::vector<CacheReport> caches;

  [[nodiscard]] MemoryUsage metadata() const noexcept;  // everything but value_blocks
  [[nodiscard]] MemoryUsage total() const noexcept;
};

struct ObjectCacheStats {
  std::uint64_t wash_rounds = 0;       // background or wash_now rounds that ran
  std::uint64_t sync_washes = 0;       // washes run inside put because memory was short
  std::uint64_t blocks_washed = 0;     // blocks retired by any wash
  std::uint64_t blocks_emptied = 0;    // blocks returned because every entry was erased
  std::uint64_t blocks_allocated = 0;
  std::uint64_t failed_puts = 0;
  std::size_t wash_scratch_peak = 0;   // largest victim-list bytes of one wash
  std::uint64_t entries_rescued = 0;   // hot entries moved out of a victim block
  std::uint64_t bytes_rescued = 0;
};

class ObjectCache {
 public:
  struct Options {
    std::size_t memory_limit = std::size_t{1} << 30;  // value blocks + metadata
    std::size_t block_size = std::size_t{2} << 20;    // power of two in [4 KiB, 1 GiB]
    double high_watermark = 0.95;  // background wash starts above this fraction of the limit
    double low_watermark = 0.85;   // ... and frees down to this fraction
    double score_decay = 0.9;      // per wash round, in [0, 1)
    bool background_wash = true;   // false: only put's sync wash and wash_now() evict
    // Before a victim block is freed, copy its hot entries (>= rescue_min_hits gets since put
    // or last rescue, at most half the block) into the cache's rescue block.
    bool rescue_hot = true;
    std::uint32_t rescue_min_hits = 2;

    // Small-memory mode: 256 KiB blocks, so N caches hold at most N partly filled 256 KiB blocks.
    static Options small_memory(std::size_t limit) {
      Options o;
      o.memory_limit = limit;
      o.block_size = std::size_t{256} << 10;
      return o;
    }
  };
  static constexpr std::size_t kUnlimited = std::numeric_limits<std::size_t>::max();
  static constexpr std::size_t kShards = 64;
  static constexpr std::size_t kEntryHeader = 16;

  ObjectCache();
  explicit ObjectCache(const Options& options);
  ObjectCache(const ObjectCache&) = delete;
  ObjectCache& operator=(const ObjectCache&) = delete;
  ~ObjectCache();

  // Registers a named cache. priority > 0 scales its blocks' hit scores; min_bytes of its
  // blocks are never washed; its blocks never exceed max_bytes (>= block_size).
  CacheId register_cache(std::string_view name, double priority, std::size_t min_bytes = 0,
                         std::size_t max_bytes = kUnlimited);

  PutStatus put(CacheId cache, std::string_view key, std::string_view value);
  [[nodiscard]] std::optional<ValueHandle> get(CacheId cache, std::string_view key);
  bool erase(CacheId cache, std::string_view key);

  // One wash round now, on the calling thread (what the background thread does): refresh
  // scores, and if held > high watermark retire the lowest-score blocks down to the low
  // watermark. Returns the bytes of the blocks retired (freed now or when their last handle drops).
  std::size_t wash_now();
  // Retires lowest-score blocks (respecting min_bytes) until at least `bytes` are retired or
  // nothing is left; for tests and for shrinking the budget from outside.
  std::size_t evict_bytes(std::size_t bytes);

  [[nodiscard]] std::size_t held_bytes() const noexcept;  // value blocks + metadata
  [[nodiscard]] std::size_t entry_count() const noexcept;
  [[nodiscard]] std::size_t cache_count() const noexcept;
  [[nodiscard]] MemoryReport memory_report() const;
  [[nodiscard]] ObjectCacheStats stats() const noexcept;
  [[nodiscard]] const Options& options() const noexcept;

  // Walks every invariant (map placement, entry headers, per-block live counts, per-cache and
  // global byte accounting, free list). Holds off the background wash; exact while no other
  // caller thread mutates.
  [[nodiscard]] bool validate() const;

 private:
  std::unique_ptr<detail::ObjectCacheCore> core_;
};

}  // namespace kvmem
