// Unit tests for kvmem::OffsetAllocator: the contract in include/kvmem/offset_allocator.hpp,
// the regressions Mooncake/sebbbi users hit, misuse detection and serialization.
#include "kvmem/offset_allocator.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "kvmem/detail/size_class.hpp"

namespace {

using kvmem::Allocation;
using kvmem::OffsetAllocator;
using Policy = OffsetAllocator::Policy;

using Placement = OffsetAllocator::Placement;

OffsetAllocator::Options with_policy(Policy p, Placement placement = Placement::kBesideSmallerNeighbour,
                                     std::uint64_t threshold = 0) {
  OffsetAllocator::Options o;
  o.policy = p;
  o.placement = placement;
  o.high_end_threshold = threshold;
  return o;
}

// ---- size classes -------------------------------------------------------------------------

TEST(SizeClass, FloorAndClassAgreeEverywhere) {
  using namespace kvmem::detail;
  for (std::uint64_t s = 0; s < 100000; ++s) {
    const unsigned c = size_class(s);
    ASSERT_LE(class_floor(c), s);
    ASSERT_GT(class_floor(c + 1), s);
  }
  for (unsigned h = 6; h < 64; ++h) {
    const std::uint64_t s = std::uint64_t{1} << h;
    EXPECT_EQ(class_floor(size_class(s)), s);
    EXPECT_EQ(class_floor(size_class(s - 1) + 1), s);
  }
  // Classes are finer than 3 mantissa bits: width at most 1/32 of the lower bound.
  for (unsigned c = 64; c + 1 < kNumSizeClasses; ++c) {
    const double lo = static_cast<double>(class_floor(c));
    const double width = static_cast<double>(class_floor(c + 1)) - lo;
    ASSERT_LE(width / lo, 1.0 / 32 + 1e-12);
  }
}

TEST(SizeClass, MooncakeRoundUpMatchesTheirTable) {
  using kvmem::detail::mooncake_bin_round_up;
  // Bin value of index i = (8 + (i & 7)) << ((i >> 3) - 1) for i >= 8; sizes 0..15 exact.
  std::vector<std::uint64_t> bins;
  for (unsigned i = 8; i < 240; ++i) bins.push_back(std::uint64_t{8 + (i & 7)} << ((i >> 3) - 1));
  for (std::uint64_t s = 0; s < 16; ++s) EXPECT_EQ(mooncake_bin_round_up(s), s);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const std::uint64_t s = 16 + rng() % 4000000000ull;
    const auto it = std::lower_bound(bins.begin(), bins.end(), s);
    ASSERT_NE(it, bins.end());
    ASSERT_EQ(mooncake_bin_round_up(s), *it) << s;
  }
  EXPECT_EQ(mooncake_bin_round_up(3274752), 3407872u);   // DSA KV page
  EXPECT_EQ(mooncake_bin_round_up(658432), 720896u);     // DSA indexer
  EXPECT_EQ(mooncake_bin_round_up(33554449), 37748736u);
}

// ---- basics and the regressions ----------------------------------------------------------

TEST(OffsetAllocator, WholeCapacityIsOneAllocation) {
  // Mooncake/sebbbi cannot hand out 1,000,000 bytes from a 1,000,000-byte allocator.
  OffsetAllocator a(1000000);
  EXPECT_EQ(a.largest_free(), 1000000u);
  auto x = a.allocate(1000000);
  ASSERT_TRUE(x.has_value());
  EXPECT_EQ(x->offset, 0u);
  EXPECT_EQ(x->size, 1000000u);
  EXPECT_EQ(a.free_bytes(), 0u);
  EXPECT_EQ(a.largest_free(), 0u);
  EXPECT_FALSE(a.allocate(1).has_value());
  EXPECT_EQ(a.failed_allocations(), 1u);
  a.free(*x);
  EXPECT_TRUE(a.validate());
  EXPECT_EQ(a.largest_free(), 1000000u);
}

TEST(OffsetAllocator, SameClassLargerBlockIsFound) {
  // 699,050 bytes serving 664,908: same 3-bit bin, Mooncake reports no space.
  OffsetAllocator a(699050);
  auto x = a.allocate(664908);
  ASSERT_TRUE(x.has_value());
  EXPECT_TRUE(a.validate());
}

TEST(OffsetAllocator, UniformNonBinSizeIsReusedExactly) {
  constexpr std::uint64_t kSize = 2065;  // between classes of both tables
  constexpr std::uint64_t kCount = 1000;
  OffsetAllocator a(kSize * kCount);
  std::vector<Allocation> live;
  for (std::uint64_t i = 0; i < kCount; ++i) {
    auto x = a.allocate(kSize);
    ASSERT_TRUE(x.has_value());
    live.push_back(*x);
  }
  EXPECT_FALSE(a.allocate(kSize).has_value());
  std::mt19937_64 rng(1);
  for (int round = 0; round < 5000; ++round) {
    const std::size_t i = rng() % live.size();
    const std::uint64_t hole = live[i].offset;
    a.free(live[i]);
    auto x = a.allocate(kSize);
    ASSERT_TRUE(x.has_value()) << "round " << round;
    live[i] = *x;
    // The pool is full again: the freed block was reused, nothing was stranded.
    EXPECT_EQ(x->offset, hole);
    ASSERT_EQ(a.free_bytes(), 0u);
  }
  EXPECT_TRUE(a.validate());
}

TEST(OffsetAllocator, WholeCapacityAfterAllFrees) {
  OffsetAllocator a(std::uint64_t{1} << 32);
  std::mt19937_64 rng(3);
  std::vector<Allocation> live;
  for (int i = 0; i < 3000; ++i) {
    const std::uint64_t size = 1 + rng() % (1 << 20);
    const std::uint64_t align = std::uint64_t{1} << (rng() % 13);
    if (auto x = a.allocate(size, align)) live.push_back(*x);
    if (!live.empty() && rng() % 3 == 0) {
      const std::size_t j = rng() % live.size();
      a.free(live[j]);
      live[j] = live.back();
      live.pop_back();
    }
  }
  std::shuffle(live.begin(), live.end(), rng);
  for (const auto& x : live) a.free(x);
  EXPECT_TRUE(a.validate());
  EXPECT_EQ(a.storage_report().free_blocks, 1u);
  auto all = a.allocate(a.capacity());
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->offset, 0u);
}

TEST(OffsetAllocator, CapacitiesAbove2To40) {
  for (const std::uint64_t cap : {std::uint64_t{1} << 41, (std::uint64_t{1} << 48) + 12345,
                                  OffsetAllocator::kMaxCapacity}) {
    OffsetAllocator a(cap);
    auto big = a.allocate(cap - 7);
    ASSERT_TRUE(big.has_value());
    auto tail = a.allocate(7);
    ASSERT_TRUE(tail.has_value());
    EXPECT_EQ(tail->offset, cap - 7);
    EXPECT_FALSE(a.allocate(1).has_value());
    a.free(*big);
    auto two = a.allocate((cap - 7) / 2);
    auto three = a.allocate((cap - 7) / 2);
    ASSERT_TRUE(two && three);
    EXPECT_TRUE(a.validate());
    a.free(*two);
    a.free(*tail);
    a.free(*three);
    EXPECT_EQ(a.largest_free(), cap);
    // Byte granularity at any capacity: no unit rounding.
    auto one = a.allocate(1);
    ASSERT_TRUE(one.has_value());
    EXPECT_EQ(one->size, 1u);
    EXPECT_EQ(a.used_bytes(), 1u);
  }
}

TEST(OffsetAllocator, BadArgumentsThrowInvalidArgument) {
  EXPECT_THROW(OffsetAllocator(0), std::invalid_argument);
  EXPECT_THROW(OffsetAllocator(OffsetAllocator::kMaxCapacity + 1), std::invalid_argument);
  OffsetAllocator a(4096);
  EXPECT_THROW((void)a.allocate(0), std::invalid_argument);
  EXPECT_THROW((void)a.allocate(4097), std::invalid_argument);
  EXPECT_THROW((void)a.allocate(16, 3), std::invalid_argument);
  EXPECT_THROW((void)a.allocate(16, 0), std::invalid_argument);
  EXPECT_THROW((void)a.allocate(16, 8192), std::invalid_argument);
  EXPECT_TRUE(a.validate());
  EXPECT_EQ(a.allocation_count(), 0u);
}

TEST(OffsetAllocator, MisuseThrowsUsageError) {
  OffsetAllocator a(1 << 20);
  OffsetAllocator b(1 << 20);
  auto x = a.allocate(100).value();
  auto y = b.allocate(100).value();
  EXPECT_THROW(a.free(y), kvmem::UsageError);  // foreign
  Allocation altered = x;
  altered.offset += 1;
  EXPECT_THROW(a.free(altered), kvmem::UsageError);
  altered = x;
  altered.size = 99;
  EXPECT_THROW(a.free(altered), kvmem::UsageError);
  altered = x;
  altered.node = 123456;
  EXPECT_THROW(a.free(altered), kvmem::UsageError);
  EXPECT_THROW(a.free(Allocation{}), kvmem::UsageError);
  EXPECT_TRUE(a.owns(x));
  a.free(x);
  EXPECT_FALSE(a.owns(x));
  EXPECT_THROW(a.free(x), kvmem::UsageError);  // double free
  EXPECT_TRUE(a.validate());
  b.free(y);
  EXPECT_EQ(a.allocation_count(), 0u);
  // Stale copy: the same node handed out again, with the same offset and size (exact fit).
  OffsetAllocator c(100);
  auto first = c.allocate(100).value();
  c.free(first);
  auto second = c.allocate(100).value();
  EXPECT_EQ(second.offset, first.offset);
  EXPECT_EQ(second.node, first.node);
  EXPECT_NE(second.generation, first.generation);
  EXPECT_THROW(c.free(first), kvmem::UsageError);
  c.free(second);
  EXPECT_TRUE(c.validate());
}

TEST(OffsetAllocator, ResetMakesOutstandingAllocationsStale) {
  OffsetAllocator a(1 << 20);
  auto x = a.allocate(100).value();
  (void)a.allocate(200).value();
  a.reset();
  EXPECT_TRUE(a.validate());
  EXPECT_EQ(a.used_bytes(), 0u);
  EXPECT_EQ(a.largest_free(), 1u << 20);
  auto y = a.allocate(100).value();
  EXPECT_THROW(a.free(x), kvmem::UsageError);
  a.free(y);
}

TEST(OffsetAllocator, AlignmentAndPadding) {
  OffsetAllocator a(1 << 20, with_policy(Policy::kExact, OffsetAllocator::Placement::kLowEnd));
  auto one = a.allocate(3).value();
  EXPECT_EQ(one.offset, 0u);
  auto aligned = a.allocate(100, 4096).value();
  EXPECT_EQ(aligned.offset % 4096, 0u);
  EXPECT_EQ(aligned.offset, 4096u);
  EXPECT_EQ(a.used_bytes(), 103u);
  // The padding [3, 4096) went back to the free index and serves a small request.
  auto small = a.allocate(4000).value();
  EXPECT_EQ(small.offset, 3u);
  EXPECT_TRUE(a.validate());
  // An aligned request succeeds whenever a block of size + alignment - 1 exists.
  OffsetAllocator b(10000, with_policy(Policy::kExact, OffsetAllocator::Placement::kLowEnd));
  auto pre = b.allocate(1).value();
  auto al = b.allocate(5000, 4096);
  ASSERT_TRUE(al.has_value());
  EXPECT_EQ(al->offset, 4096u);
  b.free(pre);
  b.free(*al);
  EXPECT_EQ(b.storage_report().free_blocks, 1u);
}

TEST(OffsetAllocator, LargestFreeIsExact) {
  OffsetAllocator a(1000, with_policy(Policy::kExact, OffsetAllocator::Placement::kLowEnd));
  auto x = a.allocate(100).value();
  auto y = a.allocate(333).value();
  auto z = a.allocate(1).value();
  (void)z;
  EXPECT_EQ(a.largest_free(), 1000u - 434u);
  a.free(x);
  a.free(y);
  EXPECT_EQ(a.largest_free(), 1000u - 434u);  // 433 at the front is smaller than 566 at the back
  auto w = a.allocate(566).value();
  EXPECT_EQ(a.largest_free(), 433u);
  (void)w;
}

TEST(OffsetAllocator, HighEndThresholdSplitsLargeAndSmall) {
  OffsetAllocator a(1 << 20, with_policy(Policy::kExact, OffsetAllocator::Placement::kSizeSplit, 4096));
  auto small = a.allocate(100).value();
  auto large = a.allocate(8192).value();
  EXPECT_EQ(small.offset, 0u);
  EXPECT_EQ(large.offset, (1u << 20) - 8192u);
  auto large_aligned = a.allocate(5000, 1024).value();
  EXPECT_EQ(large_aligned.offset % 1024, 0u);
  EXPECT_EQ(large_aligned.offset + 5000 <= large.offset, true);
  EXPECT_GT(large_aligned.offset, large.offset - 6000);
  EXPECT_TRUE(a.validate());
}

TEST(OffsetAllocator, BesideSmallerNeighbourLeavesSpaceNextToTheLargerOne) {
  OffsetAllocator a(1000);  // default placement
  auto big = a.allocate(500).value();  // against the pool's low edge (an edge counts as 0)
  EXPECT_EQ(big.offset, 0u);
  auto tiny = a.allocate(10).value();  // block [500, 1000): neighbours 500 B (big) and the edge
  EXPECT_EQ(tiny.offset, 990u);        // so it goes to the edge; the hole stays beside `big`
  a.free(big);
  // Freeing the big neighbour now yields one 990-byte hole instead of 500 + 490 split by tiny.
  EXPECT_EQ(a.largest_free(), 990u);
  EXPECT_EQ(a.storage_report().free_blocks, 1u);
}

TEST(OffsetAllocator, RoundUpToBinPolicy) {
  OffsetAllocator a(1 << 30, with_policy(Policy::kRoundUpToBin, Placement::kLowEnd));
  EXPECT_EQ(a.normalized_size(2065), 2304u);
  EXPECT_EQ(a.normalized_size(15), 15u);
  auto x = a.allocate(2065).value();
  EXPECT_EQ(x.size, 2304u);
  EXPECT_EQ(a.used_bytes(), 2304u);
  auto y = a.allocate(145).value();
  EXPECT_EQ(y.size, 160u);
  EXPECT_EQ(y.offset, 2304u);
  // A request whose rounded size no longer fits fails (does not throw).
  OffsetAllocator b(33554449, with_policy(Policy::kRoundUpToBin));
  EXPECT_FALSE(b.allocate(33554449).has_value());
  OffsetAllocator c(100);
  EXPECT_EQ(c.normalized_size(77), 77u);
}

TEST(OffsetAllocator, StorageReportAndMetadataGrowth) {
  OffsetAllocator a(1 << 30, with_policy(Policy::kExact, Placement::kLowEnd));
  const auto before = a.storage_report();
  EXPECT_EQ(before.capacity, 1u << 30);
  EXPECT_EQ(before.free_blocks, 1u);
  std::vector<Allocation> live;
  for (int i = 0; i < 10000; ++i) live.push_back(a.allocate(64).value());
  for (std::size_t i = 0; i < live.size(); i += 2) a.free(live[i]);
  const auto after = a.storage_report();
  EXPECT_EQ(after.allocations, 5000u);
  EXPECT_EQ(after.used_bytes, 5000u * 64);
  EXPECT_EQ(after.free_bytes + after.used_bytes, after.capacity);
  EXPECT_EQ(after.free_blocks, 5001u);
  EXPECT_GT(after.metadata_bytes_used, before.metadata_bytes_used);
  EXPECT_GE(after.metadata_bytes_held, after.metadata_bytes_used);
  EXPECT_GT(after.metadata_bytes_used, 10000u * 40);
}

// Node metadata grows in fixed chunks after the first (which doubles up to one chunk): a
// small allocator holds little, and growth past it adds chunks without moving nodes. Freed
// nodes are reused before new ones are made.
TEST(OffsetAllocator, NodeMetadataGrowsInChunks) {
  OffsetAllocator small(1000);
  EXPECT_LT(small.storage_report().metadata_bytes_held, 8192u);  // 16 nodes, not a 32 KiB chunk

  OffsetAllocator a(std::uint64_t{1} << 30, with_policy(Policy::kExact, Placement::kLowEnd));
  std::vector<Allocation> live;
  for (int i = 0; i < 20000; ++i) live.push_back(a.allocate(64).value());  // 20 chunks of nodes
  const std::uint64_t held = a.storage_report().metadata_bytes_held;
  EXPECT_GE(held, 20000u * 32);
  EXPECT_LE(held, 20000u * 32 + 64 * 1024);  // at most ~one chunk beyond what is used, + heaps
  for (std::size_t i = 0; i < live.size(); i += 2) a.free(live[i]);  // 10,000 holes
  ASSERT_TRUE(a.validate());
  const std::uint64_t with_holes = a.storage_report().metadata_bytes_held;
  for (std::size_t i = 0; i < live.size(); i += 2) live[i] = a.allocate(64).value();  // refill them
  EXPECT_EQ(a.storage_report().metadata_bytes_held, with_holes);  // nothing was added
  ASSERT_TRUE(a.validate());
  for (const Allocation& x : live) a.free(x);
  EXPECT_EQ(a.largest_free(), a.capacity());
  ASSERT_TRUE(a.validate());
}

// Heap storage past the 1 MiB slabs: 150,000 free blocks in one class need one buffer of
// 2^18 entries (4 MiB, a slab of its own), 40,000 more spread over 20 classes the 1 MiB slabs.
TEST(OffsetAllocator, HeapStorageBeyondOneSlab) {
  OffsetAllocator a(std::uint64_t{1} << 40, with_policy(Policy::kExact, Placement::kLowEnd));
  std::vector<Allocation> live;
  for (int i = 0; i < 300000; ++i) live.push_back(a.allocate(64).value());
  for (int i = 0; i < 80000; ++i) live.push_back(a.allocate(100 + 64 * static_cast<std::uint64_t>(i % 40)).value());
  for (std::size_t i = 0; i < live.size(); i += 2) a.free(live[i]);  // 190,000 holes between live blocks
  ASSERT_TRUE(a.validate());
  const auto report = a.storage_report();
  EXPECT_EQ(report.free_blocks, 190001u);  // and the tail
  EXPECT_EQ(report.unindexed_blocks, 0u);
  // Nodes, plus heap storage of at most 4x the entries (power-of-two buffers, freed buffers
  // of other sizes, slab rests) and the per-class headers.
  EXPECT_LE(report.metadata_bytes_held, live.size() * 32 + 64 * 1024 + 190001u * 16 * 4 + 64 * 1024);
  for (std::size_t i = 1; i < live.size(); i += 2) a.free(live[i]);
  ASSERT_TRUE(a.validate());
  EXPECT_EQ(a.largest_free(), a.capacity());
}

TEST(OffsetAllocator, MoveLeavesAnEmptyAllocator) {
  OffsetAllocator a(1 << 20);
  auto x = a.allocate(100).value();
  OffsetAllocator b(std::move(a));
  EXPECT_TRUE(b.owns(x));
  EXPECT_TRUE(b.validate());
  EXPECT_TRUE(a.validate());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(a.capacity(), 0u);
  EXPECT_THROW((void)a.allocate(1), std::invalid_argument);
  EXPECT_THROW(a.free(x), kvmem::UsageError);
  OffsetAllocator c(10);
  c = std::move(b);
  c.free(x);
  EXPECT_EQ(c.largest_free(), 1u << 20);
}

TEST(OffsetAllocator, ForEachAllocationInAddressOrder) {
  OffsetAllocator a(1 << 20);
  std::vector<Allocation> live;
  for (int i = 1; i <= 10; ++i) live.push_back(a.allocate(static_cast<std::uint64_t>(i) * 10).value());
  a.free(live[3]);
  std::vector<Allocation> seen;
  a.for_each_allocation([&](const Allocation& x) { seen.push_back(x); });
  ASSERT_EQ(seen.size(), 9u);
  for (std::size_t i = 1; i < seen.size(); ++i) EXPECT_LT(seen[i - 1].offset, seen[i].offset);
  for (const auto& x : seen) EXPECT_TRUE(a.owns(x));
}

// ---- serialization ------------------------------------------------------------------------

std::uint64_t fnv(const std::vector<std::byte>& b, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<std::uint64_t>(b[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}
void reseal(std::vector<std::byte>& b) {
  const std::uint64_t h = fnv(b, b.size() - 8);
  for (int i = 0; i < 8; ++i) b[b.size() - 8 + static_cast<std::size_t>(i)] = static_cast<std::byte>(h >> (8 * i));
}
void put64(std::vector<std::byte>& b, std::size_t at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b[at + static_cast<std::size_t>(i)] = static_cast<std::byte>(v >> (8 * i));
}

TEST(OffsetAllocatorSerialize, RoundTrip) {
  OffsetAllocator a(std::uint64_t{1} << 44, with_policy(Policy::kRoundUpToBin, Placement::kSizeSplit, 1 << 20));
  std::mt19937_64 rng(5);
  std::vector<Allocation> live;
  for (int i = 0; i < 500; ++i) {
    if (auto x = a.allocate(1 + rng() % (1u << 24), std::uint64_t{1} << (rng() % 10))) live.push_back(*x);
    if (rng() % 4 == 0) {
      const std::size_t j = rng() % live.size();
      a.free(live[j]);
      live[j] = live.back();
      live.pop_back();
    }
  }
  const auto bytes = a.serialize();
  OffsetAllocator b = OffsetAllocator::deserialize(bytes);
  EXPECT_TRUE(b.validate());
  EXPECT_NE(b.id(), a.id());
  EXPECT_EQ(b.capacity(), a.capacity());
  EXPECT_EQ(b.used_bytes(), a.used_bytes());
  EXPECT_EQ(b.allocation_count(), a.allocation_count());
  EXPECT_EQ(b.largest_free(), a.largest_free());
  EXPECT_EQ(b.options().policy, Policy::kRoundUpToBin);
  EXPECT_EQ(b.options().high_end_threshold, 1u << 20);
  EXPECT_EQ(b.options().placement, Placement::kSizeSplit);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ra;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> rb;
  a.for_each_allocation([&](const Allocation& x) { ra.emplace_back(x.offset, x.size); });
  b.for_each_allocation([&](const Allocation& x) { rb.emplace_back(x.offset, x.size); });
  EXPECT_EQ(ra, rb);
  EXPECT_EQ(b.serialize(), bytes);
  // Recovered allocations free normally.
  std::vector<Allocation> recovered;
  b.for_each_allocation([&](const Allocation& x) { recovered.push_back(x); });
  for (const auto& x : recovered) b.free(x);
  EXPECT_EQ(b.largest_free(), b.capacity());
}

TEST(OffsetAllocatorSerialize, EveryDamageIsAFormatError) {
  OffsetAllocator a(1 << 20);
  (void)a.allocate(100);
  auto keep = a.allocate(300).value();
  (void)a.allocate(50);
  a.free(keep);
  const auto good = a.serialize();
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (const int bit : {0, 3, 7}) {
      auto bad = good;
      bad[i] ^= static_cast<std::byte>(1 << bit);
      EXPECT_THROW((void)OffsetAllocator::deserialize(bad), kvmem::FormatError) << "byte " << i;
    }
  }
  for (std::size_t n = 0; n < good.size(); ++n) {
    std::vector<std::byte> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW((void)OffsetAllocator::deserialize(cut), kvmem::FormatError) << n;
  }
}

TEST(OffsetAllocatorSerialize, ValidChecksumButBadContentIsRejected) {
  OffsetAllocator a(1000);
  (void)a.allocate(100);
  (void)a.allocate(200);
  const auto good = a.serialize();
  ASSERT_EQ(good.size(), 48u + 2 * 16 + 8);
  auto expect_bad = [](std::vector<std::byte> b) {
    reseal(b);
    EXPECT_THROW((void)OffsetAllocator::deserialize(b), kvmem::FormatError);
  };
  auto b = good;
  put64(b, 48 + 16, 50);  // second range overlaps the first
  expect_bad(b);
  b = good;
  put64(b, 48 + 16 + 8, 901);  // second range ends past capacity
  expect_bad(b);
  b = good;
  put64(b, 48 + 8, 0);  // empty range
  expect_bad(b);
  b = good;
  put64(b, 48 + 16, ~std::uint64_t{0} - 10);  // offset + size wraps around
  expect_bad(b);
  b = good;
  put64(b, 16, 0);  // capacity 0
  expect_bad(b);
  b = good;
  put64(b, 16, OffsetAllocator::kMaxCapacity + 1);
  expect_bad(b);
  b = good;
  put64(b, 40, 3);  // count disagrees with the length
  expect_bad(b);
  b = good;
  b[12] = std::byte{9};  // unknown policy
  expect_bad(b);
  b = good;
  b[13] = std::byte{3};  // unknown placement
  expect_bad(b);
  b = good;
  b[8] = std::byte{2};  // version 2
  expect_bad(b);
  b = good;
  put64(b, 48 + 16, 500);  // a gap between ranges is fine
  reseal(b);
  EXPECT_NO_THROW((void)OffsetAllocator::deserialize(b));
}

}  // namespace
