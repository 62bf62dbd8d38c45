// Suite "pages": kvmem::PagePool against two baselines run in the same process, for pools of
// 1M and 10M pages (64K and 128K with --smoke):
//   sglang-host   SGLang's host pool algorithm: the free list is one int64 array; alloc copies
//                 the front slice out (the 2026 clone) and advances; free concatenates the
//                 remaining list with the freed ids into a new array (O(free list)).
//   sglang-sorted the same, and free sorts the concatenated list (locality-sorted free list).
//   vllm-queue    vLLM's FreeKVCacheBlockQueue: block objects with intrusive prev/next
//                 pointers and sentinels; popleft_n for alloc, append_n for free, remove +
//                 append for an LRU touch.
// Every pool starts with half its pages allocated, so the free list holds N/2 pages.
// Per-call figures time each call with steady_clock (about 20 ns of timer cost included);
// "loop ns" is a tight loop without per-call timers (median of 5 runs). "calls > 5us" counts the calls that
// exceeded the 5 us target: on a shared machine these are mostly preemptions (the baselines
// show the same), so compare them across implementations rather than reading max alone. Baseline cases whose calls take
// milliseconds run under a time budget, so their call counts are small.
//
// Cases: alloc(1)+free(1), alloc(64), free(64), release_deferred from another thread while
// the owner drains (and the baseline: a mutex queue drained into the free list), LRU touch.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "kvmem/page_pool.hpp"

namespace {

using kvmem::PageId;
using kvmem::bench::now_ns;

// ---- baselines ------------------------------------------------------------------------------

class SglangHostPool {
 public:
  SglangHostPool(std::uint32_t n, bool sorted) : sorted_(sorted) {
    free_.resize(n);
    std::iota(free_.begin(), free_.end(), 0);
  }
  std::size_t available() const { return free_.size() - start_; }
  bool alloc(std::size_t n, std::int64_t* out) {
    if (n > available()) return false;
    std::copy(free_.begin() + static_cast<long>(start_),
              free_.begin() + static_cast<long>(start_ + n), out);
    start_ += n;
    return true;
  }
  void free(const std::int64_t* ids, std::size_t k) {
    std::vector<std::int64_t> next;
    next.reserve(available() + k);
    next.insert(next.end(), free_.begin() + static_cast<long>(start_), free_.end());
    next.insert(next.end(), ids, ids + k);
    if (sorted_) std::sort(next.begin(), next.end());
    free_.swap(next);
    start_ = 0;
  }

 private:
  std::vector<std::int64_t> free_;
  std::size_t start_ = 0;
  bool sorted_;
};

class VllmQueue {
 public:
  struct Block {
    std::uint32_t id = 0;
    std::uint32_t ref = 0;
    Block* prev = nullptr;
    Block* next = nullptr;
  };
  explicit VllmQueue(std::uint32_t n) : blocks_(n) {
    head_.next = &tail_;
    tail_.prev = &head_;
    for (std::uint32_t i = 0; i < n; ++i) {
      blocks_[i].id = i;
      append(&blocks_[i]);
    }
  }
  std::size_t available() const { return free_; }
  bool popleft_n(std::size_t n, Block** out) {
    if (n > free_) return false;
    Block* b = head_.next;
    for (std::size_t i = 0; i < n; ++i) {
      out[i] = b;
      Block* nx = b->next;
      b->prev = b->next = nullptr;
      b = nx;
    }
    head_.next = b;
    b->prev = &head_;
    free_ -= n;
    return true;
  }
  void append(Block* b) {
    Block* last = tail_.prev;
    last->next = b;
    b->prev = last;
    b->next = &tail_;
    tail_.prev = b;
    ++free_;
  }
  void append_n(Block* const* bs, std::size_t k) {
    for (std::size_t i = 0; i < k; ++i) append(bs[i]);
  }
  void remove(Block* b) {
    b->prev->next = b->next;
    b->next->prev = b->prev;
    b->prev = b->next = nullptr;
    --free_;
  }
  Block* block(std::uint32_t id) { return &blocks_[id]; }

 private:
  std::vector<Block> blocks_;
  Block head_, tail_;
  std::size_t free_ = 0;
};

// ---- measuring ------------------------------------------------------------------------------

// Latency points of the CDF tables (and charts): quantile, label.
constexpr std::pair<double, const char*> kCdfPoints[] = {
    {0.10, "p10"}, {0.25, "p25"}, {0.50, "p50"},  {0.75, "p75"},     {0.90, "p90"},
    {0.99, "p99"}, {0.999, "p99.9"}, {0.9999, "p99.99"}, {1.0, "max"}};

struct Timing {
  double mean_ns = 0, p50_ns = 0, p999_ns = 0, max_ns = 0;
  std::uint64_t calls = 0, over_5us = 0;
  std::vector<double> cdf;  // at kCdfPoints
};

// pre(i) and post(i) run untimed around each timed(i); stops after max_calls or budget_s.
template <class Pre, class Timed, class Post>
Timing per_call(std::uint64_t max_calls, double budget_s, Pre&& pre, Timed&& timed, Post&& post) {
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(max_calls, 1u << 22)));
  const std::uint64_t start = now_ns();
  const auto budget = static_cast<std::uint64_t>(budget_s * 1e9);
  for (std::uint64_t i = 0; i < max_calls; ++i) {
    pre(i);
    const std::uint64_t t0 = now_ns();
    timed(i);
    const std::uint64_t t1 = now_ns();
    post(i);
    samples.push_back(static_cast<double>(t1 - t0));
    if (t1 - start > budget && i >= 2) break;
  }
  Timing t;
  t.calls = samples.size();
  t.mean_ns = std::accumulate(samples.begin(), samples.end(), 0.0) / static_cast<double>(t.calls);
  t.max_ns = *std::max_element(samples.begin(), samples.end());
  t.over_5us = static_cast<std::uint64_t>(
      std::count_if(samples.begin(), samples.end(), [](double v) { return v > 5000; }));
  std::sort(samples.begin(), samples.end());
  for (const auto& point : kCdfPoints)
    t.cdf.push_back(samples[static_cast<std::size_t>(point.first * static_cast<double>(samples.size() - 1))]);
  t.p50_ns = kvmem::bench::percentile(samples, 0.5);
  t.p999_ns = kvmem::bench::percentile(std::move(samples), 0.999);
  return t;
}

auto nothing = [](std::uint64_t) {};

std::string key(std::uint32_t n);

std::uint64_t context_switches() {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  return static_cast<std::uint64_t>(ru.ru_nvcsw + ru.ru_nivcsw);
}

// Like per_call, but drops the calls during which the thread was switched out (getrusage
// RUSAGE_THREAD around each call, outside the timed region), so max shows what the
// algorithm does rather than the machine's scheduler. Returns max ns and the dropped count.
struct Unpreempted {
  double max_ns = 0;
  std::uint64_t dropped = 0, over_5us = 0;
};
template <class Pre, class Timed, class Post>
Unpreempted max_unpreempted(std::uint64_t calls, Pre&& pre, Timed&& timed, Post&& post) {
  double worst = 0;
  std::uint64_t dropped = 0, over = 0;
  for (std::uint64_t i = 0; i < calls; ++i) {
    pre(i);
    const std::uint64_t c0 = context_switches();
    const std::uint64_t t0 = now_ns();
    timed(i);
    const std::uint64_t t1 = now_ns();
    const std::uint64_t c1 = context_switches();
    post(i);
    if (c1 != c0) {
      ++dropped;
      continue;
    }
    worst = std::max(worst, static_cast<double>(t1 - t0));
    over += (t1 - t0 > 5000) ? 1 : 0;
  }
  return {worst, dropped, over};
}

void max_latency_case(std::uint32_t n, const kvmem::bench::Options& opt,
                      kvmem::bench::Report& report) {
  const std::uint64_t calls = opt.smoke ? 20000 : 1000000;
  kvmem::bench::Table table;
  table.title = "max call latency without preemption (pool " + std::to_string(n) + " pages)";
  table.columns = {"impl", "op", "max ns", "calls > 5us", "calls", "dropped (switched out)"};
  kvmem::PagePool pool(n);
  auto live = *pool.alloc(n / 2);
  PageId one[1] = {0};
  PageId buf[64] = {};
  VllmQueue q(n);
  std::vector<VllmQueue::Block*> qlive(n / 2);
  q.popleft_n(qlive.size(), qlive.data());
  VllmQueue::Block* qone[1] = {nullptr};
  VllmQueue::Block* qbuf[64] = {};
  auto add = [&](const char* impl, const char* op, const Unpreempted& r) {
    table.rows.push_back({impl, op, kvmem::bench::Cell(r.max_ns, 0), kvmem::bench::Cell(r.over_5us),
                          kvmem::bench::Cell(calls), kvmem::bench::Cell(r.dropped)});
    return r.max_ns;
  };
  double worst = 0;
  worst = std::max(worst, add("kvmem", "alloc(1)+free(1)", max_unpreempted(calls, nothing, [&](std::uint64_t) {
    pool.alloc_into(one);
    pool.free(one);
  }, nothing)));
  worst = std::max(worst, add("kvmem", "alloc(64)", max_unpreempted(calls, nothing,
      [&](std::uint64_t) { pool.alloc_into(buf); }, [&](std::uint64_t) { pool.free(buf); })));
  worst = std::max(worst, add("kvmem", "free(64)", max_unpreempted(calls,
      [&](std::uint64_t) { pool.alloc_into(buf); }, [&](std::uint64_t) { pool.free(buf); }, nothing)));
  add("vllm-queue", "alloc(1)+free(1)", max_unpreempted(calls, nothing, [&](std::uint64_t) {
    q.popleft_n(1, qone);
    q.append_n(qone, 1);
  }, nothing));
  add("vllm-queue", "alloc(64)", max_unpreempted(calls, nothing,
      [&](std::uint64_t) { q.popleft_n(64, qbuf); }, [&](std::uint64_t) { q.append_n(qbuf, 64); }));
  add("vllm-queue", "free(64)", max_unpreempted(calls,
      [&](std::uint64_t) { q.popleft_n(64, qbuf); }, [&](std::uint64_t) { q.append_n(qbuf, 64); }, nothing));
  table.note = "calls during which the thread was switched out are dropped (counted); the rest "
               "still include interrupts and ~20 ns of timer";
  report.add(std::move(table));
  report.figure("pages." + key(n) + ".kvmem.max_call_unpreempted_ns", worst);
  kvmem::bench::do_not_optimize(live.size());
}

struct Row {
  std::string impl;
  double loop_ns;  // < 0: not measured
  Timing t;
};

void add_table(kvmem::bench::Report& report, const std::string& title, std::uint32_t n,
               const std::vector<Row>& rows, const std::string& note, bool with_cdf = false) {
  kvmem::bench::Table table;
  table.title = title + " (pool " + std::to_string(n) + " pages)";
  table.columns = {"impl", "loop ns/op", "mean ns/call", "p50 ns", "p99.9 ns", "max ns",
                   "calls", "calls > 5us", "p50 vs kvmem"};
  const double base = rows.front().t.p50_ns;
  for (const Row& r : rows) {
    table.rows.push_back({r.impl, r.loop_ns < 0 ? kvmem::bench::Cell("-") : kvmem::bench::Cell(r.loop_ns, 1),
                          kvmem::bench::Cell(r.t.mean_ns, 1), kvmem::bench::Cell(r.t.p50_ns, 0),
                          kvmem::bench::Cell(r.t.p999_ns, 0), kvmem::bench::Cell(r.t.max_ns, 0),
                          kvmem::bench::Cell(r.t.calls), kvmem::bench::Cell(r.t.over_5us),
                          kvmem::bench::ratio(r.t.p50_ns, base)});
  }
  table.note = note;
  table.plot = {"bar", "impl", {"p50 ns", "p99.9 ns", "max ns"}, "ns per call (log)", false, true};
  report.add(std::move(table));
  if (!with_cdf) return;

  // The latency distribution of every implementation, one column each (the chart is a CDF).
  kvmem::bench::Table cdf;
  cdf.title = title + ": latency distribution (pool " + std::to_string(n) + " pages)";
  cdf.columns = {"quantile"};
  for (const Row& r : rows) cdf.columns.push_back(r.impl + " ns");
  for (std::size_t i = 0; i < std::size(kCdfPoints); ++i) {
    std::vector<kvmem::bench::Cell> line{kCdfPoints[i].second};
    for (const Row& r : rows) line.emplace_back(r.t.cdf[i], 0);
    cdf.rows.push_back(std::move(line));
  }
  cdf.plot = {"cdf", "quantile", {cdf.columns.begin() + 1, cdf.columns.end()}, "ns per call (log)", false, true};
  report.add(std::move(cdf));
}

std::string key(std::uint32_t n) { return n >= 1000000 ? std::to_string(n / 1000000) + "M" : std::to_string(n / 1000) + "K"; }

// ---- cases ----------------------------------------------------------------------------------

void alloc_free_cases(std::uint32_t n, const kvmem::bench::Options& opt,
                      kvmem::bench::Report& report) {
  const std::uint64_t calls = opt.smoke ? 20000 : 1000000;
  const double budget = opt.smoke ? 0.05 : 1.0;
  const std::uint64_t loop_iters = opt.smoke ? 100000 : 20000000;
  std::vector<Row> pair_rows, a64_rows, f64_rows;

  {  // kvmem
    kvmem::PagePool pool(n);
    auto live = *pool.alloc(n / 2);
    PageId one[1] = {0};
    PageId buf[64] = {};
    const double pair_loop = kvmem::bench::median_of(5, [&] {
      const std::uint64_t t0 = now_ns();
      for (std::uint64_t i = 0; i < loop_iters / 5; ++i) {
        pool.alloc_into(one);
        kvmem::bench::do_not_optimize(one[0]);
        pool.free(one);
      }
      return static_cast<double>(now_ns() - t0) / static_cast<double>(loop_iters / 5);
    });
    Timing pair = per_call(calls, budget, nothing, [&](std::uint64_t) {
      pool.alloc_into(one);
      pool.free(one);
    }, nothing);
    pair_rows.push_back({"kvmem", pair_loop, pair});
    const double a64_loop = kvmem::bench::median_of(5, [&] {
      const std::uint64_t t1 = now_ns();
      for (std::uint64_t i = 0; i < loop_iters / 80; ++i) {
        pool.alloc_into(buf);
        kvmem::bench::do_not_optimize(buf[0]);
        pool.free(buf);
      }
      return static_cast<double>(now_ns() - t1) / static_cast<double>(loop_iters / 80) / 2;
    });
    a64_rows.push_back({"kvmem", a64_loop, per_call(calls, budget, nothing,
                                                    [&](std::uint64_t) { pool.alloc_into(buf); },
                                                    [&](std::uint64_t) { pool.free(buf); })});
    f64_rows.push_back({"kvmem", -1, per_call(calls, budget,
                                              [&](std::uint64_t) { pool.alloc_into(buf); },
                                              [&](std::uint64_t) { pool.free(buf); }, nothing)});
    kvmem::bench::do_not_optimize(live.size());
  }
  for (const bool sorted : {false, true}) {
    const std::string name = sorted ? "sglang-sorted" : "sglang-host";
    SglangHostPool pool(n, sorted);
    std::vector<std::int64_t> live(n / 2);
    pool.alloc(live.size(), live.data());
    std::int64_t one[1] = {0};
    std::int64_t buf[64] = {};
    const double b = budget / (sorted ? 1 : 2);
    pair_rows.push_back({name, -1, per_call(calls, b, nothing, [&](std::uint64_t) {
                                              pool.alloc(1, one);
                                              pool.free(one, 1);
                                            }, nothing)});
    a64_rows.push_back({name, -1, per_call(calls, b, nothing,
                                           [&](std::uint64_t) { pool.alloc(64, buf); },
                                           [&](std::uint64_t) { pool.free(buf, 64); })});
    f64_rows.push_back({name, -1, per_call(calls, b, [&](std::uint64_t) { pool.alloc(64, buf); },
                                           [&](std::uint64_t) { pool.free(buf, 64); }, nothing)});
  }
  {
    VllmQueue q(n);
    std::vector<VllmQueue::Block*> live(n / 2);
    q.popleft_n(live.size(), live.data());
    VllmQueue::Block* one[1] = {nullptr};
    VllmQueue::Block* buf[64] = {};
    const double pair_loop = kvmem::bench::median_of(5, [&] {
      const std::uint64_t t0 = now_ns();
      for (std::uint64_t i = 0; i < loop_iters / 5; ++i) {
        q.popleft_n(1, one);
        kvmem::bench::do_not_optimize(one[0]);
        q.append_n(one, 1);
      }
      return static_cast<double>(now_ns() - t0) / static_cast<double>(loop_iters / 5);
    });
    pair_rows.push_back({"vllm-queue", pair_loop, per_call(calls, budget, nothing, [&](std::uint64_t) {
                                                              q.popleft_n(1, one);
                                                              q.append_n(one, 1);
                                                            }, nothing)});
    a64_rows.push_back({"vllm-queue", -1, per_call(calls, budget, nothing,
                                                   [&](std::uint64_t) { q.popleft_n(64, buf); },
                                                   [&](std::uint64_t) { q.append_n(buf, 64); })});
    f64_rows.push_back({"vllm-queue", -1, per_call(calls, budget,
                                                   [&](std::uint64_t) { q.popleft_n(64, buf); },
                                                   [&](std::uint64_t) { q.append_n(buf, 64); },
                                                   nothing)});
  }
  const std::string k = key(n);
  add_table(report, "alloc(1)+free(1)", n, pair_rows,
            "one call of each per sample; loop ns/op = ns per alloc+free pair without timers");
  add_table(report, "alloc(64)", n, a64_rows, "loop ns/op for kvmem = half of an alloc(64)+free(64) pair", true);
  add_table(report, "free(64)", n, f64_rows, "", true);
  report.figure("pages." + k + ".kvmem.alloc1_free1_loop_ns", pair_rows[0].loop_ns);
  report.figure("pages." + k + ".kvmem.alloc64_mean_ns", a64_rows[0].t.mean_ns);
  report.figure("pages." + k + ".kvmem.free64_mean_ns", f64_rows[0].t.mean_ns);
  report.figure("pages." + k + ".kvmem.max_call_ns",
                std::max({pair_rows[0].t.max_ns, a64_rows[0].t.max_ns, f64_rows[0].t.max_ns}));
  report.figure("pages." + k + ".sglang_host.free64_mean_ns", f64_rows[1].t.mean_ns);
  report.figure("pages." + k + ".sglang_host.max_call_ns", f64_rows[1].t.max_ns);
  report.figure("pages." + k + ".free64_sglang_over_kvmem", f64_rows[1].t.mean_ns / f64_rows[0].t.mean_ns);
}

// A releaser thread returns items of 4 pages while the owner drains whatever is pending.
void deferred_case(std::uint32_t n, const kvmem::bench::Options& opt,
                   kvmem::bench::Report& report) {
  const std::uint32_t pages = std::min<std::uint32_t>(n / 2, opt.smoke ? 1u << 14 : 1u << 20);
  constexpr std::uint32_t kItem = 4;
  std::vector<Row> rows;
  double kvmem_drain_ns_per_page = 0, base_drain_ns_per_page = 0;
  {
    kvmem::PagePool pool(n);
    (void)pool.alloc(n / 2 - pages);
    auto ids = *pool.alloc(pages);
    std::atomic<bool> go{false};
    Timing prod;
    std::thread releaser([&] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      prod = per_call(pages / kItem, 1e9, nothing, [&](std::uint64_t i) {
        pool.release_deferred(std::span<const PageId>(ids).subspan(i * kItem, kItem));
      }, nothing);
    });
    go.store(true, std::memory_order_release);
    std::uint64_t drained = 0, drain_ns = 0;
    while (drained < (pages / kItem) * kItem) {
      const std::uint64_t t0 = now_ns();
      drained += pool.drain(1u << 16);
      drain_ns += now_ns() - t0;
      std::this_thread::yield();
    }
    releaser.join();
    kvmem_drain_ns_per_page = static_cast<double>(drain_ns) / static_cast<double>(drained);
    rows.push_back({"kvmem", -1, prod});
  }
  {
    // The SGLang #9797 pattern: a lock-protected queue of index chunks, drained per step by
    // concatenating the chunks and freeing them into the host pool.
    SglangHostPool pool(n, false);
    std::vector<std::int64_t> sink(n / 2 - pages);
    pool.alloc(sink.size(), sink.data());
    std::vector<std::int64_t> ids(pages);
    pool.alloc(pages, ids.data());
    std::mutex mu;
    std::deque<std::vector<std::int64_t>> queue;
    std::atomic<bool> go{false};
    Timing prod;
    std::thread releaser([&] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      prod = per_call(pages / kItem, 1e9, nothing, [&](std::uint64_t i) {
        std::vector<std::int64_t> chunk(ids.begin() + static_cast<long>(i * kItem),
                                        ids.begin() + static_cast<long>((i + 1) * kItem));
        std::lock_guard<std::mutex> lock(mu);
        queue.push_back(std::move(chunk));
      }, nothing);
    });
    go.store(true, std::memory_order_release);
    std::uint64_t drained = 0, drain_ns = 0;
    while (drained < (pages / kItem) * kItem) {
      const std::uint64_t t0 = now_ns();
      std::vector<std::int64_t> all;
      {
        std::lock_guard<std::mutex> lock(mu);
        for (auto& c : queue) all.insert(all.end(), c.begin(), c.end());
        queue.clear();
      }
      if (!all.empty()) pool.free(all.data(), all.size());
      drain_ns += now_ns() - t0;
      drained += all.size();
      std::this_thread::yield();
    }
    releaser.join();
    base_drain_ns_per_page = static_cast<double>(drain_ns) / static_cast<double>(drained);
    rows.push_back({"sglang mutex queue", -1, prod});
  }
  add_table(report, "release_deferred(4 pages) from another thread", n, rows,
            "per call on the releaser thread while the owner drains; owner drain ns/page: kvmem " +
                kvmem::bench::fmt(kvmem_drain_ns_per_page, 1) + ", sglang (cat into free list) " +
                kvmem::bench::fmt(base_drain_ns_per_page, 1));
  const std::string k = key(n);
  report.figure("pages." + k + ".kvmem.release_deferred_mean_ns", rows[0].t.mean_ns);
  report.figure("pages." + k + ".kvmem.drain_ns_per_page", kvmem_drain_ns_per_page);
  report.figure("pages." + k + ".sglang.drain_ns_per_page", base_drain_ns_per_page);
}

// LRU touch: a cached page is hit (leaves the LRU from the middle) and released again.
void lru_case(std::uint32_t n, const kvmem::bench::Options& opt, kvmem::bench::Report& report) {
  const std::uint32_t cached = std::min<std::uint32_t>(n, opt.smoke ? 1u << 14 : 1u << 20);
  const std::uint64_t calls = opt.smoke ? 20000 : 1000000;
  std::vector<std::uint32_t> order(calls);
  std::mt19937_64 rng(opt.seed);
  for (auto& v : order) v = static_cast<std::uint32_t>(rng() % cached);
  std::vector<Row> rows;
  {
    kvmem::PagePool::Options o;
    o.index_reserve = cached;
    kvmem::PagePool pool(n, o);
    auto ids = *pool.alloc(cached);
    for (std::uint32_t i = 0; i < cached; ++i) pool.publish(kvmem::BlockHash::from_u64(i), ids[i]);
    pool.release(ids);
    // A fresh pool hands out 0, 1, 2, ...: page order[i] is ids[order[i]], looked up directly
    // like the baseline's block(order[i]).
    rows.push_back({"kvmem", -1, per_call(calls, 2.0, nothing, [&](std::uint64_t i) {
                                            const PageId p = order[i];
                                            pool.retain(std::span<const PageId>(&p, 1));
                                            pool.release(std::span<const PageId>(&p, 1));
                                          }, nothing)});
  }
  {
    VllmQueue q(n);
    rows.push_back({"vllm-queue", -1, per_call(calls, 2.0, nothing, [&](std::uint64_t i) {
                                                 auto* b = q.block(order[i]);
                                                 q.remove(b);
                                                 q.append(b);
                                               }, nothing)});
  }
  add_table(report, "LRU touch (remove from the middle + append)", n, rows,
            std::to_string(cached) + " cached pages, random page per call; kvmem = retain + release");
  report.figure("pages." + key(n) + ".kvmem.lru_touch_mean_ns", rows[0].t.mean_ns);
}

void run(const kvmem::bench::Options& opt, kvmem::bench::Report& report) {
  const std::vector<std::uint32_t> sizes =
      opt.smoke ? std::vector<std::uint32_t>{1u << 16, 1u << 17}
                : std::vector<std::uint32_t>{1000000, 10000000};
  std::size_t done = 0;
  for (const std::uint32_t n : sizes) {
    report.progress("pages " + std::to_string(n), done++, sizes.size());
    alloc_free_cases(n, opt, report);
    deferred_case(n, opt, report);
    lru_case(n, opt, report);
    max_latency_case(n, opt, report);
  }
}

}  // namespace

KVMEM_BENCH_SUITE("pages",
                  "PagePool alloc/free/deferred release/LRU vs SGLang host pool and vLLM queue",
                  run);
