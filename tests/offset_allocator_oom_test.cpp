// kvmem::OffsetAllocator when memory runs out: free() must never throw std::bad_alloc (RAII
// handles free in noexcept destructors), the freed range must not be lost, and allocate()
// must throw with the allocator unchanged; and operations within Options::reserve_regions need
// no memory at all. support/failing_new.hpp replaces the global
// operator new so a test can make every allocation fail while a FailAllocations guard lives.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "kvmem/offset_allocator.hpp"
#include "support/failing_new.hpp"

namespace {

using kvmem::Allocation;
using kvmem::OffsetAllocator;
using kvmem::test::FailAllocations;

OffsetAllocator low_end(std::uint64_t capacity) {
  OffsetAllocator::Options o;
  o.placement = OffsetAllocator::Placement::kLowEnd;  // x, y, z below sit side by side
  return OffsetAllocator(capacity, o);
}

TEST(OffsetAllocatorOom, TheInjectionWorks) {
  FailAllocations f;
  EXPECT_THROW((void)new int(1), std::bad_alloc);
}

// Frees blocks of classes not used before, each between live separators, without memory,
// until one cannot be indexed: the allocator's heap storage is then used up (no buffer free,
// no room in its slab), so a free that needs a heap buffer cannot index its block.
struct UsedUp {
  Allocation unindexed;                // the block that went unindexed (freed)
  std::vector<Allocation> still_live;  // separators and the blocks not freed
};
UsedUp use_up_heap_storage(OffsetAllocator& a, std::uint64_t first_size) {
  std::vector<Allocation> blocks;
  UsedUp out;
  std::uint64_t size = first_size;
  for (int i = 0; i < 200; ++i, size = size * 26 / 25) {  // 4% apart: a new class each time
    blocks.push_back(*a.allocate(size));
    out.still_live.push_back(*a.allocate(64));
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    {
      FailAllocations f;
      a.free(blocks[i]);  // a throw fails the test
    }
    if (a.storage_report().unindexed_blocks != 0) {
      out.unindexed = blocks[i];
      out.still_live.insert(out.still_live.end(), blocks.begin() + static_cast<std::ptrdiff_t>(i) + 1, blocks.end());
      return out;
    }
  }
  ADD_FAILURE() << "200 frees of new classes all found heap storage: the path is not tested";
  return out;
}

std::uint64_t total_size(const std::vector<Allocation>& v) {
  return std::accumulate(v.begin(), v.end(), std::uint64_t{0}, [](std::uint64_t t, const Allocation& x) { return t + x.size; });
}

// A free block of a class with no heap yet needs heap storage; once the allocator's is used
// up and no memory is left, free() cannot index it. free() still succeeds, the bytes count as
// free, the block is not handed out twice, and the next allocate with memory indexes it and
// hands it out.
TEST(OffsetAllocatorOom, FreeThatCannotGrowAHeapKeepsTheRangeAndIndexesItLater) {
  OffsetAllocator a = low_end(std::uint64_t{1} << 30);
  const UsedUp state = use_up_heap_storage(a, 1000);
  const Allocation& y = state.unindexed;
  ASSERT_NE(y.size, 0u);
  EXPECT_EQ(a.storage_report().unindexed_blocks, 1u);
  EXPECT_EQ(a.used_bytes(), total_size(state.still_live));
  EXPECT_TRUE(a.validate());
  EXPECT_THROW(a.free(y), kvmem::UsageError);  // freed once, not twice
  const auto again = a.allocate(y.size);  // memory is back: the block is indexed and reused
  ASSERT_TRUE(again);
  EXPECT_EQ(again->offset, y.offset);
  EXPECT_EQ(a.storage_report().unindexed_blocks, 0u);
  EXPECT_TRUE(a.validate());
}

// Unindexed blocks merge with their free neighbours, indexed or not, and once memory is back
// the whole range comes back as one block.
TEST(OffsetAllocatorOom, UnindexedBlocksMergeAndComeBackWhole) {
  OffsetAllocator a = low_end(std::uint64_t{1} << 32);
  std::vector<Allocation> live;
  for (std::uint64_t size : {1000u, 777u, 1000u, 3333u, 12345u}) live.push_back(*a.allocate(size));
  const std::vector<Allocation> rest = use_up_heap_storage(a, 20000).still_live;
  ASSERT_EQ(a.storage_report().unindexed_blocks, 1u);
  std::uint64_t most_unindexed = 0;
  for (const std::size_t i : {1u, 0u, 3u, 4u, 2u}) {
    {
      FailAllocations f;
      a.free(live[i]);  // a throw fails the test
    }
    most_unindexed = std::max(most_unindexed, a.storage_report().unindexed_blocks);
    EXPECT_TRUE(a.validate());  // validate() allocates: outside the guard
  }
  EXPECT_GE(most_unindexed, 2u);  // the five's blocks stayed out of the index too
  EXPECT_EQ(a.used_bytes(), total_size(rest));
  for (const Allocation& x : rest) a.free(x);  // memory is back: indexed again as they merge
  EXPECT_EQ(a.used_bytes(), 0u);
  EXPECT_EQ(a.free_bytes(), a.capacity());
  EXPECT_EQ(a.storage_report().free_blocks, 1u);  // merged into one block
  EXPECT_EQ(a.storage_report().unindexed_blocks, 0u);
  const auto all = a.allocate(a.capacity());
  ASSERT_TRUE(all);
  EXPECT_EQ(all->offset, 0u);
  EXPECT_EQ(a.largest_free(), 0u);
  a.free(*all);
  EXPECT_EQ(a.largest_free(), a.capacity());
  EXPECT_TRUE(a.validate());
}

// allocate() without memory for its metadata throws std::bad_alloc and changes nothing.
TEST(OffsetAllocatorOom, AllocateThrowsAndChangesNothing) {
  OffsetAllocator a = low_end(1 << 20);
  std::vector<Allocation> live;
  for (int i = 0; i < 15; ++i) live.push_back(*a.allocate(64));  // 16 nodes: the first chunk is full
  const auto before = a.storage_report();
  {
    FailAllocations f;
    EXPECT_THROW((void)a.allocate(64), std::bad_alloc);  // needs a 17th node
  }
  const auto after = a.storage_report();
  EXPECT_EQ(after.allocations, before.allocations);
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(after.largest_free, before.largest_free);
  EXPECT_TRUE(a.validate());
  EXPECT_TRUE(a.allocate(64));
}

// Frees in random order without memory, checked against the byte totals; then everything
// comes back once memory does.
TEST(OffsetAllocatorOom, RandomFreesWithoutMemory) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    OffsetAllocator a(std::uint64_t{1} << 24);
    std::uint64_t state = seed;
    auto next = [&state] {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      return state >> 33;
    };
    std::vector<Allocation> live;
    for (int i = 0; i < 300; ++i) {
      if (auto x = a.allocate(1 + next() % 5000)) live.push_back(*x);
    }
    std::uint64_t used = a.used_bytes();
    std::uint64_t most_unindexed = 0;
    while (!live.empty()) {
      const std::size_t k = next() % live.size();
      used -= live[k].size;
      {
        FailAllocations f;
        a.free(live[k]);  // a throw fails the test
      }
      live[k] = live.back();
      live.pop_back();
      ASSERT_EQ(a.used_bytes(), used);
      most_unindexed = std::max(most_unindexed, a.storage_report().unindexed_blocks);
      if (live.size() % 37 == 0) {
        ASSERT_TRUE(a.validate());
      }
    }
    ASSERT_TRUE(a.validate());
    EXPECT_GT(most_unindexed, 0u) << "seed " << seed << ": every free found heap storage; the path is not tested";
    ASSERT_TRUE(a.allocate(a.capacity())) << "seed " << seed;
    EXPECT_EQ(a.storage_report().unindexed_blocks, 0u);
  }
}

// Options::reserve_regions: operations that stay within the reserved regions get every byte
// of metadata from what the constructor set aside (here VMA's benchmark sequence: 2,000
// allocations of U[1, 2056] B in 2.5x their sum, then 4,000 random allocates and frees, at
// most 8,001 regions), so they run with the system allocator failing every call.
TEST(OffsetAllocatorOom, ReservedRegionsNeedNoMemoryFromTheSystem) {
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    std::uint64_t state = seed;
    auto next = [&state] {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      return state >> 33;
    };
    OffsetAllocator::Options o;
    o.reserve_regions = 8001;
    OffsetAllocator a(2000 * 1028 * 5 / 2, o);
    const std::uint64_t held = a.storage_report().metadata_bytes_held;
    std::vector<Allocation> live;
    live.reserve(6000);
    {
      FailAllocations f;
      for (int i = 0; i < 2000; ++i) live.push_back(a.allocate(1 + next() % 2056).value());
      for (int i = 0; i < 4000; ++i) {
        if (next() % 2 == 0) {
          if (auto x = a.allocate(1 + next() % 2056)) live.push_back(*x);
        } else if (!live.empty()) {
          const std::size_t k = next() % live.size();
          a.free(live[k]);
          live[k] = live.back();
          live.pop_back();
        }
      }
    }
    const auto report = a.storage_report();
    EXPECT_EQ(report.unindexed_blocks, 0u) << "seed " << seed;
    EXPECT_EQ(report.metadata_bytes_held, held) << "seed " << seed;
    ASSERT_TRUE(a.validate());
  }
}

}  // namespace
