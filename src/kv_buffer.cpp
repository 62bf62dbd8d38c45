// kvmem::KVBuffer. Contract in include/kvmem/kv_buffer.hpp.
#include "kvmem/kv_buffer.hpp"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace kvmem {

namespace {

constexpr std::size_t kHugePage = std::size_t{2} << 20;
constexpr std::size_t kSmallPage = 4096;
// mbind/get_mempolicy constants from <linux/mempolicy.h>, spelled out so that no NUMA
// header or library is needed.
constexpr int kMpolBind = 2;
constexpr unsigned kMpolMfStrict = 1u << 0;
constexpr unsigned kMpolMfMove = 1u << 1;
constexpr unsigned long kMpolFNode = 1ul << 0;
constexpr unsigned long kMpolFAddr = 1ul << 1;
constexpr int kMaxNodes = 1024;

std::size_t round_up(std::size_t v, std::size_t to) { return (v + to - 1) / to * to; }

[[noreturn]] void fail_system(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "KVBuffer: " + what);
}

}  // namespace

// ---- KVLayout -------------------------------------------------------------------------------

void KVLayout::check() const {
  auto bad = [](const std::string& what) { throw std::invalid_argument("KVLayout: " + what); };
  if (num_pages == 0) bad("num_pages must be >= 1");
  if (page_tokens == 0) bad("page_tokens must be >= 1");
  if (num_layers == 0) bad("num_layers must be >= 1");
  if (k_bytes_per_token == 0) bad("k_bytes_per_token must be >= 1 (the latent size for MLA)");
  // Overflow: compute total in long double-free integer steps with checks.
  const std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max() / 4;
  const std::uint64_t per_token = k_bytes_per_token + v_bytes_per_token;
  if (k_bytes_per_token > kMax || v_bytes_per_token > kMax ||
      per_token > kMax / page_tokens || per_token * page_tokens > kMax / num_layers ||
      per_token * page_tokens * num_layers > kMax / num_pages ||
      total_bytes() > std::numeric_limits<std::size_t>::max() / 2) {
    bad("total size overflows");
  }
}

std::uint64_t KVLayout::offset(std::uint32_t page, std::uint32_t layer,
                               std::uint32_t component) const {
  if (order == KVOrder::kLayerFirst) {
    const std::uint64_t component_base =
        component == 0 ? 0 : std::uint64_t{num_layers} * num_pages * block_bytes(0);
    return component_base + (std::uint64_t{layer} * num_pages + page) * block_bytes(component);
  }
  const std::uint64_t in_page =
      (component == 0 ? 0 : std::uint64_t{num_layers} * block_bytes(0)) +
      std::uint64_t{layer} * block_bytes(component);
  return std::uint64_t{page} * page_bytes() + in_page;
}

// ---- KVBuffer -------------------------------------------------------------------------------

KVBuffer::KVBuffer(const KVLayout& layout) : KVBuffer(layout, Options{}) {}

KVBuffer::KVBuffer(const KVLayout& layout, const Options& options) : layout_(layout) {
  layout_.check();
  const std::size_t bytes = static_cast<std::size_t>(layout_.total_bytes());
  void* p = MAP_FAILED;
  if (options.huge_pages != Need::kOff) {
    const std::size_t len = round_up(bytes, kHugePage);
    p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
               -1, 0);
    if (p != MAP_FAILED) {
      mapped_ = len;
      huge_ = true;
    } else if (options.huge_pages == Need::kRequire) {
      fail_system(errno, "MAP_HUGETLB mapping of " + std::to_string(len) +
                             " bytes failed (reserve 2 MiB pages in /proc/sys/vm/nr_hugepages)");
    }
  }
  if (p == MAP_FAILED) {
    const std::size_t len = round_up(bytes, kSmallPage);
    p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    mapped_ = len;
    // Transparent huge pages where the kernel allows them: fewer TLB misses on big copies.
    if (options.huge_pages == Need::kTry) (void)::madvise(p, len, MADV_HUGEPAGE);
  }
  base_ = static_cast<std::byte*>(p);
  try {
    if (options.numa_node >= 0) {
      if (options.numa_node >= kMaxNodes) {
        throw std::invalid_argument("KVBuffer: numa_node must be < " + std::to_string(kMaxNodes));
      }
      unsigned long mask[kMaxNodes / (8 * sizeof(unsigned long))] = {};
      const std::size_t bits = 8 * sizeof(unsigned long);
      mask[static_cast<std::size_t>(options.numa_node) / bits] |=
          1ul << (static_cast<std::size_t>(options.numa_node) % bits);
      // maxnode is one more than the mask's bits: the kernel drops the last bit.
      const long rc = ::syscall(SYS_mbind, base_, mapped_, kMpolBind, mask,
                                static_cast<unsigned long>(kMaxNodes + 1),
                                kMpolMfStrict | kMpolMfMove);
      if (rc == 0) {
        numa_bound_ = true;
      } else if (options.numa == Need::kRequire) {
        fail_system(errno, "mbind to NUMA node " + std::to_string(options.numa_node) + " failed");
      }
    }
    if (options.lock != Need::kOff) {
      if (::mlock(base_, mapped_) == 0) {
        locked_ = true;
      } else if (options.lock == Need::kRequire) {
        fail_system(errno, "mlock of " + std::to_string(mapped_) +
                               " bytes failed (raise RLIMIT_MEMLOCK)");
      }
    }
    if (options.prefault && !locked_) {  // mlock already faulted everything in
      const std::size_t step = huge_ ? kHugePage : kSmallPage;
      for (std::size_t off = 0; off < mapped_; off += step) {
        *reinterpret_cast<volatile unsigned char*>(base_ + off) = 0;
      }
    }
  } catch (...) {
    release();
    throw;
  }
}

KVBuffer::~KVBuffer() { release(); }

void KVBuffer::release() noexcept {
  if (base_ != nullptr) {
    if (locked_) (void)::munlock(base_, mapped_);
    (void)::munmap(base_, mapped_);
  }
  base_ = nullptr;
  mapped_ = 0;
  locked_ = huge_ = numa_bound_ = false;
}

KVBuffer::KVBuffer(KVBuffer&& other) noexcept
    : layout_(other.layout_),
      base_(std::exchange(other.base_, nullptr)),
      mapped_(std::exchange(other.mapped_, 0)),
      huge_(std::exchange(other.huge_, false)),
      locked_(std::exchange(other.locked_, false)),
      numa_bound_(std::exchange(other.numa_bound_, false)) {}

KVBuffer& KVBuffer::operator=(KVBuffer&& other) noexcept {
  if (this != &other) {
    release();
    layout_ = other.layout_;
    base_ = std::exchange(other.base_, nullptr);
    mapped_ = std::exchange(other.mapped_, 0);
    huge_ = std::exchange(other.huge_, false);
    locked_ = std::exchange(other.locked_, false);
    numa_bound_ = std::exchange(other.numa_bound_, false);
  }
  return *this;
}

void KVBuffer::check_page(std::uint32_t page) const {
  if (base_ == nullptr) throw std::invalid_argument("KVBuffer: moved-from buffer");
  if (page >= layout_.num_pages) {
    throw std::invalid_argument("KVBuffer: page " + std::to_string(page) + " >= num_pages " +
                                std::to_string(layout_.num_pages));
  }
}

std::span<std::byte> KVBuffer::block(std::uint32_t page, std::uint32_t layer,
                                     std::uint32_t component) const {
  check_page(page);
  if (layer >= layout_.num_layers || component >= layout_.components()) {
    throw std::invalid_argument("KVBuffer::block: layer " + std::to_string(layer) +
                                " / component " + std::to_string(component) + " out of range");
  }
  return {base_ + layout_.offset(page, layer, component),
          static_cast<std::size_t>(layout_.block_bytes(component))};
}

StridedView KVBuffer::layer_view(std::uint32_t layer, std::uint32_t component) const {
  if (layer >= layout_.num_layers || component >= layout_.components()) {
    throw std::invalid_argument("KVBuffer::layer_view: layer " + std::to_string(layer) +
                                " / component " + std::to_string(component) + " out of range");
  }
  StridedView v;
  v.base = base_ + layout_.offset(0, layer, component);
  v.block_bytes = static_cast<std::size_t>(layout_.block_bytes(component));
  v.stride = layout_.order == KVOrder::kLayerFirst
                 ? v.block_bytes
                 : static_cast<std::size_t>(layout_.page_bytes());
  v.count = layout_.num_pages;
  return v;
}

std::size_t KVBuffer::ranges_per_page() const {
  if (layout_.order == KVOrder::kPageFirst) return 1;
  // Layer-first: blocks of one page are num_pages blocks apart, so they only merge when
  // there is a single page.
  return layout_.num_pages == 1 ? 1 : std::size_t{layout_.num_layers} * layout_.components();
}

std::size_t KVBuffer::page_ranges(std::uint32_t page, std::span<ByteRange> out) const {
  check_page(page);
  if (layout_.order == KVOrder::kPageFirst || layout_.num_pages == 1) {
    if (!out.empty()) {
      out[0] = ByteRange{base_ + layout_.offset(page, 0, 0),
                         static_cast<std::size_t>(layout_.page_bytes())};
    }
    return 1;
  }
  std::size_t n = 0;
  for (std::uint32_t c = 0; c < layout_.components(); ++c) {
    for (std::uint32_t l = 0; l < layout_.num_layers; ++l, ++n) {
      if (n < out.size()) {
        out[n] = ByteRange{base_ + layout_.offset(page, l, c),
                           static_cast<std::size_t>(layout_.block_bytes(c))};
      }
    }
  }
  return n;
}

std::vector<ByteRange> KVBuffer::page_ranges(std::uint32_t page) const {
  std::vector<ByteRange> out(ranges_per_page());
  out.resize(page_ranges(page, out));
  return out;
}

bool KVBuffer::blocks_4k_aligned() const {
  const std::uint64_t a = layout_.block_bytes(0);
  const std::uint64_t b = layout_.components() == 2 ? layout_.block_bytes(1) : 0;
  // Every block offset is a sum of multiples of these sizes (and of page_bytes, itself one).
  return a % kSmallPage == 0 && b % kSmallPage == 0;
}

int KVBuffer::numa_node_of(const void* p) {
  int node = -1;
  const long rc = ::syscall(SYS_get_mempolicy, &node, nullptr, 0ul, const_cast<void*>(p),
                            kMpolFNode | kMpolFAddr);
  return rc == 0 ? node : -1;
}

bool KVBuffer::validate() const {
  if (base_ == nullptr || mapped_ < size_bytes()) return false;
  if (reinterpret_cast<std::uintptr_t>(base_) % kSmallPage != 0) return false;
  try {
    layout_.check();
  } catch (const std::invalid_argument&) {
    return false;
  }
  // The last block must end exactly at the end of the layout.
  const std::uint32_t last_c = layout_.components() - 1;
  const std::uint64_t end =
      layout_.offset(layout_.num_pages - 1, layout_.num_layers - 1, last_c);
  return end + layout_.block_bytes(last_c) == layout_.total_bytes();
}

}  // namespace kvmem
