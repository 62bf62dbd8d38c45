#pragma once
// kvmem::OffsetAllocator: an O(1) range allocator over a region [0, capacity) it does not own.
//
// WHAT IT MANAGES
//   Offsets only. The region may be RDMA-registered host memory, a GPU arena or a remote
//   segment: the allocator never reads or writes it. All metadata lives in ordinary heap
//   memory owned by the allocator and grows on demand (no maximum count fixed up front).
//   Offsets and sizes are 64-bit, byte-granular; capacities up to 2^56 bytes are accepted,
//   and one allocation may take the whole capacity.
//
// SIZE CLASSES
//   Free blocks are indexed by size class: kMantissaBits = 5 mantissa bits per power of two
//   (32 classes per octave, so a class spans at most 1/32 ~ 3.1% of its lower bound). Sizes
//   up to 64 have one class per byte value. Classes are closed at the top: a power of two is
//   the largest size of its class, so a power-of-two capacity and what a cut of less than
//   1/32 of it leaves share a class. Each class keeps its free blocks in a max-heap by size,
//   so the largest block of every class is known in O(1).
//
// PLACEMENT POLICY (kExact, the default), stated exactly
//   allocate(size, alignment = 1) succeeds if and only if some free block has
//   size >= `size` (barring the 2^32-region metadata limit below). It picks, in this order:
//     1. the largest block of size's own class, if it is >= size (an exact-size block freed
//        earlier is reused exactly: uniform sizes never strand space);
//     2. otherwise the largest block of the lowest non-empty class above size's class.
//   With alignment A > 1 the same two candidates are tried with their padding; if neither
//   fits, a block of W = size + A - 1 bytes (which always fits) is taken: the largest block of
//   W's class if it is >= W, else the largest block of the lowest non-empty class above W's.
//   So an aligned request is guaranteed to succeed when a free block of size + A - 1 bytes
//   exists, and may succeed with less.
//   Padding cut off in front of or behind an aligned allocation goes back to the free index.
//   Within the chosen block, Options::placement decides the end: by default the allocation
//   goes against the smaller of the block's two neighbours, so the leftover stays next to the
//   larger one (a bigger hole when that one is freed); kLowEnd and kSizeSplit are the others.
//
// PLACEMENT POLICY (kRoundUpToBin): Mooncake's. Every request is first rounded up to the
//   value of its class in Mooncake's 3-mantissa-bit class table (bin i = (8 + (i & 7)) <<
//   ((i >> 3) - 1), sizes 0..15 exact; up to 12.5% waste per object), then placed as above;
//   the rounded size is what the Allocation holds (normalized_size() tells it). With
//   Placement::kLowEnd it reproduces Mooncake's utilization figures exactly. For comparisons.
//
// COMPLEXITY
//   allocate and free: O(1) in the number of live allocations. The class search is two bit
//   scans; heap maintenance is at most log2(free blocks in one class) <= 32 sift steps, and
//   a single comparison when the blocks of a class are of equal size. free merges with at
//   most two neighbours. No operation walks a list of blocks or copies metadata other than
//   its own class heap's; one that adds metadata storage also writes its pages (a 32 KiB node
//   chunk, or a heap slab of up to 1 MiB or one buffer's size: Options::reserve_regions moves
//   that to the constructor). allocate and free each have a short path for their common cases
//   (an exact fit or a cut that stays in its class; a free with no free neighbour or one that
//   stays in its class), everything else out of line. Measured (callgrind, g++ 12 -O3): a
//   4 KiB allocate + free pair on an empty 2 GiB pool executes 278 instructions, 14.1-14.7 ns
//   on the shared 2-vCPU reference VM; p99.99 of one call on VMA's benchmark method: 229-261 /
//   139-151 ns (allocate / free), 130-139 / 130-149 with Options::reserve_regions;
//   docs/offset_allocator.md has these and the steady-state figures.
//   largest_free(), free_bytes(), used_bytes(), allocation_count(): O(1), exact (largest_free
//   after free() met std::bad_alloc: see FAILURE POLICY).
//   validate(), serialize(), for_each_allocation(): O(allocations + free blocks + classes);
//   validate() also walks the free heap buffers.
//
// METADATA
//   32 bytes per region (allocation or free block) plus a 16-byte heap entry per free block,
//   and one 16-byte heap header per size class up to the capacity's class (at most 1,665;
//   ~13 KB for a 1 GiB capacity). Region nodes live in chunks of 1,024 (32 KiB) that never
//   move: the first chunk starts at 16 nodes and doubles up to 1,024, later ones are added
//   whole, so no operation copies the node table (a vector's doubling would copy every node,
//   microseconds inside one call at 10^4 regions). Unused nodes are chained through the nodes
//   themselves. A class heap doubles by copy when it fills (its own entries only), into a
//   buffer from the allocator's own heap arena: freed buffers are reused by other classes, new
//   slabs double the arena up to 1 MiB slabs and are written once when added. validate() and
//   serialize() allocate; so do allocate() and free() when metadata grows (free() never
//   throws for it: FAILURE POLICY).
//   storage_report() tells the bytes used and held. Node indices are 32-bit: at most
//   2^32 - 2 regions (an allocation fails, returning nullopt, beyond that).
//
// FAILURE POLICY
//   No fitting block: allocate returns std::nullopt (counted in failed_allocations).
//   size 0, alignment not a power of two, size or alignment above capacity:
//     std::invalid_argument.
//   free() of an Allocation this allocator did not hand out, or already freed (double free),
//     or altered: kvmem::UsageError. Detection uses the allocator's id, the node index and a
//     per-node generation carried in the Allocation, so a stale copy is caught (unless the
//     same node became an allocation 2^32 times in between, when the generation wraps).
//   deserialize() of damaged bytes: kvmem::FormatError, never a crash or an overlap.
//   allocate() may throw std::bad_alloc (metadata growth), leaving the allocator unchanged.
//   free() never throws std::bad_alloc (so RAII handles can free in noexcept destructors):
//   when the free block's size class cannot grow its heap, the block (merged with its free
//   neighbours) counts as free at once but stays out of the index until the next allocate()
//   or free() can add it (one walk over the regions, only after such a failure). Until then
//   allocate() cannot hand it out and largest_free() does not see it.
//
// THREAD SAFETY
//   None: an OffsetAllocator is a plain value type. Guard it with a mutex, or use
//   kvmem::SharedArena, its thread-safe form. const members may run concurrently with each
//   other.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <vector>

#include "kvmem/error.hpp"

namespace kvmem {

// One allocated range. Value type; pass it back to free() exactly as received.
struct Allocation {
  std::uint64_t offset = 0;  // start of the range, aligned as requested
  std::uint64_t size = 0;    // bytes handed out (the request; rounded up under kRoundUpToBin)

  // Identity of the range inside its allocator: checked by free() to catch double frees,
  // stale copies and ranges from another allocator.
  std::uint32_t node = 0;
  std::uint32_t generation = 0;
  std::uint64_t allocator_id = 0;

  friend bool operator==(const Allocation&, const Allocation&) = default;
};

class OffsetAllocator {
 public:
  enum class Policy : std::uint8_t {
    kExact,          // byte-exact sizes (default): see PLACEMENT POLICY above
    kRoundUpToBin,   // Mooncake's: sizes rounded up to a 3-mantissa-bit class value
  };

  // Where an allocation goes inside the free block chosen for it (which block is chosen does
  // not depend on this).
  enum class Placement : std::uint8_t {
    // Default: against the smaller of the block's two neighbours (a pool edge counts as 0), so
    // the leftover free space stays next to the larger neighbour and becomes a larger hole
    // when that neighbour is freed. Measured: +0.4 points of average and +1.1 points of
    // 1st-percentile utilization on Mooncake's random-size benchmark (docs/offset_allocator.md).
    kBesideSmallerNeighbour,
    kLowEnd,     // always the low end (sebbbi, Mooncake)
    kSizeSplit,  // requests >= high_end_threshold at the high end, smaller ones at the low end
  };

  struct Options {
    Policy policy = Policy::kExact;
    Placement placement = Placement::kBesideSmallerNeighbour;
    // Used by Placement::kSizeSplit only.
    std::uint64_t high_end_threshold = 0;
    // Regions (allocations + free blocks) to reserve metadata for up front, written at
    // construction: nodes for this many regions, and heap storage for two entries per free
    // block such a state can hold plus the smallest buffer of each class. Operations that stay
    // within it normally make no system allocator call and touch no new page (a mix of free
    // blocks over the classes unlike the one that carved the storage may still add a slab).
    // A hint, not a limit (sebbbi's maxAllocs is one): metadata still grows past it.
    std::uint32_t reserve_regions = 0;
  };

  struct StorageReport {
    std::uint64_t capacity = 0;
    std::uint64_t used_bytes = 0;        // sum of Allocation::size of live allocations
    std::uint64_t free_bytes = 0;        // capacity - used_bytes (includes padding holes)
    std::uint64_t largest_free = 0;      // largest free block, exact
    std::uint64_t allocations = 0;       // live allocations
    std::uint64_t free_blocks = 0;       // free regions (fragmentation indicator)
    std::uint64_t failed_allocations = 0;
    // Free blocks in no class heap: free() found no memory to index them (it never throws);
    // they count as free bytes, merge with neighbours, and the next allocate() indexes them.
    std::uint64_t unindexed_blocks = 0;
    std::uint64_t metadata_bytes_used = 0;  // bytes of metadata in use for live regions
    std::uint64_t metadata_bytes_held = 0;  // bytes of metadata allocated (capacity of vectors)
  };

  static constexpr std::uint64_t kMaxCapacity = std::uint64_t{1} << 56;
  static constexpr unsigned kMantissaBits = 5;

  // Throws std::invalid_argument when capacity is 0 or above kMaxCapacity.
  // (Two constructors rather than `Options options = {}`: a nested struct with default member
  // initializers cannot be a default argument inside its enclosing class.)
  explicit OffsetAllocator(std::uint64_t capacity);
  OffsetAllocator(std::uint64_t capacity, Options options);

  // Moving transfers the state (and the id: outstanding Allocations stay valid in the target).
  // The moved-from allocator has capacity 0: every allocate() throws invalid_argument, every
  // free() throws UsageError; assign to it or destroy it.
  OffsetAllocator(const OffsetAllocator&) = delete;
  OffsetAllocator& operator=(const OffsetAllocator&) = delete;
  OffsetAllocator(OffsetAllocator&&) noexcept;
  OffsetAllocator& operator=(OffsetAllocator&&) noexcept;
  ~OffsetAllocator();

  // See PLACEMENT POLICY. Returns std::nullopt when no free block fits.
  [[nodiscard]] std::optional<Allocation> allocate(std::uint64_t size, std::uint64_t alignment = 1);

  // Returns the range to the free index, merging with free neighbours.
  // Throws kvmem::UsageError for a double free or a foreign / altered Allocation.
  void free(const Allocation& allocation);

  // True if `allocation` is live in this allocator (the same check free() makes).
  [[nodiscard]] bool owns(const Allocation& allocation) const noexcept;

  // Frees everything: one free block of the whole capacity. The allocator takes a new id(),
  // so outstanding Allocations become stale (free() of one throws UsageError).
  void reset();

  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::uint64_t free_bytes() const noexcept { return capacity_ - used_bytes_; }
  [[nodiscard]] std::uint64_t used_bytes() const noexcept { return used_bytes_; }
  [[nodiscard]] std::uint64_t largest_free() const noexcept;
  [[nodiscard]] std::uint64_t allocation_count() const noexcept { return allocation_count_; }
  [[nodiscard]] std::uint64_t failed_allocations() const noexcept { return failed_allocations_; }
  [[nodiscard]] StorageReport storage_report() const noexcept;
  [[nodiscard]] const Options& options() const noexcept { return options_; }
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }

  // The bytes a request of `size` would take under this allocator's policy (before padding).
  [[nodiscard]] std::uint64_t normalized_size(std::uint64_t size) const noexcept;

  // Walks every invariant: neighbour links cover [0, capacity) without gap or overlap, no
  // two free neighbours, class heaps ordered and consistent with the bitmaps, counters equal
  // to the sums they summarize. Returns false (never aborts) on the first violation.
  [[nodiscard]] bool validate() const;

  // Calls fn for every live allocation in address order.
  void for_each_allocation(const std::function<void(const Allocation&)>& fn) const;

  // Snapshot of the state (capacity, options, live ranges) in a versioned, checksummed
  // binary format. deserialize() rebuilds an allocator with the same live ranges (new
  // allocator id and nodes: recover Allocations with for_each_allocation()) and throws
  // kvmem::FormatError on any damage: wrong magic or version, truncation, a range out of
  // bounds or overlapping another, a checksum mismatch.
  [[nodiscard]] std::vector<std::byte> serialize() const;
  [[nodiscard]] static OffsetAllocator deserialize(std::span<const std::byte> bytes);

 private:
  static constexpr std::uint32_t kNone = 0xffffffffu;
  static constexpr unsigned kNoClass = 0xffffffffu;
  static constexpr unsigned kClassWords = 30;  // 1920 classes / 64 bits

  // One region: an allocation (used) or a free block. Regions are chained in address order
  // (prev/next) and cover [0, capacity) exactly; two free regions are never neighbours.
  // 32 bytes, two per cache line: the class of a free block is recomputed from its size
  // (a few branch-free instructions) rather than stored.
  static constexpr std::uint32_t kUsedSlot = 0xfffffffeu;
  static constexpr std::uint32_t kUnindexed = 0xfffffffdu;  // a free block in no heap (see free())
  struct Node {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    std::uint32_t prev = kNone;
    std::uint32_t next = kNone;
    // A free block: its index in heaps_[class of size], or kUnindexed. kUsedSlot: an allocation.
    // kNone: an unused node, chained from unused_head_ through next.
    std::uint32_t heap_slot = kNone;
    std::uint32_t generation = 0;  // bumped each time the node becomes an allocation
    [[nodiscard]] bool used() const noexcept { return heap_slot == kUsedSlot; }
  };
  static_assert(sizeof(Node) == 32);

  // Nodes live in chunks of kNodeChunk that never move, so adding nodes never copies the
  // existing ones (a vector's doubling copies them all: a stall of microseconds inside one
  // operation once there are 10^4 regions). Chunk 0 starts at 16 nodes and doubles by copy up
  // to kNodeChunk, so a small allocator holds little. What hot paths index is a NodeTable
  // (nodes[i]); it is invalidated, like a vector's data(), by anything that adds nodes.
  static constexpr unsigned kNodeChunkShift = 10;
  static constexpr std::uint32_t kNodeChunk = 1u << kNodeChunkShift;
  // Chunk 0 is reached without the directory: one dependent load less on every node access
  // of an allocator with up to 1,024 regions (measured: 16.8 -> 15.7 ns per allocate + free
  // pair); past that, a well-predicted branch.
  struct NodeTable {
    Node* const* dir;
    Node* first;
    Node& operator[](std::uint32_t i) const noexcept {
      return i < kNodeChunk ? first[i] : dir[i >> kNodeChunkShift][i & (kNodeChunk - 1)];
    }
  };
  class NodeStore {
   public:
    NodeStore() = default;
    NodeStore(NodeStore&& other) noexcept;
    NodeStore& operator=(NodeStore&& other) noexcept;
    ~NodeStore() { release(); }
    [[nodiscard]] NodeTable table() const noexcept { return NodeTable{dir_.data(), first_}; }
    Node& operator[](std::uint32_t i) const noexcept { return table()[i]; }
    [[nodiscard]] std::uint32_t size() const noexcept { return size_; }  // indices [0, size) exist
    [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::uint64_t bytes_held() const noexcept {
      return capacity_ * sizeof(Node) + dir_.capacity() * sizeof(Node*);
    }
    // Room for n nodes in all. Throws std::bad_alloc with the store unchanged (at worst with
    // more room than before).
    void reserve(std::uint64_t n);
    // REQUIRES: size() < capacity(). Index of a new default Node.
    std::uint32_t push() noexcept {
      new (&(*this)[size_]) Node{};
      return size_++;
    }
    void clear() noexcept { size_ = 0; }  // keeps the chunks

   private:
    void release() noexcept;
    std::vector<Node*> dir_;  // owned chunks (raw storage; Node is trivially destructible)
    Node* first_ = nullptr;   // dir_[0], or nullptr when there is no chunk
    std::uint32_t size_ = 0;
    std::uint64_t capacity_ = 0;
  };
  // Heap entries carry the size so sifting never touches the nodes it compares. The node
  // index is stored in 64 bits so every field write is a full 8-byte store: a 4-byte store
  // followed by a 16-byte entry copy defeats store-to-load forwarding (measured: +10 ns/pair).
  struct HeapEntry {
    std::uint64_t size;
    std::uint64_t node;
  };

  // Storage of every class heap: buffers of 2^k entries (kMinHeapShift <= k <= kMaxHeapShift)
  // carved from slabs this allocator owns. A heap that outgrows its buffer copies into one of
  // twice the size and hands the old one to the free list of its size, where the next heap to
  // reach that size takes it; a larger free buffer is split before a slab is added. A new slab
  // doubles what is held up to slabs of 1 MiB (or is as large as the one buffer it is added
  // for), and its pages are written when it is added, so later operations neither call the
  // system allocator nor first-touch a metadata page until the slabs run out (such calls and
  // page faults made 71 of the 72 slowest allocates of the VMA benchmark before the arena:
  // docs/offset_allocator.md). Slabs are kept until the allocator is destroyed.
  static constexpr unsigned kMinHeapShift = 3;
  static constexpr unsigned kMaxHeapShift = 31;
  class HeapArena {
   public:
    HeapArena() = default;
    HeapArena(HeapArena&& other) noexcept;
    HeapArena& operator=(HeapArena&& other) noexcept;
    ~HeapArena() { release(); }
    // A buffer of 2^k entries. Throws std::bad_alloc with the arena unchanged.
    [[nodiscard]] HeapEntry* take(unsigned k);
    // Returns a buffer of 2^k entries obtained from take(k).
    void give(HeapEntry* buffer, unsigned k) noexcept;
    // Makes room for `entries` more entries without a new slab (one slab of at least that).
    void reserve(std::uint64_t entries);
    [[nodiscard]] std::uint64_t bytes_held() const noexcept {
      return held_entries_ * sizeof(HeapEntry) + slabs_.capacity() * sizeof(HeapEntry*);
    }
    [[nodiscard]] std::uint64_t held_entries() const noexcept { return held_entries_; }
    [[nodiscard]] std::uint64_t free_entries() const noexcept;  // in the free lists and slab rest

   private:
    void release() noexcept;
    void add_slab(std::uint64_t entries);
    void give_range(HeapEntry* p, std::uint64_t entries) noexcept;
    std::vector<HeapEntry*> slabs_;  // owned (raw storage; HeapEntry is trivial)
    HeapEntry* bump_ = nullptr;      // the newest slab's uncarved rest: [bump_, end_)
    HeapEntry* end_ = nullptr;
    std::uint64_t held_entries_ = 0;
    HeapEntry* free_[kMaxHeapShift + 1] = {};  // per size, chained through each buffer's first word
  };

  // The entries of one class: 32-bit size and capacity (16 bytes per class), storage from the
  // HeapArena; push never checks capacity: callers reserve first (see reserve_heap).
  class ClassHeap {
   public:
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
    [[nodiscard]] HeapEntry* data() noexcept { return data_; }
    [[nodiscard]] const HeapEntry* data() const noexcept { return data_; }
    HeapEntry& operator[](std::size_t i) noexcept { return data_[i]; }
    const HeapEntry& operator[](std::size_t i) const noexcept { return data_[i]; }
    [[nodiscard]] const HeapEntry& front() const noexcept { return data_[0]; }
    [[nodiscard]] const HeapEntry& back() const noexcept { return data_[size_ - 1]; }
    void clear() noexcept { size_ = 0; }
    void pop_back() noexcept { --size_; }
    void grow_by_one() noexcept { ++size_; }  // REQUIRES: size() < capacity()
    // Capacity for n entries (rounded up to a power of two). Throws std::bad_alloc unchanged.
    void reserve(std::size_t n, HeapArena& arena);

   private:
    HeapEntry* data_ = nullptr;  // 2^k entries from the arena, or nullptr
    std::uint32_t size_ = 0;
    std::uint32_t capacity_ = 0;
  };

  std::uint32_t new_node() noexcept;
  void release_node(std::uint32_t n) noexcept;
  [[nodiscard]] bool reserve_nodes(std::size_t k);
  [[nodiscard]] bool grow_nodes(std::size_t k);
  void reserve_heap(unsigned cls, std::size_t extra = 1);
  [[nodiscard]] bool try_reserve_heap(unsigned cls) noexcept;
  void free_unindexed(std::uint32_t id) noexcept;
  [[nodiscard]] bool try_reindex() noexcept;
  // The heap helpers take nodes_.data() from the caller: stores into nodes could alias the
  // allocator's own fields, so the compiler would otherwise reload the pointer after each.
  void heap_push(std::uint32_t n, std::uint64_t size, unsigned cls, NodeTable nodes) noexcept;
  void heap_pop_root(unsigned cls, NodeTable nodes) noexcept;
  void heap_remove(std::uint32_t n, unsigned cls, NodeTable nodes) noexcept;
  void heap_move(std::uint32_t k, unsigned old_cls, unsigned cls, std::uint64_t size, NodeTable nodes) noexcept;
  void heap_grow(std::uint32_t k, unsigned old_cls, unsigned cls, std::uint64_t size, NodeTable nodes) noexcept;
  static void heap_lower_root(HeapEntry* h, std::size_t count, std::uint64_t size, std::uint32_t n,
                              NodeTable nodes) noexcept;
  static void heap_raise(HeapEntry* h, std::size_t i, std::uint64_t size, std::uint32_t n, NodeTable nodes) noexcept;
  static void heap_up(HeapEntry* h, std::size_t i, std::uint64_t size, std::uint32_t n, NodeTable nodes) noexcept;
  static void heap_down(HeapEntry* h, std::size_t count, std::size_t i, std::uint64_t size, std::uint32_t n,
                        NodeTable nodes) noexcept;
  void clear_class_bit(unsigned c) noexcept;
  // Regions in use minus allocations: no counter to maintain on the hot path.
  [[nodiscard]] std::uint64_t free_blocks() const noexcept {
    return nodes_.size() - unused_count_ - allocation_count_;
  }
  [[nodiscard]] bool class_nonempty(unsigned c) const noexcept {
    return ((class_bits_[c >> 6] >> (c & 63)) & 1) != 0;
  }
  [[nodiscard]] unsigned next_nonempty(unsigned c) const noexcept;
  [[nodiscard]] bool place(unsigned cls, std::uint64_t size, std::uint64_t alignment, Allocation& out);
  [[nodiscard]] bool place_unaligned(unsigned cls, std::uint64_t size, std::optional<Allocation>& out);
  [[nodiscard]] bool place_high(const Node& block, std::uint64_t size, NodeTable nodes) const noexcept;
  std::uint32_t mark_used(Node& n, std::uint64_t offset, std::uint64_t size) noexcept;
  std::uint64_t cut(NodeTable nodes, std::uint32_t b, std::uint32_t a, std::uint64_t size, std::uint64_t rest) noexcept;
  void link_before(NodeTable nodes, std::uint32_t b, std::uint32_t a) noexcept;
  void link_after(NodeTable nodes, std::uint32_t b, std::uint32_t a) noexcept;
  [[nodiscard]] bool allocate_fast(std::uint64_t size, std::optional<Allocation>& out) noexcept;
  void allocate_general(std::uint64_t size, std::uint64_t alignment, std::optional<Allocation>& result);
  void free_general(const Allocation& a, std::uint32_t id);
  [[nodiscard]] bool allocate_aligned(std::uint64_t size, std::uint64_t alignment, Allocation& out);
  void free_between(const Allocation& a, std::uint32_t id, std::uint32_t p, std::uint32_t q, NodeTable nodes);
  void init_empty();
  [[noreturn]] void throw_bad_free(const Allocation& a) const;
  [[noreturn]] void throw_bad_allocate(std::uint64_t size, std::uint64_t alignment) const;

  // used_bytes_ and allocation_count_ change together on every operation; they are kept
  // apart because GCC otherwise turns the two scalar updates into an 8-instruction SSE sequence.
  std::uint64_t capacity_ = 0;
  std::uint64_t used_bytes_ = 0;
  std::uint64_t id_ = 0;
  std::uint64_t allocation_count_ = 0;
  std::uint64_t failed_allocations_ = 0;
  Options options_;
  std::uint32_t head_ = kNone;       // region at offset 0
  std::uint64_t word_bits_ = 0;      // bit w: class_bits_[w] != 0
  std::uint64_t class_bits_[kClassWords] = {};  // bit c: heaps_[c] not empty
  NodeStore nodes_;
  std::uint32_t unused_head_ = kNone;  // unused nodes, chained through Node::next (LIFO)
  std::uint32_t unused_count_ = 0;
  std::uint64_t unindexed_ = 0;  // free blocks in no heap (free() could not grow one)
  std::vector<ClassHeap> heaps_;  // per class, max-heap by size
  HeapArena heap_arena_;          // the heaps' entries
};

}  // namespace kvmem
