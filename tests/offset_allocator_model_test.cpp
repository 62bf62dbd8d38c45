// Randomized model test: kvmem::OffsetAllocator against a reference that keeps the live ranges
// in a std::map and computes free gaps by walking them. After every operation: validate(),
// no overlap, inside capacity, alignment, free + used == capacity, largest_free() equal to the
// reference's largest gap, and the placement contract (an allocation of alignment 1 fails only
// when no gap is large enough; an aligned one succeeds whenever a gap of size + A - 1 exists).
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "kvmem/offset_allocator.hpp"

namespace {

using kvmem::Allocation;
using kvmem::OffsetAllocator;

struct Reference {
  std::uint64_t capacity;
  std::map<std::uint64_t, std::uint64_t> live;  // offset -> size

  std::vector<std::pair<std::uint64_t, std::uint64_t>> gaps() const {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> g;
    std::uint64_t at = 0;
    for (const auto& [o, s] : live) {
      if (o > at) g.emplace_back(at, o - at);
      at = o + s;
    }
    if (at < capacity) g.emplace_back(at, capacity - at);
    return g;
  }
  std::uint64_t largest_gap() const {
    std::uint64_t m = 0;
    for (const auto& [o, s] : gaps()) m = std::max(m, s);
    return m;
  }
  bool fits_aligned(std::uint64_t size, std::uint64_t align) const {
    for (const auto& [o, s] : gaps()) {
      const std::uint64_t a = (o + align - 1) & ~(align - 1);
      if (a + size <= o + s) return true;
    }
    return false;
  }
  // Inserts and reports whether [o, o+s) overlapped anything.
  bool insert(std::uint64_t o, std::uint64_t s) {
    auto next = live.lower_bound(o);
    if (next != live.end() && next->first < o + s) return false;
    if (next != live.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second > o) return false;
    }
    live.emplace(o, s);
    return true;
  }
};

struct Config {
  std::uint64_t capacity;
  OffsetAllocator::Policy policy;
  OffsetAllocator::Placement placement;
  std::uint64_t threshold;
  std::uint64_t max_size;  // request sizes drawn log-uniformly up to this
  unsigned max_align_log2;
};

void run_model(const Config& cfg, std::uint64_t seed, int steps) {
  OffsetAllocator::Options options;
  options.policy = cfg.policy;
  options.placement = cfg.placement;
  options.high_end_threshold = cfg.threshold;
  std::mt19937_64 rng(seed);
  if (seed % 3 == 0) options.reserve_regions = static_cast<std::uint32_t>(1 + rng() % 3000);  // any count
  OffsetAllocator a(cfg.capacity, options);
  Reference ref{cfg.capacity, {}};
  std::vector<Allocation> live;
  auto draw_size = [&]() -> std::uint64_t {
    // Log-uniform sizes with a bias to a few repeated sizes (exact reuse paths).
    if (rng() % 4 == 0) return std::min<std::uint64_t>(cfg.max_size, 1 + (rng() % 3) * 777);
    const unsigned bits = 1 + static_cast<unsigned>(rng() % 64);
    std::uint64_t s = 1 + (rng() & ((bits >= 64) ? ~std::uint64_t{0} : ((std::uint64_t{1} << bits) - 1)));
    return std::min(s, cfg.max_size);
  };
  for (int step = 0; step < steps; ++step) {
    const unsigned op = static_cast<unsigned>(rng() % 100);
    if (op < 55 || live.empty()) {
      const std::uint64_t size = draw_size();
      const std::uint64_t align = std::uint64_t{1} << (rng() % (cfg.max_align_log2 + 1));
      const std::uint64_t need = a.normalized_size(size);
      auto x = a.allocate(size, align);
      if (x) {
        ASSERT_EQ(x->size, need);
        ASSERT_EQ(x->offset % align, 0u);
        ASSERT_LE(x->offset, cfg.capacity - x->size);
        ASSERT_TRUE(ref.insert(x->offset, x->size)) << "overlap at step " << step;
        live.push_back(*x);
      } else if (need <= cfg.capacity) {
        // The contract: exact for alignment 1, guaranteed with size + A - 1 for aligned.
        if (align == 1) {
          ASSERT_LT(ref.largest_gap(), need) << "false no-space at step " << step;
        } else {
          ASSERT_LT(ref.largest_gap(), need + align - 1) << "aligned false no-space at step " << step;
        }
      }
    } else if (op < 95) {
      const std::size_t i = rng() % live.size();
      a.free(live[i]);
      ASSERT_EQ(ref.live.erase(live[i].offset), 1u);
      if (rng() % 8 == 0) {
        ASSERT_THROW(a.free(live[i]), kvmem::UsageError);  // double free is caught
      }
      live[i] = live.back();
      live.pop_back();
    } else if (op < 97) {
      // Round trip through serialize; continue on the restored allocator.
      OffsetAllocator b = OffsetAllocator::deserialize(a.serialize());
      std::vector<Allocation> recovered;
      b.for_each_allocation([&](const Allocation& x) { recovered.push_back(x); });
      ASSERT_EQ(recovered.size(), live.size());
      for (const auto& x : live) ASSERT_THROW(b.free(x), kvmem::UsageError);  // other allocator id
      a = std::move(b);
      live = std::move(recovered);
    } else if (op < 98 && rng() % 4 == 0) {
      a.reset();
      ref.live.clear();
      if (!live.empty()) {
        ASSERT_THROW(a.free(live.front()), kvmem::UsageError);
      }
      live.clear();
    }
    ASSERT_TRUE(a.validate()) << "step " << step;
    ASSERT_EQ(a.used_bytes() + a.free_bytes(), cfg.capacity);
    std::uint64_t used = 0;
    for (const auto& [o, s] : ref.live) used += s;
    ASSERT_EQ(a.used_bytes(), used);
    ASSERT_EQ(a.allocation_count(), ref.live.size());
    ASSERT_EQ(a.largest_free(), ref.largest_gap()) << "step " << step;
  }
  for (const auto& x : live) a.free(x);
  ASSERT_TRUE(a.validate());
  ASSERT_EQ(a.largest_free(), cfg.capacity);
  ASSERT_EQ(a.storage_report().free_blocks, 1u);
}

using Policy = OffsetAllocator::Policy;
constexpr auto kNeighbour = OffsetAllocator::Placement::kBesideSmallerNeighbour;
constexpr auto kLow = OffsetAllocator::Placement::kLowEnd;
constexpr auto kSplit = OffsetAllocator::Placement::kSizeSplit;

TEST(OffsetAllocatorModel, SmallCapacityExact) {
  for (std::uint64_t seed = 1; seed <= 6; ++seed) run_model({5000, Policy::kExact, kNeighbour, 0, 700, 6}, seed, 3000);
}

TEST(OffsetAllocatorModel, SmallCapacityLowEnd) {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) run_model({5000, Policy::kExact, kLow, 0, 700, 6}, seed, 3000);
}

TEST(OffsetAllocatorModel, SmallCapacitySizeSplit) {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) run_model({5000, Policy::kExact, kSplit, 300, 700, 6}, seed, 3000);
}

TEST(OffsetAllocatorModel, SmallCapacityRoundUp) {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) run_model({7919, Policy::kRoundUpToBin, kLow, 0, 900, 4}, seed, 3000);
}

TEST(OffsetAllocatorModel, MediumCapacityManyLive) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    run_model({std::uint64_t{1} << 24, Policy::kExact, kNeighbour, 0, std::uint64_t{1} << 16, 12}, seed,
              4000);
  }
}

TEST(OffsetAllocatorModel, HugeCapacityAbove2To40) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    run_model({(std::uint64_t{1} << 45) + 3, Policy::kExact, kSplit, std::uint64_t{1} << 30, std::uint64_t{1} << 44, 20},
              seed, 3000);
    run_model({OffsetAllocator::kMaxCapacity, Policy::kRoundUpToBin, kNeighbour, 0, std::uint64_t{1} << 54, 30}, seed, 2000);
  }
}

}  // namespace
