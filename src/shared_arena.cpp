// kvmem::SharedArena. The contract is in include/kvmem/shared_arena.hpp; the design essay and
// measurements are in docs/shared_arena.md. The parts that must stay true:
//
//  - Memory layout. The arena's state (ArenaState) is a heap block shared between the arena
//    and the handles that outlive it. Segments live in slots, allocated in chunks that are
//    never freed before the state: a slot's stripes (lock + counters + OffsetAllocator) are
//    type-stable, so a thread that read a stale slot index can always lock the stripe and
//    find out under the lock that the segment is gone (alloc empty or a different id).
//  - Locks. A stripe's SpinLock guards everything in the stripe that is not atomic. Code
//    that holds several stripe locks holds ArenaState::ctl first and takes stripes in slot
//    then stripe order (remove_segment, snapshot). Allocation (including the tightening
//    after a failure) and handle drop hold one stripe lock at a time and never ctl, so they
//    cannot deadlock with those.
//  - Stripe cache. Freed ranges may sit in a stripe's exact-size LIFO: allocated in the
//    OffsetAllocator, free for everyone else (not in used/live, flushed before the stripe
//    would fail a request and before a snapshot).
//  - Published counters (largest_free, covered, used, live, ...) are written only under the
//    stripe lock and read anywhere with relaxed loads. largest_free (hint_of) is an upper
//    bound of the largest request the stripe can serve, exact when its cache is empty.
//  - covered >= largest_free always, and the arena-wide bound is >= every covered whenever
//    no tightening is in flight. A free that raises covered stores it seq_cst and then reads
//    the bound seq_cst; a tightener CASes the bound down seq_cst and then re-reads every
//    covered seq_cst: one of the two always sees the other's write (store-load ordering on
//    both sides), so a request that fits is never refused by a stale low bound.
//  - Lifetime without per-handle reference counts: each stripe counts the handles pointing
//    at it (handles_out, under its lock; the allocation path holds the lock anyway). The
//    arena's destructor marks every stripe dead under its lock and adds that stripe's
//    handles_out to ArenaState::refs; a handle that finds its stripe dead gives one back,
//    and whoever brings refs to zero deletes the state.

#include "kvmem/detail/bytes.hpp"
#include "kvmem/detail/hash.hpp"
#include "kvmem/shared_arena.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace kvmem {
namespace detail {

namespace {

constexpr unsigned kChunkSlots = 16;
constexpr unsigned kSlotBits = 24;
constexpr std::uint64_t kSlotMask = (std::uint64_t{1} << kSlotBits) - 1;
constexpr unsigned kMaxStripes = 64;
constexpr unsigned kCounterLanes = 16;
constexpr std::uint64_t kStripeGranule = 4096;
constexpr unsigned kMaxStripeCache = 8;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Relaxed increment by the single writer (the lock holder): a plain load + store, no RMW.
inline void bump(std::atomic<std::uint64_t>& c, std::uint64_t add) noexcept {
  c.store(c.load(std::memory_order_relaxed) + add, std::memory_order_relaxed);
}
inline void drop(std::atomic<std::uint64_t>& c, std::uint64_t sub) noexcept {
  c.store(c.load(std::memory_order_relaxed) - sub, std::memory_order_relaxed);
}

std::atomic<std::uint32_t> g_thread_counter{0};
std::atomic<std::uint64_t> g_arena_serial{1};

// One thread_local block (one TLS lookup): where this thread last allocated, its index.
struct ThreadCursor {
  std::uint64_t arena = 0;  // ArenaState::serial of the arena it refers to (a hint only;
                            // a serial, not an address, so a new arena never inherits it)
  std::uint32_t slot = 0;
  std::uint32_t stripe = 0;
  std::uint32_t index = std::numeric_limits<std::uint32_t>::max();
  std::uint64_t rng = 0;
};
thread_local ThreadCursor t_cursor;

std::uint32_t thread_index() noexcept {
  if (t_cursor.index == std::numeric_limits<std::uint32_t>::max()) {
    t_cursor.index = g_thread_counter.fetch_add(1, std::memory_order_relaxed);
  }
  return t_cursor.index;
}

std::uint64_t thread_random() noexcept {
  if (t_cursor.rng == 0) t_cursor.rng = 0x9e3779b97f4a7c15ull * (thread_index() + 1);
  // splitmix64
  std::uint64_t z = (t_cursor.rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

unsigned default_stripes() noexcept {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  if (hw <= 2) return 4;
  return std::min(16u, std::bit_ceil(2 * hw));
}

}  // namespace

// Test-and-test-and-set lock. Unlock is a plain release store (std::mutex's unlock is an
// atomic read-modify-write): the critical sections are ~20 ns, so a waiter spins briefly and
// then yields the CPU (oversubscribed threads must not burn the holder's time slice).
class SpinLock {
 public:
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  void lock() noexcept {
    if (!locked_.exchange(true, std::memory_order_acquire)) return;
    for (unsigned spins = 0;; ++spins) {
      while (locked_.load(std::memory_order_relaxed)) {
        if (spins < 64) {
          cpu_relax();
          ++spins;
        } else {
          std::this_thread::yield();
        }
      }
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

struct ArenaState;

struct alignas(128) ArenaStripe {  // 128: adjacent-line prefetch pairs lines
  SpinLock lock;
  // Published for lock-free readers; written only under `lock`.
  std::atomic<std::uint64_t> largest_free{0};  // hint_of(): 0 when no segment
  // The value this stripe has made the arena bound cover: >= largest_free always. Raised
  // (seq_cst, then the bound checked) only when largest_free would exceed it; lowered only
  // when an allocation fails here. So churn that moves largest_free up and down below it
  // costs no fence, and the tightener reads these.
  std::atomic<std::uint64_t> covered{0};
  std::atomic<std::uint64_t> used{0};
  std::atomic<std::uint64_t> live{0};
  std::atomic<std::uint64_t> total{0};
  std::atomic<std::uint64_t> unclaimed_count{0};
  std::atomic<std::uint64_t> begin_pub{0};
  std::atomic<std::uint64_t> capacity_pub{0};
  // Guarded by `lock`.
  std::uint64_t begin = 0;        // offset of the stripe in its segment
  std::uint64_t handles_out = 0;  // handles pointing here, of any incarnation
  std::uint64_t segment_id = 0;
  std::byte* base = nullptr;      // segment base, or nullptr
  bool arena_dead = false;
  std::optional<OffsetAllocator> alloc;           // engaged while a segment uses the stripe
  std::map<std::uint64_t, Allocation> unclaimed;  // by stripe-relative offset
  // Freed ranges kept for exact-size reuse: still allocated in `alloc`, free for the user
  // (not in used/live). Flushed into `alloc` when an allocation would fail, and by snapshot.
  std::uint32_t cache_n = 0;
  std::uint64_t cache_bytes = 0;
  Allocation cache[kMaxStripeCache];
  ArenaState* state = nullptr;   // immutable
  std::uint32_t cache_limit = 0;  // immutable: Options::stripe_cache
};

struct ArenaSlot {
  std::atomic<std::uint64_t> id{0};  // SegmentId value; 0 = free. Published last.
  std::atomic<std::uint32_t> nstripes{0};
  std::atomic<std::uint64_t> capacity{0};
  std::atomic<std::uint64_t> failed{0};  // requests that named this segment and failed
  ArenaStripe* stripes = nullptr;  // ArenaState::max_stripes entries; immutable
  // Guarded by ArenaState::ctl.
  std::string name;
  void* base = nullptr;
};

struct ArenaChunk {
  ArenaSlot slots[kChunkSlots];
  std::unique_ptr<ArenaStripe[]> stripes;
};

struct alignas(64) CounterLane {
  std::atomic<std::uint64_t> value{0};
};

// Locks a set of stripes in the order given and unlocks them on scope exit.
class StripeLocks {
 public:
  StripeLocks() = default;
  StripeLocks(const StripeLocks&) = delete;
  StripeLocks& operator=(const StripeLocks&) = delete;
  ~StripeLocks() {
    for (auto it = held_.rbegin(); it != held_.rend(); ++it) (*it)->lock.unlock();
  }
  void add(ArenaStripe& s) {
    held_.reserve(held_.size() + 1);
    s.lock.lock();
    held_.push_back(&s);
  }

 private:
  std::vector<ArenaStripe*> held_;
};

struct ArenaState {
  explicit ArenaState(const SharedArena::Options& o) : options(o) {
    if (options.stripes > kMaxStripes) {
      throw std::invalid_argument("SharedArena::Options::stripes = " +
                                  std::to_string(options.stripes) + ": at most 64");
    }
    if (options.max_segments == 0 || options.max_segments > kSlotMask) {
      throw std::invalid_argument("SharedArena::Options::max_segments = " +
                                  std::to_string(options.max_segments) +
                                  ": must be in [1, 2^24 - 1]");
    }
    if (options.stripe_cache > kMaxStripeCache) {
      throw std::invalid_argument("SharedArena::Options::stripe_cache = " +
                                  std::to_string(options.stripe_cache) + ": at most 8");
    }
    if (options.min_stripe_bytes == 0) {
      throw std::invalid_argument("SharedArena::Options::min_stripe_bytes must be > 0");
    }
    max_stripes = options.stripes == 0 ? default_stripes() : options.stripes;
    options.stripes = max_stripes;
    max_chunks = (options.max_segments + kChunkSlots - 1) / kChunkSlots;
    chunks = std::make_unique<std::atomic<ArenaChunk*>[]>(max_chunks);
  }

  ~ArenaState() {
    for (std::uint32_t c = 0; c < max_chunks; ++c) delete chunks[c].load(std::memory_order_relaxed);
  }

  ArenaState(const ArenaState&) = delete;
  ArenaState& operator=(const ArenaState&) = delete;

  SharedArena::Options options;
  unsigned max_stripes = 0;
  std::uint32_t max_chunks = 0;
  const std::uint64_t serial = g_arena_serial.fetch_add(1, std::memory_order_relaxed);

  // Read by every allocation, written rarely: its own line.
  alignas(64) std::atomic<std::uint64_t> bound{0};
  std::atomic<std::uint32_t> hwm{0};  // slots [0, hwm) have chunks
  std::unique_ptr<std::atomic<ArenaChunk*>[]> chunks;

  alignas(64) std::atomic<std::uint64_t> refs{1};
  alignas(64) std::atomic<std::uint64_t> round_robin{0};
  CounterLane failed[kCounterLanes];           // failures after a search (not fast ones)
  CounterLane fast_rejections[kCounterLanes];  // refused by the bound
  CounterLane contended[kCounterLanes];        // stripe locks found held by another thread

  mutable std::mutex ctl;                 // add / remove / snapshot / adopt / validate
  std::vector<std::uint32_t> free_slots;  // guarded by ctl
  std::uint64_t next_seq = 1;             // guarded by ctl

  // ---- slots --------------------------------------------------------------------------

  ArenaSlot* slot(std::uint32_t index) const noexcept {
    ArenaChunk* c = chunks[index / kChunkSlots].load(std::memory_order_acquire);
    return c == nullptr ? nullptr : &c->slots[index % kChunkSlots];
  }

  ArenaSlot& ensure_slot(std::uint32_t index) {  // REQUIRES: ctl
    const std::uint32_t c = index / kChunkSlots;
    ArenaChunk* chunk = chunks[c].load(std::memory_order_relaxed);
    if (chunk == nullptr) {
      auto fresh = std::make_unique<ArenaChunk>();
      fresh->stripes = std::make_unique<ArenaStripe[]>(std::size_t{kChunkSlots} * max_stripes);
      for (unsigned i = 0; i < kChunkSlots; ++i) {
        fresh->slots[i].stripes = &fresh->stripes[std::size_t{i} * max_stripes];
        for (unsigned j = 0; j < max_stripes; ++j) {
          fresh->slots[i].stripes[j].state = this;
          fresh->slots[i].stripes[j].cache_limit = options.stripe_cache;
        }
      }
      chunk = fresh.release();
      chunks[c].store(chunk, std::memory_order_release);
    }
    return chunk->slots[index % kChunkSlots];
  }

  // The slot of a present segment, or nullptr.
  ArenaSlot* find(SegmentId id) const noexcept {
    const std::uint64_t low = id.value & kSlotMask;
    if (low == 0 || low > options.max_segments) return nullptr;
    ArenaSlot* s = slot(static_cast<std::uint32_t>(low - 1));
    if (s == nullptr || s->id.load(std::memory_order_acquire) != id.value) return nullptr;
    return s;
  }

  ArenaSlot& checked(SegmentId id, const char* what) const {
    ArenaSlot* s = find(id);
    if (s == nullptr) {
      throw UsageError(std::string("SharedArena::") + what + ": segment id " +
                       std::to_string(id.value) + " is unknown or was removed");
    }
    return *s;
  }

  // ---- the bound ----------------------------------------------------------------------

  void raise_bound(std::uint64_t v) noexcept {
    std::uint64_t b = bound.load(std::memory_order_seq_cst);
    while (v > b && !bound.compare_exchange_weak(b, v, std::memory_order_seq_cst)) {
    }
  }

  std::uint64_t scan_largest() const noexcept {
    std::uint64_t m = 0;
    const std::uint32_t n = hwm.load(std::memory_order_acquire);
    for (std::uint32_t i = 0; i < n; ++i) {
      const ArenaSlot* s = slot(i);
      if (s == nullptr) continue;
      // Dead stripes publish 0, so every stripe can be read without looking at the slot.
      for (unsigned j = 0; j < max_stripes; ++j) {
        m = std::max(m, s->stripes[j].covered.load(std::memory_order_seq_cst));
      }
    }
    return m;
  }

  // After a request failed everywhere: lower the bound to the true maximum, so the next
  // request that fits nowhere is refused without locking. See the file comment for why
  // the re-scan makes a concurrent free safe.
  void tighten() noexcept {
    // Stripes whose `covered` is stale-high (allocations lowered largest_free since) are
    // brought down to their hint under their lock: the only locks a rejection path takes,
    // once per stripe per fill-up.
    const std::uint32_t n = hwm.load(std::memory_order_acquire);
    for (std::uint32_t i = 0; i < n; ++i) {
      ArenaSlot* sl = slot(i);
      if (sl == nullptr) continue;
      for (unsigned j = 0; j < max_stripes; ++j) {
        ArenaStripe& s = sl->stripes[j];
        if (s.covered.load(std::memory_order_relaxed) <= s.largest_free.load(std::memory_order_relaxed)) continue;
        std::lock_guard<SpinLock> g(s.lock);
        if (s.alloc) {
          s.covered.store(hint_of(s), std::memory_order_relaxed);
        } else {
          s.covered.store(0, std::memory_order_relaxed);
        }
      }
    }
    std::uint64_t b0 = bound.load(std::memory_order_seq_cst);
    const std::uint64_t m = scan_largest();
    if (m >= b0) return;
    if (!bound.compare_exchange_strong(b0, m, std::memory_order_seq_cst)) return;
    const std::uint64_t m2 = scan_largest();
    if (m2 > m) raise_bound(m2);
  }

  // REQUIRES: s.lock. The largest request the stripe may serve: exact (the allocator's
  // largest free block L) when nothing is cached; with n cached ranges of C bytes, a block
  // after flushing holds at most n cached ranges and n + 1 free blocks, so (n + 1) L + C
  // bounds it from above. An upper bound is all the search and the arena bound need.
  static std::uint64_t hint_of(const ArenaStripe& s) noexcept {
    const std::uint64_t l = s.alloc->largest_free();
    if (s.cache_n == 0) return l;
    const std::uint64_t cap = s.alloc->capacity();
    const std::uint64_t rest = cap - std::min(cap, s.cache_bytes);
    if (l != 0 && (s.cache_n + 1) > rest / l) return cap;
    return std::min(cap, (s.cache_n + 1) * l + s.cache_bytes);
  }

  // REQUIRES: s.lock. Publishes hint_of(s); when it exceeds what the bound covers for this
  // stripe, the raise goes through the store-load protocol. `exact` (after a failure here)
  // also lowers `covered`, so the tightener can lower the bound.
  void publish(ArenaStripe& s, bool exact = false) noexcept {
    const std::uint64_t nl = hint_of(s);
    s.largest_free.store(nl, std::memory_order_relaxed);
    const std::uint64_t cov = s.covered.load(std::memory_order_relaxed);
    if (nl > cov) {
      s.covered.store(nl, std::memory_order_seq_cst);
      if (nl > bound.load(std::memory_order_seq_cst)) raise_bound(nl);
    } else if (exact && nl < cov) {
      s.covered.store(nl, std::memory_order_relaxed);
    }
  }

  // REQUIRES: s.lock. Returns every cached range to the allocator (free() never throws
  // std::bad_alloc; see OffsetAllocator's FAILURE POLICY).
  static void flush(ArenaStripe& s) {
    while (s.cache_n != 0) {
      const Allocation& a = s.cache[s.cache_n - 1];
      s.alloc->free(a);
      s.cache_bytes -= a.size;
      --s.cache_n;
    }
  }

  // REQUIRES: s.lock, s.alloc holds `a`. Frees a handle's range (into the cache if room).
  void free_locked(ArenaStripe& s, const Allocation& a) {
    if (s.cache_n < s.cache_limit) {
      s.cache[s.cache_n++] = a;
      s.cache_bytes += a.size;
    } else {
      s.alloc->free(a);
    }
    drop(s.used, a.size);
    drop(s.live, 1);
    publish(s);
  }

  void count(CounterLane (&lanes)[kCounterLanes]) noexcept {
    lanes[thread_index() % kCounterLanes].value.fetch_add(1, std::memory_order_relaxed);
  }
  static std::uint64_t sum(const CounterLane (&lanes)[kCounterLanes]) noexcept {
    std::uint64_t t = 0;
    for (const auto& l : lanes) t += l.value.load(std::memory_order_relaxed);
    return t;
  }

  // ---- allocation -----------------------------------------------------------------------

  // REQUIRES: s.lock.
  // `only`: a SegmentId value the stripe must still belong to (0 = any): a Placement(id)
  // request must not land in a later segment that reused the slot meanwhile.
  bool allocate_locked(ArenaStripe& s, std::uint64_t size, std::uint64_t alignment, std::uint64_t only,
                       std::optional<ArenaHandle>& out) {
    // Alignment is of the offset in the segment: a stripe whose begin is not a multiple of
    // it cannot serve the request (stripe 0 always can; begins are multiples of 4 KiB).
    if (!s.alloc || (only != 0 && s.segment_id != only) || size > s.alloc->capacity() ||
        alignment > s.alloc->capacity() ||
        (s.begin & (alignment - 1)) != 0) {
      return false;
    }
    std::optional<Allocation> a;
    if (s.cache_n != 0) {
      const std::uint64_t want = options.allocator.policy == OffsetAllocator::Policy::kExact
                                     ? size
                                     : s.alloc->normalized_size(size);
      for (std::uint32_t i = s.cache_n; i-- > 0;) {
        if (s.cache[i].size == want && ((s.begin + s.cache[i].offset) & (alignment - 1)) == 0) {
          a = s.cache[i];
          s.cache[i] = s.cache[--s.cache_n];
          s.cache_bytes -= want;
          break;
        }
      }
    }
    if (!a) {
      a = s.alloc->allocate(size, alignment);
      if (!a && s.cache_n != 0) {
        flush(s);
        a = s.alloc->allocate(size, alignment);
      }
      if (!a) {
        publish(s, /*exact=*/true);
        return false;
      }
    }
    bump(s.used, a->size);
    bump(s.live, 1);
    bump(s.total, 1);
    publish(s);
    ++s.handles_out;
    fill(out.emplace(), s, *a);
    return true;
  }

  static void fill(ArenaHandle& out, ArenaStripe& s, const Allocation& a) noexcept {
    out.stripe_ = &s;
    out.segment_ = s.segment_id;
    out.offset_ = s.begin + a.offset;
    out.size_ = a.size;
    out.data_ = s.base == nullptr ? nullptr : static_cast<void*>(s.base + out.offset_);
    out.allocator_id_ = a.allocator_id;
    out.node_ = a.node;
    out.generation_ = a.generation;
  }

  bool try_segment(ArenaSlot& slot, std::uint32_t index, std::uint64_t size,
                   std::uint64_t alignment, std::uint64_t only, std::optional<ArenaHandle>& out) {
    const std::uint32_t n = slot.nstripes.load(std::memory_order_acquire);
    if (n == 0) return false;
    std::uint32_t home = t_cursor.arena == serial && t_cursor.slot == index ? t_cursor.stripe
                                                                           : thread_index();
    if (home >= n) home %= n;
    std::uint64_t busy = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
      std::uint32_t j = home + i;
      if (j >= n) j -= n;
      ArenaStripe& s = slot.stripes[j];
      if (s.largest_free.load(std::memory_order_relaxed) < size) continue;
      if (!s.lock.try_lock()) {
        busy |= std::uint64_t{1} << j;
        count(contended);
        continue;
      }
      bool ok = false;
      try {
        ok = allocate_locked(s, size, alignment, only, out);
      } catch (...) {
        s.lock.unlock();
        throw;
      }
      s.lock.unlock();
      if (ok) {
        t_cursor.arena = serial;
        t_cursor.slot = index;
        t_cursor.stripe = j;
        return true;
      }
    }
    while (busy != 0) {
      const auto j = static_cast<std::uint32_t>(std::countr_zero(busy));
      busy &= busy - 1;
      ArenaStripe& s = slot.stripes[j];
      s.lock.lock();
      bool ok = false;
      try {
        ok = allocate_locked(s, size, alignment, only, out);
      } catch (...) {
        s.lock.unlock();
        throw;
      }
      s.lock.unlock();
      if (ok) {
        t_cursor.arena = serial;
        t_cursor.slot = index;
        t_cursor.stripe = j;
        return true;
      }
    }
    return false;
  }

  // kLargestFree: most free bytes; kLeastUtilized: lowest used / capacity. Both among the
  // segments whose stripes can still hold `size`; lock-free reads of the stripe counters.
  std::uint32_t pick_segment(std::uint32_t n, std::uint64_t size, bool by_ratio) const noexcept {
    std::uint32_t best = 0;
    double best_score = -1;
    for (std::uint32_t i = 0; i < n; ++i) {
      const ArenaSlot* s = slot(i);
      if (s == nullptr || s->id.load(std::memory_order_acquire) == 0) continue;
      const std::uint32_t k = s->nstripes.load(std::memory_order_acquire);
      std::uint64_t free_bytes = 0;
      std::uint64_t largest = 0;
      for (std::uint32_t j = 0; j < k; ++j) {
        const ArenaStripe& st = s->stripes[j];
        free_bytes += st.capacity_pub.load(std::memory_order_relaxed) -
                      std::min(st.capacity_pub.load(std::memory_order_relaxed),
                               st.used.load(std::memory_order_relaxed));
        largest = std::max(largest, st.largest_free.load(std::memory_order_relaxed));
      }
      if (largest < size) continue;
      const std::uint64_t cap = s->capacity.load(std::memory_order_relaxed);
      const double score = by_ratio ? (cap == 0 ? 0.0 : static_cast<double>(free_bytes) / static_cast<double>(cap))
                                    : static_cast<double>(free_bytes);
      if (score > best_score) {
        best_score = score;
        best = i;
      }
    }
    return best;
  }

  std::optional<ArenaHandle> allocate(std::uint64_t size, const Placement& placement,
                                      std::uint64_t alignment) {
    if (size == 0) throw std::invalid_argument("SharedArena::allocate: size must be > 0");
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      throw std::invalid_argument("SharedArena::allocate: alignment " +
                                  std::to_string(alignment) + " is not a power of two");
    }
    std::optional<ArenaHandle> result;
    if (placement.segment.valid()) {
      ArenaSlot& s = checked(placement.segment, "allocate");
      if (size > bound.load(std::memory_order_acquire)) {
        count(fast_rejections);
        s.failed.fetch_add(1, std::memory_order_relaxed);
        return result;
      }
      const auto index = static_cast<std::uint32_t>((placement.segment.value & kSlotMask) - 1);
      if (try_segment(s, index, size, alignment, placement.segment.value, result)) return result;
      count(failed);
      s.failed.fetch_add(1, std::memory_order_relaxed);
      return result;
    }
    if (size > bound.load(std::memory_order_acquire)) {
      count(fast_rejections);
      return result;
    }
    const std::uint32_t n = hwm.load(std::memory_order_acquire);
    if (n != 0) {
      std::uint32_t start = 0;
      switch (placement.policy) {
        case PlacementPolicy::kLocal:
          start = t_cursor.arena == serial && t_cursor.slot < n ? t_cursor.slot : 0;
          break;
        case PlacementPolicy::kLargestFree:
          start = pick_segment(n, size, /*by_ratio=*/false);
          break;
        case PlacementPolicy::kLeastUtilized:
          start = pick_segment(n, size, /*by_ratio=*/true);
          break;
        case PlacementPolicy::kRoundRobin:
          start = static_cast<std::uint32_t>(round_robin.fetch_add(1, std::memory_order_relaxed) % n);
          break;
        case PlacementPolicy::kRandom:
          start = static_cast<std::uint32_t>(thread_random() % n);
          break;
      }
      for (std::uint32_t k = 0; k < n; ++k) {
        std::uint32_t i = start + k;
        if (i >= n) i -= n;
        ArenaSlot* s = slot(i);
        if (s == nullptr || s->id.load(std::memory_order_acquire) == 0) continue;
        if (try_segment(*s, i, size, alignment, 0, result)) return result;
      }
    }
    count(failed);
    tighten();
    return result;
  }

  static void drop_ref(ArenaState* st) noexcept {
    if (st->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete st;
  }

  // ---- segments -------------------------------------------------------------------------

  // REQUIRES: ctl. Installs a segment into slot `index` with the given stripe layout
  // (allocators already built). Publishes the slot last.
  void install(std::uint32_t index, std::uint64_t id, std::uint64_t size, void* base,
               std::string name, std::vector<std::uint64_t> caps,
               std::vector<OffsetAllocator> allocs) {
    ArenaSlot& slot = ensure_slot(index);
    std::uint64_t begin = 0;
    std::uint64_t widest = 0;
    for (std::size_t j = 0; j < caps.size(); ++j) {
      ArenaStripe& s = slot.stripes[j];
      std::lock_guard<SpinLock> g(s.lock);
      s.alloc.emplace(std::move(allocs[j]));
      s.begin = begin;
      s.segment_id = id;
      s.base = static_cast<std::byte*>(base);
      s.unclaimed.clear();
      s.cache_n = 0;
      s.cache_bytes = 0;
      s.begin_pub.store(begin, std::memory_order_relaxed);
      s.capacity_pub.store(caps[j], std::memory_order_relaxed);
      s.used.store(s.alloc->used_bytes(), std::memory_order_relaxed);
      s.live.store(s.alloc->allocation_count(), std::memory_order_relaxed);
      s.total.store(0, std::memory_order_relaxed);
      std::uint64_t unclaimed = 0;
      s.alloc->for_each_allocation([&](const Allocation& a) {
        s.unclaimed.emplace(a.offset, a);
        ++unclaimed;
      });
      s.unclaimed_count.store(unclaimed, std::memory_order_relaxed);
      const std::uint64_t lf = s.alloc->largest_free();
      s.largest_free.store(lf, std::memory_order_relaxed);
      s.covered.store(lf, std::memory_order_seq_cst);
      raise_bound(lf);
      widest = std::max(widest, lf);
      begin += caps[j];
    }
    slot.name = std::move(name);
    slot.base = base;
    slot.capacity.store(size, std::memory_order_relaxed);
    slot.nstripes.store(static_cast<std::uint32_t>(caps.size()), std::memory_order_release);
    slot.id.store(id, std::memory_order_release);
    if (index >= hwm.load(std::memory_order_relaxed)) hwm.store(index + 1, std::memory_order_release);
  }

  // REQUIRES: ctl and the lock of every stripe of `slot`. Empties the slot.
  void clear_slot_locked(ArenaSlot& slot) noexcept {
    slot.id.store(0, std::memory_order_release);
    const std::uint32_t n = slot.nstripes.load(std::memory_order_relaxed);
    for (std::uint32_t j = 0; j < n; ++j) {
      ArenaStripe& s = slot.stripes[j];
      s.alloc.reset();
      s.unclaimed.clear();
      s.cache_n = 0;
      s.cache_bytes = 0;
      s.segment_id = 0;
      s.base = nullptr;
      s.begin = 0;
      s.largest_free.store(0, std::memory_order_relaxed);
      s.covered.store(0, std::memory_order_relaxed);
      s.used.store(0, std::memory_order_relaxed);
      s.live.store(0, std::memory_order_relaxed);
      s.total.store(0, std::memory_order_relaxed);
      s.unclaimed_count.store(0, std::memory_order_relaxed);
      s.begin_pub.store(0, std::memory_order_relaxed);
      s.capacity_pub.store(0, std::memory_order_relaxed);
    }
    slot.nstripes.store(0, std::memory_order_release);
    slot.capacity.store(0, std::memory_order_relaxed);
    slot.failed.store(0, std::memory_order_relaxed);
    slot.name.clear();
    slot.base = nullptr;
  }

  std::vector<std::uint64_t> layout(std::uint64_t size, unsigned stripes) const {
    unsigned n = stripes == 0 ? max_stripes : stripes;
    const std::uint64_t by_size = std::max<std::uint64_t>(1, size / options.min_stripe_bytes);
    n = static_cast<unsigned>(std::min<std::uint64_t>(n, by_size));
    std::uint64_t cap = size / n;
    if (cap >= kStripeGranule) cap -= cap % kStripeGranule;
    std::vector<std::uint64_t> caps;
    caps.reserve(n);
    for (unsigned j = 0; j + 1 < n; ++j) caps.push_back(cap);
    caps.push_back(size - cap * (n - 1));  // the last stripe takes the rest
    return caps;
  }

  SegmentStats stats_of(const ArenaSlot& slot) const {  // REQUIRES: ctl
    SegmentStats st;
    st.id = SegmentId{slot.id.load(std::memory_order_acquire)};
    st.name = slot.name;
    st.base = slot.base;
    st.capacity = slot.capacity.load(std::memory_order_relaxed);
    const std::uint32_t n = slot.nstripes.load(std::memory_order_acquire);
    for (std::uint32_t j = 0; j < n; ++j) {
      const ArenaStripe& s = slot.stripes[j];
      StripeStats ss;
      ss.begin = s.begin_pub.load(std::memory_order_relaxed);
      ss.capacity = s.capacity_pub.load(std::memory_order_relaxed);
      ss.used = s.used.load(std::memory_order_relaxed);
      ss.largest_free = s.largest_free.load(std::memory_order_relaxed);
      ss.live_allocations = s.live.load(std::memory_order_relaxed);
      st.used += ss.used;
      st.largest_free = std::max(st.largest_free, ss.largest_free);
      st.live_allocations += ss.live_allocations;
      st.total_allocations += s.total.load(std::memory_order_relaxed);
      st.unclaimed += s.unclaimed_count.load(std::memory_order_relaxed);
      st.stripes.push_back(ss);
    }
    st.free = st.capacity - std::min(st.capacity, st.used);
    st.failed_allocations = slot.failed.load(std::memory_order_relaxed);
    return st;
  }
};

}  // namespace detail

using detail::ArenaSlot;
using detail::ArenaState;
using detail::ArenaStripe;

// ---- ArenaHandle --------------------------------------------------------------------------

ArenaHandle::ArenaHandle(ArenaHandle&& other) noexcept
    : stripe_(std::exchange(other.stripe_, nullptr)),
      data_(other.data_),
      segment_(other.segment_),
      offset_(other.offset_),
      size_(other.size_),
      allocator_id_(other.allocator_id_),
      node_(other.node_),
      generation_(other.generation_) {}

ArenaHandle& ArenaHandle::operator=(ArenaHandle&& other) noexcept {
  if (this != &other) {
    release();
    stripe_ = std::exchange(other.stripe_, nullptr);
    data_ = other.data_;
    segment_ = other.segment_;
    offset_ = other.offset_;
    size_ = other.size_;
    allocator_id_ = other.allocator_id_;
    node_ = other.node_;
    generation_ = other.generation_;
  }
  return *this;
}

bool ArenaHandle::release() noexcept {
  ArenaStripe* s = std::exchange(stripe_, nullptr);
  if (s == nullptr) return false;
  if (!s->lock.try_lock()) {
    // s->state is immutable and outlives the stripe's handles, so counting is safe here.
    s->state->count(s->state->contended);
    s->lock.lock();
  }
  --s->handles_out;
  if (s->arena_dead) {
    ArenaState* st = s->state;
    s->lock.unlock();
    ArenaState::drop_ref(st);
    return false;
  }
  if (!s->alloc || s->alloc->id() != allocator_id_) {  // segment removed (slot maybe reused)
    s->lock.unlock();
    return false;
  }
  // free() throws only for a range the allocator does not hold (never std::bad_alloc), which a
  // handle of this allocator id cannot be; in a noexcept function that would terminate, as
  // corruption should.
  s->state->free_locked(*s, Allocation{offset_ - s->begin, size_, node_, generation_, allocator_id_});
  s->lock.unlock();
  return true;
}

bool ArenaHandle::attached() const noexcept {
  ArenaStripe* s = stripe_;
  if (s == nullptr) return false;
  std::lock_guard<detail::SpinLock> g(s->lock);
  return !s->arena_dead && s->alloc && s->alloc->id() == allocator_id_;
}

ArenaRange ArenaHandle::disown() noexcept {
  ArenaStripe* s = std::exchange(stripe_, nullptr);
  if (s == nullptr) return ArenaRange{};
  const ArenaRange r = range();
  s->lock.lock();
  --s->handles_out;
  if (s->arena_dead) {
    ArenaState* st = s->state;
    s->lock.unlock();
    ArenaState::drop_ref(st);
    return r;
  }
  if (s->alloc && s->alloc->id() == allocator_id_) {
    try {
      s->unclaimed.emplace(offset_ - s->begin,
                           Allocation{offset_ - s->begin, size_, node_, generation_, allocator_id_});
      detail::bump(s->unclaimed_count, 1);
    } catch (...) {
      // Out of memory for the map node: the range is freed instead of leaked.
      s->state->free_locked(*s, Allocation{offset_ - s->begin, size_, node_, generation_, allocator_id_});
    }
  }
  s->lock.unlock();
  return r;
}

// ---- SharedArena ----------------------------------------------------------------------------

SharedArena::SharedArena() : SharedArena(Options{}) {}

SharedArena::SharedArena(Options options) : state_(new ArenaState(options)) {}

SharedArena::SharedArena(SharedArena&& other) noexcept
    : state_(std::exchange(other.state_, nullptr)) {}

SharedArena& SharedArena::operator=(SharedArena&& other) noexcept {
  if (this != &other) {
    SharedArena dying(std::move(*this));
    state_ = std::exchange(other.state_, nullptr);
  }
  return *this;
}

SharedArena::~SharedArena() {
  ArenaState* st = std::exchange(state_, nullptr);
  if (st == nullptr) return;
  const std::uint32_t n = st->hwm.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < n; ++i) {
    ArenaSlot* slot = st->slot(i);
    if (slot == nullptr) continue;
    for (unsigned j = 0; j < st->max_stripes; ++j) {
      ArenaStripe& s = slot->stripes[j];
      s.lock.lock();
      s.arena_dead = true;
      s.alloc.reset();
      s.unclaimed.clear();
      s.cache_n = 0;
      if (s.handles_out != 0) st->refs.fetch_add(s.handles_out, std::memory_order_relaxed);
      s.lock.unlock();
    }
  }
  ArenaState::drop_ref(st);
}

ArenaState& SharedArena::state() const {
  if (state_ == nullptr) throw UsageError("SharedArena: use of a moved-from arena");
  return *state_;
}

const SharedArena::Options& SharedArena::options() const { return state().options; }

SegmentId SharedArena::add_segment(std::uint64_t size, void* base, std::string name,
                                   unsigned stripes) {
  ArenaState& st = state();
  if (size == 0) throw std::invalid_argument("SharedArena::add_segment: size must be > 0");
  if (size > OffsetAllocator::kMaxCapacity) {
    throw std::invalid_argument("SharedArena::add_segment: size " + std::to_string(size) +
                                " is above OffsetAllocator::kMaxCapacity (2^56)");
  }
  if (stripes > st.max_stripes) {
    throw std::invalid_argument("SharedArena::add_segment: stripes = " + std::to_string(stripes) +
                                " is above this arena's Options::stripes = " +
                                std::to_string(st.max_stripes));
  }
  const std::vector<std::uint64_t> caps = st.layout(size, stripes);
  std::vector<OffsetAllocator> allocs;
  allocs.reserve(caps.size());
  for (const std::uint64_t c : caps) allocs.emplace_back(c, st.options.allocator);

  std::lock_guard<std::mutex> g(st.ctl);
  std::uint32_t index = 0;
  if (!st.free_slots.empty()) {
    index = st.free_slots.back();
  } else {
    index = st.hwm.load(std::memory_order_relaxed);
    if (index >= st.options.max_segments) {
      throw std::invalid_argument("SharedArena::add_segment: " +
                                  std::to_string(st.options.max_segments) +
                                  " segments present, the Options::max_segments limit");
    }
  }
  const std::uint64_t id = (st.next_seq << detail::kSlotBits) | (index + 1);
  st.install(index, id, size, base, std::move(name), caps, std::move(allocs));
  ++st.next_seq;
  if (!st.free_slots.empty() && st.free_slots.back() == index) st.free_slots.pop_back();
  return SegmentId{id};
}

bool SharedArena::remove_segment(SegmentId id, RemovePolicy policy) {
  ArenaState& st = state();
  std::lock_guard<std::mutex> g(st.ctl);
  ArenaSlot& slot = st.checked(id, "remove_segment");
  const std::uint32_t n = slot.nstripes.load(std::memory_order_relaxed);
  detail::StripeLocks locks;
  for (std::uint32_t j = 0; j < n; ++j) locks.add(slot.stripes[j]);
  if (policy == RemovePolicy::kRefuseIfLive) {
    for (std::uint32_t j = 0; j < n; ++j) {
      const ArenaStripe& s = slot.stripes[j];
      if (s.alloc->allocation_count() != s.cache_n) return false;
    }
  }
  st.clear_slot_locked(slot);
  st.free_slots.push_back(static_cast<std::uint32_t>((id.value & detail::kSlotMask) - 1));
  return true;
}

std::optional<ArenaHandle> SharedArena::allocate(std::uint64_t size, std::uint64_t alignment) {
  return state().allocate(size, Placement(PlacementPolicy::kLocal), alignment);
}

std::optional<ArenaHandle> SharedArena::allocate(std::uint64_t size, Placement placement,
                                                 std::uint64_t alignment) {
  return state().allocate(size, placement, alignment);
}

ArenaHandle SharedArena::adopt(const ArenaRange& range) {
  ArenaState& st = state();
  std::lock_guard<std::mutex> g(st.ctl);
  ArenaSlot& slot = st.checked(range.segment, "adopt");
  const std::uint32_t n = slot.nstripes.load(std::memory_order_relaxed);
  for (std::uint32_t j = 0; j < n; ++j) {
    ArenaStripe& s = slot.stripes[j];
    const std::uint64_t b = s.begin_pub.load(std::memory_order_relaxed);
    const std::uint64_t c = s.capacity_pub.load(std::memory_order_relaxed);
    if (range.offset < b || range.offset - b >= c) continue;
    std::lock_guard<detail::SpinLock> sg(s.lock);
    const auto it = s.unclaimed.find(range.offset - b);
    if (it == s.unclaimed.end() || it->second.size != range.size) break;
    const Allocation a = it->second;
    s.unclaimed.erase(it);
    detail::drop(s.unclaimed_count, 1);
    ++s.handles_out;
    ArenaHandle h;
    ArenaState::fill(h, s, a);
    return h;
  }
  throw UsageError("SharedArena::adopt: {segment " + std::to_string(range.segment.value) +
                   ", offset " + std::to_string(range.offset) + ", size " +
                   std::to_string(range.size) + "} is not an unclaimed range");
}

void SharedArena::for_each_unclaimed(const std::function<void(const ArenaRange&)>& fn) const {
  ArenaState& st = state();
  std::vector<ArenaRange> ranges;
  {
    std::lock_guard<std::mutex> g(st.ctl);
    const std::uint32_t hw = st.hwm.load(std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < hw; ++i) {
      ArenaSlot* slot = st.slot(i);
      if (slot == nullptr) continue;
      const std::uint64_t id = slot->id.load(std::memory_order_relaxed);
      if (id == 0) continue;
      const std::uint32_t n = slot->nstripes.load(std::memory_order_relaxed);
      for (std::uint32_t j = 0; j < n; ++j) {
        ArenaStripe& s = slot->stripes[j];
        std::lock_guard<detail::SpinLock> sg(s.lock);
        for (const auto& [off, a] : s.unclaimed) ranges.push_back({SegmentId{id}, s.begin + off, a.size});
      }
    }
  }
  for (const ArenaRange& r : ranges) fn(r);
}

std::uint64_t SharedArena::free_unclaimed() {
  ArenaState& st = state();
  std::lock_guard<std::mutex> g(st.ctl);
  std::uint64_t freed = 0;
  const std::uint32_t hw = st.hwm.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < hw; ++i) {
    ArenaSlot* slot = st.slot(i);
    if (slot == nullptr || slot->id.load(std::memory_order_relaxed) == 0) continue;
    const std::uint32_t n = slot->nstripes.load(std::memory_order_relaxed);
    for (std::uint32_t j = 0; j < n; ++j) {
      ArenaStripe& s = slot->stripes[j];
      std::lock_guard<detail::SpinLock> sg(s.lock);
      while (!s.unclaimed.empty()) {  // erase as we go: a throwing free() leaves no stale entry
        const auto it = s.unclaimed.begin();
        s.alloc->free(it->second);
        detail::drop(s.used, it->second.size);
        detail::drop(s.live, 1);
        detail::drop(s.unclaimed_count, 1);
        s.unclaimed.erase(it);
        ++freed;
      }
      st.publish(s);
    }
  }
  return freed;
}

ArenaStats SharedArena::stats() const {
  ArenaState& st = state();
  ArenaStats out;
  const std::uint32_t hw = st.hwm.load(std::memory_order_acquire);
  for (std::uint32_t i = 0; i < hw; ++i) {
    const ArenaSlot* slot = st.slot(i);
    if (slot == nullptr || slot->id.load(std::memory_order_acquire) == 0) continue;
    ++out.segments;
    out.capacity += slot->capacity.load(std::memory_order_relaxed);
    const std::uint32_t n = slot->nstripes.load(std::memory_order_acquire);
    for (std::uint32_t j = 0; j < n; ++j) {
      const ArenaStripe& s = slot->stripes[j];
      out.used += s.used.load(std::memory_order_relaxed);
      out.largest_free = std::max(out.largest_free, s.largest_free.load(std::memory_order_relaxed));
      out.live_allocations += s.live.load(std::memory_order_relaxed);
      out.total_allocations += s.total.load(std::memory_order_relaxed);
    }
  }
  out.free = out.capacity - std::min(out.capacity, out.used);
  out.fast_rejections = ArenaState::sum(st.fast_rejections);
  out.contended_locks = ArenaState::sum(st.contended);
  out.failed_allocations = ArenaState::sum(st.failed) + out.fast_rejections;
  return out;
}

SegmentStats SharedArena::segment_stats(SegmentId id) const {
  ArenaState& st = state();
  std::lock_guard<std::mutex> g(st.ctl);
  return st.stats_of(st.checked(id, "segment_stats"));
}

std::vector<SegmentStats> SharedArena::segment_stats() const {
  ArenaState& st = state();
  std::lock_guard<std::mutex> g(st.ctl);
  std::vector<SegmentStats> out;
  const std::uint32_t hw = st.hwm.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < hw; ++i) {
    const ArenaSlot* slot = st.slot(i);
    if (slot != nullptr && slot->id.load(std::memory_order_relaxed) != 0) out.push_back(st.stats_of(*slot));
  }
  return out;
}

std::vector<SegmentId> SharedArena::segments() const {
  ArenaState& st = state();
  std::lock_guard<std::mutex> g(st.ctl);
  std::vector<SegmentId> out;
  const std::uint32_t hw = st.hwm.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < hw; ++i) {
    const ArenaSlot* slot = st.slot(i);
    if (slot == nullptr) continue;
    const std::uint64_t id = slot->id.load(std::memory_order_relaxed);
    if (id != 0) out.push_back(SegmentId{id});
  }
  return out;
}

bool SharedArena::validate() const {
  ArenaState& st = state();
  std::lock_guard<std::mutex> g(st.ctl);
  const std::uint32_t hw = st.hwm.load(std::memory_order_relaxed);
  std::vector<bool> is_free(hw, false);
  for (const std::uint32_t f : st.free_slots) {
    if (f >= hw || is_free[f]) return false;
    is_free[f] = true;
  }
  for (std::uint32_t i = 0; i < hw; ++i) {
    ArenaSlot* slot = st.slot(i);
    if (slot == nullptr) return false;
    const std::uint64_t id = slot->id.load(std::memory_order_relaxed);
    const std::uint32_t n = slot->nstripes.load(std::memory_order_relaxed);
    if ((id == 0) != is_free[i]) return false;
    if (id != 0 && ((id & detail::kSlotMask) != i + 1 || (id >> detail::kSlotBits) >= st.next_seq)) return false;
    if (id == 0 ? n != 0 : (n == 0 || n > st.max_stripes)) return false;
    std::uint64_t begin = 0;
    for (unsigned j = 0; j < st.max_stripes; ++j) {
      ArenaStripe& s = slot->stripes[j];
      std::lock_guard<detail::SpinLock> sg(s.lock);
      if (s.arena_dead || s.state != &st) return false;
      if (j >= n) {
        if (s.alloc || !s.unclaimed.empty() || s.largest_free.load(std::memory_order_relaxed) != 0 ||
            s.covered.load(std::memory_order_relaxed) != 0 ||
            s.live.load(std::memory_order_relaxed) != 0 || s.used.load(std::memory_order_relaxed) != 0) {
          return false;
        }
        continue;
      }
      if (!s.alloc || !s.alloc->validate()) return false;
      const OffsetAllocator& a = *s.alloc;
      if (s.begin != begin || s.begin_pub.load(std::memory_order_relaxed) != begin) return false;
      if (s.capacity_pub.load(std::memory_order_relaxed) != a.capacity()) return false;
      if (s.segment_id != id || s.base != static_cast<std::byte*>(slot->base)) return false;
      if (s.cache_n > s.cache_limit) return false;
      std::uint64_t cached = 0;
      for (std::uint32_t k = 0; k < s.cache_n; ++k) {
        if (!a.owns(s.cache[k]) || s.unclaimed.count(s.cache[k].offset) != 0) return false;
        cached += s.cache[k].size;
      }
      if (cached != s.cache_bytes) return false;
      if (s.used.load(std::memory_order_relaxed) != a.used_bytes() - cached) return false;
      if (s.live.load(std::memory_order_relaxed) != a.allocation_count() - s.cache_n) return false;
      const std::uint64_t hint = ArenaState::hint_of(s);
      if (hint < a.largest_free()) return false;
      if (s.largest_free.load(std::memory_order_relaxed) != hint) return false;
      const std::uint64_t covered = s.covered.load(std::memory_order_relaxed);
      if (covered < hint || covered > a.capacity()) return false;
      if (covered > st.bound.load(std::memory_order_seq_cst)) return false;
      if (s.unclaimed_count.load(std::memory_order_relaxed) != s.unclaimed.size()) return false;
      for (const auto& [off, al] : s.unclaimed) {
        if (off != al.offset || !a.owns(al)) return false;
      }
      if (s.handles_out < a.allocation_count() - s.cache_n - s.unclaimed.size()) return false;
      begin += a.capacity();
    }
    if (id != 0 && begin != slot->capacity.load(std::memory_order_relaxed)) return false;
  }
  return true;
}

// ---- snapshot / restore ---------------------------------------------------------------------
//
// Layout (little-endian):
//   "KVMARNA1" | u32 version | u32 segment count | u64 next sequence |
//   per segment: u64 id | u64 size | u64 base | u32 name length | name | u32 stripes |
//                per stripe: u64 capacity | u64 image length | OffsetAllocator image |
//   u64 FNV-1a of everything before it.
// Stripe begins are not stored: stripes tile the segment in order, which restore checks by
// requiring the capacities to sum to the segment size.

namespace {

constexpr char kMagic[8] = {'K', 'V', 'M', 'A', 'R', 'N', 'A', '1'};
constexpr std::uint32_t kVersion = 1;

using detail::fnv1a64;
using detail::load_u32;
using detail::load_u64;
using detail::put_u32;
using detail::put_u64;

class Reader {
 public:
  explicit Reader(std::span<const std::byte> b) : bytes_(b) {}
  std::uint64_t u64(const char* what) {
    need(8, what);
    const std::uint64_t v = load_u64(bytes_.data() + pos_);
    pos_ += 8;
    return v;
  }
  std::uint32_t u32(const char* what) {
    need(4, what);
    const std::uint32_t v = load_u32(bytes_.data() + pos_);
    pos_ += 4;
    return v;
  }
  std::span<const std::byte> take(std::uint64_t n, const char* what) {
    need(n, what);
    const auto s = bytes_.subspan(pos_, static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return s;
  }
  [[nodiscard]] std::size_t remaining() const noexcept { return bytes_.size() - pos_; }

 private:
  void need(std::uint64_t n, const char* what) const {
    if (n > bytes_.size() - pos_) {
      throw FormatError(std::string("SharedArena::restore: truncated at ") + what);
    }
  }
  std::span<const std::byte> bytes_;
  std::size_t pos_ = 0;
};

struct SegmentImage {
  std::uint64_t id = 0;
  std::uint64_t size = 0;
  std::uint64_t base = 0;
  std::string name;
  std::vector<std::uint64_t> caps;
  std::vector<OffsetAllocator> allocs;
};

}  // namespace

std::vector<std::byte> SharedArena::snapshot() const {
  ArenaState& st = state();
  std::lock_guard<std::mutex> g(st.ctl);
  detail::StripeLocks locks;
  std::vector<ArenaSlot*> present;
  const std::uint32_t hw = st.hwm.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < hw; ++i) {
    ArenaSlot* slot = st.slot(i);
    if (slot == nullptr || slot->id.load(std::memory_order_relaxed) == 0) continue;
    present.push_back(slot);
    const std::uint32_t n = slot->nstripes.load(std::memory_order_relaxed);
    for (std::uint32_t j = 0; j < n; ++j) {
      ArenaStripe& s = slot->stripes[j];
      locks.add(s);
      ArenaState::flush(s);  // cached ranges are free: they must not be saved as live
      st.publish(s);
    }
  }
  std::vector<std::byte> out;
  for (const char c : kMagic) out.push_back(static_cast<std::byte>(c));
  put_u32(out, kVersion);
  put_u32(out, static_cast<std::uint32_t>(present.size()));
  put_u64(out, st.next_seq);
  for (const ArenaSlot* slot : present) {
    put_u64(out, slot->id.load(std::memory_order_relaxed));
    put_u64(out, slot->capacity.load(std::memory_order_relaxed));
    put_u64(out, static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(slot->base)));
    put_u32(out, static_cast<std::uint32_t>(slot->name.size()));
    for (const char c : slot->name) out.push_back(static_cast<std::byte>(c));
    const std::uint32_t n = slot->nstripes.load(std::memory_order_relaxed);
    put_u32(out, n);
    for (std::uint32_t j = 0; j < n; ++j) {
      const OffsetAllocator& a = *slot->stripes[j].alloc;
      const std::vector<std::byte> image = a.serialize();
      put_u64(out, a.capacity());
      put_u64(out, image.size());
      out.insert(out.end(), image.begin(), image.end());
    }
  }
  put_u64(out, fnv1a64(out.data(), out.size()));
  return out;
}

SharedArena SharedArena::restore(std::span<const std::byte> bytes) {
  return restore(bytes, Options{});
}

SharedArena SharedArena::restore(std::span<const std::byte> bytes, Options options,
                                 const RebaseFn& rebase) {
  if (bytes.size() < sizeof(kMagic) + 4 + 4 + 8 + 8) {
    throw FormatError("SharedArena::restore: " + std::to_string(bytes.size()) +
                      " bytes is too short for a snapshot");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    throw FormatError("SharedArena::restore: bad magic (not a SharedArena snapshot)");
  }
  const std::size_t body = bytes.size() - 8;
  Reader trailer(bytes.subspan(body));
  if (trailer.u64("checksum") != fnv1a64(bytes.data(), body)) {
    throw FormatError("SharedArena::restore: checksum mismatch (damaged snapshot)");
  }
  Reader in(bytes.subspan(sizeof(kMagic), body - sizeof(kMagic)));
  const std::uint32_t version = in.u32("version");
  if (version != kVersion) {
    throw FormatError("SharedArena::restore: version " + std::to_string(version) +
                      " (this build reads version 1)");
  }
  const std::uint32_t count = in.u32("segment count");
  const std::uint64_t next_seq = in.u64("next sequence");
  if (count > detail::kSlotMask) throw FormatError("SharedArena::restore: segment count out of range");
  std::vector<SegmentImage> images;
  unsigned widest = 0;
  for (std::uint32_t k = 0; k < count; ++k) {
    SegmentImage im;
    im.id = in.u64("segment id");
    im.size = in.u64("segment size");
    im.base = in.u64("segment base");
    const std::uint32_t name_len = in.u32("name length");
    const auto name = in.take(name_len, "name");
    im.name.assign(reinterpret_cast<const char*>(name.data()), name.size());
    const std::uint32_t n = in.u32("stripe count");
    if ((im.id & detail::kSlotMask) == 0 || (im.id >> detail::kSlotBits) == 0 ||
        (im.id >> detail::kSlotBits) >= next_seq) {
      throw FormatError("SharedArena::restore: segment id " + std::to_string(im.id) + " is invalid");
    }
    if (im.size == 0 || im.size > OffsetAllocator::kMaxCapacity || n == 0 || n > detail::kMaxStripes) {
      throw FormatError("SharedArena::restore: segment " + std::to_string(im.id) +
                        " has size " + std::to_string(im.size) + " and " + std::to_string(n) +
                        " stripes, out of range");
    }
    std::uint64_t sum = 0;
    for (std::uint32_t j = 0; j < n; ++j) {
      const std::uint64_t cap = in.u64("stripe capacity");
      const std::uint64_t len = in.u64("stripe image length");
      OffsetAllocator a = OffsetAllocator::deserialize(in.take(len, "stripe image"));
      if (cap == 0 || a.capacity() != cap || cap > im.size - sum) {
        throw FormatError("SharedArena::restore: segment " + std::to_string(im.id) +
                          ": stripes do not tile the segment");
      }
      sum += cap;
      im.caps.push_back(cap);
      im.allocs.push_back(std::move(a));
    }
    if (sum != im.size) {
      throw FormatError("SharedArena::restore: segment " + std::to_string(im.id) +
                        ": stripes do not tile the segment");
    }
    widest = std::max(widest, n);
    images.push_back(std::move(im));
  }
  if (in.remaining() != 0) throw FormatError("SharedArena::restore: trailing bytes");

  if (options.stripes == 0) options.stripes = detail::default_stripes();
  options.stripes = std::max(options.stripes, widest);
  std::uint64_t max_slot = 0;
  for (const SegmentImage& im : images) max_slot = std::max(max_slot, im.id & detail::kSlotMask);
  if (max_slot > options.max_segments) {
    if (max_slot > detail::kSlotMask - 1) throw FormatError("SharedArena::restore: slot out of range");
    options.max_segments = static_cast<std::uint32_t>(max_slot);
  }
  SharedArena arena(options);
  ArenaState& st = *arena.state_;
  std::lock_guard<std::mutex> g(st.ctl);
  std::vector<bool> used(max_slot, false);
  for (SegmentImage& im : images) {
    const auto index = static_cast<std::uint32_t>((im.id & detail::kSlotMask) - 1);
    if (used[index]) throw FormatError("SharedArena::restore: two segments in one slot");
    used[index] = true;
    void* base = reinterpret_cast<void*>(static_cast<std::uintptr_t>(im.base));
    if (rebase) base = rebase(SegmentId{im.id}, im.name, im.size, base);
    st.install(index, im.id, im.size, base, std::move(im.name), std::move(im.caps),
               std::move(im.allocs));
  }
  st.next_seq = next_seq;
  for (std::uint32_t i = static_cast<std::uint32_t>(max_slot); i-- > 0;) {
    if (!used[i]) {
      st.ensure_slot(i);
      st.free_slots.push_back(i);
    }
  }
  return arena;
}

}  // namespace kvmem
