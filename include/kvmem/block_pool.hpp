#pragma once
// kvmem::FixedBlockPool: a std::pmr::memory_resource that hands out blocks of one size.
//
// WHAT IT MANAGES
//   Blocks of exactly `block_size` bytes (any size >= 1) at a power-of-two `alignment`
//   (1 .. 1 GiB, cache-line and page alignment included), carved from chunks obtained from an
//   upstream std::pmr::memory_resource (default: os_page_resource(), mmap/munmap). One pool is
//   meant to live inside one shard of a table whose rows all have the same size (FBGEMM's
//   DRAM embedding cache, PR #4154), so it has no size classes and no locking of its own.
//
// DESIGN (why it looks like this)
//   - Free blocks are kept as pointers in a separate, contiguous LIFO stack, never threaded
//     through the blocks. Popping a block therefore reads only the hot top of the stack, not
//     the freed block's cold memory: refill after a random eviction costs a stack read, not a
//     chain of dependent cache/TLB misses (FBGEMM's intrusive list: 190-330 ns/allocation
//     measured here). It also means blocks of 1..15 bytes work (nothing is stored in them),
//     and a freed row keeps its contents (key, header) intact until it is reused.
//   - Chunks are carved lazily with a bump pointer: no byte of a new chunk is written by the
//     pool, so pages become resident only when the caller touches a block it was handed.
//   - Every chunk is `chunk_bytes()` long (a power of two) and aligned to its own size, so the
//     chunk of any address is `address >> log2(chunk_bytes)`, resolved through a dense array
//     when the chunks lie close together (else a small open-addressing table behind a
//     one-chunk cache). This gives O(1) double-free, interior- and foreign-pointer detection
//     (one bit per block in a per-chunk bitmap; the block index and the "is a block start"
//     test come from one multiply by the stride's inverse) and lets release_empty_chunks()
//     find empty chunks without per-block headers.
//   - With the checks on, the last freed block is parked (its live bit kept, its bit location
//     cached) instead of pushed, so free-then-reuse of one block costs no bitmap or stack
//     traffic; the next free of another block retires it onto the stack.
//   - The free stack's capacity is reserved when a chunk is obtained, so deallocate_block()
//     never allocates and never fails for a valid block. It is mmap'd, and
//     release_empty_chunks() returns its unused pages too.
//
// COMPLEXITY
//   allocate_block / deallocate_block: O(1), no loops (measured here: 1.1 ns per hot
//   allocate+free pair, 2.9 ns under churn; docs/block_pool.md). A new chunk costs one
//   upstream call plus O(chunks) to rebuild the chunk index. release_empty_chunks():
//   O(free blocks + chunks). validate(): O(free blocks + chunks + blocks/64). stats(): O(1).
//
// WORST-CASE WASTE
//   Internal: stride - block_size per block, where stride = block_size rounded up to the
//   alignment. Per chunk: chunk_bytes mod stride bytes of address space at the chunk's end
//   (never touched, so never resident with an mmap upstream). Only the blocks handed out are
//   ever touched by the pool's users; untouched parts of the current chunk cost address
//   space, not memory. Metadata: 8 bytes of free-stack capacity per block held (mapped address
//   space; resident only as far as the stack has been filled), 1 bit per block of bitmap
//   when detect_misuse is on, ~50 bytes per chunk (heap).
//
// THREAD SAFETY
//   None. The pool is NOT internally synchronized: as in FBGEMM, the owner (a shard) must
//   serialize every call, e.g. by calling it only inside the shard's exclusive critical
//   section. const members may run concurrently with each other.
//
// FAILURE POLICY (kvmem/error.hpp)
//   - Exhaustion (Options::max_bytes reached, or the upstream throws std::bad_alloc):
//     allocate_block() returns nullptr and counts a failed allocation; the std::pmr
//     allocate() throws std::bad_alloc, as the standard requires.
//   - The std::pmr allocate() of any size or alignment other than the pool's throws
//     std::bad_alloc.
//   - Bad constructor arguments (size 0, alignment not a power of two, sizes beyond the
//     limits): std::invalid_argument.
//   - With Options::detect_misuse (the default) deallocate_block() of a pointer the pool did
//     not hand out, of an interior pointer, or of a block already free throws
//     kvmem::UsageError and leaves the pool unchanged. With detect_misuse = false those
//     checks are skipped (a precondition, as for free()) for owners that can prove every
//     pointer they free, such as kvmem::EmbeddingCache, which frees only rows it found in its
//     own table.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <memory_resource>
#include <vector>

#include "kvmem/error.hpp"

namespace kvmem {

// A memory_resource that maps fresh pages with mmap and returns them with munmap: what it
// hands out is zero-filled, untouched (not resident) and given back to the OS on
// deallocate. Alignments above the page size are honoured by over-mapping and trimming.
// Thread-safe. Throws std::bad_alloc when the kernel refuses.
std::pmr::memory_resource* os_page_resource() noexcept;

// Construction options of FixedBlockPool (a namespace-scope type so that `= {}` works as a
// default argument inside the class).
struct FixedBlockPoolOptions {
  // Bytes per chunk, rounded up to a power of two and to at least one block. Default 2 MiB,
  // one huge page. Must be <= 4 GiB.
  std::size_t chunk_bytes = std::size_t{1} << 21;
  // Where chunks come from; nullptr means os_page_resource(). Chunks are requested with
  // alignment == chunk_bytes (the chunk lookup relies on it).
  std::pmr::memory_resource* upstream = nullptr;
  // Round chunks up to whole 2 MiB huge pages and madvise(MADV_HUGEPAGE) them.
  bool huge_pages = false;
  // Upper bound on bytes held (chunks x chunk_bytes); 0 = unlimited. Reaching it is
  // exhaustion: allocate_block() returns nullptr.
  std::size_t max_bytes = 0;
  // When the bytes in free blocks exceed this, deallocate_block()
  // returns empty chunks to the upstream on its own (amortized: at most once per
  // chunk's worth of frees). SIZE_MAX = never (call release_empty_chunks() yourself).
  std::size_t release_watermark_bytes = std::numeric_limits<std::size_t>::max();
  // Detect double frees and foreign pointers (see FAILURE POLICY).
  bool detect_misuse = true;
};

class FixedBlockPool final : public std::pmr::memory_resource {
 public:
  using Options = FixedBlockPoolOptions;

  struct Stats {
    std::size_t blocks_in_use = 0;    // handed out and not yet returned
    std::size_t blocks_free = 0;      // on the free stack (carved, reusable)
    std::size_t blocks_held = 0;      // capacity of all chunks held, in blocks
    std::size_t bytes_held = 0;       // chunks x chunk_bytes (address space from upstream)
    std::size_t chunks = 0;
    std::size_t chunks_allocated = 0;  // lifetime upstream allocations
    std::size_t chunks_released = 0;   // lifetime upstream deallocations
    std::size_t failed_allocations = 0;
  };

  explicit FixedBlockPool(std::size_t block_size,
                          std::size_t alignment = alignof(std::max_align_t),
                          Options options = {});
  ~FixedBlockPool() override;  // returns every chunk to the upstream, live blocks included

  FixedBlockPool(const FixedBlockPool&) = delete;
  FixedBlockPool& operator=(const FixedBlockPool&) = delete;

  // Hot path. nullptr on exhaustion (see FAILURE POLICY). The block's contents are
  // unspecified: a reused block still holds what its previous owner wrote.
  void* allocate_block() {
    if (hot_ != nullptr) {  // the last block freed (misuse checks on): still marked live
      void* p = hot_;
      hot_ = nullptr;
      return p;
    }
    if (free_size_ != 0) {
      void* p = free_[--free_size_];
      if (checks_) mark_allocated(p);
      return p;
    }
    if (bump_ != bump_end_) {
      std::byte* p = bump_;
      bump_ += stride_;
      ++chunks_[current_].carved;
      ++carved_total_;
      if (checks_) mark_allocated(p);
      return p;
    }
    return allocate_from_new_chunk();
  }

  // Hot path. p must come from allocate_block()/allocate() of this pool (checked when
  // detect_misuse is on; kvmem::UsageError otherwise). nullptr is ignored.
  void deallocate_block(void* p) {
    if (p == nullptr) return;
    if (checks_) {
      // Validates p (throws before any state changes), then parks it as the "hot" block:
      // its live bit stays set until the next free retires it onto the stack, so an
      // allocate/free pair of the same block flips no bits and moves no stack entries.
      if (p == parked_) {
        // Freed again after its reuse: the bit's location is cached. hot_ is null here
        // unless p is still parked (a double free).
        if ((*hot_word_ & hot_bit_) == 0 || p == hot_) throw_not_live();
        hot_ = p;
        return;
      }
      std::uint64_t* word = nullptr;
      const std::uint64_t bit = check_live(p, word);
      if (hot_ != nullptr) retire_hot();
      hot_ = p;
      parked_ = p;
      hot_word_ = word;
      hot_bit_ = bit;
      return;
    }
    free_[free_size_++] = p;
    if (free_size_ > auto_release_at_) maybe_auto_release();
  }

  // Returns every chunk whose blocks are all free (or never carved) to the upstream.
  // Returns the number of chunks released.
  std::size_t release_empty_chunks();

  // True if p is the start of a block carved from one of this pool's chunks (live or free).
  bool owns(const void* p) const noexcept;

  Stats stats() const noexcept;
  std::size_t block_size() const noexcept { return block_size_; }
  std::size_t alignment() const noexcept { return alignment_; }
  std::size_t stride() const noexcept { return stride_; }  // distance between blocks
  std::size_t chunk_bytes() const noexcept { return chunk_bytes_; }
  std::size_t blocks_per_chunk() const noexcept { return blocks_per_chunk_; }
  std::size_t blocks_in_use() const noexcept { return carved_total_ - free_size_ - (hot_ != nullptr ? 1 : 0); }
  std::pmr::memory_resource* upstream() const noexcept { return upstream_; }
  const Options& options() const noexcept { return options_; }

  // Walks every invariant: chunk table, counters, free stack (in range, block-aligned,
  // no duplicates, marked free in the bitmap), bitmap counts. False on the first violation.
  bool validate() const;

 private:
  struct Chunk {
    std::byte* base = nullptr;
    std::size_t carved = 0;                // blocks handed out at least once (bump prefix)
    std::unique_ptr<std::uint64_t[]> live;  // 1 bit per block, when detect_misuse
  };
  struct Slot {
    std::uintptr_t key = 0;  // address >> chunk_shift_; 0 = empty (no chunk maps page 0)
    std::uint32_t chunk = 0;
  };
  static constexpr std::uint32_t kNoChunk = std::numeric_limits<std::uint32_t>::max();

  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override;
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

  void* allocate_from_new_chunk();
  void maybe_auto_release();
  void rebuild_chunk_table();
  void reserve_free_stack(std::size_t capacity);
  void trim_free_stack() noexcept;

  // Index of the chunk containing p, or kNoChunk (through the chunk table; no cache).
  std::uint32_t find_chunk(const void* p) const noexcept {
    return find_chunk_slow(reinterpret_cast<std::uintptr_t>(p) >> chunk_shift_);
  }
  std::uint32_t find_chunk_slow(std::uintptr_t key) const noexcept;
  // Points cache_ at the chunk with this key; false if there is none.
  bool load_cache(std::uintptr_t key) const noexcept;

  // Block index inside its chunk for a byte offset that is a multiple of the stride.
  std::size_t block_index(std::size_t offset) const noexcept {
    if (stride_shift_ >= 0) return offset >> stride_shift_;
    __extension__ using U128 = unsigned __int128;
    return static_cast<std::size_t>((static_cast<U128>(offset) * stride_reciprocal_) >> 64);
  }

  // Live-bit words of the chunk holding p, or nullptr if no chunk of this pool holds it.
  // Chunks are aligned to their size, so the chunk key is p >> chunk_shift_. When the chunk
  // keys span a compact range (the usual case: the upstream maps chunks near each other) a
  // dense array indexed by key - dense_lo_ answers with one subtract, one compare and one
  // load; otherwise the hash table answers, behind a one-chunk cache.
  std::uint64_t* live_bits_of(const void* p) const noexcept {
    const std::uintptr_t key = reinterpret_cast<std::uintptr_t>(p) >> chunk_shift_;
    const std::uintptr_t d = key - dense_lo_;
    if (d < dense_size_) return dense_[d];
    if (key == cache_.key) return cache_.live;
    return load_cache(key) ? cache_.live : nullptr;
  }

  // The misuse checks, inlined: a chunk lookup, a multiply for the block index and one bit.
  // Only the throwing paths are out of line.
  // Exact division test and quotient in one multiply (stride = 2^k * m, m odd): offset is a
  // multiple of the stride iff rotr(offset * m^-1 mod 2^64, k) <= (2^64 - 1) / stride, and
  // then that value is offset / stride. Anything else maps above the limit.
  std::uint64_t exact_index(std::uint64_t offset) const noexcept {
    return std::rotr(offset * stride_inverse_, stride_tz_);
  }
  void mark_allocated(void* p) noexcept {
    std::uint64_t* live = live_bits_of(p);  // never null: p was just taken from a chunk
    const std::uint64_t idx = exact_index(reinterpret_cast<std::uintptr_t>(p) & (chunk_bytes_ - 1));
    live[idx >> 6] |= std::uint64_t{1} << (idx & 63);
  }
  // Returns p's bit and its bitmap word if p is a live block; throws UsageError otherwise.
  std::uint64_t check_live(void* p, std::uint64_t*& word_out) {
    std::uint64_t* live = live_bits_of(p);
    if (live == nullptr) throw_foreign();
    const std::uint64_t idx = exact_index(reinterpret_cast<std::uintptr_t>(p) & (chunk_bytes_ - 1));
    if (idx > exact_limit_) throw_interior();
    // The bitmap has a spare bit for the chunk's tail, so idx is always in range; bits of
    // blocks never handed out are 0 and fail like a double free.
    std::uint64_t* word = &live[idx >> 6];
    const std::uint64_t bit = std::uint64_t{1} << (idx & 63);
    if ((*word & bit) == 0 || p == hot_) throw_not_live();
    word_out = word;
    return bit;
  }
  // Moves the hot block onto the free stack and clears its live bit.
  void retire_hot() noexcept {
    *hot_word_ &= ~hot_bit_;
    free_[free_size_++] = hot_;
    hot_ = nullptr;
    if (free_size_ > auto_release_at_) maybe_auto_release();
  }
  [[noreturn]] static void throw_foreign();
  [[noreturn]] static void throw_interior();
  [[noreturn]] static void throw_not_live();

  // ---- hot state: the free stack and the bump pointer ----
  void* hot_ = nullptr;  // misuse checks on: the last freed block, live bit still set
  // The block most recently parked as hot_ (kept after it is handed out again), and where
  // its live bit is: freeing it again needs no chunk lookup. hot_ is null or == parked_.
  void* parked_ = nullptr;
  std::uint64_t* hot_word_ = nullptr;
  std::uint64_t hot_bit_ = 0;
  void** free_ = nullptr;      // free_[0, free_size_) are free blocks; LIFO
  std::size_t free_size_ = 0;
  std::byte* bump_ = nullptr;  // next never-carved block of chunks_[current_]
  std::byte* bump_end_ = nullptr;
  std::size_t stride_ = 0;
  std::size_t carved_total_ = 0;  // sum of chunks_[i].carved
  std::size_t auto_release_at_ = std::numeric_limits<std::size_t>::max();
  bool checks_ = true;
  // One-chunk cache in front of the chunk table, for the misuse checks (mutable: a lookup
  // is logically const). key 0 = empty; reset whenever chunks_ changes.
  struct ChunkCache {
    std::uintptr_t key = 0;
    std::byte* base = nullptr;
    std::uint64_t* live = nullptr;
  };
  mutable ChunkCache cache_;
  std::uint64_t* const* dense_ = nullptr;  // dense_storage_.data()
  std::uintptr_t dense_lo_ = 0;
  std::size_t dense_size_ = 0;  // 0 = dense index off (keys too spread out)
  std::uint64_t stride_inverse_ = 1;  // inverse of the stride's odd part, mod 2^64
  int stride_tz_ = 0;                 // trailing zero bits of the stride
  std::uint64_t exact_limit_ = 0;     // (2^64 - 1) / stride
  int stride_shift_ = -1;               // log2(stride) when the stride is a power of two
  std::uint64_t stride_reciprocal_ = 0;  // ceil(2^64 / stride) otherwise

  // ---- cold state ----
  std::size_t block_size_ = 0;
  std::size_t alignment_ = 0;
  std::size_t chunk_bytes_ = 0;
  unsigned chunk_shift_ = 0;
  std::size_t blocks_per_chunk_ = 0;
  std::size_t current_ = 0;  // chunk being carved (valid while bump_ != nullptr)
  std::size_t free_capacity_ = 0;
  std::vector<Chunk> chunks_;
  std::vector<Slot> slots_;  // open addressing, linear probing, power-of-two size
  std::vector<std::uint64_t*> dense_storage_;  // live bits by chunk key - dense_lo_
  std::pmr::memory_resource* upstream_ = nullptr;
  Options options_;
  std::size_t chunks_allocated_ = 0;
  std::size_t chunks_released_ = 0;
  std::size_t failed_allocations_ = 0;
};

}  // namespace kvmem
