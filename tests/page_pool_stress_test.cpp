// Concurrency tests for kvmem::PagePool (run under TSan by the tsan preset).
//
// RankAgreement is the identical-decision test of the issue: N simulated tensor-parallel
// ranks in one process, each with its own pool and its own releaser threads whose timing is
// randomized (random yields and spins; no sleeps). All ranks run the same scheduler script;
// every step they agree on MIN(pending pages), drain exactly that, and the test asserts
// that every rank reports the same available(), allocation results and misuse counts and
// that alloc returns the same ids. The script includes empty releases, double releases
// (detected and counted the same way on every rank), resets while releases are in flight,
// and aborted reservations.
//
// Steps: KVMEM_PAGE_POOL_AGREEMENT_STEPS (default 20000); ranks: KVMEM_PAGE_POOL_RANKS.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "kvmem/page_pool.hpp"

namespace kvmem {
namespace {

using Ids = std::vector<PageId>;

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

void random_delay(std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0: break;
    case 1: std::this_thread::yield(); break;
    case 2:
      for (int i = 0, n = static_cast<int>(rng() % 8); i < n; ++i) std::this_thread::yield();
      break;
    default: {
      volatile std::uint64_t sink = 0;
      for (std::uint64_t i = 0, n = rng() % 2000; i < n; ++i) sink = sink + i;
      break;
    }
  }
}

struct Job {
  bool ticketed = true;
  ReleaseTicket ticket;  // ticketed
  std::uint32_t epoch;   // unticketed: the epoch the pages belong to
  Ids ids;
};

// One rank: a pool plus releaser threads that deliver jobs with random timing.
class Rank {
 public:
  Rank(std::uint32_t pages, int releasers, std::uint64_t seed) : pool_(pages, options()) {
    for (int i = 0; i < releasers; ++i) {
      threads_.emplace_back([this, seed, i] { run(seed * 131 + static_cast<std::uint64_t>(i)); });
    }
  }
  ~Rank() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  static PagePool::Options options() {
    PagePool::Options o;
    o.misuse = PagePool::MisusePolicy::kCountIgnore;  // double releases are counted
    return o;
  }
  void submit(Job job) {
    in_flight_.fetch_add(1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_one();
  }
  bool idle() const { return in_flight_.load(std::memory_order_acquire) == 0; }
  PagePool& pool() { return pool_; }

 private:
  void run(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        // Take from either end: arrival order differs from submission order.
        if (rng() % 2 == 0) {
          job = std::move(jobs_.front());
          jobs_.pop_front();
        } else {
          job = std::move(jobs_.back());
          jobs_.pop_back();
        }
      }
      random_delay(rng);
      if (rng() % 8 == 0) pool_.release_deferred(Ids{});  // an empty release: a no-op
      if (job.ticketed) {
        pool_.release_deferred(job.ticket, job.ids);
      } else {
        pool_.release_deferred(job.epoch, job.ids);
      }
      in_flight_.fetch_sub(1, std::memory_order_release);
    }
  }

  PagePool pool_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stop_ = false;
  std::atomic<std::uint64_t> in_flight_{0};
  std::vector<std::thread> threads_;
};

struct AgreementResult {
  std::uint64_t steps = 0, drained = 0, allocs = 0, failed_allocs = 0, resets = 0, aborts = 0;
  std::uint64_t double_releases = 0, empty_releases = 0;
};

// ticketed = true: ids must agree. false: only counts (available(), success) must agree.
AgreementResult run_agreement(std::uint64_t steps, int num_ranks, bool ticketed,
                              std::uint64_t seed) {
  constexpr std::uint32_t kPages = 2048;
  std::vector<std::unique_ptr<Rank>> ranks;
  for (int r = 0; r < num_ranks; ++r) {
    ranks.push_back(std::make_unique<Rank>(kPages, 2, seed + static_cast<std::uint64_t>(r)));
  }
  std::mt19937_64 script(seed);  // the scheduler script every rank runs
  auto rnd = [&](std::uint64_t m) { return script() % m; };
  // Live requests: one id vector per rank (ids are equal across ranks when ticketed).
  std::vector<std::vector<Ids>> live;
  AgreementResult res;
  auto each = [&](auto&& fn) {
    for (int r = 0; r < num_ranks; ++r) fn(*ranks[static_cast<std::size_t>(r)], r);
  };
  auto check_agree = [&](const char* where) {
    const auto& p0 = ranks[0]->pool();
    for (int r = 1; r < num_ranks; ++r) {
      auto& p = ranks[static_cast<std::size_t>(r)]->pool();
      if (p.available() != p0.available()) {
        for (int q = 0; q < num_ranks; ++q) {
          auto st = ranks[static_cast<std::size_t>(q)]->pool().stats();
          std::printf("rank %d avail %llu free %llu alloc %llu misuse %llu waiting %llu drained %llu\n", q,
                      (unsigned long long)ranks[static_cast<std::size_t>(q)]->pool().available(),
                      (unsigned long long)st.free_pages, (unsigned long long)st.allocated_pages,
                      (unsigned long long)st.misuse, (unsigned long long)st.waiting_pages,
                      (unsigned long long)st.drained_pages);
        }
        ADD_FAILURE() << where << ": available differs at step " << res.steps;
        return false;
      }
      if (p.stats().misuse != ranks[0]->pool().stats().misuse) {
        ADD_FAILURE() << where << ": misuse count differs at step " << res.steps;
        return false;
      }
    }
    return true;
  };
  for (res.steps = 0; res.steps < steps; ++res.steps) {
    const std::uint64_t op = rnd(100);
    if (op < 40) {  // a new request
      const std::size_t n = 1 + rnd(24);
      std::vector<std::optional<Ids>> got;
      each([&](Rank& rk, int) { got.push_back(rk.pool().alloc(n)); });
      for (int r = 1; r < num_ranks; ++r) {
        const auto& g = got[static_cast<std::size_t>(r)];
        if (g.has_value() != got[0].has_value()) {
          ADD_FAILURE() << "alloc success differs at step " << res.steps;
          return res;
        }
        if (ticketed && g && *g != *got[0]) {
          ADD_FAILURE() << "alloc ids differ at step " << res.steps;
          return res;
        }
      }
      if (got[0]) {
        ++res.allocs;
        std::vector<Ids> per_rank;
        for (auto& g : got) per_rank.push_back(std::move(*g));
        live.push_back(std::move(per_rank));
      } else {
        ++res.failed_allocs;
      }
    } else if (op < 70 && !live.empty()) {  // hand a request to the I/O threads to release
      const std::size_t i = rnd(live.size());
      std::vector<Ids> req = std::move(live[i]);
      live.erase(live.begin() + static_cast<long>(i));
      const bool split = rnd(3) == 0 && req[0].size() > 1;  // two items for one request
      const std::size_t cut = split ? 1 + rnd(req[0].size() - 1) : req[0].size();
      // Release one page twice in the same item. Only in ticketed mode: in the unordered lane
      // ranks drain different items, so a bad item breaks count agreement (contract point 3).
      const bool dup = ticketed && rnd(20) == 0;
      const bool empty = rnd(10) == 0;
      if (dup) ++res.double_releases;
      if (empty) ++res.empty_releases;
      each([&](Rank& rk, int r) {
        const Ids& ids = req[static_cast<std::size_t>(r)];
        Ids first(ids.begin(), ids.begin() + static_cast<long>(cut));
        Ids second(ids.begin() + static_cast<long>(cut), ids.end());
        if (dup) first.push_back(first.front());
        auto send = [&](Ids part) {
          if (ticketed) {
            rk.submit(Job{true, rk.pool().issue_ticket(), 0, std::move(part)});
          } else if (!part.empty()) {
            rk.submit(Job{false, {}, rk.pool().epoch(), std::move(part)});
          }
        };
        if (empty) send(Ids{});
        send(std::move(first));
        if (split) send(std::move(second));
      });
    } else if (op < 80 && !live.empty()) {  // the scheduler frees a request directly
      const std::size_t i = rnd(live.size());
      each([&](Rank& rk, int r) { rk.pool().free(live[i][static_cast<std::size_t>(r)]); });
      live.erase(live.begin() + static_cast<long>(i));
    } else if (op < 88) {  // a reservation one rank vetoes: every rank aborts
      const std::size_t n = 1 + rnd(64);
      std::vector<std::optional<ReservationToken>> t;
      each([&](Rank& rk, int) { t.push_back(rk.pool().reserve(n)); });
      const bool veto = rnd(2) == 0;
      each([&](Rank& rk, int r) {
        auto& tok = t[static_cast<std::size_t>(r)];
        if (!tok) return;
        if (veto) {
          rk.pool().abort(*tok);
        } else {
          rk.pool().release(rk.pool().commit(*tok));
        }
      });
      res.aborts += veto ? 1 : 0;
    } else if (op == 99 && rnd(20) == 0) {  // reset mid-flight: releases still being pushed
      each([&](Rank& rk, int) { rk.pool().reset(); });
      live.clear();
      ++res.resets;
    }
    // Now and then the scheduler waits until every releaser is done (a yield loop on their
    // in-flight counters) so that the run makes progress even when the OS starves them;
    // all other steps drain whatever the random timing has delivered.
    if (res.steps % 64 == 63) {
      for (;;) {
        bool all_idle = true;
        each([&](Rank& rk, int) { all_idle = all_idle && rk.idle(); });
        if (all_idle) break;
        std::this_thread::yield();
      }
    }
    // The per-step agreement: MIN of pending pages, drained exactly.
    std::uint64_t agreed = ~std::uint64_t{0};
    each([&](Rank& rk, int) { agreed = std::min(agreed, rk.pool().pending_release().pages); });
    each([&](Rank& rk, int) {
      const std::uint64_t got = rk.pool().drain(agreed);
      if (got != agreed) ADD_FAILURE() << "drain applied " << got << " of " << agreed;
    });
    res.drained += agreed;
    if (!check_agree("step")) return res;
  }
  // Flush: wait (spinning, with yields) for every releaser, then drain the rest.
  for (;;) {
    bool all_idle = true;
    each([&](Rank& rk, int) { all_idle = all_idle && rk.idle(); });
    std::uint64_t agreed = ~std::uint64_t{0};
    each([&](Rank& rk, int) { agreed = std::min(agreed, rk.pool().pending_release().pages); });
    each([&](Rank& rk, int) { rk.pool().drain(agreed); });
    if (!check_agree("flush")) return res;
    if (all_idle && agreed == 0) break;
    std::this_thread::yield();
  }
  each([&](Rank& rk, int) {
    EXPECT_TRUE(rk.pool().validate()) << rk.pool().last_error();
    EXPECT_EQ(rk.pool().pending_release().pages, 0u);
  });
  // Every live request still holds its pages; free them and the pool is whole again.
  for (auto& req : live) {
    each([&](Rank& rk, int r) { rk.pool().free(req[static_cast<std::size_t>(r)]); });
  }
  each([&](Rank& rk, int) { EXPECT_EQ(rk.pool().available(), kPages); });
  return res;
}

TEST(PagePoolStress, RankAgreementTicketedIdsAgree) {
  const std::uint64_t steps = env_or("KVMEM_PAGE_POOL_AGREEMENT_STEPS", 20000);
  const int ranks = static_cast<int>(env_or("KVMEM_PAGE_POOL_RANKS", 4));
  const auto r = run_agreement(steps, ranks, true, env_or("KVMEM_PAGE_POOL_SEED", 7));
  EXPECT_EQ(r.steps, steps);
  EXPECT_GT(r.drained, 0u);
  EXPECT_GT(r.aborts, 0u);
  std::printf("agreement: ranks=%d steps=%llu allocs=%llu failed=%llu drained_pages=%llu "
              "double_releases=%llu empty_releases=%llu aborts=%llu resets=%llu\n",
              ranks, static_cast<unsigned long long>(r.steps),
              static_cast<unsigned long long>(r.allocs),
              static_cast<unsigned long long>(r.failed_allocs),
              static_cast<unsigned long long>(r.drained),
              static_cast<unsigned long long>(r.double_releases),
              static_cast<unsigned long long>(r.empty_releases),
              static_cast<unsigned long long>(r.aborts),
              static_cast<unsigned long long>(r.resets));
}

TEST(PagePoolStress, RankAgreementUnticketedCountsAgree) {
  const std::uint64_t steps = env_or("KVMEM_PAGE_POOL_AGREEMENT_STEPS", 20000) / 2;
  const auto r = run_agreement(steps, 3, false, 11);
  EXPECT_EQ(r.steps, steps);
  EXPECT_GT(r.drained, 0u);
}

// Many producers, one owner draining as it goes: every page comes back exactly once.
// Producers release items of 1 to 30 ids (both sides of PagePool::kCachedItemIds) while the
// owner drains; item_cache caps the release-item cache (0: heap only; 64: no growth past the
// first chunk, so cached and heap items mix; default: grows as needed).
void producers_and_draining_owner(std::size_t item_cache) {
  constexpr std::uint32_t kPages = 1 << 14;
  constexpr int kProducers = 3;
  PagePool::Options o;
  o.release_item_cache = item_cache;
  PagePool pool(kPages, o);
  auto all = *pool.alloc(kPages);
  std::atomic<int> done{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(p) + 1);
      for (std::size_t i = static_cast<std::size_t>(p); i < all.size();) {
        Ids batch;
        for (std::size_t k = 0, n = 1 + rng() % 30; k < n && i < all.size(); ++k) {
          batch.push_back(all[i]);
          i += kProducers;
        }
        random_delay(rng);
        pool.release_deferred(batch);
      }
      done.fetch_add(1, std::memory_order_release);
    });
  }
  std::uint64_t drained = 0;
  std::mt19937_64 rng(99);
  while (drained < kPages) {
    drained += pool.drain(rng() % 64);
    if (rng() % 16 == 0) {
      ASSERT_TRUE(pool.validate()) << pool.last_error();
    }
    if (done.load(std::memory_order_acquire) < kProducers) std::this_thread::yield();
  }
  for (auto& t : producers) t.join();
  EXPECT_EQ(pool.available(), kPages);
  EXPECT_EQ(pool.stats().misuse, 0u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePoolStress, ProducersAndDrainingOwner) {
  producers_and_draining_owner(PagePool::Options{}.release_item_cache);
}
TEST(PagePoolStress, ProducersAndDrainingOwnerSmallItemCache) { producers_and_draining_owner(64); }
TEST(PagePoolStress, ProducersAndDrainingOwnerHeapItems) { producers_and_draining_owner(0); }

// reset() racing with a producer: each round the owner resets, allocates every page and
// hands them to the producer, which releases them in small items with random delays and
// may still be pushing items of an older round. With MisusePolicy::kThrow any stale item
// applied to the new round's pages would throw from drain(); none may.
TEST(PagePoolStress, ResetRacingWithProducer) {
  constexpr std::uint32_t kPages = 256;
  PagePool pool(kPages);
  struct Handoff {
    std::uint32_t epoch;
    Ids ids;
  };
  std::mutex mu;
  std::shared_ptr<const Handoff> current;
  std::atomic<bool> stop{false};
  std::thread producer([&] {
    std::mt19937_64 rng(5);
    std::shared_ptr<const Handoff> job;
    std::size_t at = 0;
    while (!stop.load(std::memory_order_acquire)) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (current != job && rng() % 4 == 0) {  // sometimes finish the old round first
          job = current;
          at = 0;
        }
      }
      if (!job || at >= job->ids.size()) {
        std::this_thread::yield();
        continue;
      }
      const std::size_t n = std::min<std::size_t>(1 + rng() % 6, job->ids.size() - at);
      random_delay(rng);
      pool.release_deferred(job->epoch, std::span<const PageId>(job->ids).subspan(at, n));
      at += n;
    }
  });
  std::mt19937_64 rng(17);
  std::uint64_t drained = 0;
  for (int round = 0; round < 400; ++round) {
    pool.reset();
    auto ids = pool.alloc(kPages);
    ASSERT_TRUE(ids);
    {
      std::lock_guard<std::mutex> lock(mu);
      current = std::make_shared<const Handoff>(Handoff{pool.epoch(), std::move(*ids)});
    }
    for (int k = 0, n = static_cast<int>(rng() % 20); k < n; ++k) {
      drained += pool.drain(rng() % 32);
      std::this_thread::yield();
    }
    ASSERT_TRUE(pool.validate()) << pool.last_error();
  }
  stop.store(true, std::memory_order_release);
  producer.join();
  drained += pool.drain(kPages);
  EXPECT_EQ(pool.stats().misuse, 0u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
  std::printf("reset race: drained %llu pages, %llu stale items dropped\n",
              static_cast<unsigned long long>(drained),
              static_cast<unsigned long long>(pool.stats().stale_items));
}

}  // namespace
}  // namespace kvmem
