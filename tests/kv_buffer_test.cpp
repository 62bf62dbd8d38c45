// Tests for kvmem::KVBuffer: layout arithmetic for every order and K/V shape, that blocks
// tile the buffer exactly once, that page ranges and layer views address the same bytes,
// and that the memory options (huge pages, mlock, NUMA) work or degrade as documented.
#include "kvmem/kv_buffer.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <vector>

namespace kvmem {
namespace {

KVLayout make(KVOrder order, std::uint64_t k, std::uint64_t v, std::uint32_t pages = 7) {
  KVLayout l;
  l.num_pages = pages;
  l.page_tokens = 4;
  l.num_layers = 3;
  l.k_bytes_per_token = k;
  l.v_bytes_per_token = v;
  l.order = order;
  return l;
}

// Writes a distinct byte pattern through block() for every (page, layer, component) and
// checks that every byte of the buffer was written exactly once.
void check_tiling(const KVLayout& layout) {
  KVBuffer buf(layout);
  ASSERT_TRUE(buf.validate());
  ASSERT_EQ(buf.size_bytes(), layout.total_bytes());
  std::vector<int> hits(buf.size_bytes(), 0);
  for (std::uint32_t p = 0; p < layout.num_pages; ++p) {
    for (std::uint32_t l = 0; l < layout.num_layers; ++l) {
      for (std::uint32_t c = 0; c < layout.components(); ++c) {
        auto b = buf.block(p, l, c);
        ASSERT_EQ(b.size(), layout.block_bytes(c));
        const std::size_t off = static_cast<std::size_t>(b.data() - buf.data());
        ASSERT_LE(off + b.size(), buf.size_bytes());
        for (std::size_t i = 0; i < b.size(); ++i) ++hits[off + i];
        std::memset(b.data(), static_cast<int>((p * 31 + l * 7 + c) & 0xff), b.size());
      }
    }
  }
  EXPECT_TRUE(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  // Layer views address the same blocks.
  for (std::uint32_t l = 0; l < layout.num_layers; ++l) {
    for (std::uint32_t c = 0; c < layout.components(); ++c) {
      const StridedView v = buf.layer_view(l, c);
      EXPECT_EQ(v.count, layout.num_pages);
      EXPECT_EQ(v.contiguous(), layout.order == KVOrder::kLayerFirst);
      for (std::uint32_t p = 0; p < layout.num_pages; ++p) {
        EXPECT_EQ(v.block(p), buf.block(p, l, c).data());
        EXPECT_EQ(static_cast<unsigned char>(*v.block(p)), (p * 31 + l * 7 + c) & 0xff);
      }
    }
  }
  // Page ranges cover exactly the page's blocks.
  for (std::uint32_t p = 0; p < layout.num_pages; ++p) {
    auto ranges = buf.page_ranges(p);
    EXPECT_EQ(ranges.size(), buf.ranges_per_page());
    std::size_t total = 0;
    for (std::size_t i = 0; i < ranges.size(); ++i) {
      total += ranges[i].size;
      if (i > 0) {
        EXPECT_GT(ranges[i].data, ranges[i - 1].data);
      }
    }
    EXPECT_EQ(total, layout.page_bytes());
    std::size_t in_ranges = 0;
    for (std::uint32_t l = 0; l < layout.num_layers; ++l) {
      for (std::uint32_t c = 0; c < layout.components(); ++c) {
        auto b = buf.block(p, l, c);
        for (const auto& r : ranges) {
          if (b.data() >= r.data && b.data() + b.size() <= r.data + r.size) {
            in_ranges += b.size();
            break;
          }
        }
      }
    }
    EXPECT_EQ(in_ranges, layout.page_bytes());
  }
}

TEST(KVBuffer, LayerFirstKV) { check_tiling(make(KVOrder::kLayerFirst, 16, 16)); }
TEST(KVBuffer, LayerFirstAsymmetric) { check_tiling(make(KVOrder::kLayerFirst, 24, 8)); }
TEST(KVBuffer, LayerFirstLatent) { check_tiling(make(KVOrder::kLayerFirst, 40, 0)); }
TEST(KVBuffer, PageFirstKV) { check_tiling(make(KVOrder::kPageFirst, 16, 16)); }
TEST(KVBuffer, PageFirstAsymmetric) { check_tiling(make(KVOrder::kPageFirst, 24, 8)); }
TEST(KVBuffer, PageFirstLatent) { check_tiling(make(KVOrder::kPageFirst, 40, 0)); }
TEST(KVBuffer, SinglePage) { check_tiling(make(KVOrder::kLayerFirst, 8, 8, 1)); }

TEST(KVBuffer, PageFirstPageIsOneRange) {
  KVBuffer buf(make(KVOrder::kPageFirst, 16, 16));
  auto r = buf.page_ranges(3);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].data, buf.data() + 3 * buf.layout().page_bytes());
  ByteRange none[1];
  EXPECT_EQ(buf.page_ranges(0, std::span<ByteRange>(none, 0)), 1u);  // count without output
}

TEST(KVBuffer, LayoutOffsetsByHand) {
  // layer-first K/V, 7 pages, 3 layers, block = 4 tokens * 16 B = 64 B
  const KVLayout l = make(KVOrder::kLayerFirst, 16, 16);
  EXPECT_EQ(l.block_bytes(0), 64u);
  EXPECT_EQ(l.page_bytes(), 3u * 128u);
  EXPECT_EQ(l.offset(2, 1, 0), (1u * 7 + 2) * 64);
  EXPECT_EQ(l.offset(2, 1, 1), 3u * 7 * 64 + (1u * 7 + 2) * 64);
  const KVLayout pf = make(KVOrder::kPageFirst, 16, 16);
  EXPECT_EQ(pf.offset(2, 1, 1), 2u * 384 + 3 * 64 + 64);
}

TEST(KVBuffer, BadLayoutsThrow) {
  EXPECT_THROW(KVBuffer(make(KVOrder::kLayerFirst, 0, 16)), std::invalid_argument);
  EXPECT_THROW(KVBuffer(make(KVOrder::kLayerFirst, 16, 16, 0)), std::invalid_argument);
  KVLayout huge = make(KVOrder::kLayerFirst, std::uint64_t{1} << 40, 0, 1u << 30);
  EXPECT_THROW(KVBuffer{huge}, std::invalid_argument);
  KVBuffer buf(make(KVOrder::kLayerFirst, 16, 0));
  EXPECT_THROW(buf.block(7, 0, 0), std::invalid_argument);
  EXPECT_THROW(buf.block(0, 3, 0), std::invalid_argument);
  EXPECT_THROW(buf.block(0, 0, 1), std::invalid_argument);  // latent has one component
  EXPECT_THROW(buf.layer_view(0, 1), std::invalid_argument);
}

TEST(KVBuffer, Alignment) {
  KVLayout a = make(KVOrder::kPageFirst, 1024, 1024);  // block = 4 tokens * 1 KiB = 4 KiB
  KVBuffer buf(a);
  EXPECT_TRUE(buf.blocks_4k_aligned());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buf.data()) % 4096, 0u);
  KVBuffer odd(make(KVOrder::kPageFirst, 24, 8));
  EXPECT_FALSE(odd.blocks_4k_aligned());
}

TEST(KVBuffer, MoveTransfersOwnership) {
  KVBuffer a(make(KVOrder::kLayerFirst, 16, 16));
  std::byte* p = a.data();
  KVBuffer b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): documented state
  EXPECT_FALSE(a.validate());
  EXPECT_TRUE(b.validate());
  EXPECT_THROW(a.block(0, 0, 0), std::invalid_argument);
  KVBuffer c(make(KVOrder::kPageFirst, 8, 0));
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
}

TEST(KVBuffer, OptionsTryDegradeAndRequireFailsLoudly) {
  KVLayout l = make(KVOrder::kPageFirst, 4096, 4096, 64);  // 6 MiB
  KVBuffer::Options o;
  o.huge_pages = KVBuffer::Need::kTry;
  o.lock = KVBuffer::Need::kTry;
  o.numa_node = 0;
  o.prefault = true;
  KVBuffer buf(l, o);
  EXPECT_GE(buf.mapped_bytes(), buf.size_bytes());
  if (buf.huge_pages()) {
    EXPECT_EQ(buf.mapped_bytes() % (2u << 20), 0u);
  }
  std::memset(buf.data(), 1, buf.size_bytes());  // usable whatever was granted
  EXPECT_TRUE(buf.validate());
  if (buf.numa_bound()) {
    EXPECT_EQ(KVBuffer::numa_node_of(buf.data()), 0);
  }
  std::printf("KVBuffer options here: huge_pages=%d locked=%d numa_bound=%d node_of=%d\n",
              buf.huge_pages(), buf.locked(), buf.numa_bound(), KVBuffer::numa_node_of(buf.data()));
  // Requiring huge pages either works (reserved pages exist) or throws system_error.
  KVBuffer::Options req;
  req.huge_pages = KVBuffer::Need::kRequire;
  try {
    KVBuffer h(l, req);
    EXPECT_TRUE(h.huge_pages());
  } catch (const std::system_error&) {
  }
  // A NUMA node that cannot exist, required: system_error; tried: unbound but usable.
  KVBuffer::Options bad_node;
  bad_node.numa_node = 1000;
  bad_node.numa = KVBuffer::Need::kRequire;
  EXPECT_THROW(KVBuffer(l, bad_node), std::system_error);
  bad_node.numa = KVBuffer::Need::kTry;
  KVBuffer unbound(l, bad_node);
  EXPECT_FALSE(unbound.numa_bound());
  bad_node.numa_node = 5000;
  EXPECT_THROW(KVBuffer(l, bad_node), std::invalid_argument);
}

}  // namespace
}  // namespace kvmem
