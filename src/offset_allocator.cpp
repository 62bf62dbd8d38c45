// kvmem::OffsetAllocator. The contract is in include/kvmem/offset_allocator.hpp; the design
// essay is docs/offset_allocator.md. In short:
//
//  - Every region (allocation or free block) is a Node in nodes_, chained in address order, so
//    free() finds its neighbours in O(1) and merges with at most two of them.
//  - Free blocks are indexed by size class (5 mantissa bits, detail/size_class.hpp). A class
//    keeps its blocks in a binary max-heap by size, so "is there a block >= S in S's own
//    class?" is one comparison with the heap's root. This removes the false "no space" of
//    segregated-fit allocators (sebbbi, Mooncake), which never look inside the request's own
//    class, and it makes a freed block of size S serve the next request of S exactly.
//  - Two bitmap levels (one word of words, then one bit per class) find the lowest non-empty
//    class above a request with two bit scans.
//  - Heap maintenance is the only non-constant step: at most log2(blocks in one class) sift
//    steps, and none when the blocks of a class are of equal size (the KV-page case).
//  - Before mutating anything, allocate() and free() reserve the metadata they may need, so a
//    std::bad_alloc from vector growth leaves the allocator unchanged.

#include "kvmem/detail/bytes.hpp"
#include "kvmem/detail/hash.hpp"
#include "kvmem/offset_allocator.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "kvmem/detail/size_class.hpp"

// Small helpers on the allocate/free path are forced inline: they are called from several
// places, and GCC's size heuristics would otherwise leave a call per heap step.
#define KVMEM_INLINE [[gnu::always_inline]] inline

namespace kvmem {

namespace {

// The class of a free block or request of `size` >= 1 bytes. Classes are closed at the top:
// detail::size_class's classes shifted up by one byte, so class c holds the sizes in
// (floor(c), floor(c + 1)] with floor = detail::class_floor. A power of two is the largest
// size of its class rather than the smallest, so a power-of-two capacity and what is left of
// it after a cut smaller than 1/32 of it share a class: allocations from the untouched end of
// a power-of-two pool (the usual capacity) only lower a heap root's key in place.
constexpr unsigned block_class(std::uint64_t size) noexcept { return detail::size_class(size - 1); }
static_assert(block_class(1) == 0 && block_class(64) == 63 && block_class(65) == 64);
static_assert(block_class(std::uint64_t{1} << 31) == block_class((std::uint64_t{1} << 31) - (std::uint64_t{1} << 25) + 1));

// kBelowClass[c]: the largest size below class c, so a size S of class c or above is in c
// iff S > kBelowClass[c]. One load and one compare tell whether a block that shrinks or
// grows stays in its class (the fast paths' test), instead of a second class computation.
constexpr auto kBelowClass = [] {
  std::array<std::uint64_t, detail::kNumSizeClasses> below{};
  for (unsigned c = 0; c < detail::kNumSizeClasses; ++c) below[c] = detail::class_floor(c);
  return below;
}();
static_assert(kBelowClass[block_class(4096)] == 4032 && block_class(kBelowClass[100] + 1) == 100 &&
              block_class(kBelowClass[100]) == 99);

std::atomic<std::uint64_t> g_next_allocator_id{1};

std::uint64_t next_allocator_id() noexcept { return g_next_allocator_id.fetch_add(1, std::memory_order_relaxed); }

static_assert(detail::kNumSizeClasses == 30 * 64, "class bitmap holds 30 words");

// ---- serialization helpers ----------------------------------------------------------------

constexpr char kMagic[8] = {'K', 'V', 'M', 'O', 'F', 'F', 'A', '1'};
constexpr std::uint32_t kFormatVersion = 1;
constexpr std::size_t kHeaderBytes = 48;
constexpr std::size_t kTrailerBytes = 8;
constexpr std::size_t kRangeBytes = 16;

using detail::fnv1a64;
using detail::put_u32;
using detail::put_u64;
using detail::load_u32;
using detail::load_u64;

std::string describe(const Allocation& a) {
  return "{offset " + std::to_string(a.offset) + ", size " + std::to_string(a.size) + ", node " +
         std::to_string(a.node) + ", generation " + std::to_string(a.generation) + ", allocator " +
         std::to_string(a.allocator_id) + "}";
}

// Writes one byte of every page of [p, p + bytes) so the kernel backs them now, not inside a
// later allocate() or free() that first writes there.
void touch_pages(void* p, std::size_t bytes) noexcept {
  constexpr std::size_t kPage = 4096;
  auto* bytes_ptr = static_cast<volatile unsigned char*>(p);
  for (std::size_t i = 0; i < bytes; i += kPage) bytes_ptr[i] = 0;
}

}  // namespace

// ---- construction -------------------------------------------------------------------------

OffsetAllocator::OffsetAllocator(std::uint64_t capacity) : OffsetAllocator(capacity, Options{}) {}

OffsetAllocator::OffsetAllocator(std::uint64_t capacity, Options options) : capacity_(capacity), options_(options) {
  if (capacity == 0 || capacity > kMaxCapacity) {
    throw std::invalid_argument("OffsetAllocator: capacity must be in [1, 2^56], got " + std::to_string(capacity));
  }
  if (options.policy != Policy::kExact && options.policy != Policy::kRoundUpToBin) {
    throw std::invalid_argument("OffsetAllocator: unknown Options::policy");
  }
  if (options.placement != Placement::kBesideSmallerNeighbour && options.placement != Placement::kLowEnd &&
      options.placement != Placement::kSizeSplit) {
    throw std::invalid_argument("OffsetAllocator: unknown Options::placement");
  }
  heaps_.resize(block_class(capacity) + 1);
  if (options.reserve_regions > 0) {
    const std::uint64_t regions = options.reserve_regions;
    nodes_.reserve(regions);
    heap_arena_.reserve(regions + 1 + (std::uint64_t{1} << kMinHeapShift) * std::min<std::uint64_t>(heaps_.size(), regions / 2 + 1));
  }
  init_empty();
}

OffsetAllocator::OffsetAllocator(OffsetAllocator&& other) noexcept { *this = std::move(other); }

OffsetAllocator& OffsetAllocator::operator=(OffsetAllocator&& other) noexcept {
  if (this == &other) return *this;
  capacity_ = std::exchange(other.capacity_, 0);
  used_bytes_ = std::exchange(other.used_bytes_, 0);
  allocation_count_ = std::exchange(other.allocation_count_, 0);
  failed_allocations_ = std::exchange(other.failed_allocations_, 0);
  id_ = std::exchange(other.id_, 0);
  options_ = other.options_;
  head_ = std::exchange(other.head_, kNone);
  word_bits_ = std::exchange(other.word_bits_, 0);
  std::memcpy(class_bits_, other.class_bits_, sizeof(class_bits_));
  std::memset(other.class_bits_, 0, sizeof(other.class_bits_));
  nodes_ = std::move(other.nodes_);
  unused_head_ = std::exchange(other.unused_head_, kNone);
  unused_count_ = std::exchange(other.unused_count_, 0);
  unindexed_ = std::exchange(other.unindexed_, 0);
  heaps_ = std::move(other.heaps_);
  other.heaps_.clear();
  heap_arena_ = std::move(other.heap_arena_);
  return *this;
}

OffsetAllocator::~OffsetAllocator() = default;

void OffsetAllocator::init_empty() {
  nodes_.clear();
  unused_head_ = kNone;
  unused_count_ = 0;
  unindexed_ = 0;
  for (auto& h : heaps_) h.clear();
  std::memset(class_bits_, 0, sizeof(class_bits_));
  word_bits_ = 0;
  used_bytes_ = 0;
  allocation_count_ = 0;
  id_ = next_allocator_id();
  nodes_.reserve(16);
  head_ = new_node();
  nodes_[head_].offset = 0;
  nodes_[head_].size = capacity_;
  reserve_heap(block_class(capacity_));
  heap_push(head_, capacity_, block_class(capacity_), nodes_.table());
}

void OffsetAllocator::reset() {
  if (capacity_ == 0) return;
  init_empty();
}

// ---- node storage -------------------------------------------------------------------------

void OffsetAllocator::NodeStore::release() noexcept {
  for (Node* chunk : dir_) ::operator delete(chunk);
  dir_.clear();
  first_ = nullptr;
  size_ = 0;
  capacity_ = 0;
}

OffsetAllocator::NodeStore::NodeStore(NodeStore&& other) noexcept
    : dir_(std::move(other.dir_)),
      first_(std::exchange(other.first_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {
  other.dir_.clear();
}

OffsetAllocator::NodeStore& OffsetAllocator::NodeStore::operator=(NodeStore&& other) noexcept {
  if (this != &other) {
    release();
    dir_ = std::move(other.dir_);
    other.dir_.clear();
    first_ = std::exchange(other.first_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_ = std::exchange(other.capacity_, 0);
  }
  return *this;
}

void OffsetAllocator::NodeStore::reserve(std::uint64_t n) {
  if (n <= capacity_) return;
  if (capacity_ < kNodeChunk) {  // chunk 0 grows by copy until it is a full chunk
    if (dir_.empty()) dir_.reserve(8);
    const std::uint64_t room = std::min<std::uint64_t>(kNodeChunk, std::max<std::uint64_t>({n, 2 * capacity_, 16}));
    auto* grown = static_cast<Node*>(::operator new(room * sizeof(Node)));
    if (dir_.empty()) {
      dir_.push_back(grown);  // cannot throw: reserved above
    } else {
      std::uninitialized_copy(dir_[0], dir_[0] + size_, grown);
      ::operator delete(std::exchange(dir_[0], grown));
    }
    first_ = grown;
    capacity_ = room;
  }
  while (capacity_ < n) {  // full chunks, never moved again
    if (dir_.size() == dir_.capacity()) dir_.reserve(dir_.size() * 2);
    auto* chunk = static_cast<Node*>(::operator new(kNodeChunk * sizeof(Node)));
    touch_pages(chunk, kNodeChunk * sizeof(Node));
    dir_.push_back(chunk);  // cannot throw: reserved above
    capacity_ += kNodeChunk;
  }
}

// True when k nodes can be taken without allocating; adds node chunks otherwise. False only
// at the 2^32-node limit. Throws std::bad_alloc with nothing else changed.
KVMEM_INLINE bool OffsetAllocator::reserve_nodes(std::size_t k) {
  return unused_count_ + (nodes_.capacity() - nodes_.size()) >= k || grow_nodes(k);
}

bool OffsetAllocator::grow_nodes(std::size_t k) {
  const std::uint64_t needed = std::uint64_t{nodes_.size()} + k - unused_count_;
  if (needed >= kNone) return false;
  nodes_.reserve(needed);
  return true;
}

// REQUIRES: reserve_nodes() covered this node. The node's fields are stale (an unused node
// keeps what it had): whoever takes it sets every field it reads.
KVMEM_INLINE std::uint32_t OffsetAllocator::new_node() noexcept {
  if (unused_head_ != kNone) {
    const std::uint32_t n = unused_head_;
    unused_head_ = nodes_[n].next;
    --unused_count_;
    return n;
  }
  return nodes_.push();
}

// `heap_slot` must become kNone so owns() rejects stale Allocations naming this node.
KVMEM_INLINE void OffsetAllocator::release_node(std::uint32_t n) noexcept {
  Node& node = nodes_[n];
  node.heap_slot = kNone;
  node.next = unused_head_;
  unused_head_ = n;
  ++unused_count_;
}

// ---- class heaps --------------------------------------------------------------------------
//
// heaps_[c] is a binary max-heap of HeapEntry by size; each free node records its slot, so a
// block can leave the middle of a heap when it is merged. Ties never move: equal sizes cost one
// comparison per operation.

void OffsetAllocator::HeapArena::release() noexcept {
  for (HeapEntry* slab : slabs_) ::operator delete(slab);
  slabs_.clear();
  bump_ = end_ = nullptr;
  held_entries_ = 0;
  std::fill(std::begin(free_), std::end(free_), nullptr);
}

OffsetAllocator::HeapArena::HeapArena(HeapArena&& other) noexcept { *this = std::move(other); }

OffsetAllocator::HeapArena& OffsetAllocator::HeapArena::operator=(HeapArena&& other) noexcept {
  if (this != &other) {
    release();
    slabs_ = std::move(other.slabs_);
    other.slabs_.clear();
    bump_ = std::exchange(other.bump_, nullptr);
    end_ = std::exchange(other.end_, nullptr);
    held_entries_ = std::exchange(other.held_entries_, 0);
    std::copy(std::begin(other.free_), std::end(other.free_), std::begin(free_));
    std::fill(std::begin(other.free_), std::end(other.free_), nullptr);
  }
  return *this;
}

// A free buffer's first word holds the next free buffer of its size.
void OffsetAllocator::HeapArena::give(HeapEntry* buffer, unsigned k) noexcept {
  std::memcpy(static_cast<void*>(buffer), static_cast<const void*>(&free_[k]), sizeof(HeapEntry*));
  free_[k] = buffer;
}

// Splits [p, p + entries) (a multiple of the smallest buffer) into buffers on the free lists.
void OffsetAllocator::HeapArena::give_range(HeapEntry* p, std::uint64_t entries) noexcept {
  while (entries >= (std::uint64_t{1} << kMinHeapShift)) {
    const unsigned k = std::min<unsigned>(kMaxHeapShift, static_cast<unsigned>(std::bit_width(entries) - 1));
    give(p, k);
    p += std::uint64_t{1} << k;
    entries -= std::uint64_t{1} << k;
  }
}

void OffsetAllocator::HeapArena::add_slab(std::uint64_t entries) {
  constexpr std::uint64_t kMinSlab = 64;  // 1 KiB: a small allocator stays small
  // Slabs double what is held up to 1 MiB, then add 1 MiB at a time: the pages of a slab are
  // written inside the call that adds it, so its size bounds that call's stall. (A buffer
  // larger than that gets a slab of its own size: the copy into it writes half of it anyway.)
  constexpr std::uint64_t kMaxSlab = std::uint64_t{1} << 16;
  constexpr std::uint64_t kUnit = std::uint64_t{1} << kMinHeapShift;  // every rest splits into buffers
  const std::uint64_t grown = std::min(std::max(held_entries_, kMinSlab), kMaxSlab);
  const std::uint64_t n = (std::max(entries, grown) + kUnit - 1) / kUnit * kUnit;
  if (slabs_.size() == slabs_.capacity()) slabs_.reserve(std::max<std::size_t>(8, slabs_.size() * 2));
  auto* slab = static_cast<HeapEntry*>(::operator new(n * sizeof(HeapEntry)));
  touch_pages(slab, n * sizeof(HeapEntry));
  slabs_.push_back(slab);  // cannot throw: reserved above
  give_range(bump_, static_cast<std::uint64_t>(end_ - bump_));  // the old slab's rest
  bump_ = slab;
  end_ = slab + n;
  held_entries_ += n;
}

void OffsetAllocator::HeapArena::reserve(std::uint64_t entries) {
  if (static_cast<std::uint64_t>(end_ - bump_) < entries) add_slab(entries);
}

OffsetAllocator::HeapEntry* OffsetAllocator::HeapArena::take(unsigned k) {
  if (HeapEntry* b = free_[k]) {
    std::memcpy(static_cast<void*>(&free_[k]), static_cast<const void*>(b), sizeof(HeapEntry*));
    return b;
  }
  const std::uint64_t n = std::uint64_t{1} << k;
  if (static_cast<std::uint64_t>(end_ - bump_) < n) {
    // Split the smallest larger free buffer: its upper halves go to the lists below it.
    unsigned j = k + 1;
    while (j <= kMaxHeapShift && free_[j] == nullptr) ++j;
    if (j <= kMaxHeapShift) {
      HeapEntry* b = take(j);
      give_range(b + n, (std::uint64_t{1} << j) - n);
      return b;
    }
    add_slab(n);
  }
  HeapEntry* b = bump_;
  bump_ += n;
  return b;
}

std::uint64_t OffsetAllocator::HeapArena::free_entries() const noexcept {
  std::uint64_t total = static_cast<std::uint64_t>(end_ - bump_);
  for (unsigned k = kMinHeapShift; k <= kMaxHeapShift; ++k) {
    for (const HeapEntry* b = free_[k]; b != nullptr;) {
      total += std::uint64_t{1} << k;
      std::memcpy(static_cast<void*>(&b), static_cast<const void*>(b), sizeof(HeapEntry*));
    }
  }
  return total;
}

void OffsetAllocator::ClassHeap::reserve(std::size_t n, HeapArena& arena) {
  if (n <= capacity_) return;
  const auto k = std::max<unsigned>(kMinHeapShift, static_cast<unsigned>(std::bit_width(n - 1)));
  if (k > kMaxHeapShift) throw std::bad_alloc();
  HeapEntry* grown = arena.take(k);
  if (size_ != 0) std::memcpy(static_cast<void*>(grown), static_cast<const void*>(data_), size_ * sizeof(HeapEntry));
  if (data_ != nullptr) arena.give(data_, static_cast<unsigned>(std::countr_zero(capacity_)));
  data_ = grown;
  capacity_ = std::uint32_t{1} << k;
}

// Makes room for `extra` more entries in heaps_[cls] (geometric growth).
KVMEM_INLINE void OffsetAllocator::reserve_heap(unsigned cls, std::size_t extra) {
  auto& h = heaps_[cls];
  if (h.capacity() - h.size() < extra) h.reserve(h.size() + extra, heap_arena_);
}

// reserve_heap(cls) for free(), which must not throw std::bad_alloc: false when it could not.
KVMEM_INLINE bool OffsetAllocator::try_reserve_heap(unsigned cls) noexcept {
  if (heaps_[cls].capacity() != heaps_[cls].size()) [[likely]] return true;
  try {
    reserve_heap(cls);
    return true;
  } catch (const std::bad_alloc&) {
    return false;
  }
}

// Fills hole i with {size, n}, moving smaller ancestors down.
KVMEM_INLINE void OffsetAllocator::heap_up(HeapEntry* h, std::size_t i, std::uint64_t size, std::uint32_t n,
                                           NodeTable nodes) noexcept {
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (h[parent].size >= size) break;
    h[i] = h[parent];
    nodes[h[i].node].heap_slot = static_cast<std::uint32_t>(i);
    i = parent;
  }
  h[i].size = size;
  h[i].node = n;
  nodes[n].heap_slot = static_cast<std::uint32_t>(i);
}

// Fills hole i with {size, n}, moving larger descendants up.
KVMEM_INLINE void OffsetAllocator::heap_down(HeapEntry* h, std::size_t count, std::size_t i, std::uint64_t size,
                                             std::uint32_t n, NodeTable nodes) noexcept {
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= count) break;
    if (child + 1 < count && h[child + 1].size > h[child].size) ++child;
    if (h[child].size <= size) break;
    h[i] = h[child];
    nodes[h[i].node].heap_slot = static_cast<std::uint32_t>(i);
    i = child;
  }
  h[i].size = size;
  h[i].node = n;
  nodes[n].heap_slot = static_cast<std::uint32_t>(i);
}

// The key of the entry {old size, n} at the root of h (count entries) falls to `size`; when
// no child is larger it stays put and only its size is rewritten (the common case: no store
// to the node).
KVMEM_INLINE void OffsetAllocator::heap_lower_root(HeapEntry* h, std::size_t count, std::uint64_t size, std::uint32_t n,
                                                   NodeTable nodes) noexcept {
  if (count <= 1 || (h[1].size <= size && (count == 2 || h[2].size <= size))) {
    h[0].size = size;
    return;
  }
  heap_down(h, count, 0, size, n, nodes);
}

// The key of the entry {old size, n} at slot i of h rises to `size`; as heap_lower_root, only
// its size is rewritten when it stays put.
KVMEM_INLINE void OffsetAllocator::heap_raise(HeapEntry* h, std::size_t i, std::uint64_t size, std::uint32_t n,
                                              NodeTable nodes) noexcept {
  if (i == 0 || h[(i - 1) / 2].size >= size) {
    h[i].size = size;
    return;
  }
  heap_up(h, i, size, n, nodes);
}

// REQUIRES: c == block_class(size); reserve_heap(c) since the last push to that class.
KVMEM_INLINE void OffsetAllocator::heap_push(std::uint32_t n, std::uint64_t size, unsigned c, NodeTable nodes) noexcept {
  ClassHeap& h = heaps_[c];
  const std::size_t i = h.size();
  h.grow_by_one();
  if (i == 0) {  // the class becomes non-empty: no sifting, mark it in both bitmap levels
    class_bits_[c >> 6] |= std::uint64_t{1} << (c & 63);
    word_bits_ |= std::uint64_t{1} << (c >> 6);
    h[0].size = size;
    h[0].node = n;
    nodes[n].heap_slot = 0;
    return;
  }
  heap_up(h.data(), i, size, n, nodes);
}

// Makes node n the live allocation [offset, offset + size) and counts it; returns the new
// generation that the Allocation carries (so a stale copy of an older one is caught).
KVMEM_INLINE std::uint32_t OffsetAllocator::mark_used(Node& n, std::uint64_t offset, std::uint64_t size) noexcept {
  n.offset = offset;
  n.size = size;
  n.heap_slot = kUsedSlot;
  n.generation += 1;
  used_bytes_ += size;
  ++allocation_count_;
  return n.generation;
}

// Splices node a into the address list right before / right after node b.
KVMEM_INLINE void OffsetAllocator::link_before(NodeTable nodes, std::uint32_t b, std::uint32_t a) noexcept {
  const std::uint32_t pv = nodes[b].prev;
  nodes[a].prev = pv;
  nodes[a].next = b;
  if (pv != kNone) {
    nodes[pv].next = a;
  } else {
    head_ = a;
  }
  nodes[b].prev = a;
}

KVMEM_INLINE void OffsetAllocator::link_after(NodeTable nodes, std::uint32_t b, std::uint32_t a) noexcept {
  const std::uint32_t nx = nodes[b].next;
  nodes[a].next = nx;
  nodes[a].prev = b;
  if (nx != kNone) nodes[nx].prev = a;
  nodes[b].next = a;
}

KVMEM_INLINE void OffsetAllocator::clear_class_bit(unsigned c) noexcept {
  const std::uint64_t bits = class_bits_[c >> 6] & ~(std::uint64_t{1} << (c & 63));
  class_bits_[c >> 6] = bits;
  if (bits == 0) word_bits_ &= ~(std::uint64_t{1} << (c >> 6));
}

// Removes the root (largest block) of class c. The removed node's heap_slot is left stale:
// every caller gives that node a new state right after.
KVMEM_INLINE void OffsetAllocator::heap_pop_root(unsigned c, NodeTable nodes) noexcept {
  ClassHeap& h = heaps_[c];
  h.pop_back();
  const std::size_t count = h.size();
  if (count == 0) {
    clear_class_bit(c);
    return;
  }
  const HeapEntry last = h[count];
  heap_down(h.data(), count, 0, last.size, last.node, nodes);
}

// Removes free node n from class c's heap (anywhere in it). n's heap_slot is left stale, as
// in heap_pop_root.
KVMEM_INLINE void OffsetAllocator::heap_remove(std::uint32_t n, unsigned c, NodeTable nodes) noexcept {
  ClassHeap& h = heaps_[c];
  const std::size_t slot = nodes[n].heap_slot;
  h.pop_back();
  const std::size_t count = h.size();
  if (slot < count) {
    const HeapEntry last = h[count];
    HeapEntry* d = h.data();
    if (slot > 0 && d[(slot - 1) / 2].size < last.size) {
      heap_up(d, slot, last.size, last.node, nodes);
    } else {
      heap_down(d, count, slot, last.size, last.node, nodes);
    }
  } else if (count == 0) {
    clear_class_bit(c);
  }
}

// Free block k (now `size` bytes) leaves class old_cls for class cls. The common case, k
// alone in its class and the target class empty (a large block cut or grown across a class
// boundary), is a move of one entry: k keeps slot 0, and when both classes share a bitmap
// word one XOR updates it while the word stays non-empty.
// REQUIRES: cls != old_cls; reserve_heap(cls).
KVMEM_INLINE void OffsetAllocator::heap_move(std::uint32_t k, unsigned old_cls, unsigned cls, std::uint64_t size,
                                             NodeTable nodes) noexcept {
  ClassHeap& from = heaps_[old_cls];
  ClassHeap& to = heaps_[cls];
  if (from.size() == 1 && to.empty() && (old_cls >> 6) == (cls >> 6)) {
    from.pop_back();
    to.grow_by_one();
    to[0].size = size;
    to[0].node = k;
    class_bits_[cls >> 6] ^= (std::uint64_t{1} << (old_cls & 63)) | (std::uint64_t{1} << (cls & 63));
    return;
  }
  heap_remove(k, old_cls, nodes);
  heap_push(k, size, cls, nodes);
}

// The lowest non-empty class >= c, or kNoClass. Callers pass at most one above the class of
// 2 * kMaxCapacity (an aligned request's worst case), so c's word exists (static_assert).
static_assert(block_class(2 * OffsetAllocator::kMaxCapacity) + 1 < 64 * 29);
KVMEM_INLINE unsigned OffsetAllocator::next_nonempty(unsigned c) const noexcept {
  unsigned w = c >> 6;
  const std::uint64_t bits = class_bits_[w] & (~std::uint64_t{0} << (c & 63));
  if (bits != 0) return (w << 6) + static_cast<unsigned>(std::countr_zero(bits));
  const std::uint64_t words = word_bits_ & (~std::uint64_t{0} << (w + 1));  // w + 1 <= 29
  if (words == 0) return kNoClass;
  w = static_cast<unsigned>(std::countr_zero(words));
  return (w << 6) + static_cast<unsigned>(__builtin_ctzll(class_bits_[w]));  // non-zero: its word bit is set
}

// ---- allocate / free ----------------------------------------------------------------------

// Which end of free block `bn` an allocation of `size` takes (Options::placement).
KVMEM_INLINE bool OffsetAllocator::place_high(const Node& bn, std::uint64_t size, NodeTable nodes) const noexcept {
  switch (options_.placement) {
    case Placement::kBesideSmallerNeighbour: {
      const std::uint64_t before = bn.prev == kNone ? 0 : nodes[bn.prev].size;
      const std::uint64_t after = bn.next == kNone ? 0 : nodes[bn.next].size;
      return after < before;
    }
    case Placement::kSizeSplit:
      return options_.high_end_threshold != 0 && size >= options_.high_end_threshold;
    case Placement::kLowEnd:
      break;
  }
  return false;
}

// Splits free block b into an allocation of `size` bytes on node a, linked in on the side
// Options::placement picks, and its leftover of `rest` bytes, which keeps node b (its heap
// entry is the caller's business). Returns the allocation's offset.
KVMEM_INLINE std::uint64_t OffsetAllocator::cut(NodeTable nodes, std::uint32_t b, std::uint32_t a, std::uint64_t size,
                                                std::uint64_t rest) noexcept {
  Node& bn = nodes[b];
  std::uint64_t offset = bn.offset;
  if (!place_high(bn, size, nodes)) {  // allocation at the low end, before the leftover
    link_before(nodes, b, a);
    bn.offset = offset + size;
  } else {  // allocation at the high end, after the leftover
    link_after(nodes, b, a);
    offset += rest;
  }
  bn.size = rest;
  return offset;
}

// place() for alignment 1, the common case, written out: an unaligned allocation sits at one
// end of the block, so there is either no leftover or exactly one, and the block is the root
// of its class's heap. Returns false, changing nothing, at the 2^32-node limit.
// REQUIRES: heaps_[cls] not empty and its root >= size.
KVMEM_INLINE bool OffsetAllocator::place_unaligned(unsigned cls, std::uint64_t size,
                                                   std::optional<Allocation>& out) {
  ClassHeap& h = heaps_[cls];
  const std::uint64_t block = h.front().size;
  const auto b = static_cast<std::uint32_t>(h.front().node);
  const std::uint64_t rest = block - size;
  std::uint32_t a;
  std::uint64_t offset;
  NodeTable nodes;
  if (rest == 0) {
    nodes = nodes_.table();
    heap_pop_root(cls, nodes);  // exact fit: the block's node becomes the allocation
    a = b;
    offset = nodes[b].offset;
  } else {
    // The leftover keeps the block's node (and, if its class is unchanged, its heap slot);
    // the allocation takes a new node on the side away from the leftover.
    if (unused_head_ == kNone && nodes_.size() == nodes_.capacity() && !grow_nodes(1)) [[unlikely]] return false;
    const unsigned rest_cls = block_class(rest);
    if (rest_cls != cls) reserve_heap(rest_cls);  // may throw: nothing has changed yet
    a = new_node();
    nodes = nodes_.table();
    offset = cut(nodes, b, a, size, rest);
    if (rest_cls == cls) {
      heap_lower_root(h.data(), h.size(), rest, b, nodes);  // still the root's slot: lower its key
    } else {
      heap_move(b, cls, rest_cls, rest, nodes);
    }
  }
  out.emplace(Allocation{offset, size, a, mark_used(nodes[a], offset, size), id_});
  return true;
}

// Carves `size` bytes aligned to `alignment` out of the largest block of class `cls` (its
// heap's root). Returns false, changing nothing, when that block cannot hold the request or
// metadata is at its 2^32-node limit.
KVMEM_INLINE bool OffsetAllocator::place(unsigned cls, std::uint64_t size, std::uint64_t alignment,
                                         Allocation& out) {
  const HeapEntry top = heaps_[cls].front();
  const std::uint32_t b = top.node;
  NodeTable nodes = nodes_.table();
  const std::uint64_t begin = nodes[b].offset;
  const std::uint64_t end = begin + top.size;
  const bool high = place_high(nodes[b], size, nodes);
  std::uint64_t offset;
  if (alignment == 1) {
    offset = high ? end - size : begin;  // the caller checked top.size >= size
  } else {
    const std::uint64_t mask = ~(alignment - 1);
    if (top.size < size) return false;
    if (high) {
      offset = (end - size) & mask;
      if (offset < begin) return false;
    } else {
      offset = (begin + alignment - 1) & mask;
      if (offset + size > end) return false;
    }
  }
  const std::uint64_t front = offset - begin;
  const std::uint64_t back = end - offset - size;

  std::uint32_t a;
  if (front != 0 && back != 0) [[unlikely]] {
    // Both sides stay free: the block's node becomes the allocation, two new free nodes.
    if (!reserve_nodes(2)) return false;
    const unsigned front_cls = block_class(front);
    const unsigned back_cls = block_class(back);
    if (front_cls == back_cls) {
      reserve_heap(front_cls, 2);
    } else {
      reserve_heap(front_cls);
      reserve_heap(back_cls);
    }
    nodes = nodes_.table();
    heap_pop_root(cls, nodes);
    const std::uint32_t f = new_node();
    const std::uint32_t k = new_node();
    nodes = nodes_.table();
    Node& bn = nodes[b];
    nodes[f].offset = begin;
    nodes[f].size = front;
    nodes[f].prev = bn.prev;
    nodes[f].next = b;
    if (bn.prev != kNone) {
      nodes[bn.prev].next = f;
    } else {
      head_ = f;
    }
    nodes[k].offset = offset + size;
    nodes[k].size = back;
    nodes[k].prev = b;
    nodes[k].next = bn.next;
    if (bn.next != kNone) nodes[bn.next].prev = k;
    bn.prev = f;
    bn.next = k;
    heap_push(f, front, front_cls, nodes);
    heap_push(k, back, back_cls, nodes);
    a = b;
  } else if (front == 0 && back == 0) {
    heap_pop_root(cls, nodes);  // exact fit: the block's node becomes the allocation
    a = b;
  } else {
    // One leftover: it keeps the block's node (and, if its class is unchanged, its heap slot);
    // the allocation takes a new node on the side away from the leftover.
    const std::uint64_t rest = front + back;
    const unsigned rest_cls = block_class(rest);
    if (!reserve_nodes(1)) return false;
    if (rest_cls != cls) reserve_heap(rest_cls);
    a = new_node();
    nodes = nodes_.table();
    Node& bn = nodes[b];
    if (back != 0) {  // allocation at the low end, before the leftover
      link_before(nodes, b, a);
      bn.offset = offset + size;
    } else {  // allocation at the high end, after the leftover
      link_after(nodes, b, a);
    }
    bn.size = rest;
    if (rest_cls == cls) {
      // Still in its class, still the heap's root slot: lower its key in place.
      ClassHeap& h = heaps_[cls];
      heap_lower_root(h.data(), h.size(), rest, b, nodes);
    } else {
      heap_pop_root(cls, nodes);
      heap_push(b, rest, rest_cls, nodes);
    }
  }
  out.offset = offset;
  out.size = size;
  out.node = a;
  out.generation = mark_used(nodes[a], offset, size);
  out.allocator_id = id_;
  return true;
}

// The common cases of allocate(), alone so that they compile to a short path with few live
// values: alignment 1, policy kExact, and either an exact fit (the root of a class heap is
// taken whole), a cut whose leftover stays in the block's class (its key is lowered in place)
// with a node at hand, or no fitting block at all (counted; `out` stays empty). True when the
// call is answered; false, with nothing changed, for everything else, which
// allocate_general() handles.
// REQUIRES: size in [1, capacity], policy kExact, no unindexed block.
KVMEM_INLINE bool OffsetAllocator::allocate_fast(std::uint64_t size, std::optional<Allocation>& out) noexcept {
  const unsigned own = block_class(size);
  unsigned c = own;
  if (!class_nonempty(own) || heaps_[own].front().size < size) {
    c = next_nonempty(own + 1);
    if (c == kNoClass) {  // no free block >= size: allocate_general() would find none either
      ++failed_allocations_;
      return true;
    }
  }
  ClassHeap& h = heaps_[c];
  const std::uint64_t rest = h.front().size - size;
  const auto b = static_cast<std::uint32_t>(h.front().node);
  NodeTable nodes = nodes_.table();
  std::uint32_t a;
  std::uint64_t offset;
  if (rest == 0) {
    heap_pop_root(c, nodes);  // exact fit: the block's node becomes the allocation
    a = b;
    offset = nodes[b].offset;
  } else {
    if (rest <= kBelowClass[c] || (unused_head_ == kNone && nodes_.size() == nodes_.capacity())) return false;
    a = new_node();
    offset = cut(nodes, b, a, size, rest);
    heap_lower_root(h.data(), h.size(), rest, b, nodes);  // still the root's slot: lower its key
  }
  out.emplace(Allocation{offset, size, a, mark_used(nodes[a], offset, size), id_});
  return true;
}

std::optional<Allocation> OffsetAllocator::allocate(std::uint64_t size, std::uint64_t alignment) {
  // Returned by name (NRVO) from every path, so it is built in the caller's return slot.
  // (A `return allocate_general(...)` would defeat NRVO: the copy of a result just stored
  // field by field misses store forwarding, measured 34 instead of 17 ns per pair.)
  std::optional<Allocation> result;
  if (alignment == 1 && size - 1 < capacity_ && options_.policy == Policy::kExact && unindexed_ == 0 &&
      allocate_fast(size, result)) [[likely]] {
    return result;
  }
  allocate_general(size, alignment, result);
  return result;
}

// Every allocate() that allocate_fast() does not take.
[[gnu::noinline]] void OffsetAllocator::allocate_general(std::uint64_t size, std::uint64_t alignment,
                                                         std::optional<Allocation>& result) {
  if (unindexed_ != 0) [[unlikely]] (void)try_reindex();  // after a free() that hit std::bad_alloc
  if (alignment == 1 && size - 1 < capacity_) [[likely]] {
    const std::uint64_t need =
        options_.policy == Policy::kRoundUpToBin ? detail::mooncake_bin_round_up(size) : size;
    if (need <= capacity_) [[likely]] {
      // 1. The largest block of the request's own class, when it is big enough, else
      // 2. the largest block of the lowest non-empty class above: every block there is > need.
      const unsigned own = block_class(need);
      const bool own_fits = class_nonempty(own) && heaps_[own].front().size >= need;
      unsigned c = own_fits ? own : next_nonempty(own + 1);
      if (c != kNoClass && place_unaligned(c, need, result)) [[likely]] return;
      if (c == own) {  // place_unaligned() failed at the node limit; an exact fit above may work
        c = next_nonempty(own + 1);
        if (c != kNoClass && place_unaligned(c, need, result)) return;
      }
    }
    ++failed_allocations_;
    return;
  }
  Allocation out;
  if (allocate_aligned(size, alignment, out)) result.emplace(out);
}

// Requests with alignment > 1 (and bad arguments), kept out of allocate() so that the
// common path has fewer live values. Counts its own failures.
bool OffsetAllocator::allocate_aligned(std::uint64_t size, std::uint64_t alignment, Allocation& out) {
  if (size - 1 >= capacity_ || alignment - 1 >= capacity_ || (alignment & (alignment - 1)) != 0) [[unlikely]] {
    throw_bad_allocate(size, alignment);
  }
  const std::uint64_t need =
      options_.policy == Policy::kRoundUpToBin ? detail::mooncake_bin_round_up(size) : size;
  if (need <= capacity_) [[likely]] {
    const unsigned own = block_class(need);
    // 1. and 2. as in allocate(), each candidate tried with its padding.
    if (class_nonempty(own) && heaps_[own].front().size >= need && place(own, need, alignment, out)) return true;
    unsigned c = next_nonempty(own + 1);
    if (c != kNoClass && place(c, need, alignment, out)) return true;
    // 3. A block of need + alignment - 1 bytes always fits. The largest block of that size's
    //    class, if big enough, else any block of a class above it.
    if (c != kNoClass) {
      const std::uint64_t worst = need + alignment - 1;
      c = block_class(worst);
      if (!class_nonempty(c) || heaps_[c].front().size < worst) c = next_nonempty(c + 1);
      if (c != kNoClass && place(c, need, alignment, out)) return true;
    }
  }
  ++failed_allocations_;
  return false;
}

void OffsetAllocator::throw_bad_allocate(std::uint64_t size, std::uint64_t alignment) const {
  if (size == 0 || size > capacity_) {
    throw std::invalid_argument("OffsetAllocator::allocate: size must be in [1, capacity = " +
                                std::to_string(capacity_) + "], got " + std::to_string(size));
  }
  throw std::invalid_argument("OffsetAllocator::allocate: alignment must be a power of two <= capacity (" +
                              std::to_string(capacity_) + "), got " + std::to_string(alignment));
}

void OffsetAllocator::throw_bad_free(const Allocation& a) const {
  std::string why;
  if (a.allocator_id != id_) {
    why = "it belongs to another allocator (or to this one before reset/move)";
  } else if (a.node >= nodes_.size()) {
    why = "its node index is out of range";
  } else {
    const Node& n = nodes_[a.node];
    if (!n.used() || n.generation != a.generation) {
      why = "it was already freed (double free or stale copy)";
    } else {
      why = "its offset/size were altered (live range is offset " + std::to_string(n.offset) + ", size " +
            std::to_string(n.size) + ")";
    }
  }
  throw UsageError("OffsetAllocator::free: invalid Allocation " + describe(a) + ": " + why);
}

bool OffsetAllocator::owns(const Allocation& a) const noexcept {
  if (a.allocator_id != id_ || a.node >= nodes_.size()) return false;
  const Node& n = nodes_[a.node];
  return n.used() && n.generation == a.generation && n.offset == a.offset && n.size == a.size;
}

// Free block k grows to `size` (old class old_cls, new class cls): fix its heap position.
// REQUIRES: reserve_heap(cls) when cls != old_cls.
KVMEM_INLINE void OffsetAllocator::heap_grow(std::uint32_t k, unsigned old_cls, unsigned cls, std::uint64_t size,
                                             NodeTable nodes) noexcept {
  if (cls == old_cls) {
    heap_raise(heaps_[cls].data(), nodes[k].heap_slot, size, k, nodes);  // the key only grew
  } else {
    heap_move(k, old_cls, cls, size, nodes);
  }
}

void OffsetAllocator::free(const Allocation& a) {
  const std::uint32_t id = a.node;
  if (a.allocator_id != id_ || id >= nodes_.size()) [[unlikely]] throw_bad_free(a);
  NodeTable nodes = nodes_.table();
  const Node& n = nodes[id];
  // All four identity fields in one test: the common case pays one branch, and any mismatch
  // (a free or unused node, another generation, an altered range) still fails it.
  if (((n.heap_slot ^ kUsedSlot) | (n.generation ^ a.generation) | (n.offset ^ a.offset) | (n.size ^ a.size)) != 0)
      [[unlikely]] {
    throw_bad_free(a);
  }
  // The common cases, written out for a short path: no free neighbour and room in the class
  // heap, or one free neighbour that stays in its class when it takes the range in.
  if (unindexed_ == 0) [[likely]] {
    const std::uint32_t p = n.prev;
    const std::uint32_t q = n.next;
    const bool prev_free = p != kNone && !nodes[p].used();
    const bool next_free = q != kNone && !nodes[q].used();
    if (!prev_free && !next_free) {
      const unsigned cls = block_class(a.size);
      if (heaps_[cls].size() != heaps_[cls].capacity()) [[likely]] {
        used_bytes_ -= a.size;
        --allocation_count_;
        heap_push(id, a.size, cls, nodes);
        return;
      }
    } else if (prev_free != next_free) {
      const std::uint32_t k = prev_free ? p : q;
      Node& kn = nodes[k];
      const std::uint64_t size = kn.size + a.size;
      const unsigned cls = block_class(size);
      if (kn.size > kBelowClass[cls]) [[likely]] {  // kn stays in its class
        used_bytes_ -= a.size;
        --allocation_count_;
        if (prev_free) {  // the previous block grows upwards over the range
          kn.next = q;
          if (q != kNone) nodes[q].prev = p;
        } else {  // the next block grows downwards over it
          kn.offset = a.offset;
          kn.prev = p;
          if (p != kNone) {
            nodes[p].next = q;
          } else {
            head_ = q;
          }
        }
        kn.size = size;
        release_node(id);
        heap_raise(heaps_[cls].data(), kn.heap_slot, size, k, nodes);  // the key only grew
        return;
      }
    }
  }
  free_general(a, id);
}

// Every free() of a valid Allocation that free()'s common cases do not take.
[[gnu::noinline]] void OffsetAllocator::free_general(const Allocation& a, std::uint32_t id) {
  NodeTable nodes = nodes_.table();
  const Node& n = nodes[id];
  if (unindexed_ != 0 && !try_reindex()) [[unlikely]] return free_unindexed(id);
  const std::uint32_t p = n.prev;
  const std::uint32_t q = n.next;
  const bool merge_next = q != kNone && !nodes[q].used();
  // The merged block keeps a free neighbour's node (the previous one if both are free), so
  // that node's heap entry only moves up when its class does not change. Heap room is made
  // before the first change; when it cannot be, free_unindexed() takes over.
  if (p == kNone || nodes[p].used()) {
    if (!merge_next) {  // no free neighbour: the freed node becomes a free block
      const unsigned cls = block_class(a.size);
      if (!try_reserve_heap(cls)) [[unlikely]] return free_unindexed(id);
      used_bytes_ -= a.size;
      --allocation_count_;
      heap_push(id, a.size, cls, nodes);
      return;
    }
    // Only the next block is free: it grows downwards over the freed range.
    Node& k = nodes[q];
    const unsigned old_cls = block_class(k.size);
    const std::uint64_t size = k.size + a.size;
    const unsigned cls = block_class(size);
    if (cls != old_cls && !try_reserve_heap(cls)) [[unlikely]] return free_unindexed(id);
    used_bytes_ -= a.size;
    --allocation_count_;
    k.offset = a.offset;
    k.prev = p;
    if (p != kNone) {
      nodes[p].next = q;
    } else {
      head_ = q;
    }
    k.size = size;
    release_node(id);
    heap_grow(q, old_cls, cls, size, nodes);
    return;
  }
  if (!merge_next) {
    // Only the previous block is free: it grows upwards over the freed range.
    Node& k = nodes[p];
    const unsigned old_cls = block_class(k.size);
    const std::uint64_t size = k.size + a.size;
    const unsigned cls = block_class(size);
    if (cls != old_cls && !try_reserve_heap(cls)) [[unlikely]] return free_unindexed(id);
    used_bytes_ -= a.size;
    --allocation_count_;
    k.next = q;
    if (q != kNone) nodes[q].prev = p;
    k.size = size;
    release_node(id);
    heap_grow(p, old_cls, cls, size, nodes);
    return;
  }
  free_between(a, id, p, q, nodes);
}

// free() when both neighbours are free, out of line: the rarer case, and a larger one.
[[gnu::noinline]] void OffsetAllocator::free_between(const Allocation& a, std::uint32_t id, std::uint32_t p, std::uint32_t q,
                                   NodeTable nodes) {
  // Both neighbours are free. The merged block stays in a neighbour's heap slot when it stays
  // in that neighbour's class (the previous one first), else the freed node is pushed anew.
  // This order of removals decides which of several equal-size blocks heads a heap later,
  // so it is kept as it is: the benchmark's utilization figures depend on it.
  Node& pn = nodes[p];
  Node& qn = nodes[q];
  const unsigned prev_cls = block_class(pn.size);
  const unsigned next_cls = block_class(qn.size);
  const std::uint64_t begin = pn.offset;
  const std::uint64_t size = pn.size + a.size + qn.size;
  const unsigned cls = block_class(size);
  std::uint32_t keep = id;
  if (cls == prev_cls) {
    keep = p;
  } else if (cls == next_cls) {
    keep = q;
  } else if (!try_reserve_heap(cls)) {
    return free_unindexed(id);
  }
  used_bytes_ -= a.size;
  --allocation_count_;
  const std::uint32_t outer_prev = pn.prev;
  const std::uint32_t outer_next = qn.next;
  if (keep != p) heap_remove(p, prev_cls, nodes);
  if (keep != q) heap_remove(q, next_cls, nodes);
  Node& k = nodes[keep];
  k.prev = outer_prev;
  k.next = outer_next;
  if (outer_prev != kNone) {
    nodes[outer_prev].next = keep;
  } else {
    head_ = keep;
  }
  if (outer_next != kNone) nodes[outer_next].prev = keep;
  k.offset = begin;
  k.size = size;
  if (keep != id) release_node(id);
  if (keep != p) release_node(p);
  if (keep != q) release_node(q);
  if (keep == id) {
    heap_push(id, size, cls, nodes);
  } else {
    heap_raise(heaps_[cls].data(), k.heap_slot, size, keep, nodes);  // the key only grew
  }
}

// free() when a class heap cannot grow (std::bad_alloc): allocation `id` becomes a free block,
// merged with its free neighbours, that is in no heap (heap_slot kUnindexed). Nothing here
// allocates. It counts as free at once; try_reindex() puts it into its heap later.
void OffsetAllocator::free_unindexed(std::uint32_t id) noexcept {
  NodeTable nodes = nodes_.table();
  Node& n = nodes[id];
  used_bytes_ -= n.size;
  --allocation_count_;
  auto unlist = [&](std::uint32_t k) {  // a free neighbour leaves its heap (or the unindexed count)
    if (nodes[k].heap_slot == kUnindexed) {
      --unindexed_;
    } else {
      heap_remove(k, block_class(nodes[k].size), nodes);
    }
  };
  const std::uint32_t p = n.prev;
  if (p != kNone && !nodes[p].used()) {
    unlist(p);
    n.offset = nodes[p].offset;
    n.size += nodes[p].size;
    n.prev = nodes[p].prev;
    if (n.prev != kNone) {
      nodes[n.prev].next = id;
    } else {
      head_ = id;
    }
    release_node(p);
  }
  const std::uint32_t q = n.next;
  if (q != kNone && !nodes[q].used()) {
    unlist(q);
    n.size += nodes[q].size;
    n.next = nodes[q].next;
    if (n.next != kNone) nodes[n.next].prev = id;
    release_node(q);
  }
  n.heap_slot = kUnindexed;
  ++unindexed_;
}

// Puts the blocks free_unindexed() left out into their heaps: one walk over the regions, run
// only after a std::bad_alloc. False (progress kept) if a heap still cannot grow.
bool OffsetAllocator::try_reindex() noexcept {
  NodeTable nodes = nodes_.table();
  for (std::uint32_t n = head_; n != kNone && unindexed_ != 0; n = nodes[n].next) {
    if (nodes[n].heap_slot != kUnindexed) continue;
    const unsigned cls = block_class(nodes[n].size);
    if (!try_reserve_heap(cls)) return false;
    heap_push(n, nodes[n].size, cls, nodes);
    --unindexed_;
  }
  return true;
}

// ---- queries ------------------------------------------------------------------------------

std::uint64_t OffsetAllocator::largest_free() const noexcept {
  if (word_bits_ == 0) return 0;
  const unsigned w = 63u - static_cast<unsigned>(std::countl_zero(word_bits_));
  const unsigned c = (w << 6) + 63u - static_cast<unsigned>(std::countl_zero(class_bits_[w]));
  return heaps_[c].front().size;
}

std::uint64_t OffsetAllocator::normalized_size(std::uint64_t size) const noexcept {
  return options_.policy == Policy::kRoundUpToBin ? detail::mooncake_bin_round_up(size) : size;
}

OffsetAllocator::StorageReport OffsetAllocator::storage_report() const noexcept {
  StorageReport r;
  r.capacity = capacity_;
  r.used_bytes = used_bytes_;
  r.free_bytes = capacity_ - used_bytes_;
  r.largest_free = largest_free();
  r.allocations = allocation_count_;
  r.free_blocks = free_blocks();
  r.failed_allocations = failed_allocations_;
  r.unindexed_blocks = unindexed_;
  const std::uint64_t regions = allocation_count_ + r.free_blocks;
  r.metadata_bytes_used = regions * sizeof(Node) + r.free_blocks * sizeof(HeapEntry) + sizeof(*this);
  r.metadata_bytes_held =
      nodes_.bytes_held() + heaps_.capacity() * sizeof(ClassHeap) + heap_arena_.bytes_held() + sizeof(*this);
  return r;
}

void OffsetAllocator::for_each_allocation(const std::function<void(const Allocation&)>& fn) const {
  for (std::uint32_t n = head_; n != kNone; n = nodes_[n].next) {
    const Node& node = nodes_[n];
    if (node.used()) fn(Allocation{node.offset, node.size, n, node.generation, id_});
  }
}

bool OffsetAllocator::validate() const {
  if (capacity_ == 0) {  // moved-from
    return nodes_.empty() && head_ == kNone && unused_count_ == 0 && unindexed_ == 0 && used_bytes_ == 0 &&
           allocation_count_ == 0 && word_bits_ == 0;
  }
  if (head_ >= nodes_.size() || heaps_.size() != block_class(capacity_) + 1) return false;
  std::vector<bool> seen(nodes_.size(), false);
  std::uint64_t expect = 0;
  std::uint64_t used = 0;
  std::uint64_t count = 0;
  std::uint64_t free_count = 0;
  std::uint64_t unindexed = 0;
  std::uint32_t prev = kNone;
  bool prev_free = false;
  for (std::uint32_t n = head_; n != kNone;) {
    if (n >= nodes_.size() || seen[n]) return false;  // out of range or a cycle
    seen[n] = true;
    const Node& node = nodes_[n];
    if (node.prev != prev || node.offset != expect || node.size == 0) return false;
    if (node.size > capacity_ - expect) return false;
    expect += node.size;
    if (node.used()) {
      used += node.size;
      ++count;
      prev_free = false;
    } else {
      if (prev_free) return false;  // two free neighbours were not merged
      const unsigned c = block_class(node.size);
      if (c >= heaps_.size()) return false;
      const auto& h = heaps_[c];
      if (node.heap_slot == kUnindexed) {
        ++unindexed;
      } else if (node.heap_slot >= h.size() || h[node.heap_slot].node != n ||
                 h[node.heap_slot].size != node.size) {
        return false;
      }
      ++free_count;
      prev_free = true;
    }
    prev = n;
    n = node.next;
  }
  if (expect != capacity_) return false;
  if (used != used_bytes_ || count != allocation_count_ || unindexed != unindexed_) return false;
  std::uint64_t regions = count + free_count;
  std::uint64_t unused = 0;
  for (std::uint32_t f = unused_head_; f != kNone; f = nodes_[f].next) {
    if (f >= nodes_.size() || seen[f] || nodes_[f].heap_slot != kNone) return false;  // also a cycle
    seen[f] = true;
    ++unused;
  }
  if (unused != unused_count_ || regions + unused != nodes_.size()) return false;
  if (nodes_.size() > nodes_.capacity()) return false;
  std::uint64_t entries = 0;
  std::uint64_t words = 0;
  std::uint64_t expect_bits[kClassWords] = {};
  std::uint64_t heap_capacity = 0;  // every entry held is in one class heap's buffer or free
  for (unsigned c = 0; c < heaps_.size(); ++c) {
    const auto& h = heaps_[c];
    if (h.capacity() != 0 && (!std::has_single_bit(h.capacity()) || h.capacity() < (1u << kMinHeapShift))) return false;
    heap_capacity += h.capacity();
    if (h.empty()) continue;
    expect_bits[c >> 6] |= std::uint64_t{1} << (c & 63);
    words |= std::uint64_t{1} << (c >> 6);
    entries += h.size();
    for (std::size_t i = 0; i < h.size(); ++i) {
      if (h[i].node >= nodes_.size()) return false;
      const Node& node = nodes_[h[i].node];
      if (node.used() || node.heap_slot != i || block_class(node.size) != c) return false;
      if (i > 0 && h[(i - 1) / 2].size < h[i].size) return false;
    }
  }
  if (heap_capacity + heap_arena_.free_entries() != heap_arena_.held_entries()) return false;
  return words == word_bits_ && entries + unindexed == free_count &&
         std::memcmp(expect_bits, class_bits_, sizeof(class_bits_)) == 0;
}

// ---- serialization ------------------------------------------------------------------------
//
// Layout (little-endian): magic[8] "KVMOFFA1", u32 version, u8 policy, u8 placement, 2 zero bytes,
// u64 capacity, u64 high_end_threshold, u32 reserve_regions, u32 zero, u64 count,
// count x {u64 offset, u64 size} in address order, u64 FNV-1a-64 of everything before it.

std::vector<std::byte> OffsetAllocator::serialize() const {
  std::vector<std::byte> out;
  out.reserve(kHeaderBytes + kTrailerBytes + allocation_count_ * kRangeBytes);
  for (const char ch : kMagic) out.push_back(static_cast<std::byte>(ch));
  put_u32(out, kFormatVersion);
  out.push_back(static_cast<std::byte>(options_.policy));
  out.push_back(static_cast<std::byte>(options_.placement));
  for (int i = 0; i < 2; ++i) out.push_back(std::byte{0});
  put_u64(out, capacity_);
  put_u64(out, options_.high_end_threshold);
  put_u32(out, options_.reserve_regions);
  put_u32(out, 0);
  put_u64(out, allocation_count_);
  for (std::uint32_t n = head_; n != kNone; n = nodes_[n].next) {
    if (!nodes_[n].used()) continue;
    put_u64(out, nodes_[n].offset);
    put_u64(out, nodes_[n].size);
  }
  put_u64(out, fnv1a64(out.data(), out.size()));
  return out;
}

OffsetAllocator OffsetAllocator::deserialize(std::span<const std::byte> bytes) {
  auto fail = [](const std::string& why) -> FormatError {
    return FormatError("OffsetAllocator::deserialize: " + why);
  };
  if (bytes.size() < kHeaderBytes + kTrailerBytes) throw fail("truncated (" + std::to_string(bytes.size()) + " bytes)");
  const std::byte* p = bytes.data();
  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) throw fail("bad magic");
  const std::uint32_t version = load_u32(p + 8);
  if (version != kFormatVersion) throw fail("unsupported version " + std::to_string(version));
  const std::size_t body = bytes.size() - kTrailerBytes;
  if (load_u64(p + body) != fnv1a64(p, body)) throw fail("checksum mismatch");
  const auto policy = static_cast<std::uint8_t>(p[12]);
  if (policy > static_cast<std::uint8_t>(Policy::kRoundUpToBin)) throw fail("unknown policy");
  const auto placement = static_cast<std::uint8_t>(p[13]);
  if (placement > static_cast<std::uint8_t>(Placement::kSizeSplit)) throw fail("unknown placement");
  if (p[14] != std::byte{0} || p[15] != std::byte{0} || load_u32(p + 36) != 0) {
    throw fail("reserved bytes are not zero");
  }
  const std::uint64_t capacity = load_u64(p + 16);
  if (capacity == 0 || capacity > kMaxCapacity) throw fail("capacity out of range");
  Options options;
  options.policy = static_cast<Policy>(policy);
  options.placement = static_cast<Placement>(placement);
  options.high_end_threshold = load_u64(p + 24);
  options.reserve_regions = load_u32(p + 32);
  const std::uint64_t count = load_u64(p + 40);
  const std::size_t payload = body - kHeaderBytes;
  if (payload % kRangeBytes != 0 || count != payload / kRangeBytes) throw fail("range count does not match length");
  if (count > (kNone - 2) / 2) throw fail("more ranges than 32-bit node indices can hold");

  // Check every range before building anything.
  std::uint64_t end = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::byte* r = p + kHeaderBytes + i * kRangeBytes;
    const std::uint64_t offset = load_u64(r);
    const std::uint64_t size = load_u64(r + 8);
    if (size == 0 || size > capacity || offset > capacity - size) throw fail("range out of bounds");
    if (offset < end) throw fail("ranges overlap or are out of order");
    end = offset + size;
  }

  options.reserve_regions = 0;  // a hint only; do not let bytes force a huge reservation
  OffsetAllocator a(capacity, options);
  a.options_.reserve_regions = load_u32(p + 32);
  a.nodes_.clear();
  a.unused_head_ = kNone;
  a.unused_count_ = 0;
  for (auto& h : a.heaps_) h.clear();
  std::memset(a.class_bits_, 0, sizeof(a.class_bits_));
  a.word_bits_ = 0;
  const std::size_t regions = static_cast<std::size_t>(2 * count + 1);
  a.nodes_.reserve(regions);
  std::uint32_t last = kNone;
  auto append = [&a, &last](std::uint64_t offset, std::uint64_t size, bool used) {
    const std::uint32_t n = a.nodes_.push();
    Node& node = a.nodes_[n];
    node.offset = offset;
    node.size = size;
    node.prev = last;
    if (last != kNone) {
      a.nodes_[last].next = n;
    } else {
      a.head_ = n;
    }
    last = n;
    if (used) {
      node.heap_slot = kUsedSlot;
      node.generation = 1;
      a.used_bytes_ += size;
      ++a.allocation_count_;
    } else {
      a.reserve_heap(block_class(size));
      a.heap_push(n, size, block_class(size), a.nodes_.table());
    }
  };
  end = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::byte* r = p + kHeaderBytes + i * kRangeBytes;
    const std::uint64_t offset = load_u64(r);
    const std::uint64_t size = load_u64(r + 8);
    if (offset > end) append(end, offset - end, false);
    append(offset, size, true);
    end = offset + size;
  }
  if (end < capacity) append(end, capacity - end, false);
  if (!a.validate()) throw fail("state does not validate");  // defensive: the checks above imply it
  return a;
}

}  // namespace kvmem
