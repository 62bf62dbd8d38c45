// kvmem::OffsetAllocator when memory runs out: free() must never throw std::bad_alloc (RAII
// handles free in noexcept destructors), the freed range must not be lost, and allocate()
// must throw with the allocator unchanged. support/failing_new.hpp replaces the global
// operator new so a test can make every allocation fail while a FailAllocations guard lives.
#include <gtest/gtest.h>

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

// Freeing y needs a heap for a size class nobody used yet; with no memory that heap cannot be
// made. free() still succeeds, the bytes count as free, and the next allocate indexes them.
TEST(OffsetAllocatorOom, FreeThatCannotGrowAHeapKeepsTheRangeAndIndexesItLater) {
  OffsetAllocator a = low_end(1 << 20);
  const Allocation x = *a.allocate(1000);
  const Allocation y = *a.allocate(777);
  const Allocation z = *a.allocate(1000);
  ASSERT_EQ(y.offset, x.offset + x.size);
  ASSERT_EQ(z.offset, y.offset + y.size);
  {
    FailAllocations f;
    a.free(y);  // a throw fails the test
  }
  EXPECT_TRUE(a.validate());
  EXPECT_EQ(a.used_bytes(), 2000u);
  EXPECT_EQ(a.allocation_count(), 2u);
  EXPECT_THROW(a.free(y), kvmem::UsageError);  // freed once, not twice
  const auto again = a.allocate(777);  // memory is back: the block is indexed and reused
  ASSERT_TRUE(again);
  EXPECT_EQ(again->offset, y.offset);
  EXPECT_TRUE(a.validate());
}

// Unindexed blocks merge with their free neighbours, indexed or not; after everything is
// freed without memory, nothing is indexed (largest_free() is 0), and the first allocate with
// memory back indexes the whole range again.
TEST(OffsetAllocatorOom, UnindexedBlocksMergeAndComeBackWhole) {
  OffsetAllocator a = low_end(1 << 20);
  std::vector<Allocation> live;
  for (std::uint64_t size : {1000u, 777u, 1000u, 3333u, 12345u}) live.push_back(*a.allocate(size));
  for (const std::size_t i : {1u, 0u, 3u, 4u, 2u}) {
    {
      FailAllocations f;
      a.free(live[i]);  // a throw fails the test
    }
    EXPECT_TRUE(a.validate());  // validate() allocates: outside the guard
  }
  EXPECT_EQ(a.used_bytes(), 0u);
  EXPECT_EQ(a.free_bytes(), a.capacity());
  EXPECT_EQ(a.storage_report().free_blocks, 1u);  // merged into one block
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
      if (live.size() % 37 == 0) {
        ASSERT_TRUE(a.validate());
      }
    }
    ASSERT_TRUE(a.validate());
    ASSERT_TRUE(a.allocate(a.capacity())) << "seed " << seed;
  }
}

}  // namespace
