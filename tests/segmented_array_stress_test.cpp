// Concurrency tests for kvmem::SegmentedArray: the growth race (many threads growing at once,
// each index handed out exactly once, every segment published once) and readers iterating
// while the array grows. Run under TSan by the tsan preset (label "concurrent").
#include "kvmem/segmented_array.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <cstdint>
#include <thread>
#include <vector>

namespace {
using kvmem::SegmentedArray;

struct Slot {
  std::atomic<std::uint64_t> owner{0};  // 1 + id of the thread that got this index
  std::atomic<std::uint64_t> index{0};  // what that thread wrote: must equal the position
};

TEST(SegmentedArrayStress, GrowthRaceHandsOutEveryIndexOnce) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 3000;
  SegmentedArray<Slot> a(1, 1u << 24);  // tiny first segment: many segment publications race
  std::barrier start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int k = 0; k < kPerThread; ++k) {
        const std::size_t n = 1 + static_cast<std::size_t>((k + t) % 3);
        auto first = a.grow(n);
        ASSERT_TRUE(first.has_value());
        for (std::size_t i = *first; i < *first + n; ++i) {
          std::uint64_t expected = 0;
          ASSERT_TRUE(a[i].owner.compare_exchange_strong(expected, static_cast<std::uint64_t>(t) + 1));
          a[i].index.store(i, std::memory_order_relaxed);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  std::size_t total = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int k = 0; k < kPerThread; ++k) total += 1 + static_cast<std::size_t>((k + t) % 3);
  }
  ASSERT_EQ(a.size(), total);
  for (std::size_t i = 0; i < total; ++i) {
    ASSERT_NE(a[i].owner.load(), 0u) << i;
    ASSERT_EQ(a[i].index.load(), i);
  }
  EXPECT_TRUE(a.validate());
  // Exactly the segments that cover `total` exist: losers freed their copies.
  EXPECT_EQ(a.segment_count(), a.segment_of(total - 1) + 1);
  EXPECT_EQ(a.held_bytes(), (a.segment_length(a.segment_count()) - 1) * sizeof(Slot) + sizeof(void*) * SegmentedArray<Slot>::kMaxSegments);
}

TEST(SegmentedArrayStress, ReadersIterateWhileGrowing) {
  constexpr int kWriters = 2;
  constexpr int kReaders = 2;
  constexpr std::size_t kTarget = 40000;
  SegmentedArray<std::atomic<std::uint64_t>> a(2, kTarget * 2);
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&] {
      while (a.size() < kTarget) {
        auto i = a.grow(1);
        ASSERT_TRUE(i.has_value());
        a[*i].store(*i + 1, std::memory_order_release);
      }
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&] {
      std::uint64_t checks = 0;
      bool last_round = false;
      while (!last_round) {  // at least one full pass, even if the writers finish first
        last_round = done.load(std::memory_order_acquire);
        const std::size_t n = a.size();
        for (std::size_t i = 0; i < n; i += 97) {
          const std::uint64_t v = a[i].load(std::memory_order_acquire);
          // 0: published but not yet written by its grower; otherwise exactly i + 1.
          ASSERT_TRUE(v == 0 || v == i + 1) << i << " " << v;
          ++checks;
        }
        ASSERT_TRUE(a.validate());
      }
      EXPECT_GT(checks, 0u);
    });
  }
  for (int w = 0; w < kWriters; ++w) threads[static_cast<std::size_t>(w)].join();
  done.store(true, std::memory_order_release);
  for (std::size_t t = kWriters; t < threads.size(); ++t) threads[t].join();
  EXPECT_GE(a.size(), kTarget);
  for (std::size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i].load(), i + 1);
}

}  // namespace
