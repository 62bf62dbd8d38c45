// Unit tests for kvmem::SharedArena: the contract in include/kvmem/shared_arena.hpp.
#include "kvmem/shared_arena.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using kvmem::ArenaHandle;
using kvmem::ArenaRange;
using kvmem::Placement;
using kvmem::PlacementPolicy;
using kvmem::RemovePolicy;
using kvmem::SegmentId;
using kvmem::SharedArena;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * 1024;

SharedArena::Options small_stripes(unsigned stripes = 4) {
  SharedArena::Options o;
  o.stripes = stripes;
  o.min_stripe_bytes = 4 * kKiB;
  return o;
}

TEST(SharedArena, NoContentionCountedWithoutConcurrency) {
  SharedArena arena(small_stripes());
  arena.add_segment(kMiB);
  for (int i = 0; i < 1000; ++i) (void)arena.allocate(64);
  EXPECT_EQ(arena.stats().contended_locks, 0u);
}

TEST(SharedArena, AllocatorOptionsReachEveryStripe) {
  SharedArena::Options o = small_stripes();
  o.allocator.policy = kvmem::OffsetAllocator::Policy::kRoundUpToBin;  // Mooncake's rounding
  SharedArena arena(o);
  arena.add_segment(kMiB);
  auto h = arena.allocate(145);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->size(), 160u);  // 145 rounds up to the 3-mantissa-bit bin 160
  const std::uint64_t off = h->offset();
  h.reset();
  auto again = arena.allocate(145);  // the cached 160-byte range is reused for the same request
  ASSERT_TRUE(again);
  EXPECT_EQ(again->offset(), off);
  EXPECT_EQ(arena.stats().used, 160u);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, DefaultConstructionAndEmptyArena) {
  SharedArena arena;
  EXPECT_GE(arena.options().stripes, 1u);
  EXPECT_TRUE(arena.segments().empty());
  EXPECT_FALSE(arena.allocate(1).has_value());
  const auto st = arena.stats();
  EXPECT_EQ(st.segments, 0u);
  EXPECT_EQ(st.failed_allocations, 1u);
  EXPECT_EQ(st.fast_rejections, 1u);  // the bound is 0: no lock taken
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, AllocateFreeAndStats) {
  SharedArena arena(small_stripes());
  std::vector<std::byte> mem(64 * kKiB);
  const SegmentId seg = arena.add_segment(mem.size(), mem.data(), "client-0");
  ASSERT_TRUE(seg.valid());
  auto stats = arena.segment_stats(seg);
  EXPECT_EQ(stats.name, "client-0");
  EXPECT_EQ(stats.capacity, mem.size());
  EXPECT_EQ(stats.stripes.size(), 4u);
  EXPECT_EQ(stats.free, mem.size());
  EXPECT_EQ(stats.largest_free, 16 * kKiB);

  auto h = arena.allocate(1000);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->segment(), seg);
  EXPECT_EQ(h->size(), 1000u);
  EXPECT_LE(h->offset() + h->size(), mem.size());
  EXPECT_EQ(h->data(), mem.data() + h->offset());
  std::memset(h->data(), 0xab, h->size());
  stats = arena.segment_stats(seg);
  EXPECT_EQ(stats.used, 1000u);
  EXPECT_EQ(stats.free, mem.size() - 1000);
  EXPECT_EQ(stats.live_allocations, 1u);
  EXPECT_EQ(stats.total_allocations, 1u);
  EXPECT_TRUE(arena.validate());

  EXPECT_TRUE(h->release());
  EXPECT_TRUE(h->empty());
  EXPECT_FALSE(h->release());  // a second release is a no-op, not a double free
  stats = arena.segment_stats(seg);
  EXPECT_EQ(stats.used, 0u);
  EXPECT_EQ(stats.live_allocations, 0u);
  EXPECT_EQ(stats.total_allocations, 1u);
  const auto total = arena.stats();
  EXPECT_EQ(total.segments, 1u);
  EXPECT_EQ(total.capacity, mem.size());
  EXPECT_EQ(total.used, 0u);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, SegmentWithoutBaseHasNoData) {
  SharedArena arena(small_stripes());
  const SegmentId seg = arena.add_segment(1 * kMiB);  // an opaque remote segment
  auto h = arena.allocate(4096);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->segment(), seg);
  EXPECT_EQ(h->data(), nullptr);
}

TEST(SharedArena, BadArgumentsThrowInvalidArgument) {
  SharedArena arena(small_stripes());
  EXPECT_THROW((void)arena.add_segment(0), std::invalid_argument);
  EXPECT_THROW((void)arena.add_segment(kvmem::OffsetAllocator::kMaxCapacity + 1), std::invalid_argument);
  EXPECT_THROW((void)arena.add_segment(kMiB, nullptr, {}, 5), std::invalid_argument);
  arena.add_segment(kMiB);
  EXPECT_THROW((void)arena.allocate(0), std::invalid_argument);
  EXPECT_THROW((void)arena.allocate(8, 3), std::invalid_argument);
  EXPECT_THROW((void)arena.allocate(8, 0), std::invalid_argument);
  SharedArena::Options bad;
  bad.stripes = 65;
  EXPECT_THROW(SharedArena{bad}, std::invalid_argument);
  bad = {};
  bad.max_segments = 0;
  EXPECT_THROW(SharedArena{bad}, std::invalid_argument);
  bad = {};
  bad.min_stripe_bytes = 0;
  EXPECT_THROW(SharedArena{bad}, std::invalid_argument);
}

TEST(SharedArena, MaxSegmentsIsEnforcedAndSlotsAreReused) {
  SharedArena::Options o = small_stripes();
  o.max_segments = 2;
  SharedArena arena(o);
  const SegmentId a = arena.add_segment(kMiB);
  const SegmentId b = arena.add_segment(kMiB);
  EXPECT_THROW((void)arena.add_segment(kMiB), std::invalid_argument);
  EXPECT_TRUE(arena.remove_segment(a));
  const SegmentId c = arena.add_segment(kMiB);
  EXPECT_NE(c, a);  // ids are never reused, even in a reused slot
  EXPECT_NE(c, b);
  EXPECT_THROW((void)arena.remove_segment(a), kvmem::UsageError);
  EXPECT_THROW((void)arena.allocate(8, Placement(a)), kvmem::UsageError);
  EXPECT_THROW((void)arena.segment_stats(a), kvmem::UsageError);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, StaleAndUnknownIdsAreUsageErrors) {
  SharedArena arena(small_stripes());
  EXPECT_THROW((void)arena.remove_segment(SegmentId{}), kvmem::UsageError);
  EXPECT_THROW((void)arena.remove_segment(SegmentId{12345}), kvmem::UsageError);
  const SegmentId s = arena.add_segment(kMiB);
  EXPECT_TRUE(arena.remove_segment(s));
  EXPECT_THROW((void)arena.remove_segment(s), kvmem::UsageError);
}

TEST(SharedArena, AlignmentIsOfTheSegmentOffset) {
  SharedArena arena(small_stripes());
  alignas(64) static std::byte mem[256 * 1024];
  arena.add_segment(sizeof(mem), mem);
  std::vector<ArenaHandle> hs;
  for (std::uint64_t a : {1ull, 2ull, 8ull, 64ull, 4096ull}) {
    for (int i = 0; i < 5; ++i) {
      auto h = arena.allocate(100 + static_cast<std::uint64_t>(i) * 7, a);
      ASSERT_TRUE(h);
      EXPECT_EQ(h->offset() % a, 0u) << "alignment " << a;
      hs.push_back(std::move(*h));
    }
  }
  // Larger than the stripe granule: only stripe 0 (begin 0) can serve it.
  auto big = arena.allocate(10, 16 * 1024);
  ASSERT_TRUE(big);
  EXPECT_EQ(big->offset() % (16 * 1024), 0u);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, StripeLimitIsTheLargestSingleRequestUnlessOneStripe) {
  // The documented trade: a request cannot span stripes.
  SharedArena arena(small_stripes(4));
  const SegmentId striped = arena.add_segment(64 * kKiB);
  EXPECT_EQ(arena.segment_stats(striped).stripes.size(), 4u);
  EXPECT_FALSE(arena.allocate(16 * kKiB + 1).has_value());
  EXPECT_EQ(arena.stats().fast_rejections, 1u);
  auto whole_stripe = arena.allocate(16 * kKiB);
  ASSERT_TRUE(whole_stripe);
  // One stripe: the whole segment is one range.
  const SegmentId single = arena.add_segment(64 * kKiB, nullptr, "big", 1);
  EXPECT_EQ(arena.segment_stats(single).stripes.size(), 1u);
  auto whole = arena.allocate(64 * kKiB);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->segment(), single);
  EXPECT_EQ(whole->offset(), 0u);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, MinStripeBytesLimitsTheStripeCount) {
  SharedArena::Options o;
  o.stripes = 8;
  o.min_stripe_bytes = kMiB;
  SharedArena arena(o);
  EXPECT_EQ(arena.segment_stats(arena.add_segment(kMiB / 2)).stripes.size(), 1u);
  EXPECT_EQ(arena.segment_stats(arena.add_segment(3 * kMiB)).stripes.size(), 3u);
  const auto st = arena.segment_stats(arena.add_segment(100 * kMiB + 12345));
  ASSERT_EQ(st.stripes.size(), 8u);
  std::uint64_t begin = 0;
  for (const auto& s : st.stripes) {
    EXPECT_EQ(s.begin, begin);
    EXPECT_EQ(s.begin % 4096, 0u);
    begin += s.capacity;
  }
  EXPECT_EQ(begin, st.capacity);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, FillsEveryStripeBeforeFailing) {
  SharedArena arena(small_stripes(4));
  const SegmentId seg = arena.add_segment(64 * kKiB);
  std::vector<ArenaHandle> hs;
  while (auto h = arena.allocate(kKiB)) hs.push_back(std::move(*h));
  EXPECT_EQ(hs.size(), 64u);
  const auto st = arena.segment_stats(seg);
  EXPECT_EQ(st.used, 64 * kKiB);
  EXPECT_EQ(st.largest_free, 0u);
  for (const auto& s : st.stripes) EXPECT_EQ(s.live_allocations, 16u);
  std::set<std::uint64_t> offsets;
  for (const auto& h : hs) EXPECT_TRUE(offsets.insert(h.offset()).second);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, RequestThatFitsNowhereIsRejectedWithoutLocking) {
  SharedArena arena(small_stripes(4));
  arena.add_segment(64 * kKiB);
  arena.add_segment(32 * kKiB);
  std::vector<ArenaHandle> hs;
  while (auto h = arena.allocate(3 * kKiB)) hs.push_back(std::move(*h));
  // The failing request above searched under locks once and tightened the bound ...
  const auto after_fill = arena.stats();
  EXPECT_EQ(after_fill.failed_allocations, 1u);
  const std::uint64_t largest = after_fill.largest_free;
  EXPECT_LT(largest, 3 * kKiB);
  // ... so every later request above the largest free block is refused by the bound.
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(arena.allocate(largest + 1));
  const auto after = arena.stats();
  EXPECT_EQ(after.failed_allocations, 11u);
  EXPECT_EQ(after.fast_rejections, after_fill.fast_rejections + 10);
  // A free raises the bound again: the same request fits now.
  hs.pop_back();
  EXPECT_TRUE(arena.allocate(3 * kKiB));
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, HandleMoveSemantics) {
  SharedArena arena(small_stripes());
  arena.add_segment(64 * kKiB);
  auto a = arena.allocate(100);
  auto b = arena.allocate(200);
  ASSERT_TRUE(a && b);
  ArenaHandle x = std::move(*a);
  EXPECT_TRUE(a->empty());
  EXPECT_FALSE(a->release());
  EXPECT_EQ(x.size(), 100u);
  x = std::move(*b);  // frees the 100-byte range
  EXPECT_EQ(x.size(), 200u);
  EXPECT_EQ(arena.stats().used, 200u);
  EXPECT_EQ(arena.stats().live_allocations, 1u);
  x = ArenaHandle{};
  EXPECT_EQ(arena.stats().live_allocations, 0u);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, RemoveRefusesWhileLive) {
  SharedArena arena(small_stripes());
  const SegmentId seg = arena.add_segment(64 * kKiB);
  auto h = arena.allocate(100);
  ASSERT_TRUE(h);
  EXPECT_FALSE(arena.remove_segment(seg));  // default: kRefuseIfLive
  EXPECT_FALSE(arena.remove_segment(seg, RemovePolicy::kRefuseIfLive));
  EXPECT_EQ(arena.segments().size(), 1u);
  EXPECT_TRUE(arena.allocate(100));  // still serving
  h.reset();
  EXPECT_TRUE(arena.remove_segment(seg));
  EXPECT_TRUE(arena.segments().empty());
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, RemoveDetachMakesHandlesInert) {
  SharedArena arena(small_stripes());
  std::vector<std::byte> mem(64 * kKiB);
  const SegmentId seg = arena.add_segment(mem.size(), mem.data());
  auto h1 = arena.allocate(100);
  auto h2 = arena.allocate(200);
  ASSERT_TRUE(h1 && h2);
  EXPECT_TRUE(h1->attached());
  EXPECT_TRUE(arena.remove_segment(seg, RemovePolicy::kDetach));
  EXPECT_EQ(arena.stats().segments, 0u);
  // The handles still describe their range and the memory is still the caller's.
  EXPECT_EQ(h1->segment(), seg);
  EXPECT_FALSE(h1->attached());
  std::memset(h1->data(), 1, h1->size());
  // A new segment takes the same slot; the old handles must not free into it.
  const SegmentId next = arena.add_segment(64 * kKiB);
  auto h3 = arena.allocate(300);
  ASSERT_TRUE(h3);
  EXPECT_EQ(h3->segment(), next);
  EXPECT_FALSE(h1->release());
  h2.reset();
  const auto st = arena.segment_stats(next);
  EXPECT_EQ(st.live_allocations, 1u);
  EXPECT_EQ(st.used, 300u);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, HandlesOutliveTheArena) {
  std::vector<ArenaHandle> hs;
  std::optional<ArenaHandle> moved;
  {
    SharedArena arena(small_stripes());
    arena.add_segment(64 * kKiB);
    arena.add_segment(64 * kKiB);
    for (int i = 0; i < 50; ++i) hs.push_back(std::move(*arena.allocate(100 + static_cast<std::uint64_t>(i))));
    moved = arena.allocate(10);
    ASSERT_TRUE(moved);
    EXPECT_TRUE(hs[2].attached());
  }  // the arena dies first
  EXPECT_FALSE(hs[2].attached());
  EXPECT_FALSE(ArenaHandle{}.attached());
  EXPECT_FALSE(hs[0].release());
  const ArenaRange r = hs[1].disown();
  EXPECT_EQ(r.size, 101u);
  ArenaHandle again = std::move(*moved);
  again = ArenaHandle{};
  hs.clear();  // the last handle frees the arena's internal state (ASan checks no leak, no UAF)
}

TEST(SharedArena, ArenaDiesWithoutHandlesOut) {
  SharedArena arena(small_stripes());
  arena.add_segment(64 * kKiB);
  auto h = arena.allocate(10);
  h.reset();
}

TEST(SharedArena, MovedArenaKeepsHandlesValid) {
  SharedArena a(small_stripes());
  a.add_segment(64 * kKiB);
  auto h = a.allocate(100);
  SharedArena b(std::move(a));
  EXPECT_THROW((void)a.allocate(1), kvmem::UsageError);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(b.stats().live_allocations, 1u);
  EXPECT_TRUE(h->release());
  EXPECT_EQ(b.stats().live_allocations, 0u);
  SharedArena c(small_stripes());
  c = std::move(b);
  EXPECT_EQ(c.segments().size(), 1u);
}

TEST(SharedArena, PlacementInAGivenSegmentDoesNotFallBack) {
  SharedArena arena(small_stripes());
  const SegmentId a = arena.add_segment(16 * kKiB, nullptr, "a", 1);
  const SegmentId b = arena.add_segment(64 * kKiB);
  for (int i = 0; i < 20; ++i) {
    auto h = arena.allocate(512, b);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->segment(), b);
  }
  std::vector<ArenaHandle> hs;
  while (auto h = arena.allocate(4 * kKiB, a)) hs.push_back(std::move(*h));
  EXPECT_EQ(hs.size(), 4u);
  for (const auto& h : hs) EXPECT_EQ(h.segment(), a);
  EXPECT_EQ(arena.segment_stats(a).failed_allocations, 1u);
  EXPECT_TRUE(arena.allocate(4 * kKiB));  // other segments still have room
}

TEST(SharedArena, LargestFreePolicyPicksTheEmptiestSegment) {
  SharedArena arena(small_stripes());
  const SegmentId small = arena.add_segment(64 * kKiB);
  const SegmentId big = arena.add_segment(256 * kKiB);
  std::map<SegmentId, int> count;
  std::vector<ArenaHandle> hs;
  for (int i = 0; i < 96; ++i) {
    auto h = arena.allocate(2 * kKiB, PlacementPolicy::kLargestFree);
    ASSERT_TRUE(h);
    ++count[h->segment()];
    hs.push_back(std::move(*h));
  }
  // The big segment takes everything until both have the same free bytes (64 KiB).
  EXPECT_EQ(count[small], 0);
  EXPECT_EQ(count[big], 96);
  for (int i = 0; i < 60; ++i) {
    auto h = arena.allocate(2 * kKiB, PlacementPolicy::kLargestFree);
    ASSERT_TRUE(h);
    ++count[h->segment()];
    hs.push_back(std::move(*h));
  }
  const auto fs = arena.segment_stats(small).free;
  const auto fb = arena.segment_stats(big).free;
  EXPECT_LE(std::max(fs, fb) - std::min(fs, fb), 2 * kKiB);
}

TEST(SharedArena, LeastUtilizedBalancesUsedOverCapacity) {
  SharedArena arena(small_stripes());
  const SegmentId small = arena.add_segment(64 * kKiB);
  const SegmentId big = arena.add_segment(256 * kKiB);
  std::vector<ArenaHandle> hs;
  for (int i = 0; i < 80; ++i) {
    auto h = arena.allocate(2 * kKiB, PlacementPolicy::kLeastUtilized);
    ASSERT_TRUE(h);
    hs.push_back(std::move(*h));
    const double us = static_cast<double>(arena.segment_stats(small).used) / (64 * kKiB);
    const double ub = static_cast<double>(arena.segment_stats(big).used) / (256 * kKiB);
    // Each placement goes where the ratio is lowest: ratios never differ by more than one object.
    EXPECT_LE(std::abs(us - ub), 2.0 * kKiB / (64 * kKiB) + 1e-9) << i;
  }
}

TEST(SharedArena, RoundRobinAndRandomSpreadOverSegments) {
  SharedArena arena(small_stripes());
  std::vector<SegmentId> segs;
  for (int i = 0; i < 4; ++i) segs.push_back(arena.add_segment(256 * kKiB));
  for (PlacementPolicy p : {PlacementPolicy::kRoundRobin, PlacementPolicy::kRandom}) {
    std::map<SegmentId, int> count;
    std::vector<ArenaHandle> hs;
    for (int i = 0; i < 200; ++i) {
      auto h = arena.allocate(kKiB, p);
      ASSERT_TRUE(h);
      ++count[h->segment()];
      hs.push_back(std::move(*h));
    }
    for (const SegmentId s : segs) {
      if (p == PlacementPolicy::kRoundRobin) {
        EXPECT_EQ(count[s], 50);
      } else {
        EXPECT_GT(count[s], 20);
      }
    }
  }
}

TEST(SharedArena, PoliciesFallBackWhenTheirPickIsFull) {
  SharedArena arena(small_stripes());
  arena.add_segment(8 * kKiB, nullptr, "", 1);
  arena.add_segment(8 * kKiB, nullptr, "", 1);
  for (PlacementPolicy p : {PlacementPolicy::kLocal, PlacementPolicy::kLargestFree, PlacementPolicy::kRoundRobin,
                            PlacementPolicy::kRandom, PlacementPolicy::kLeastUtilized}) {
    std::vector<ArenaHandle> hs;
    for (int i = 0; i < 16; ++i) {
      auto h = arena.allocate(kKiB, p);
      ASSERT_TRUE(h) << "policy " << static_cast<int>(p) << " i " << i;
      hs.push_back(std::move(*h));
    }
    EXPECT_FALSE(arena.allocate(1, p));
  }
}

TEST(SharedArena, DisownAndAdoptRoundTrip) {
  SharedArena arena(small_stripes());
  const SegmentId seg = arena.add_segment(64 * kKiB);
  auto h = arena.allocate(777);
  ASSERT_TRUE(h);
  const ArenaRange r = h->disown();
  EXPECT_TRUE(h->empty());
  EXPECT_EQ(r.segment, seg);
  EXPECT_EQ(r.size, 777u);
  auto st = arena.segment_stats(seg);
  EXPECT_EQ(st.unclaimed, 1u);
  EXPECT_EQ(st.used, 777u);  // still allocated
  std::vector<ArenaRange> seen;
  arena.for_each_unclaimed([&](const ArenaRange& x) { seen.push_back(x); });
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], r);
  EXPECT_THROW((void)arena.adopt(ArenaRange{seg, r.offset, r.size + 1}), kvmem::UsageError);
  EXPECT_THROW((void)arena.adopt(ArenaRange{seg, r.offset + 1, r.size}), kvmem::UsageError);
  ArenaHandle back = arena.adopt(r);
  EXPECT_EQ(back.range(), r);
  EXPECT_THROW((void)arena.adopt(r), kvmem::UsageError);  // a second adopt would double free
  EXPECT_TRUE(arena.validate());
  EXPECT_TRUE(back.release());
  st = arena.segment_stats(seg);
  EXPECT_EQ(st.used, 0u);
  EXPECT_EQ(st.unclaimed, 0u);
}

TEST(SharedArena, FreeUnclaimed) {
  SharedArena arena(small_stripes());
  arena.add_segment(64 * kKiB);
  for (int i = 0; i < 10; ++i) (void)arena.allocate(100)->disown();
  EXPECT_EQ(arena.stats().live_allocations, 10u);
  EXPECT_EQ(arena.free_unclaimed(), 10u);
  EXPECT_EQ(arena.stats().live_allocations, 0u);
  EXPECT_TRUE(arena.validate());
}

TEST(SharedArena, RefuseCountsUnclaimedRangesAsLive) {
  SharedArena arena(small_stripes());
  const SegmentId seg = arena.add_segment(64 * kKiB);
  (void)arena.allocate(100)->disown();
  EXPECT_FALSE(arena.remove_segment(seg));
  EXPECT_TRUE(arena.remove_segment(seg, RemovePolicy::kDetach));
  std::size_t n = 0;
  arena.for_each_unclaimed([&](const ArenaRange&) { ++n; });
  EXPECT_EQ(n, 0u);
}

TEST(SharedArena, SnapshotRestoreRoundTrip) {
  SharedArena arena(small_stripes());
  std::vector<std::byte> m1(64 * kKiB), m2(128 * kKiB);
  const SegmentId s1 = arena.add_segment(m1.size(), m1.data(), "one");
  const SegmentId s2 = arena.add_segment(m2.size(), m2.data(), "two", 2);
  const SegmentId gone = arena.add_segment(kMiB);
  EXPECT_TRUE(arena.remove_segment(gone));
  std::vector<ArenaHandle> hs;
  std::set<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>> live;
  for (int i = 0; i < 40; ++i) {
    auto h = arena.allocate(100 + static_cast<std::uint64_t>(i) * 37, i % 2 ? Placement(s1) : Placement(s2));
    ASSERT_TRUE(h);
    hs.push_back(std::move(*h));
  }
  for (std::size_t i = 0; i < hs.size(); i += 3) hs[i].release();
  for (const auto& h : hs) {
    if (!h.empty()) live.insert({h.segment().value, h.offset(), h.size()});
  }
  const std::vector<std::byte> image = arena.snapshot();

  // Restart: memory mapped elsewhere.
  std::vector<std::byte> n1(m1.size()), n2(m2.size());
  SharedArena restored = SharedArena::restore(
      image, small_stripes(), [&](SegmentId id, const std::string& name, std::uint64_t size, void* saved) {
        EXPECT_EQ(saved, id == s1 ? static_cast<void*>(m1.data()) : static_cast<void*>(m2.data()));
        EXPECT_EQ(name, id == s1 ? "one" : "two");
        EXPECT_EQ(size, id == s1 ? m1.size() : m2.size());
        return id == s1 ? static_cast<void*>(n1.data()) : static_cast<void*>(n2.data());
      });
  EXPECT_TRUE(restored.validate());
  const auto ids = restored.segments();
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(restored.segment_stats(s1).name, "one");
  EXPECT_EQ(restored.segment_stats(s2).stripes.size(), 2u);
  EXPECT_EQ(restored.segment_stats(s1).used, arena.segment_stats(s1).used);
  EXPECT_THROW((void)restored.segment_stats(gone), kvmem::UsageError);
  std::set<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>> found;
  std::vector<ArenaRange> ranges;
  restored.for_each_unclaimed([&](const ArenaRange& r) {
    found.insert({r.segment.value, r.offset, r.size});
    ranges.push_back(r);
  });
  EXPECT_EQ(found, live);
  std::vector<ArenaHandle> adopted;
  for (const auto& r : ranges) {
    adopted.push_back(restored.adopt(r));
    const std::byte* base = r.segment == s1 ? n1.data() : n2.data();
    EXPECT_EQ(adopted.back().data(), base + r.offset);
  }
  EXPECT_EQ(restored.segment_stats(s1).unclaimed, 0u);
  adopted.clear();
  EXPECT_EQ(restored.stats().used, 0u);
  // New ids continue after the restored ones.
  const SegmentId s3 = restored.add_segment(kMiB);
  EXPECT_NE(s3, gone);
  EXPECT_NE(s3, s1);
  EXPECT_TRUE(restored.validate());
  // Without a rebase function the saved bases are kept (remote addresses for a master).
  SharedArena kept = SharedArena::restore(image);
  EXPECT_EQ(kept.segment_stats(s1).base, m1.data());
}

TEST(SharedArena, RestoreWidensOptionsToFitTheSnapshot) {
  SharedArena::Options wide = small_stripes(8);
  SharedArena arena(wide);
  std::vector<SegmentId> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(arena.add_segment(256 * kKiB));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(arena.remove_segment(ids[static_cast<std::size_t>(i)]));
  (void)arena.allocate(1000, ids[4])->disown();
  const auto image = arena.snapshot();
  SharedArena::Options narrow = small_stripes(2);
  narrow.max_segments = 1;  // the snapshot's segment lives in slot 5
  SharedArena r = SharedArena::restore(image, narrow);
  EXPECT_EQ(r.options().stripes, 8u);
  EXPECT_GE(r.options().max_segments, 5u);
  EXPECT_EQ(r.segment_stats(ids[4]).stripes.size(), 8u);
  EXPECT_TRUE(r.validate());
  EXPECT_EQ(r.free_unclaimed(), 1u);
  // The free slots below the restored one are usable again.
  const SegmentId more = r.add_segment(64 * kKiB);
  EXPECT_NE(more, ids[4]);
  EXPECT_TRUE(r.validate());
}

TEST(SharedArena, EmptyArenaSnapshotRoundTrips) {
  SharedArena arena;
  SharedArena r = SharedArena::restore(arena.snapshot());
  EXPECT_TRUE(r.segments().empty());
  EXPECT_TRUE(r.validate());
  EXPECT_TRUE(r.add_segment(kMiB).valid());
}

TEST(SharedArena, RestoreDetectsCorruption) {
  SharedArena arena(small_stripes());
  arena.add_segment(64 * kKiB, nullptr, "x");
  std::vector<ArenaHandle> hs;
  for (int i = 0; i < 5; ++i) hs.push_back(std::move(*arena.allocate(1000)));
  const std::vector<std::byte> image = arena.snapshot();
  ASSERT_NO_THROW((void)SharedArena::restore(image));
  for (std::size_t i = 0; i < image.size(); i += 7) {
    auto bad = image;
    bad[i] ^= std::byte{0x40};
    EXPECT_THROW((void)SharedArena::restore(bad), kvmem::FormatError) << "byte " << i;
  }
  for (std::size_t len : {std::size_t{0}, std::size_t{8}, image.size() / 2, image.size() - 1}) {
    std::vector<std::byte> cut(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(len));
    EXPECT_THROW((void)SharedArena::restore(cut), kvmem::FormatError) << "length " << len;
  }
  auto longer = image;
  longer.push_back(std::byte{0});
  EXPECT_THROW((void)SharedArena::restore(longer), kvmem::FormatError);
}

TEST(SharedArena, StatsAreReadableWhileOtherThreadsAllocate) {
  SharedArena arena(small_stripes());
  arena.add_segment(kMiB);
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    std::vector<ArenaHandle> hs;
    for (int i = 0; i < 20000; ++i) {
      if (auto h = arena.allocate(64 + static_cast<std::uint64_t>(i % 50))) hs.push_back(std::move(*h));
      if (hs.size() > 100) hs.erase(hs.begin(), hs.begin() + 50);
    }
    stop = true;
  });
  std::uint64_t reads = 0;
  while (!stop) {
    const auto st = arena.stats();
    EXPECT_LE(st.used, st.capacity);
    ++reads;
  }
  worker.join();
  EXPECT_GT(reads, 0u);
  EXPECT_TRUE(arena.validate());
}

}  // namespace
