// Concurrency stress for kvmem::SharedArena (label "concurrent": run under TSan and ASan).
//
// Workers allocate, write a pattern that names the owner into the range, verify it later and
// free; meanwhile a manager adds and removes segments (both removal policies), a reader polls
// stats, and a snapshotter saves and restores. Overlapping ranges or a free into the wrong
// segment show up as a corrupted pattern; lifetime bugs show up under the sanitizers.
#include "kvmem/shared_arena.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

namespace {

using kvmem::ArenaHandle;
using kvmem::PlacementPolicy;
using kvmem::RemovePolicy;
using kvmem::SegmentId;
using kvmem::SharedArena;

SharedArena::Options opts() {
  SharedArena::Options o;
  o.stripes = 4;
  o.min_stripe_bytes = 4096;
  return o;
}

struct Held {
  ArenaHandle h;
  std::uint64_t tag = 0;
};

void write_pattern(const ArenaHandle& h, std::uint64_t tag) {
  auto* p = static_cast<unsigned char*>(h.data());
  for (std::uint64_t i = 0; i < h.size(); ++i) p[i] = static_cast<unsigned char>(tag + i * 131);
}

bool check_pattern(const ArenaHandle& h, std::uint64_t tag) {
  const auto* p = static_cast<const unsigned char*>(h.data());
  for (std::uint64_t i = 0; i < h.size(); ++i) {
    if (p[i] != static_cast<unsigned char>(tag + i * 131)) return false;
  }
  return true;
}

// Segment memory is never freed while a handle may point into it: the graveyard keeps every
// buffer until the test ends (the caller's job, as the contract says).
class Memory {
 public:
  std::byte* make(std::size_t n) {
    std::lock_guard<std::mutex> g(mu_);
    buffers_.push_back(std::make_unique<std::byte[]>(n));
    return buffers_.back().get();
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<std::byte[]>> buffers_;
};

TEST(SharedArenaStress, AllocateWriteVerifyFreeWhileSegmentsComeAndGo) {
  Memory memory;
  SharedArena arena(opts());
  std::mutex segs_mu;
  std::deque<SegmentId> segs;
  for (int i = 0; i < 3; ++i) {
    const std::size_t n = 64 * 1024 + static_cast<std::size_t>(i) * 4096;
    segs.push_back(arena.add_segment(n, memory.make(n), "seed-" + std::to_string(i)));
  }

  constexpr int kWorkers = 4;
  constexpr int kOps = 20000;
  std::atomic<int> workers_done{0};
  std::atomic<std::uint64_t> corrupted{0};
  std::atomic<std::uint64_t> allocations{0};
  std::atomic<std::uint64_t> wrong_segment{0};

  auto worker = [&](int t) {
    std::mt19937_64 rng(1000 + static_cast<std::uint64_t>(t));
    std::vector<Held> held;
    std::uint64_t next_tag = static_cast<std::uint64_t>(t) << 40;
    for (int op = 0; op < kOps; ++op) {
      const unsigned r = static_cast<unsigned>(rng() % 100);
      if (r < 55 || held.empty()) {
        const std::uint64_t size = 1 + rng() % 2048;
        std::optional<ArenaHandle> h;
        if (rng() % 4 == 0) {
          // Exactly one segment, which the manager may remove (and whose slot it may reuse)
          // at any moment: the range must be in that segment or the call must throw.
          SegmentId want;
          {
            std::lock_guard<std::mutex> g(segs_mu);
            want = segs[rng() % segs.size()];
          }
          try {
            h = arena.allocate(size, want);
            if (h && h->segment() != want) wrong_segment.fetch_add(1);
          } catch (const kvmem::UsageError&) {
          }
        } else {
          const auto policy = static_cast<PlacementPolicy>(rng() % 5);
          h = arena.allocate(size, policy, std::uint64_t{1} << (rng() % 4));
        }
        if (h) {
          allocations.fetch_add(1, std::memory_order_relaxed);
          const std::uint64_t tag = ++next_tag;
          write_pattern(*h, tag);
          held.push_back(Held{std::move(*h), tag});
        }
      } else if (r < 90) {
        const std::size_t i = rng() % held.size();
        if (!check_pattern(held[i].h, held[i].tag)) corrupted.fetch_add(1);
        held[i] = std::move(held.back());
        held.pop_back();  // drop: frees (or does nothing if its segment was removed)
      } else if (r < 95) {
        const std::size_t i = rng() % held.size();
        if (!check_pattern(held[i].h, held[i].tag)) corrupted.fetch_add(1);
      } else {
        // disown + adopt: the range stays ours in between.
        const std::size_t i = rng() % held.size();
        const kvmem::ArenaRange range = held[i].h.disown();
        try {
          held[i].h = arena.adopt(range);
        } catch (const kvmem::UsageError&) {
          // Its segment was removed meanwhile (kDetach drops unclaimed ranges).
          held[i] = std::move(held.back());
          held.pop_back();
        }
      }
      if (held.size() > 48) {
        if (!check_pattern(held.front().h, held.front().tag)) corrupted.fetch_add(1);
        held.erase(held.begin());
      }
    }
    for (auto& x : held) {
      if (!check_pattern(x.h, x.tag)) corrupted.fetch_add(1);
    }
    workers_done.fetch_add(1);
  };

  std::thread manager([&] {
    std::mt19937_64 rng(7);
    int round = 0;
    while (workers_done.load() < kWorkers) {
      ++round;
      const std::size_t n = 16 * 1024 + (rng() % 16) * 4096;
      const SegmentId id = arena.add_segment(n, memory.make(n), "m-" + std::to_string(round));
      std::lock_guard<std::mutex> g(segs_mu);
      segs.push_back(id);
      if (segs.size() > 4) {
        const SegmentId victim = segs.front();
        const RemovePolicy p = round % 2 ? RemovePolicy::kDetach : RemovePolicy::kRefuseIfLive;
        if (arena.remove_segment(victim, p)) segs.pop_front();
      }
      std::this_thread::yield();
    }
  });

  std::thread reader([&] {
    while (workers_done.load() < kWorkers) {
      const auto total = arena.stats();
      EXPECT_LE(total.fast_rejections, total.failed_allocations);
      for (const auto& st : arena.segment_stats()) {
        for (const auto& s : st.stripes) EXPECT_LE(s.used, s.capacity);
      }
      std::this_thread::yield();
    }
  });

  std::thread snapshotter([&] {
    int rounds = 0;
    while (workers_done.load() < kWorkers && rounds < 30) {
      const auto image = arena.snapshot();
      SharedArena copy = SharedArena::restore(image, opts());
      EXPECT_TRUE(copy.validate());
      const std::uint64_t live = copy.stats().live_allocations;
      EXPECT_EQ(copy.free_unclaimed(), live);  // after restore every live range is unclaimed
      EXPECT_EQ(copy.stats().used, 0u);
      ++rounds;
      std::this_thread::yield();
    }
  });

  std::vector<std::thread> ws;
  for (int t = 0; t < kWorkers; ++t) ws.emplace_back(worker, t);
  for (auto& w : ws) w.join();
  manager.join();
  reader.join();
  snapshotter.join();

  EXPECT_EQ(corrupted.load(), 0u);
  EXPECT_EQ(wrong_segment.load(), 0u);
  EXPECT_GT(allocations.load(), 0u);
  EXPECT_TRUE(arena.validate());
  EXPECT_EQ(arena.stats().live_allocations, 0u);
}

TEST(SharedArenaStress, TwoThreadsChurnOneSegmentWithoutLosingBytes) {
  SharedArena arena(opts());
  const SegmentId seg = arena.add_segment(256 * 1024);
  constexpr int kThreads = 3;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t));
      std::vector<ArenaHandle> ring(16);
      for (int i = 0; i < 20000; ++i) {
        auto& slot = ring[rng() % ring.size()];
        slot = ArenaHandle{};
        if (auto h = arena.allocate(64 + rng() % 512)) slot = std::move(*h);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_TRUE(arena.validate());
  const auto st = arena.segment_stats(seg);
  EXPECT_EQ(st.used, 0u);
  EXPECT_EQ(st.live_allocations, 0u);
  // Every byte came back: the whole segment is one request away in each stripe.
  for (const auto& s : st.stripes) {
    auto h = arena.allocate(s.capacity, seg);
    EXPECT_TRUE(h.has_value());
  }
}

TEST(SharedArenaStress, HandlesDroppedWhileTheArenaDies) {
  for (int round = 0; round < 20; ++round) {
    auto arena = std::make_unique<SharedArena>(opts());
    arena->add_segment(128 * 1024);
    arena->add_segment(128 * 1024);
    constexpr int kThreads = 3;
    std::vector<std::vector<ArenaHandle>> hs(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      for (int i = 0; i < 200; ++i) hs[static_cast<std::size_t>(t)].push_back(std::move(*arena->allocate(64)));
    }
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t) {
      ts.emplace_back([&, t] {
        ready.fetch_add(1);
        while (!go.load()) std::this_thread::yield();
        auto& mine = hs[static_cast<std::size_t>(t)];
        while (!mine.empty()) {
          if (mine.size() % 3 == 0) (void)mine.back().disown();
          mine.pop_back();
        }
      });
    }
    while (ready.load() != kThreads) std::this_thread::yield();
    go.store(true);
    arena.reset();  // races with the handle drops above
    for (auto& t : ts) t.join();
  }
}

TEST(SharedArenaStress, FailuresAndFreesRaceOnTheBound) {
  // Threads fill a small arena to failure and free again: a request that fits must never be
  // refused because a concurrent tightening lowered the bound below a concurrent free.
  SharedArena arena(opts());
  arena.add_segment(32 * 1024);
  constexpr int kThreads = 3;
  std::atomic<std::uint64_t> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      for (int round = 0; round < 200; ++round) {
        std::vector<ArenaHandle> hs;
        while (auto h = arena.allocate(1000)) {
          hs.push_back(std::move(*h));
          if (hs.size() > 40) break;
        }
        failures.fetch_add(1);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_TRUE(arena.validate());
  // Quiescent and empty now: the largest request must succeed, whatever the races did to the bound.
  for (int i = 0; i < 4; ++i) {
    auto h = arena.allocate(8 * 1024);
    EXPECT_TRUE(h.has_value());
  }
  EXPECT_GT(failures.load(), 0u);
}

}  // namespace
