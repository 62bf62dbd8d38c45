#pragma once
// kvmem::PagePool: a fixed pool of equal-size pages (dense ids 0..capacity-1) for an LLM
// engine's KV cache, with reference counts, an LRU of cached prefix pages, a prefix-hash
// index, and deferred releases from I/O threads that every tensor-parallel rank applies in
// the same order.
//
// WHAT IT MANAGES
//   Page ids only; the memory behind them is elsewhere (kvmem::KVBuffer, a GPU tensor).
//   Every page is in exactly one state:
//     free      on the free stack, carries no hash, refcount 0
//     allocated refcount >= 1 (handed out by alloc/commit, or retained from the cache)
//     reserved  taken by reserve(), not yet committed or aborted
//     cached    refcount 0 but carries a prefix hash: stays in the LRU queue and in the
//               prefix index until alloc needs the page (then it is evicted) or a
//               match_prefix/retain brings it back to allocated
//   Deferred releases are not a page state: they are pending references, applied by drain().
//
// ALLOCATION ORDER (observable, deterministic)
//   alloc(n) pops free pages from the top of a LIFO stack (the page freed last is reused
//   first: hot in caches, and unhashed pages never flush cached ones), then evicts cached
//   pages from the LRU front (least recently released first). A fresh or reset pool hands
//   out 0, 1, 2, ... in order.
//
// COMPLEXITY (N = capacity, n = pages in the call)
//   alloc(n), free(n), retain(n), release(n), reserve(n), commit, abort: O(n), no dependence
//   on N; no call copies, sorts or scans the free structures. Evicting a cached page adds one
//   hash-map erase. available(), capacity(): O(1). publish is amortized O(1); set
//   Options::index_reserve to keep its worst case O(1) as well (no rehash).
//   release_deferred(ids): O(n) copy into an item + one CAS to publish it. Items of up to
//   kCachedItemIds ids come from a lock-free item cache (one more CAS); only when every cached
//   item is in flight does a call take a mutex, once, to add a chunk to the cache (or, at
//   Options::release_item_cache, fall back to a heap item). Never waits for the owner.
//   drain(k): O(k + items collected). match_prefix(h): O(h) map lookups. publish: O(1).
//   reset(), validate(): O(N).
//   Memory: 24 bytes per page (20 of state, refcount, hash slot and LRU links; 4 of free
//   stack), plus ~100 bytes per published hash. 10M pages: 240 MB.
//
// DETERMINISM CONTRACT (for tensor-parallel ranks, each with its own pool)
//   1. Owner-thread calls are deterministic: two pools that start equal and receive the same
//      sequence of owner-thread calls with the same arguments (alloc, alloc_into, free, retain,
//      release, reserve, commit, abort, publish, match_prefix, issue_ticket, drain, reset,
//      pending_release) return the same results and end in the same state.
//   2. Ticketed deferred releases: the owner calls issue_ticket() (tickets are numbered
//      0, 1, 2, ... per epoch) and hands the ticket to the thread that will release; that
//      thread calls release_deferred(ticket, ids) exactly once (ids may be empty).
//      pending_release() counts only the READY PREFIX: the items of tickets t0, t0+1, ...
//      that have all arrived (t0 = oldest undrained ticket); an item whose predecessors have
//      not arrived waits. drain(k) applies the first k pages of that prefix in ticket order
//      (within an item, in the order given; an item may be split between drains).
//      Hence if every rank's releasers submit the same ids under the same tickets, whatever
//      their timing, and the ranks drain MIN(pending_release().pages) each step, every rank
//      applies the same pages in the same order: available() and every later alloc agree.
//      (MIN of prefix sums is the prefix sum of the shortest prefix.)
//   3. Unticketed release_deferred(epoch, ids) goes to a second lane, drained after the
//      ticketed prefix, in arrival order. Draining an agreed count keeps available()
//      identical across ranks as long as every item is valid (page counts are exact: an
//      empty release counts as nothing), but which ids become free - and so later alloc
//      ids - may differ, and an invalid item (a page released twice) skipped on one rank
//      while another drains a valid one breaks even the counts. Use tickets when ids must
//      agree or when items may be bad.
//   4. Nothing a releaser thread does changes owner-visible state until pending_release(),
//      drain(), validate() or stats() collects it, and collecting alone changes no decision.
//
// RESERVATIONS (two-phase allocation agreed across ranks, cf. SGLang #31425)
//   reserve(n) takes n pages exactly as alloc would, or nothing. Ranks agree on success
//   (MIN), then every rank that reserved calls commit(token) (the ids, now allocated) or
//   abort(token). abort returns the pages exactly where they came from (free stack top,
//   LRU front with their hashes re-published), so when it directly follows reserve the pool
//   is identical to one whose reserve failed; with other calls in between the pages come
//   back in the same way but the pool may differ from one that never reserved.
//
// THREAD SAFETY
//   One owner thread makes every call except release_deferred() and epoch(), which any
//   thread may call at any time (a Treiber push; lock-free except while the item cache
//   grows, see COMPLEXITY). reset() discards every
//   deferred item of the old epoch, including ones still being pushed (items carry the
//   epoch; see release_deferred).
//
// FAILURE POLICY (kvmem/error.hpp)
//   Exhaustion: alloc/reserve return std::nullopt (alloc_into: false), counted in stats.
//   Bad arguments (a page id >= capacity, an unset hash, a digest that is not 32 bytes):
//   std::invalid_argument, under either policy, with the batch rolled back.
//   Misuse - double free, free of a page not allocated, free of a shared page (refcount > 1:
//   use release), release of a page with refcount 0, retain of a free page, an unknown or
//   already resolved reservation token, a ticket used twice or never issued, a deferred
//   release of a page that holds no reference - is detected from the per-page state and,
//   per Options::misuse:
//     kThrow        kvmem::UsageError. An owner-thread batch is all-or-nothing: a bad id
//                   rolls back the ids before it, so the pool is exactly as before the call.
//                   drain() applies its whole count (skipping bad entries, counted) and throws
//                   afterwards, so ranks that drain the same count stay equal.
//     kCountIgnore  the bad id or item is skipped and counted in stats().misuse.
//   Deferred items of an older epoch (tickets issued before reset(), or unticketed releases
//   tagged with an old epoch()) are dropped and counted in stats().stale_items: that is the
//   expected outcome of a reset racing with I/O threads, not misuse. An id freed on the owner
//   thread after reset() is caught while its page is not re-allocated (ids carry no
//   generation).

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvmem {

using PageId = std::uint32_t;

// A block hash of a prefix chain: a 64-bit value or a 32-byte digest (SHA-256).
// The two kinds never compare equal, even with equal leading bytes.
class BlockHash {
 public:
  BlockHash() = default;
  static BlockHash from_u64(std::uint64_t value);
  // Exactly 32 bytes (a raw SHA-256 digest); anything else is std::invalid_argument.
  static BlockHash from_bytes(std::string_view digest);

  bool is_u64() const { return size_ == 8; }
  std::size_t size() const { return size_; }
  std::uint64_t word(std::size_t i) const { return words_[i]; }
  std::size_t hash_value() const;

  friend bool operator==(const BlockHash& a, const BlockHash& b) {
    return a.size_ == b.size_ && a.words_ == b.words_;
  }

 private:
  std::array<std::uint64_t, 4> words_{};
  std::uint8_t size_ = 0;  // 8 or 32 once set
};

struct BlockHashHasher {
  std::size_t operator()(const BlockHash& h) const { return h.hash_value(); }
};

// What happened to the prefix index, for routers (vLLM/SGLang "KV events").
struct PrefixEvent {
  enum class Kind : std::uint8_t { kStored, kRemoved, kCleared };
  Kind kind;
  BlockHash hash;  // unset for kCleared
  PageId page;     // 0 for kCleared
};

// A ticket orders one deferred release among all ranks (see DETERMINISM CONTRACT).
struct ReleaseTicket {
  std::uint32_t epoch = 0;
  std::uint64_t seq = 0;
};

struct ReservationToken {
  std::uint64_t id = 0;
};

enum class PagePoolMisuse : std::uint8_t { kThrow, kCountIgnore };

struct PagePoolOptions {
  PagePoolMisuse misuse = PagePoolMisuse::kThrow;
  // Called on the owner thread for every index change (publish, eviction, abort, reset).
  std::function<void(const PrefixEvent&)> on_event;
  // Room made up front for this many published hashes, so publish never rehashes the index
  // or regrows the hash slab below it (rehashing a million entries takes milliseconds).
  // Costs about 50 bytes per hash at construction. 0: grow on demand.
  std::size_t index_reserve = 0;
  // Deferred-release items kept for reuse: release_deferred of up to
  // PagePool::kCachedItemIds ids takes a cached item (128 bytes + a 4-byte link) instead of a
  // heap allocation, and drain hands it back. The cache is empty until the first such call and
  // grows in doubling chunks (64, 128, 256, ... items; under a mutex, the only lock on this
  // path) to the peak number of items in flight, up to this many items; past that, and for
  // longer id lists, items come from the heap. Chunks are freed with the pool (Stats::
  // release_cache_items). 0: always the heap.
  std::size_t release_item_cache = std::size_t{1} << 16;
};

class PagePool {
 public:
  using MisusePolicy = PagePoolMisuse;
  using Options = PagePoolOptions;

  struct Pending {
    std::uint64_t pages = 0;  // drainable now (ticketed ready prefix + unticketed lane)
    std::uint64_t items = 0;  // non-empty items those pages belong to
    friend bool operator==(const Pending&, const Pending&) = default;
  };

  struct Stats {
    std::uint64_t free_pages = 0;
    std::uint64_t cached_pages = 0;
    std::uint64_t allocated_pages = 0;  // refcount >= 1
    std::uint64_t reserved_pages = 0;
    std::uint64_t waiting_pages = 0;    // arrived but behind a missing ticket
    std::uint64_t failed_allocs = 0;
    std::uint64_t evictions = 0;
    std::uint64_t misuse = 0;           // detected misuse (all kinds)
    std::uint64_t stale_items = 0;      // deferred items dropped as old-epoch
    std::uint64_t drained_pages = 0;
    std::uint64_t release_cache_items = 0;  // deferred-release items the cache holds (132 B each)
  };

  explicit PagePool(std::uint32_t num_pages, Options options = {});
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  std::uint32_t capacity() const { return capacity_; }
  // Pages alloc can take now: free + cached (cached pages are evictable).
  std::uint64_t available() const { return free_top_ + lru_size_; }

  // ---- allocation (owner thread) --------------------------------------------------------
  // n pages, all or nothing; the vector is the caller's (never a view into the pool).
  // n == 0 returns an empty vector.
  std::optional<std::vector<PageId>> alloc(std::size_t n);
  // Same, into out[0..out.size()); false (nothing taken) when fewer are available.
  bool alloc_into(std::span<PageId> out);
  // Drops the only reference of each page (refcount must be 1; a shared page needs release).
  void free(std::span<const PageId> ids);

  // ---- sharing (owner thread) ------------------------------------------------------------
  // +1 reference; a cached page leaves the LRU (a prefix hit, vLLM's touch()).
  void retain(std::span<const PageId> ids);
  // -1 reference; at 0 a hashed page goes to the LRU back, an unhashed one to the free stack.
  // Release a request's chain tail-first so tails are evicted before heads.
  void release(std::span<const PageId> ids);
  std::uint32_t refcount(PageId id) const;

  // ---- prefix index (owner thread) -------------------------------------------------------
  // Maps hash -> page (allocated, not yet hashed). Returns false and changes nothing if the
  // hash is already indexed (the first page stays the cached copy; duplicates stay unhashed).
  bool publish(const BlockHash& hash, PageId page);
  // Pages of the longest indexed prefix of `chain`, each retained once.
  std::vector<PageId> match_prefix(std::span<const BlockHash> chain);
  // Length of the longest indexed prefix, without taking references.
  std::size_t peek_prefix(std::span<const BlockHash> chain) const;
  std::optional<BlockHash> hash_of(PageId id) const;
  std::size_t indexed_hashes() const { return index_.size(); }

  // ---- two-phase allocation (owner thread) -----------------------------------------------
  std::optional<ReservationToken> reserve(std::size_t n);
  std::vector<PageId> commit(ReservationToken token);
  void abort(ReservationToken token);

  // ---- deferred releases ------------------------------------------------------------------
  // Owner thread: the next ticket of this epoch.
  ReleaseTicket issue_ticket();
  // Any thread, lock-free. Each id drops one reference when drained (like release()).
  // The ids are copied. Give every issued ticket exactly one call.
  void release_deferred(ReleaseTicket ticket, std::span<const PageId> ids);
  // Any thread, unordered lane (see contract point 3). An empty span is a no-op.
  // `epoch` is epoch() as read by the owner when it handed the pages over: a release that
  // straddles a reset() is then dropped instead of freeing pages of the new epoch.
  void release_deferred(std::uint32_t epoch, std::span<const PageId> ids);
  // Same with the epoch read now: only safe when no reset() can run between the owner
  // handing the pages over and this call.
  void release_deferred(std::span<const PageId> ids) {
    release_deferred(epoch(), ids);
  }
  // Owner thread: collects arrived items and counts the drainable pages and items.
  Pending pending_release();
  // Owner thread: applies min(max_pages, pending pages) pages; returns how many.
  std::uint64_t drain(std::uint64_t max_pages);
  // Any thread.
  std::uint32_t epoch() const { return epoch_.load(std::memory_order_acquire); }

  // ---- whole pool -------------------------------------------------------------------------
  // Every page free, index and LRU empty (kCleared event), reservations and every deferred
  // item (queued, waiting or still being pushed) of the old epoch discarded; epoch + 1.
  void reset();
  // Walks every invariant; false (with the reason in last_error()) when one fails. Owner.
  bool validate();
  const std::string& last_error() const { return last_error_; }
  Stats stats();

 private:
  static constexpr std::uint8_t kFree = 0;
  static constexpr std::uint8_t kAllocated = 1;
  static constexpr std::uint8_t kReserved = 2;
  static constexpr std::uint8_t kCached = 3;
  static constexpr std::uint32_t kNoHash = 0xffffffffu;

  // One deferred release, pushed by any thread onto a Treiber stack.
  struct Item {
    Item* next;
    std::uint64_t seq;     // ticket seq; unused for the unticketed lane
    std::uint32_t epoch;
    std::uint32_t count;
    // 1 + index in the item cache (Options::release_item_cache); 0 for a heap item.
    std::uint32_t cache_slot;
    bool ticketed;
    PageId* ids() { return reinterpret_cast<PageId*>(this + 1); }
  };
  static constexpr std::size_t kCachedItemBytes = 128;
  static constexpr std::uint32_t kFirstChunkItems = 64;  // chunk c holds 64 << c items
  static constexpr std::size_t kMaxItemChunks = 25;       // 64 * (2^25 - 1) < 2^31 slots

 public:
  // Ids that fit a cached deferred-release item.
  static constexpr std::size_t kCachedItemIds = (kCachedItemBytes - sizeof(Item)) / sizeof(PageId);

 private:
  Item* make_item(std::span<const PageId> ids);
  struct CacheSlot {
    Item* item;
    std::atomic<std::uint32_t>* link;  // next free slot (1-based, 0 = end) while free
  };
  CacheSlot cache_slot(std::uint32_t slot) const;
  Item* pop_cached_item();
  Item* grow_item_cache(bool& refilled);
  void destroy_item(Item* item);  // owner thread (or destructor)
  void flush_recycled();          // hands the items destroy_item kept back to producers
  void push_free_chain(std::uint32_t first, std::atomic<std::uint32_t>* last_link);
  void push_item(Item* item);

  struct Reservation {
    std::vector<PageId> pages;                  // in take order
    std::vector<std::pair<PageId, BlockHash>> evicted;  // LRU pages taken, in take order
    std::size_t from_stack = 0;                 // pages[0..from_stack) came off the stack
  };

  void misuse(const std::string& what);
  void check_id(PageId id) const;
  // Takes n pages (n <= available()): stack first, then LRU front (evicting).
  void take(std::size_t n, PageId* out, std::vector<std::pair<PageId, BlockHash>>* evicted);
  bool alloc_into_slow(std::span<PageId> out);
  void check_ids(std::span<const PageId> ids) const;
  void free_bad(std::span<const PageId> ids, std::size_t i);  // counts or throws
  void park_cached(PageId id);
  void drop_ref(PageId id);  // refcount_[id] just reached 0
  void undo_drop(PageId id);
  const char* free_problem(PageId id) const;
  [[noreturn]] void reject_batch(std::span<const PageId> ids, std::size_t bad, const char* what,
                                 bool release_semantics);
  void lru_push_back(PageId id);
  void lru_push_front(PageId id);
  void lru_remove(PageId id);
  PageId lru_pop_front();
  void unhash(PageId id, bool emit);
  void emit(PrefixEvent::Kind kind, const BlockHash& hash, PageId page);
  void collect();
  void accept(Item* item);
  void discard_deferred();
  bool apply_deferred(PageId id);  // false = bad entry

  std::uint32_t capacity_;
  Options options_;

  // Per page, in one struct so that alloc, free and an LRU touch reach one cache line per
  // page. state governs which structure holds the page; refcount > 0 exactly for
  // kAllocated; hash_slot != kNoHash exactly for pages in the index (allocated or cached);
  // prev/next link cached pages into the LRU, a circular list whose sentinel is
  // meta_[capacity_], so push, pop and remove have no edge cases.
  struct PageMeta {
    std::uint32_t refcount = 0;
    std::uint32_t hash_slot = kNoHash;
    std::uint32_t prev = 0;
    std::uint32_t next = 0;
    std::uint8_t state = kFree;
  };
  std::vector<PageMeta> meta_;  // capacity_ + 1 entries
  std::uint64_t lru_size_ = 0;
  // Free stack: free_[0..free_top_) are the free pages; alloc pops from the top.
  std::vector<PageId> free_;
  std::uint64_t free_top_ = 0;

  std::unordered_map<BlockHash, PageId, BlockHashHasher> index_;
  std::vector<BlockHash> hash_slab_;
  std::vector<std::uint32_t> hash_slab_free_;

  std::unordered_map<std::uint64_t, Reservation> reservations_;
  std::uint64_t next_reservation_ = 1;
  std::uint64_t reserved_pages_ = 0;

  // Deferred releases. Producers push onto inbox_; the owner takes the whole list at once
  // (exchange), so there is no ABA. Ticketed items wait in slots_ (index = seq - slot_base_)
  // until every earlier ticket arrived; ready_ then holds them in ticket order.
  alignas(64) std::atomic<Item*> inbox_{nullptr};
  // Free cached items: a Treiber stack of slots (linked through CacheSlot::link); the high 32 bits are a tag bumped on every
  // change, so a pop that read a stale next cannot succeed (ABA). Producers pop one; the
  // owner pushes back a whole chain per drain.
  alignas(64) std::atomic<std::uint64_t> item_cache_head_{0};
  std::array<std::atomic<std::byte*>, kMaxItemChunks> item_chunks_{};
  std::mutex item_grow_mu_;
  std::size_t item_chunk_count_ = 0;  // under item_grow_mu_
  std::uint64_t item_cache_slots_ = 0;  // under item_grow_mu_
  std::uint32_t recycled_first_ = 0;  // owner-side chain of drained cached items
  std::uint32_t recycled_last_ = 0;
  alignas(64) std::atomic<std::uint32_t> epoch_{1};
  std::uint64_t next_ticket_ = 0;
  std::uint64_t slot_base_ = 0;       // seq of slots_.front()
  std::deque<Item*> slots_;           // nullptr = not arrived; waiting items
  std::uint64_t waiting_pages_ = 0;
  std::deque<Item*> ready_;           // ticketed ready prefix, in order
  std::deque<Item*> unordered_;       // unticketed lane, arrival order
  std::uint32_t ready_offset_ = 0;      // pages already drained from ready_.front()
  std::uint32_t unordered_offset_ = 0;  // pages already drained from unordered_.front()
  Pending pending_{};
  Stats counters_{};
  std::string last_error_;
  std::string first_drain_error_;
};

// The two calls on every engine step are inline: a call into the library costs as much as
// their whole common case. Uncommon paths (eviction, exhaustion, misuse) are out of line.
inline bool PagePool::alloc_into(std::span<PageId> out) {
  const std::size_t n = out.size();
  if (n > free_top_) [[unlikely]] return alloc_into_slow(out);
  PageId* dst = out.data();
  for (std::size_t i = 0; i < n; ++i) {
    const PageId id = free_[--free_top_];
    dst[i] = id;
    meta_[id].state = kAllocated;
    meta_[id].refcount = 1;
  }
  return true;
}

inline void PagePool::free(std::span<const PageId> ids) {
  // Under kCountIgnore skipped ids cannot be rolled back, so bad arguments are found first.
  if (options_.misuse == MisusePolicy::kCountIgnore) [[unlikely]] check_ids(ids);
  const std::size_t n = ids.size();
  for (std::size_t i = 0; i < n; ++i) {
    const PageId id = ids[i];
    if (id >= capacity_ || meta_[id].state != kAllocated || meta_[id].refcount != 1) [[unlikely]] {
      free_bad(ids, i);  // kThrow: rolls back ids[0..i) and throws
      continue;
    }
    meta_[id].refcount = 0;
    if (meta_[id].hash_slot != kNoHash) {
      park_cached(id);
    } else {
      meta_[id].state = kFree;
      free_[free_top_++] = id;
    }
  }
}

}  // namespace kvmem
