// Unit and model tests for kvmem::SegmentedArray.
#include "kvmem/segmented_array.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <memory_resource>
#include <new>
#include <random>
#include <vector>

namespace {

using kvmem::SegmentedArray;

// Counts allocations and can be told to fail after a number of them (fault injection).
class CountingResource : public std::pmr::memory_resource {
 public:
  int allocations = 0;
  int deallocations = 0;
  int fail_after = -1;  // -1: never fail
  std::size_t live_bytes = 0;

 private:
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    if (fail_after >= 0 && allocations >= fail_after) throw std::bad_alloc();
    ++allocations;
    live_bytes += bytes;
    return std::pmr::new_delete_resource()->allocate(bytes, align);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
    ++deallocations;
    live_bytes -= bytes;
    std::pmr::new_delete_resource()->deallocate(p, bytes, align);
  }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
};

TEST(SegmentedArray, ColdStartAllocatesNothing) {
  CountingResource res;
  {
    SegmentedArray<std::uint64_t> a(64, 1u << 20, &res);
    EXPECT_EQ(a.size(), 0u);
    EXPECT_EQ(a.segment_count(), 0u);
    EXPECT_EQ(res.allocations, 0);
    EXPECT_EQ(a.used_bytes(), 0u);
    EXPECT_LE(a.held_bytes(), 512u);  // the directory only
    EXPECT_TRUE(a.validate());
  }
  EXPECT_EQ(res.allocations, 0);
}

TEST(SegmentedArray, BadArguments) {
  EXPECT_THROW(SegmentedArray<int>(0), std::invalid_argument);
  EXPECT_THROW(SegmentedArray<int>(48), std::invalid_argument);
  EXPECT_THROW(SegmentedArray<int>(64, 0), std::invalid_argument);
  EXPECT_THROW(SegmentedArray<int>(64, 10, nullptr), std::invalid_argument);
  SegmentedArray<int> a(4, 100);
  EXPECT_THROW((void)a.at(0), std::out_of_range);
}

TEST(SegmentedArray, GeometricSegmentsAndStableAddresses) {
  CountingResource res;
  SegmentedArray<std::uint32_t> a(4, 1000, &res);
  std::vector<std::uint32_t*> addresses;
  for (std::uint32_t i = 0; i < 100; ++i) {
    auto idx = a.grow(1);
    ASSERT_TRUE(idx.has_value());
    ASSERT_EQ(*idx, i);
    EXPECT_EQ(a[i], 0u);  // value-initialized
    a[i] = i * 7;
    addresses.push_back(&a[i]);
    ASSERT_TRUE(a.validate());
  }
  for (std::uint32_t i = 0; i < 100; ++i) {
    EXPECT_EQ(&a[i], addresses[i]);
    EXPECT_EQ(a.at(i), i * 7);
  }
  // 4 + 8 + 16 + 32 + 64 = 124 >= 100: five segments, each one allocation.
  EXPECT_EQ(a.segment_count(), 5u);
  EXPECT_EQ(res.allocations, 5);
  EXPECT_EQ(a.segment_of(0), 0u);
  EXPECT_EQ(a.segment_of(3), 0u);
  EXPECT_EQ(a.segment_of(4), 1u);
  EXPECT_EQ(a.segment_of(11), 1u);
  EXPECT_EQ(a.segment_of(12), 2u);
  EXPECT_EQ(a.used_bytes(), 100 * sizeof(std::uint32_t));
  EXPECT_GE(a.held_bytes(), 124 * sizeof(std::uint32_t));
  EXPECT_LE(a.held_bytes(), 124 * sizeof(std::uint32_t) + 512);
}

TEST(SegmentedArray, MaxSizeIsEnforced) {
  SegmentedArray<int> a(2, 10);
  EXPECT_EQ(a.grow(7).value(), 0u);
  EXPECT_EQ(a.grow(3).value(), 7u);
  EXPECT_FALSE(a.grow(1).has_value());
  EXPECT_EQ(a.size(), 10u);
  EXPECT_EQ(a.grow(0).value(), 10u);
  EXPECT_TRUE(a.validate());
}

TEST(SegmentedArray, UpstreamFailureLeavesArrayUnchanged) {
  CountingResource res;
  res.fail_after = 2;
  {
    SegmentedArray<std::uint64_t> a(8, 1u << 20, &res);
    ASSERT_TRUE(a.grow(8).has_value());   // segment 0
    ASSERT_TRUE(a.grow(16).has_value());  // segment 1
    EXPECT_FALSE(a.grow(1).has_value());  // segment 2 fails
    EXPECT_EQ(a.size(), 24u);
    EXPECT_TRUE(a.validate());
    res.fail_after = -1;
    EXPECT_EQ(a.grow(1).value(), 24u);
    EXPECT_TRUE(a.validate());
  }
  EXPECT_EQ(res.live_bytes, 0u);
  EXPECT_EQ(res.allocations, res.deallocations);
}

struct Tracked {
  static inline int live = 0;
  Tracked() { ++live; }
  ~Tracked() { --live; }
  Tracked(const Tracked&) = delete;
  Tracked& operator=(const Tracked&) = delete;
  int payload = 5;
};

TEST(SegmentedArray, DestroysEveryConstructedElement) {
  {
    SegmentedArray<Tracked> a(4);
    ASSERT_TRUE(a.grow(5).has_value());
    EXPECT_EQ(Tracked::live, 12);  // segments 0 and 1 fully constructed
    EXPECT_EQ(a[4].payload, 5);
    ASSERT_TRUE(a.reserve(20));  // segment 2, not published
    EXPECT_EQ(a.size(), 5u);
    EXPECT_EQ(Tracked::live, 28);
  }
  EXPECT_EQ(Tracked::live, 0);
}

// Model test: random grow/reserve/write/read against a std::vector reference.
TEST(SegmentedArray, ModelAgainstVector) {
  std::mt19937_64 rng(7);
  for (std::size_t first : {1u, 2u, 16u, 64u}) {
    CountingResource res;
    SegmentedArray<std::uint64_t> a(first, 5000, &res);
    std::vector<std::uint64_t> model;
    for (int op = 0; op < 4000; ++op) {
      const int kind = static_cast<int>(rng() % 4);
      if (kind == 0) {
        const std::size_t n = rng() % 20;
        auto idx = a.grow(n);
        if (model.size() + n > 5000) {
          EXPECT_FALSE(idx.has_value());
        } else {
          ASSERT_TRUE(idx.has_value());
          EXPECT_EQ(*idx, model.size());
          model.resize(model.size() + n, 0);
        }
      } else if (kind == 1 && !model.empty()) {
        const std::size_t i = rng() % model.size();
        const std::uint64_t v = rng();
        a[i] = v;
        model[i] = v;
      } else if (kind == 2 && !model.empty()) {
        const std::size_t i = rng() % model.size();
        ASSERT_EQ(a.at(i), model[i]);
      } else if (kind == 3) {
        const std::size_t n = model.size() + rng() % 50;
        EXPECT_EQ(a.reserve(n), n <= 5000);
      }
      ASSERT_EQ(a.size(), model.size());
      ASSERT_TRUE(a.validate());
    }
    std::size_t seen = 0;
    a.for_each([&](std::size_t i, std::uint64_t& v) {
      EXPECT_EQ(v, model[i]);
      ++seen;
    });
    EXPECT_EQ(seen, model.size());
  }
}

}  // namespace
