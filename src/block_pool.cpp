#include "kvmem/block_pool.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

namespace kvmem {

namespace {

std::size_t page_size() noexcept {
  static const std::size_t size = [] {
    const long v = ::sysconf(_SC_PAGESIZE);
    return v > 0 ? static_cast<std::size_t>(v) : std::size_t{4096};
  }();
  return size;
}

std::size_t round_up(std::size_t v, std::size_t multiple) { return (v + multiple - 1) / multiple * multiple; }

class OsPageResource final : public std::pmr::memory_resource {
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    const std::size_t page = page_size();
    const std::size_t size = round_up(std::max<std::size_t>(bytes, 1), page);
    // Recent kernels place anonymous mappings of >= 2 MiB on huge-page boundaries, so such a
    // plain mapping is often aligned already: one system call instead of three.
    if (alignment <= page || size >= (std::size_t{1} << 21)) {
      void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      if ((reinterpret_cast<std::uintptr_t>(p) & (alignment - 1)) == 0) return p;
      ::munmap(p, size);
    }
    // Over-map by the alignment and trim both ends: only the aligned middle stays mapped.
    const std::size_t span = size + alignment;
    void* raw = ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto start = reinterpret_cast<std::uintptr_t>(raw);
    const std::uintptr_t aligned = (start + alignment - 1) & ~(std::uintptr_t{alignment} - 1);
    const std::size_t head = aligned - start;
    const std::size_t tail = span - head - size;
    if (head != 0) ::munmap(raw, head);
    if (tail != 0) ::munmap(reinterpret_cast<void*>(aligned + size), tail);
    return reinterpret_cast<void*>(aligned);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t /*alignment*/) override {
    ::munmap(p, round_up(std::max<std::size_t>(bytes, 1), page_size()));
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

constexpr std::size_t kHugePage = std::size_t{1} << 21;
constexpr std::size_t kMaxChunkBytes = std::size_t{1} << 32;

std::uint64_t mix(std::uintptr_t key) noexcept { return static_cast<std::uint64_t>(key) * 0x9E3779B97F4A7C15ull; }

}  // namespace

std::pmr::memory_resource* os_page_resource() noexcept {
  static OsPageResource resource;
  return &resource;
}

FixedBlockPool::FixedBlockPool(std::size_t block_size, std::size_t alignment, Options options)
    : checks_(options.detect_misuse),
      block_size_(block_size),
      alignment_(alignment),
      upstream_(options.upstream != nullptr ? options.upstream : os_page_resource()),
      options_(options) {
  if (block_size == 0) throw std::invalid_argument("FixedBlockPool: block_size must be >= 1");
  if (alignment == 0 || !std::has_single_bit(alignment))
    throw std::invalid_argument("FixedBlockPool: alignment must be a power of two, got " +
                                std::to_string(alignment));
  if (alignment > (std::size_t{1} << 30))
    throw std::invalid_argument("FixedBlockPool: alignment must be <= 1 GiB");
  if (block_size > (std::size_t{1} << 31))
    throw std::invalid_argument("FixedBlockPool: block_size must be <= 2 GiB, got " + std::to_string(block_size));
  if (options.chunk_bytes > kMaxChunkBytes)
    throw std::invalid_argument("FixedBlockPool: Options::chunk_bytes must be <= 4 GiB");
  stride_ = round_up(block_size, alignment);
  std::size_t chunk = std::max({options.chunk_bytes, stride_, page_size()});
  if (options.huge_pages) chunk = std::max(chunk, kHugePage);
  chunk = std::bit_ceil(chunk);
  if (chunk > kMaxChunkBytes)
    throw std::invalid_argument("FixedBlockPool: block stride too large for a 4 GiB chunk");
  chunk_bytes_ = chunk;
  chunk_shift_ = static_cast<unsigned>(std::countr_zero(chunk));
  blocks_per_chunk_ = chunk / stride_;
  stride_tz_ = std::countr_zero(stride_);
  const std::uint64_t odd = stride_ >> stride_tz_;
  std::uint64_t inv = odd;  // Newton's iteration doubles the correct low bits: 3 -> 6 -> ... -> 96
  for (int i = 0; i < 5; ++i) inv *= 2 - odd * inv;
  stride_inverse_ = inv;
  exact_limit_ = std::numeric_limits<std::uint64_t>::max() / stride_;
  if (std::has_single_bit(stride_)) {
    stride_shift_ = std::countr_zero(stride_);
  } else {
    stride_reciprocal_ = std::numeric_limits<std::uint64_t>::max() / stride_ + 1;
  }
  if (options.release_watermark_bytes != std::numeric_limits<std::size_t>::max())
    auto_release_at_ = options.release_watermark_bytes / stride_;
  slots_.resize(16);
}

FixedBlockPool::~FixedBlockPool() {
  for (auto& c : chunks_) upstream_->deallocate(c.base, chunk_bytes_, chunk_bytes_);
  if (free_ != nullptr) os_page_resource()->deallocate(free_, free_capacity_ * sizeof(void*), alignof(void*));
}

void FixedBlockPool::reserve_free_stack(std::size_t capacity) {
  if (capacity <= free_capacity_) return;
  const std::size_t target = std::max(capacity, free_capacity_ * 2);
  // Mapped pages: untouched (not resident) until blocks are actually freed into them, and
  // trim_free_stack() can hand the unused tail back to the OS.
  auto* bigger = static_cast<void**>(os_page_resource()->allocate(target * sizeof(void*), alignof(void*)));
  if (free_size_ != 0) std::memcpy(bigger, free_, free_size_ * sizeof(void*));
  if (free_ != nullptr) os_page_resource()->deallocate(free_, free_capacity_ * sizeof(void*), alignof(void*));
  free_ = bigger;
  free_capacity_ = target;
}

void FixedBlockPool::trim_free_stack() noexcept {
  // Pages of the stack wholly above its top hold nothing: drop them (they read back as zero
  // and cost nothing until the stack grows into them again).
  const std::size_t page = page_size();
  const auto begin = reinterpret_cast<std::uintptr_t>(free_ + free_size_);
  const auto end = reinterpret_cast<std::uintptr_t>(free_ + free_capacity_);
  const std::uintptr_t first = (begin + page - 1) & ~(std::uintptr_t{page} - 1);
  if (first < end) ::madvise(reinterpret_cast<void*>(first), end - first, MADV_DONTNEED);
}

void* FixedBlockPool::allocate_from_new_chunk() {
  if (options_.max_bytes != 0 && (chunks_.size() + 1) * chunk_bytes_ > options_.max_bytes) {
    ++failed_allocations_;
    return nullptr;
  }
  std::byte* base = nullptr;
  try {
    // Everything that can throw happens before the pool's state changes.
    reserve_free_stack((chunks_.size() + 1) * blocks_per_chunk_);
    chunks_.reserve(chunks_.size() + 1);
    std::unique_ptr<std::uint64_t[]> live;
    if (checks_) live = std::make_unique<std::uint64_t[]>(blocks_per_chunk_ / 64 + 1);  // + spare bit
    base = static_cast<std::byte*>(upstream_->allocate(chunk_bytes_, chunk_bytes_));
    if ((reinterpret_cast<std::uintptr_t>(base) & (chunk_bytes_ - 1)) != 0) {
      upstream_->deallocate(base, chunk_bytes_, chunk_bytes_);
      throw std::invalid_argument("FixedBlockPool: upstream ignored the chunk alignment");
    }
    if (options_.huge_pages) ::madvise(base, chunk_bytes_, MADV_HUGEPAGE);
    Chunk c;
    c.base = base;
    c.live = std::move(live);
    chunks_.push_back(std::move(c));
    try {
      rebuild_chunk_table();
    } catch (...) {
      chunks_.pop_back();
      upstream_->deallocate(base, chunk_bytes_, chunk_bytes_);
      throw;
    }
  } catch (const std::bad_alloc&) {
    ++failed_allocations_;
    return nullptr;
  }
  ++chunks_allocated_;
  current_ = chunks_.size() - 1;
  bump_ = base;
  bump_end_ = base + blocks_per_chunk_ * stride_;
  std::byte* p = bump_;
  bump_ += stride_;
  ++chunks_[current_].carved;
  ++carved_total_;
  if (checks_) mark_allocated(p);
  return p;
}

void FixedBlockPool::rebuild_chunk_table() {
  // Build everything first, commit with non-throwing moves: on bad_alloc nothing changed.
  std::size_t cap = 16;
  while (cap < chunks_.size() * 2) cap *= 2;
  std::vector<Slot> slots(cap);
  const unsigned shift = 64u - static_cast<unsigned>(std::countr_zero(cap));
  for (std::size_t i = 0; i < chunks_.size(); ++i) {
    const std::uintptr_t key = reinterpret_cast<std::uintptr_t>(chunks_[i].base) >> chunk_shift_;
    std::size_t s = static_cast<std::size_t>(mix(key) >> shift);
    while (slots[s].key != 0) s = (s + 1) & (cap - 1);
    slots[s].key = key;
    slots[s].chunk = static_cast<std::uint32_t>(i);
  }
  // Dense index when the keys are compact (at most 4 entries per chunk, or 64).
  std::vector<std::uint64_t*> dense;
  std::uintptr_t lo = std::numeric_limits<std::uintptr_t>::max(), hi = 0;
  if (checks_ && !chunks_.empty()) {
    for (const auto& c : chunks_) {
      const std::uintptr_t key = reinterpret_cast<std::uintptr_t>(c.base) >> chunk_shift_;
      lo = std::min(lo, key);
      hi = std::max(hi, key);
    }
    const std::size_t span = static_cast<std::size_t>(hi - lo) + 1;
    if (span <= std::max<std::size_t>(64, 4 * chunks_.size())) {
      dense.assign(span, nullptr);
      for (const auto& c : chunks_) dense[(reinterpret_cast<std::uintptr_t>(c.base) >> chunk_shift_) - lo] = c.live.get();
    }
  }
  slots_ = std::move(slots);
  dense_storage_ = std::move(dense);
  dense_ = dense_storage_.data();
  dense_size_ = dense_storage_.size();
  dense_lo_ = dense_size_ != 0 ? lo : 0;
  cache_ = ChunkCache{};
}

bool FixedBlockPool::load_cache(std::uintptr_t key) const noexcept {
  const std::uint32_t c = find_chunk_slow(key);
  if (c == kNoChunk) return false;
  cache_.key = key;
  cache_.base = chunks_[c].base;
  cache_.live = chunks_[c].live.get();
  return true;
}

void FixedBlockPool::throw_foreign() {
  throw UsageError("FixedBlockPool::deallocate_block: pointer not from this pool");
}
void FixedBlockPool::throw_interior() {
  throw UsageError("FixedBlockPool::deallocate_block: pointer is not the start of a block");
}
void FixedBlockPool::throw_not_live() {
  throw UsageError("FixedBlockPool::deallocate_block: block is not live (double free, or never handed out)");
}

std::uint32_t FixedBlockPool::find_chunk_slow(std::uintptr_t key) const noexcept {
  const std::size_t cap = slots_.size();
  const unsigned shift = 64u - static_cast<unsigned>(std::countr_zero(cap));
  std::size_t s = static_cast<std::size_t>(mix(key) >> shift);
  for (;;) {
    const Slot& slot = slots_[s];
    if (slot.key == key) return slot.chunk;
    if (slot.key == 0) return kNoChunk;
    s = (s + 1) & (cap - 1);
  }
}

void FixedBlockPool::maybe_auto_release() {
  release_empty_chunks();
  // Amortize: the next pass waits for at least one more chunk's worth of frees.
  const std::size_t watermark_blocks = options_.release_watermark_bytes / stride_;
  auto_release_at_ = std::max(watermark_blocks, free_size_ + blocks_per_chunk_);
}

std::size_t FixedBlockPool::release_empty_chunks() {
  if (chunks_.empty()) return 0;
  if (hot_ != nullptr) {
    *hot_word_ &= ~hot_bit_;
    free_[free_size_++] = hot_;
    hot_ = nullptr;
  }
  parked_ = nullptr;  // its chunk's bitmap may be about to go
  hot_word_ = nullptr;
  hot_bit_ = 0;
  std::vector<std::size_t> free_in(chunks_.size(), 0);
  for (std::size_t i = 0; i < free_size_; ++i) ++free_in[find_chunk(free_[i])];
  std::vector<char> empty(chunks_.size(), 0);
  std::size_t n_empty = 0;
  for (std::size_t i = 0; i < chunks_.size(); ++i) {
    if (free_in[i] == chunks_[i].carved) {
      empty[i] = 1;
      ++n_empty;
    }
  }
  if (n_empty == 0) return 0;
  // Drop the free-stack entries of empty chunks (order of the rest is kept).
  std::size_t out = 0;
  for (std::size_t i = 0; i < free_size_; ++i)
    if (!empty[find_chunk(free_[i])]) free_[out++] = free_[i];
  free_size_ = out;
  const bool current_released = bump_ != nullptr && empty[current_];
  std::vector<Chunk> kept;
  kept.reserve(chunks_.size() - n_empty);
  std::size_t new_current = 0;
  for (std::size_t i = 0; i < chunks_.size(); ++i) {
    if (empty[i]) {
      carved_total_ -= chunks_[i].carved;
      upstream_->deallocate(chunks_[i].base, chunk_bytes_, chunk_bytes_);
      ++chunks_released_;
    } else {
      if (bump_ != nullptr && i == current_) new_current = kept.size();
      kept.push_back(std::move(chunks_[i]));
    }
  }
  chunks_ = std::move(kept);
  if (current_released || bump_ == nullptr) {
    bump_ = bump_end_ = nullptr;
    current_ = 0;
  } else {
    current_ = new_current;
  }
  rebuild_chunk_table();
  trim_free_stack();
  return n_empty;
}

bool FixedBlockPool::owns(const void* p) const noexcept {
  const std::uint32_t c = find_chunk(p);
  if (c == kNoChunk) return false;
  const Chunk& chunk = chunks_[c];
  const std::size_t offset = static_cast<std::size_t>(static_cast<const std::byte*>(p) - chunk.base);
  const std::size_t idx = block_index(offset);
  return idx * stride_ == offset && idx < chunk.carved;
}

FixedBlockPool::Stats FixedBlockPool::stats() const noexcept {
  Stats s;
  s.blocks_in_use = blocks_in_use();
  s.blocks_free = free_size_ + (hot_ != nullptr ? 1 : 0);
  s.blocks_held = chunks_.size() * blocks_per_chunk_;
  s.bytes_held = chunks_.size() * chunk_bytes_;
  s.chunks = chunks_.size();
  s.chunks_allocated = chunks_allocated_;
  s.chunks_released = chunks_released_;
  s.failed_allocations = failed_allocations_;
  return s;
}

void* FixedBlockPool::do_allocate(std::size_t bytes, std::size_t alignment) {
  if (bytes != block_size_ || alignment != alignment_) throw std::bad_alloc();
  void* p = allocate_block();
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void FixedBlockPool::do_deallocate(void* p, std::size_t bytes, std::size_t alignment) {
  if (bytes != block_size_ || alignment != alignment_)
    throw UsageError("FixedBlockPool::deallocate: size/alignment differ from the pool's block (" +
                     std::to_string(block_size_) + ", " + std::to_string(alignment_) + ")");
  deallocate_block(p);
}

bool FixedBlockPool::validate() const {
  std::size_t carved = 0;
  for (std::size_t i = 0; i < chunks_.size(); ++i) {
    const Chunk& c = chunks_[i];
    if (c.base == nullptr || (reinterpret_cast<std::uintptr_t>(c.base) & (chunk_bytes_ - 1)) != 0) return false;
    if (c.carved > blocks_per_chunk_) return false;
    if (checks_ && c.live == nullptr) return false;
    // Only the chunk being carved may be partially carved... unless chunks were released
    // around it; the invariant that matters is that the bump pointer matches `carved`.
    if (bump_ != nullptr && i == current_) {
      if (bump_ != c.base + c.carved * stride_) return false;
      if (bump_end_ != c.base + blocks_per_chunk_ * stride_) return false;
    } else if (c.carved != blocks_per_chunk_) {
      return false;
    }
    if (find_chunk_slow(reinterpret_cast<std::uintptr_t>(c.base) >> chunk_shift_) != i) return false;
    carved += c.carved;
  }
  if (bump_ == nullptr && bump_end_ != nullptr) return false;
  if (bump_ != nullptr && current_ >= chunks_.size()) return false;
  if (carved != carved_total_) return false;
  if (free_size_ + (hot_ != nullptr ? 1 : 0) > carved_total_ || free_size_ > free_capacity_) return false;
  if (hot_ != nullptr && !checks_) return false;
  if (free_capacity_ < chunks_.size() * blocks_per_chunk_) return false;  // dealloc never grows
  // Free stack: each entry is a carved block start, no duplicates, marked free.
  std::vector<std::vector<std::uint64_t>> seen(chunks_.size());
  for (std::size_t i = 0; i < chunks_.size(); ++i) seen[i].assign((blocks_per_chunk_ + 63) / 64, 0);
  std::vector<std::size_t> free_in(chunks_.size(), 0);
  for (std::size_t i = 0; i < free_size_; ++i) {
    const std::uint32_t c = find_chunk_slow(reinterpret_cast<std::uintptr_t>(free_[i]) >> chunk_shift_);
    if (c == kNoChunk) return false;
    const Chunk& chunk = chunks_[c];
    const std::size_t offset = static_cast<std::size_t>(static_cast<std::byte*>(free_[i]) - chunk.base);
    const std::size_t idx = block_index(offset);
    if (idx * stride_ != offset || idx >= chunk.carved) return false;
    const std::uint64_t bit = std::uint64_t{1} << (idx & 63);
    if (seen[c][idx >> 6] & bit) return false;
    seen[c][idx >> 6] |= bit;
    if (checks_ && (chunk.live[idx >> 6] & bit)) return false;
    ++free_in[c];
  }
  if (hot_ != nullptr && hot_ != parked_) return false;
  if (parked_ != nullptr) {
    // The parked block's cached bit location must be its real one.
    const std::uint32_t c = find_chunk_slow(reinterpret_cast<std::uintptr_t>(parked_) >> chunk_shift_);
    if (c == kNoChunk) return false;
    const std::size_t offset = static_cast<std::size_t>(static_cast<std::byte*>(parked_) - chunks_[c].base);
    const std::size_t idx = block_index(offset);
    if (idx * stride_ != offset || idx >= chunks_[c].carved) return false;
    if (hot_word_ != &chunks_[c].live[idx >> 6] || hot_bit_ != (std::uint64_t{1} << (idx & 63))) return false;
  }
  if (hot_ != nullptr) {
    // The hot block: a carved block start, not on the stack, its live bit still set.
    const std::uint32_t hot_chunk = find_chunk_slow(reinterpret_cast<std::uintptr_t>(hot_) >> chunk_shift_);
    if (hot_chunk == kNoChunk) return false;
    const Chunk& chunk = chunks_[hot_chunk];
    const std::size_t offset = static_cast<std::size_t>(static_cast<std::byte*>(hot_) - chunk.base);
    const std::size_t idx = block_index(offset);
    if (idx * stride_ != offset || idx >= chunk.carved) return false;
    const std::uint64_t bit = std::uint64_t{1} << (idx & 63);
    if (seen[hot_chunk][idx >> 6] & bit) return false;
    if (!(chunk.live[idx >> 6] & bit) || hot_word_ != &chunk.live[idx >> 6] || hot_bit_ != bit) return false;
  }
  if (checks_) {
    for (std::size_t i = 0; i < chunks_.size(); ++i) {
      std::size_t live = 0;
      const std::size_t words = blocks_per_chunk_ / 64 + 1;
      for (std::size_t w = 0; w < words; ++w) live += static_cast<std::size_t>(std::popcount(chunks_[i].live[w]));
      // The hot block is free but keeps its live bit, so it is counted once, among the live.
      if (live + free_in[i] != chunks_[i].carved) return false;
    }
  }
  return true;
}

}  // namespace kvmem
