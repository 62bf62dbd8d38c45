#pragma once
// kvmem::SharedArena: a thread-safe range allocator over many memory segments, for the
// placement layer of a KV store (Mooncake Store's master and clients are the model).
//
// WHAT IT MANAGES
//   Segments registered by clients: each is a size plus an optional base address (or none:
//   an opaque remote segment) and a name. Objects are placed in some segment as byte ranges
//   [offset, offset + size); an ArenaHandle owns one range and frees it when dropped. The
//   arena never reads or writes segment memory, and never owns it: keeping the memory mapped
//   while handles point into it is the caller's job.
//
// DESIGN (docs/shared_arena.md has the essay and the measurements)
//   Each segment is cut into `stripes` sub-ranges of equal size (the last takes the rest),
//   each an OffsetAllocator behind its own cache-line-aligned spin lock. A thread starts at
//   its home stripe (rotated when it finds the stripe busy) and falls back to the other
//   stripes, then to other segments, so two threads rarely touch the same lock or line.
//   Every stripe publishes its largest free block in an atomic (exact, or an upper bound
//   while its exact-size cache holds freed ranges); an arena-wide atomic upper bound of
//   those lets a request that fits nowhere be refused without any lock. A freed range first
//   goes to a small per-stripe LIFO (Options::stripe_cache) that serves the next request of
//   the same size without touching the OffsetAllocator. Handles point at their stripe; no
//   reference count is touched per handle.
//
// THE TRADE (stated, measured in docs/shared_arena.md)
//   One allocation cannot span two stripes: a segment of S bytes in k stripes serves single
//   requests up to about S / k. A segment that must hold larger objects is registered with
//   fewer stripes (add_segment's `stripes` argument; 1 = the whole segment is one range).
//   Each stripe can strand at most (largest request - 1) bytes at its end that a merged
//   allocator could have used, so utilization at first failure loses at most
//   stripes * (object size) bytes per segment. Stripe count per segment is
//   min(Options::stripes, size / Options::min_stripe_bytes), at least 1.
//
// COMPLEXITY
//   allocate: O(1) in the home stripe (one try-lock, then a hit in the stripe's cache of at
//   most 8 ranges or one OffsetAllocator::allocate); falling back costs one atomic read per
//   stripe skipped and one lock per stripe tried.
//   A request above the arena-wide bound: O(1), no lock. After a request fails everywhere
//   the bound is recomputed: O(total stripes) reads, plus one lock of each stripe whose
//   published bound went stale since (once per stripe per fill-up).
//   Handle drop: one lock of its stripe + a cache push or OffsetAllocator::free (O(1)).
//   Alignment is of the offset in the segment (data() is aligned if the base is). Stripes of
//   at least 4 KiB begin at multiples of 4 KiB; a larger alignment is served only by stripes
//   whose begin is a multiple of it (always stripe 0).
//   add_segment / remove_segment: O(stripes) locks. stats(): O(total stripes), no lock.
//   snapshot / restore / validate: O(live ranges + free blocks), with every stripe locked.
//
// METADATA
//   Per segment slot: Options::stripes * 1 KiB (lock, counters, cache, OffsetAllocator
//   object), allocated in chunks of 16 slots that live as long as the arena; plus each
//   stripe's OffsetAllocator metadata (its per-class heap heads, ~46 KiB, and ~44 bytes per
//   region). sizeof(ArenaHandle) = 56.
//
// LIFETIMES
//   A handle that outlives its arena, or whose segment was removed, is safe to destroy and
//   does nothing: the arena's destructor marks every stripe dead under its lock and counts
//   the handles still out; the last of them frees the arena's internal state. Slots of
//   removed segments are reused, but a handle carries the id of the OffsetAllocator it came
//   from, so it never frees into a later segment in the same slot.
//   remove_segment(id, RemovePolicy::kRefuseIfLive) (the default) removes nothing and
//   returns false while any range of the segment is live; RemovePolicy::kDetach removes it
//   anyway: its live handles become inert (their memory stays the caller's to keep).
//
// THREAD SAFETY
//   Every member function may be called from any thread concurrently, except that the
//   destructor (and moving the arena) must not race with other calls on the same arena.
//   ArenaHandles may be moved to and dropped on any thread, also while or after the arena
//   is destroyed. Stats are read with relaxed atomics while allocation runs: each counter is
//   exact, but a total is not a single point-in-time cut across stripes.
//
// FAILURE POLICY (kvmem/error.hpp)
//   No room anywhere: allocate returns std::nullopt (counted in failed_allocations).
//   size 0, alignment not a power of two, segment size 0 or above
//   OffsetAllocator::kMaxCapacity, bad options: std::invalid_argument.
//   An unknown or removed SegmentId, adopt() of a range that is not unclaimed, use of a
//   moved-from arena: kvmem::UsageError.
//   restore() of damaged bytes: kvmem::FormatError.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kvmem/error.hpp"
#include "kvmem/offset_allocator.hpp"

namespace kvmem {

// Names one registration of a segment. Never reused within an arena (restore keeps them):
// an id of a removed segment stays invalid even when its slot serves a new segment.
struct SegmentId {
  std::uint64_t value = 0;  // 0 = no segment
  [[nodiscard]] constexpr bool valid() const noexcept { return value != 0; }
  friend constexpr bool operator==(SegmentId, SegmentId) = default;
  friend constexpr auto operator<=>(SegmentId, SegmentId) = default;
};

// A range without ownership: what snapshot/restore and ArenaHandle::disown() deal in.
struct ArenaRange {
  SegmentId segment;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  friend bool operator==(const ArenaRange&, const ArenaRange&) = default;
};

enum class PlacementPolicy : std::uint8_t {
  kLocal,        // the thread's last segment and home stripe first: fastest (the default)
  kLargestFree,  // the segment with the most free bytes that can hold the request
  kRoundRobin,   // segments in turn (one shared counter: costs an atomic increment)
  kRandom,       // a uniformly random segment (per-thread generator)
  kLeastUtilized,  // the lowest used / capacity that can hold the request: capacity-aware
                   // balance over segments of unequal size (Mooncake #2430)
};
// Every policy falls back to the other segments in slot order when its pick cannot hold the
// request; a request fails only when no segment can hold it.

// Where to place: a policy over all segments, or exactly one segment (no fallback).
struct Placement {
  Placement(PlacementPolicy p) : policy(p) {}  // NOLINT(google-explicit-constructor)
  Placement(SegmentId s) : segment(s) {}       // NOLINT(google-explicit-constructor)
  PlacementPolicy policy = PlacementPolicy::kLocal;
  SegmentId segment;  // valid(): only this segment
};

enum class RemovePolicy : std::uint8_t {
  kRefuseIfLive,  // remove only when no range of the segment is live; else return false
  kDetach,        // remove now; live handles become inert, unclaimed ranges are dropped
};

struct StripeStats {
  std::uint64_t begin = 0;     // offset of the stripe in its segment
  std::uint64_t capacity = 0;  // bytes
  std::uint64_t used = 0;
  std::uint64_t largest_free = 0;  // exact, or an upper bound while the stripe caches ranges
  std::uint64_t live_allocations = 0;
};

struct SegmentStats {
  SegmentId id;
  std::string name;
  void* base = nullptr;
  std::uint64_t capacity = 0;
  std::uint64_t used = 0;                // bytes held by live ranges (handles + unclaimed)
  std::uint64_t free = 0;                // capacity - used
  std::uint64_t largest_free = 0;        // max over stripes (see StripeStats::largest_free)
  std::uint64_t live_allocations = 0;
  std::uint64_t total_allocations = 0;   // successful allocations since the segment was added
  std::uint64_t failed_allocations = 0;  // requests placed in this segment (Placement(id))
                                         // that failed; policy requests count in ArenaStats
  std::uint64_t unclaimed = 0;           // live ranges without a handle (restore, disown)
  std::vector<StripeStats> stripes;
};

struct ArenaStats {
  std::uint64_t segments = 0;
  std::uint64_t capacity = 0;
  std::uint64_t used = 0;
  std::uint64_t free = 0;
  std::uint64_t largest_free = 0;
  std::uint64_t live_allocations = 0;
  std::uint64_t total_allocations = 0;   // of the segments present now
  std::uint64_t failed_allocations = 0;  // requests that returned std::nullopt (arena life)
  std::uint64_t fast_rejections = 0;     // of those, refused by the bound without any lock
  // Allocations and handle drops that found their stripe's lock held by another thread: the
  // contention the stripes exist to avoid (arena life).
  std::uint64_t contended_locks = 0;
};

namespace detail {
struct ArenaState;
struct ArenaStripe;
}  // namespace detail

class SharedArena;

// Owns one range of one segment; move-only. Dropping it (or release()) frees the range,
// unless its segment was removed or its arena destroyed: then nothing happens.
class ArenaHandle {
 public:
  ArenaHandle() noexcept = default;
  ArenaHandle(ArenaHandle&& other) noexcept;
  ArenaHandle& operator=(ArenaHandle&& other) noexcept;
  ArenaHandle(const ArenaHandle&) = delete;
  ArenaHandle& operator=(const ArenaHandle&) = delete;
  ~ArenaHandle() { release(); }

  [[nodiscard]] bool empty() const noexcept { return stripe_ == nullptr; }
  explicit operator bool() const noexcept { return stripe_ != nullptr; }

  [[nodiscard]] SegmentId segment() const noexcept { return SegmentId{segment_}; }
  [[nodiscard]] std::uint64_t offset() const noexcept { return offset_; }  // in the segment
  [[nodiscard]] std::uint64_t size() const noexcept { return size_; }
  // base + offset when the segment was registered with a base, else nullptr.
  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] ArenaRange range() const noexcept { return {SegmentId{segment_}, offset_, size_}; }

  // True while the range is still live in its arena: false for an empty handle, after its
  // segment was removed (kDetach) or its arena destroyed. Takes the stripe lock.
  [[nodiscard]] bool attached() const noexcept;

  // Frees the range now and empties the handle. Returns true when a range was freed; false
  // when the handle was empty or its segment / arena is gone.
  bool release() noexcept;

  // Empties the handle but keeps the range allocated, as an "unclaimed" range of its
  // segment (listed by for_each_unclaimed, counted in stats, saved by snapshot): a store
  // can keep ArenaRanges in its own metadata and turn them back into handles with
  // SharedArena::adopt(). Returns the range (for a gone segment: the range, but adopt will
  // refuse it). An empty handle returns ArenaRange{}.
  ArenaRange disown() noexcept;

 private:
  friend class SharedArena;
  friend struct detail::ArenaState;

  detail::ArenaStripe* stripe_ = nullptr;
  void* data_ = nullptr;
  std::uint64_t segment_ = 0;
  std::uint64_t offset_ = 0;  // in the segment
  std::uint64_t size_ = 0;
  std::uint64_t allocator_id_ = 0;  // the stripe's OffsetAllocator at allocation time
  std::uint32_t node_ = 0;
  std::uint32_t generation_ = 0;
};

class SharedArena {
 public:
  struct Options {
    // Stripes per segment; 0 = automatic: 4 on machines with up to 2 hardware threads,
    // else the power of two >= 2 * hardware threads, at most 16. At most 64.
    unsigned stripes = 0;
    // A segment gets fewer stripes so that none is below this size (at least 1 stripe).
    std::uint64_t min_stripe_bytes = std::uint64_t{16} << 20;
    // Slots for segments present at the same time (ids are not reused; slots are). <= 2^24.
    std::uint32_t max_segments = 1u << 16;
    // Freed ranges each stripe keeps (at most 8) so that the next request of the same size
    // skips the allocator: an exact-size LIFO under the stripe lock. Cached ranges count as
    // free in stats and are returned to the allocator before any request would fail, so
    // they never cause a failure; while a stripe caches, its published largest_free is an
    // upper bound rather than exact. 0 disables the cache.
    unsigned stripe_cache = 8;
    // Passed to every stripe's OffsetAllocator.
    OffsetAllocator::Options allocator{};
  };

  // Called by restore() for each segment: returns the base to use after the restart (the
  // memory may be mapped elsewhere now). Without it the saved base is kept as is.
  using RebaseFn = std::function<void*(SegmentId id, const std::string& name,
                                       std::uint64_t size, void* saved_base)>;

  // (Two constructors: a nested struct with member initializers cannot be a default
  // argument inside its enclosing class.)
  SharedArena();
  explicit SharedArena(Options options);
  SharedArena(SharedArena&& other) noexcept;
  SharedArena& operator=(SharedArena&& other) noexcept;
  SharedArena(const SharedArena&) = delete;
  SharedArena& operator=(const SharedArena&) = delete;
  // Live handles become inert (see LIFETIMES); their memory is the caller's.
  ~SharedArena();

  // Registers a segment of `size` bytes. `stripes` = 0 uses Options::stripes; 1 makes the
  // whole segment one range (largest single allocation = size).
  // Throws std::invalid_argument for size 0 or > OffsetAllocator::kMaxCapacity, stripes above
  // this arena's Options::stripes,
  // or when max_segments segments are present.
  SegmentId add_segment(std::uint64_t size, void* base = nullptr, std::string name = {},
                        unsigned stripes = 0);

  // See RemovePolicy. Returns false only when kRefuseIfLive finds live ranges.
  // Throws kvmem::UsageError for an unknown or already removed id.
  bool remove_segment(SegmentId id, RemovePolicy policy = RemovePolicy::kRefuseIfLive);

  [[nodiscard]] std::optional<ArenaHandle> allocate(std::uint64_t size,
                                                    std::uint64_t alignment = 1);
  [[nodiscard]] std::optional<ArenaHandle> allocate(std::uint64_t size, Placement placement,
                                                    std::uint64_t alignment = 1);

  // Turns an unclaimed range (after restore(), or from ArenaHandle::disown()) back into a
  // handle. Throws kvmem::UsageError when `range` is not exactly an unclaimed range.
  [[nodiscard]] ArenaHandle adopt(const ArenaRange& range);
  // Calls fn for every unclaimed range (collected under the locks, called outside them).
  void for_each_unclaimed(const std::function<void(const ArenaRange&)>& fn) const;
  // Frees every unclaimed range; returns how many.
  std::uint64_t free_unclaimed();

  [[nodiscard]] ArenaStats stats() const;
  // Throws kvmem::UsageError for an unknown id.
  [[nodiscard]] SegmentStats segment_stats(SegmentId id) const;
  [[nodiscard]] std::vector<SegmentStats> segment_stats() const;
  [[nodiscard]] std::vector<SegmentId> segments() const;
  [[nodiscard]] const Options& options() const;  // stripes resolved (never 0)

  // Every invariant, with every stripe locked in turn: each stripe's OffsetAllocator
  // validates, its published counters equal the allocator's, stripes tile their segment,
  // the arena-wide bound covers every stripe, cached and unclaimed ranges are live. For
  // quiescent moments: a request failing on another thread (which lowers the bound and then
  // repairs it) can make it return false transiently.
  [[nodiscard]] bool validate() const;

  // Segments (id, size, base, name, stripe layout) and every live range, in a versioned,
  // checksummed format. Takes every stripe lock at once, so the image is one point in time.
  [[nodiscard]] std::vector<std::byte> snapshot() const;
  // A new arena with the snapshot's segments (same ids) whose live ranges are all
  // unclaimed: adopt() them, or free_unclaimed(). Throws kvmem::FormatError on any damage
  // (magic, version, truncation, checksum, a layout that does not tile its segment, a
  // damaged allocator image). `options.stripes` is raised to the snapshot's widest segment.
  [[nodiscard]] static SharedArena restore(std::span<const std::byte> bytes);
  [[nodiscard]] static SharedArena restore(std::span<const std::byte> bytes, Options options,
                                           const RebaseFn& rebase = {});

 private:
  detail::ArenaState& state() const;
  detail::ArenaState* state_ = nullptr;
};

}  // namespace kvmem
