#pragma once
// kvmem::KVBuffer: the host memory behind a PagePool - one mmap'd region holding the K and V
// (or one latent) tensors of every layer for every page - and the layout arithmetic that
// lets an engine copy a page to a GPU or a storage backend without knowing the layout.
//
// WHAT IT MANAGES
//   One anonymous private mapping of layout.total_bytes() (rounded up to 2 MiB when huge
//   pages are used), optionally backed by 2 MiB huge pages (MAP_HUGETLB, else a
//   transparent-huge-page hint), locked (mlock) and bound to a NUMA node (the raw mbind
//   syscall: no libnuma at build or run time). Pages are addressed by the PagePool's ids.
//
// LAYOUTS (KVLayout; "block" = the page_tokens tokens of one page, one layer, one component)
//   kLayerFirst  [component][layer][page][token]: one layer of all pages is contiguous, as on
//                the GPU (fast per-layer host<->device copies). A page is 2*L blocks
//                (L for a latent layout), one per layer and component.
//   kPageFirst   [page][component][layer][token]: a whole page is one contiguous range
//                (zero-copy storage I/O: one object per page); each layer of it is still a
//                contiguous block, so page-layer sized copies work (SGLang's
//                page_first_direct grouping, with pages outermost).
//   Components: K and V with their own bytes per token (asymmetric dims allowed), or one
//   latent (v_bytes_per_token == 0, MLA).
//
// COMPLEXITY
//   block(), layer_view(), offsets: O(1) arithmetic. page_ranges(): O(ranges per page) =
//   1 (page-first) or components * layers (layer-first). Construction: O(bytes) only when
//   prefault is set (first touch after mbind, so pages land on the bound node).
//   Waste: at most 2 MiB - 1 bytes of rounding with huge pages, 4 KiB - 1 otherwise.
//
// THREAD SAFETY
//   Immutable after construction: every const member may be called from any thread. The
//   bytes themselves are the caller's to synchronize.
//
// FAILURE POLICY
//   A layout with a zero field or whose size overflows: std::invalid_argument.
//   mmap failure: std::bad_alloc. A feature asked with Need::kRequire that the system refuses
//   (no huge pages reserved, RLIMIT_MEMLOCK too low, no such NUMA node): std::system_error
//   with the errno; with Need::kTry it is skipped and reported by huge_pages(), locked() and
//   numa_bound(). Out-of-range page/layer/component: std::invalid_argument.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace kvmem {

enum class KVOrder : std::uint8_t { kLayerFirst, kPageFirst };

struct KVLayout {
  std::uint32_t num_pages = 0;
  std::uint32_t page_tokens = 0;          // tokens per page
  std::uint32_t num_layers = 0;
  std::uint64_t k_bytes_per_token = 0;    // per layer: heads * head_dim * dtype (or latent)
  std::uint64_t v_bytes_per_token = 0;    // 0: a single latent component (MLA)
  KVOrder order = KVOrder::kLayerFirst;

  std::uint32_t components() const { return v_bytes_per_token == 0 ? 1 : 2; }
  std::uint64_t block_bytes(std::uint32_t component) const {
    return std::uint64_t{page_tokens} * (component == 0 ? k_bytes_per_token : v_bytes_per_token);
  }
  // All layers and components of one page.
  std::uint64_t page_bytes() const {
    return std::uint64_t{num_layers} * (block_bytes(0) + block_bytes(1));
  }
  std::uint64_t total_bytes() const { return std::uint64_t{num_pages} * page_bytes(); }
  // Byte offset of (page, layer, component) from the buffer start.
  std::uint64_t offset(std::uint32_t page, std::uint32_t layer, std::uint32_t component) const;
  // Throws std::invalid_argument naming the bad field.
  void check() const;
};

struct ByteRange {
  std::byte* data;
  std::size_t size;
};

// One layer of one component across all pages: page p's block is base + p * stride,
// block_bytes long. stride == block_bytes means the layer is one contiguous range.
struct StridedView {
  std::byte* base = nullptr;
  std::size_t stride = 0;
  std::size_t block_bytes = 0;
  std::uint32_t count = 0;
  std::byte* block(std::uint32_t page) const { return base + std::size_t{page} * stride; }
  bool contiguous() const { return stride == block_bytes; }
};

class KVBuffer {
 public:
  enum class Need : std::uint8_t { kOff, kTry, kRequire };

  struct Options {
    Need huge_pages = Need::kOff;  // 2 MiB MAP_HUGETLB; kTry falls back to THP madvise
    Need lock = Need::kOff;        // mlock the whole region
    int numa_node = -1;            // >= 0: bind with mbind(MPOL_BIND) ...
    Need numa = Need::kTry;        // ... and whether failing to bind is an error
    bool prefault = false;         // touch every page now (after binding)
  };

  explicit KVBuffer(const KVLayout& layout);
  KVBuffer(const KVLayout& layout, const Options& options);
  ~KVBuffer();
  KVBuffer(KVBuffer&& other) noexcept;
  KVBuffer& operator=(KVBuffer&& other) noexcept;
  KVBuffer(const KVBuffer&) = delete;
  KVBuffer& operator=(const KVBuffer&) = delete;

  const KVLayout& layout() const { return layout_; }
  std::byte* data() const { return base_; }
  std::size_t size_bytes() const { return static_cast<std::size_t>(layout_.total_bytes()); }
  std::size_t mapped_bytes() const { return mapped_; }

  bool huge_pages() const { return huge_; }   // MAP_HUGETLB mapping
  bool locked() const { return locked_; }
  bool numa_bound() const { return numa_bound_; }

  // The block of (page, layer, component): page_tokens tokens, contiguous.
  std::span<std::byte> block(std::uint32_t page, std::uint32_t layer,
                             std::uint32_t component = 0) const;
  StridedView layer_view(std::uint32_t layer, std::uint32_t component = 0) const;

  // The (pointer, bytes) ranges holding page `page`, adjacent ranges merged, in address
  // order; their sizes sum to layout().page_bytes().
  std::vector<ByteRange> page_ranges(std::uint32_t page) const;
  // Allocation-free form: writes up to out.size() ranges, returns how many the page has.
  std::size_t page_ranges(std::uint32_t page, std::span<ByteRange> out) const;
  std::size_t ranges_per_page() const;

  // True when every block starts on a 4 KiB boundary (O_DIRECT / GPUDirect Storage).
  bool blocks_4k_aligned() const;

  // NUMA node of the memory at `p` (after it was touched), or -1 when unknown.
  static int numa_node_of(const void* p);

  // The layout is valid, the mapping covers it, and (when bound) the first page sits on a
  // node; false for a moved-from buffer.
  bool validate() const;

 private:
  void check_page(std::uint32_t page) const;
  void release() noexcept;

  KVLayout layout_{};
  std::byte* base_ = nullptr;
  std::size_t mapped_ = 0;
  bool huge_ = false;
  bool locked_ = false;
  bool numa_bound_ = false;
};

}  // namespace kvmem
