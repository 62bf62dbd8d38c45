#pragma once
// kvmem::EmbeddingCache: an in-memory table from int64 ids to fixed-dimension rows, for
// recommendation training and inference (the shape of FBGEMM's DRAM KV embedding cache).
//
// WHAT IT MANAGES
//   Rows of `dim` values stored as float32, float16 or bfloat16 (values cross the API as
//   float). Every row is one block of a per-shard kvmem::FixedBlockPool: a 16-byte RowHeader
//   (key, last-access time, access count, flags) followed by the vector. Ids are spread over
//   `shards` shards by a 64-bit mix of the id; each shard has its own std::shared_mutex, its
//   own open-addressing hash table (id -> row pointer, 16 bytes per slot, load <= 3/4; a table
//   under 1 MiB quadruples when full, a larger one doubles) and its own pool. All pool work
//   happens inside the shard's exclusive critical section, so the pool needs no lock of its
//   own (FBGEMM PR #4154's design).
//
// OPERATIONS (batched; a batch takes each shard's lock once, trying the shards in a per-thread
//   rotating order and coming back to those found busy, so concurrent batches do not queue)
//   set(ids, rows)        upsert. Duplicate ids in a batch: the last row wins.
//   get(ids, out, hits)   copies hits; fills misses with the initializer (zeros, or uniform
//                         in [low, high) from a per-(seed, id) generator, so a miss is
//                         reproducible); misses are not inserted. Returns the hit count.
//   erase(ids)            returns the number of rows removed.
//   for_each_row / export_rows / import_rows   checkpointing with headers.
//   set and hits of get update the header: last_access = now, count += 1 (saturating).
//
// EVICTION
//   Policies: kTtl (now - last_access > ttl), kCount (count decayed by `count_decay` each
//   round; evict when the decayed count < threshold), kTtlAndCount (both), kL2Norm (norm of
//   the row < threshold). Triggers: a memory budget (bytes held > max_bytes), a row budget
//   (rows > max_rows), and on demand (evict_now(), request_eviction()). A round walks each
//   shard's table in slices of `slice_slots` slots, taking the shard's exclusive lock for one
//   slice at a time, so readers wait at most one slice of one shard. Victims are erased from
//   the table and their blocks go back to the shard's pool for reuse; empty pool chunks are
//   then returned to the OS. With `background` the rounds run on the cache's own thread
//   (started by the constructor, joined by the destructor); otherwise maybe_evict() runs a
//   round in the caller when a trigger fires. A round visits every row that stays in place
//   exactly once (a per-row round bit prevents double visits); rows moved by a concurrent
//   table resize may be skipped until the next round.
//
// COMPLEXITY
//   set/get/erase: O(1) expected per id (one hash, a short linear probe, one row copy) plus
//   O(batch) to group ids by shard; slots and rows of the ids ahead in a batch are prefetched.
//   Measured here at dim 128, 1M rows: 152-191 ns/row cold insert into memory the host backs
//   (median of 5 in each of four runs; ~1.2-1.4 us/row into memory a VM's host has taken
//   back), 119-135 re-insert, 123-137 lookup (docs/embedding_cache.md). A table resize is O(rows of
//   that shard) under its lock. Eviction: O(table slots) per round. metrics(): O(shards).
//
// MEMORY
//   Per row: FixedBlockPool block of 16 + dim * sizeof(storage) bytes (rounded to 8), plus
//   16 / load bytes of table slot (21-43 B once a shard's table is 1 MiB or more; a smaller
//   table holds up to 4x the slots its rows need, under 1 MiB per shard). Pool chunks (2 MiB,
//   transparent huge pages by default) are touched only as rows are written, so each shard's
//   partly used chunk costs at most 2 MiB; empty chunks go back to the OS after eviction
//   rounds. A shard's table of 2 MiB or more (131,072+ slots) is mapped from the OS on a 2 MiB
//   boundary, on transparent huge pages when huge_pages is set; smaller tables come from the
//   heap.
//
// THREAD SAFETY
//   Every member function may be called concurrently from any number of threads. get,
//   contains, for_each_row and export_rows share a shard (readers share; header statistics are
//   updated with relaxed atomics); set, erase, import_rows and eviction slices are exclusive per
//   shard. metrics() takes each shard's shared lock in turn: per shard its figures are one
//   snapshot (inserts == rows + erased + evictions holds in every metrics() result, also while
//   eviction rounds run). The for_each_row callback runs under a shard's shared lock: it must
//   not call back into the cache (no mutating function, no metrics()).
//
// FAILURE POLICY
//   Bad arguments (dim 0, shards 0, rows.size() != ids.size() * dim, an output span of the
//   wrong size, low > high, a negative threshold): std::invalid_argument.
//   The pool's upstream running out of memory during set/import: std::bad_alloc; the rows
//   already written in that batch stay, the failing row is not inserted.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <thread>
#include <vector>

#include "kvmem/block_pool.hpp"

namespace kvmem {

enum class RowStorage : std::uint8_t { kFloat32, kFloat16, kBFloat16 };

// The first 16 bytes of every row block, and what export/import carry.
struct RowHeader {
  std::int64_t key = 0;
  std::uint32_t last_access = 0;  // seconds on the cache's clock
  std::uint16_t count = 0;        // saturating access count; decayed by the count policies
  std::uint16_t flags = 0;        // bits 0-14: the caller's (kept through export/import);
                                  // bit 15: reserved for the eviction round (masked out)
};
static_assert(sizeof(RowHeader) == 16);

inline constexpr std::uint16_t kRowUserFlagsMask = 0x7fff;

enum class EvictionPolicy : std::uint8_t { kNone, kTtl, kCount, kTtlAndCount, kL2Norm };
enum class RowInitializer : std::uint8_t { kZeros, kUniform };

struct EvictionOptions {
  EvictionPolicy policy = EvictionPolicy::kNone;
  std::uint32_t ttl_seconds = 0;     // kTtl / kTtlAndCount
  double count_decay = 1.0;          // in (0, 1]; applied once per round to each visited row
  std::uint32_t count_threshold = 0;  // kCount / kTtlAndCount: evict when decayed count < it
  float l2_threshold = 0;            // kL2Norm: evict when the row's L2 norm < it
  std::size_t max_bytes = 0;         // trigger: bytes held > max_bytes (0 = off)
  std::size_t max_rows = 0;          // trigger: rows > max_rows (0 = off)
  bool background = false;           // run triggered rounds on the cache's own thread
  std::chrono::milliseconds check_interval{50};  // background: how often triggers are checked
  std::size_t slice_slots = 1024;    // table slots examined per exclusive-lock hold
  bool release_memory = true;        // return empty pool chunks after each round
};

struct EmbeddingCacheOptions {
  std::size_t dim = 0;
  RowStorage storage = RowStorage::kFloat32;
  std::size_t shards = 16;
  RowInitializer initializer = RowInitializer::kZeros;
  float init_low = -0.01f;
  float init_high = 0.01f;
  std::uint64_t seed = 0;
  // Seconds for last_access; default: whole seconds of steady_clock since construction.
  // Must be thread-safe. Tests pass a manual clock.
  std::function<std::uint32_t()> clock;
  // Pre-sizes each shard's table for this many rows in total (0: start small and double),
  // which saves the rehashes of a cold start when the table size is known.
  std::size_t expected_rows = 0;
  std::size_t pool_chunk_bytes = std::size_t{1} << 21;
  // 2 MiB transparent huge pages for the row chunks (madvise). On by default: measured here,
  // they cut cold inserts by 2.2-2.5x and lookups by 7-30% (fewer page faults and TLB misses);
  // the cost is that each shard's partly used chunk is resident in 2 MiB steps. On a VM
  // whose host takes back freed guest memory (free page reporting), huge-page faults on such
  // memory were 2.4-3.2x slower than 4 KiB ones (docs/embedding_cache.md, "Fresh memory on this VM").
  bool huge_pages = true;
  EvictionOptions eviction;
};

struct EmbeddingCacheMetrics {
  std::size_t rows = 0;
  std::size_t bytes_used = 0;   // rows x row block bytes + table slots in use
  std::size_t bytes_held = 0;   // pool chunks held + table slots allocated
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t inserts = 0;
  std::uint64_t updates = 0;
  std::uint64_t erased = 0;     // by erase()
  std::uint64_t evictions = 0;  // by eviction rounds
  std::uint64_t eviction_rounds = 0;
};

class EmbeddingCache {
 public:
  using Options = EmbeddingCacheOptions;

  explicit EmbeddingCache(Options options);
  ~EmbeddingCache();
  EmbeddingCache(const EmbeddingCache&) = delete;
  EmbeddingCache& operator=(const EmbeddingCache&) = delete;

  std::size_t dim() const noexcept { return dim_; }
  std::size_t row_block_bytes() const noexcept { return block_bytes_; }
  std::size_t shard_count() const noexcept { return shard_count_; }

  // rows.size() == ids.size() * dim.
  void set(std::span<const std::int64_t> ids, std::span<const float> rows);
  // out.size() == ids.size() * dim; hits empty or hits.size() == ids.size() (1 = hit).
  std::size_t get(std::span<const std::int64_t> ids, std::span<float> out,
                  std::span<std::uint8_t> hits = {});
  std::size_t erase(std::span<const std::int64_t> ids);
  bool contains(std::int64_t id) const;
  std::size_t size() const noexcept;

  // Visits every row (shard by shard, each under its shared lock) with its header and its
  // values as float.
  void for_each_row(const std::function<void(const RowHeader&, std::span<const float>)>& fn) const;
  // Appends all rows: headers[i] and values[i * dim, (i + 1) * dim).
  void export_rows(std::vector<RowHeader>& headers, std::vector<float>& values) const;
  // Upserts rows with their headers (key, last_access, count, user flags) as given.
  void import_rows(std::span<const RowHeader> headers, std::span<const float> values);

  // One full eviction round now, in the caller; returns the rows evicted.
  std::size_t evict_now();
  // If a trigger fires: background -> wakes the evictor (returns true); otherwise runs a
  // round in the caller (returns true). False when no trigger fires.
  bool maybe_evict();
  // Asks the background evictor for a round (no-op without background).
  void request_eviction();
  // Blocks until the background evictor has no round pending or running.
  void wait_for_eviction();

  // Sums the shards' counters, each read under its shard's shared lock (a consistent snapshot
  // per shard; hits and misses are the only counters readers bump).
  EmbeddingCacheMetrics metrics() const noexcept;
  // Checks every shard: table consistency (each row findable from its home slot, keys match
  // headers, no duplicates), counts, pool validate() and pool in-use == rows.
  bool validate() const;

 private:
  struct Slot {
    std::int64_t key = 0;
    RowHeader* row = nullptr;  // nullptr = empty
  };
  class SlotTable;
  struct Shard;

  static std::uint64_t mix(std::int64_t id) noexcept;
  std::size_t shard_of(std::uint64_t h) const noexcept {
    return static_cast<std::size_t>(((h >> 32) * shard_count_) >> 32);
  }

  // Returns false, doing nothing, when try_only and the shard's lock is held.
  bool set_in_shard(Shard& s, std::span<const std::uint32_t> positions, std::span<const std::int64_t> ids,
                    const std::uint64_t* hashes, std::span<const float> rows, const RowHeader* headers,
                    std::uint32_t now, bool try_only);
  RowHeader* upsert_locked(Shard& s, std::int64_t id, std::uint64_t h, bool& inserted);
  void write_row(RowHeader* row, const float* values) const noexcept;
  void read_row(const RowHeader* row, float* out) const noexcept;
  void init_row(std::int64_t id, float* out) const noexcept;
  float row_norm(const RowHeader* row) const noexcept;
  std::size_t evict_round();
  bool triggered() const noexcept;
  void evictor_loop();
  std::uint32_t now() const { return clock_(); }
  // Groups batch positions by shard (counting sort); thread-local scratch.
  void group(std::span<const std::int64_t> ids, std::vector<std::uint32_t>& order,
             std::vector<std::uint32_t>& starts, std::vector<std::uint64_t>& hashes) const;

  std::size_t dim_;
  RowStorage storage_;
  std::size_t elem_bytes_;
  std::size_t block_bytes_;
  std::size_t shard_count_;
  RowInitializer initializer_;
  float init_low_, init_high_;
  std::uint64_t seed_;
  std::function<std::uint32_t()> clock_;
  EvictionOptions eviction_;
  std::unique_ptr<Shard[]> shards_;
  std::atomic<std::uint64_t> rounds_started_{0};
  std::atomic<std::uint64_t> eviction_rounds_{0};
  std::mutex round_mu_;  // one eviction round at a time

  // background evictor
  std::mutex bg_mu_;
  std::condition_variable bg_cv_;
  std::condition_variable bg_idle_cv_;
  bool bg_stop_ = false;
  bool bg_requested_ = false;
  bool bg_running_ = false;
  std::thread evictor_;
};

}  // namespace kvmem
