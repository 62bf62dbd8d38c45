// kvmem-bench arena: SharedArena against the Mooncake design, in the same process.
//
// Baseline ("mooncake-style"): one OffsetAllocator per segment behind one std::mutex, held
// by a shared_ptr; handles keep a weak_ptr (created with shared_from_this) and lock() it to
// free, and an atomic largest-free hint refuses oversized requests without the lock (PR
// #3222). Placement across segments: a random segment, then the others in order.
//
// Tables:
//  1. single-thread handle allocate + free of 4 KiB in an empty segment (ns per pair);
//  2. throughput of alloc+free pairs at 1, 2 and oversubscribed thread counts, all threads in
//     one segment (the hard case: Mooncake's figure is for one allocator), with scaling ratios;
//  3. latency percentiles of one pair at 1 and 2 threads;
//  4. KV placement over 8 segments of unequal size: uniform 1 MiB objects until the first
//     failure (utilization of total capacity, spread of per-segment utilization at half fill),
//     per placement policy, for the striped arena, a 1-stripe arena and the baseline;
//  5. the stripe trade: random sizes 64 KiB - 16 MiB until first failure, 1 vs 4 vs 8 stripes.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <time.h>

#include "harness.hpp"
#include "kvmem/offset_allocator.hpp"
#include "kvmem/shared_arena.hpp"

namespace {

using kvmem::bench::Cell;
using kvmem::bench::Options;
using kvmem::bench::Report;
using kvmem::bench::Table;

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * 1024;
constexpr std::uint64_t kGiB = 1024 * kMiB;

// ---- the baseline: Mooncake's wrapper design ------------------------------------------------

class MooncakeSegment : public std::enable_shared_from_this<MooncakeSegment> {
 public:
  class Handle {
   public:
    Handle() = default;
    Handle(std::weak_ptr<MooncakeSegment> seg, kvmem::Allocation a) : seg_(std::move(seg)), a_(a) {}
    Handle(Handle&&) noexcept = default;
    Handle& operator=(Handle&& o) noexcept {
      reset();
      seg_ = std::move(o.seg_);
      a_ = o.a_;
      return *this;
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { reset(); }
    void reset() {
      if (auto s = seg_.lock()) s->free(a_);
      seg_.reset();
    }
    [[nodiscard]] std::uint64_t size() const { return a_.size; }

   private:
    std::weak_ptr<MooncakeSegment> seg_;
    kvmem::Allocation a_{};
  };

  static std::shared_ptr<MooncakeSegment> create(std::uint64_t capacity) {
    return std::shared_ptr<MooncakeSegment>(new MooncakeSegment(capacity));
  }

  std::optional<Handle> allocate(std::uint64_t size) {
    if (size > hint_.load(std::memory_order_relaxed)) return std::nullopt;
    std::optional<kvmem::Allocation> a;
    {
      std::lock_guard<std::mutex> g(mu_);
      a = alloc_.allocate(size);
      if (!a) {
        hint_.store(alloc_.largest_free(), std::memory_order_relaxed);
        return std::nullopt;
      }
      used_ += a->size;
    }
    return Handle(weak_from_this(), *a);  // the handle is built outside the lock (PR #3222)
  }

  void free(const kvmem::Allocation& a) {
    std::lock_guard<std::mutex> g(mu_);
    alloc_.free(a);
    used_ -= a.size;
    const std::uint64_t lf = alloc_.largest_free();
    if (lf > hint_.load(std::memory_order_relaxed)) hint_.store(lf, std::memory_order_relaxed);
  }

  std::uint64_t used() {
    std::lock_guard<std::mutex> g(mu_);
    return used_;
  }
  [[nodiscard]] std::uint64_t capacity() const { return alloc_.capacity(); }

 private:
  explicit MooncakeSegment(std::uint64_t capacity) : alloc_(capacity), hint_(capacity) {}
  std::mutex mu_;
  kvmem::OffsetAllocator alloc_;
  std::uint64_t used_ = 0;
  std::atomic<std::uint64_t> hint_;
};

// ---- helpers ------------------------------------------------------------------------------

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Times {
  double wall_s = 0;
  double max_cpu_s = 0;  // the busiest thread's CPU time: the wall time it would take on
                         // dedicated cores (this machine is shared, so wall time inflates)
};

// Runs `threads` copies of body(thread_index, stop) after a common start.
template <class Body>
Times run_threads(int threads, double seconds, Body body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::vector<double> cpu(static_cast<std::size_t>(threads), 0.0);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      const double c0 = thread_cpu_s();
      body(t, stop);
      cpu[static_cast<std::size_t>(t)] = thread_cpu_s() - c0;
    });
  }
  while (ready.load() != threads) std::this_thread::yield();
  const std::uint64_t t0 = kvmem::bench::now_ns();
  go.store(true, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::microseconds(static_cast<std::int64_t>(seconds * 1e6)));
  stop.store(true, std::memory_order_relaxed);
  for (auto& th : ts) th.join();
  Times r;
  r.wall_s = static_cast<double>(kvmem::bench::now_ns() - t0) * 1e-9;
  for (const double c : cpu) r.max_cpu_s = std::max(r.max_cpu_s, c);
  return r;
}

kvmem::SharedArena::Options arena_options(unsigned stripes) {
  kvmem::SharedArena::Options o;
  o.stripes = stripes;
  o.min_stripe_bytes = 16 * kMiB;
  return o;
}

// Sizes of the throughput workload: KV-ish pages and blocks.
constexpr std::uint64_t kSizes[8] = {4 * kKiB, 16 * kKiB, 64 * kKiB, 4 * kKiB,
                                     256 * kKiB, 32 * kKiB, 8 * kKiB, 128 * kKiB};
constexpr int kRing = 16;  // live handles per thread

// ---- 1. single-thread hot pair ----------------------------------------------------------------

// Each returns {wall ns per pair, CPU ns per pair}.
struct PairNs {
  double wall = 0;
  double cpu = 0;
};

// Runs op() iters times; wall and thread-CPU ns per call. op is a template parameter so the
// loop compiles to the same code as a hand-written one.
template <class Op>
PairNs time_per_call(std::uint64_t iters, Op&& op) {
  const double c0 = thread_cpu_s();
  const std::uint64_t t0 = kvmem::bench::now_ns();
  for (std::uint64_t i = 0; i < iters; ++i) op();
  const auto n = static_cast<double>(iters);
  return {static_cast<double>(kvmem::bench::now_ns() - t0) / n, (thread_cpu_s() - c0) * 1e9 / n};
}

PairNs arena_hot_pair_ns(std::uint64_t iters) {
  kvmem::SharedArena arena(arena_options(0));
  arena.add_segment(4 * kGiB);
  for (std::uint64_t i = 0; i < 1000; ++i) (void)arena.allocate(4 * kKiB);  // warm up
  return time_per_call(iters, [&] {
    auto h = arena.allocate(4 * kKiB);
    kvmem::bench::do_not_optimize(h);
  });
}

PairNs baseline_hot_pair_ns(std::uint64_t iters) {
  auto seg = MooncakeSegment::create(4 * kGiB);
  for (std::uint64_t i = 0; i < 1000; ++i) (void)seg->allocate(4 * kKiB);
  return time_per_call(iters, [&] {
    auto h = seg->allocate(4 * kKiB);
    kvmem::bench::do_not_optimize(h);
  });
}

PairNs raw_core_pair_ns(std::uint64_t iters) {
  kvmem::OffsetAllocator a(4 * kGiB);
  return time_per_call(iters, [&] {
    auto x = a.allocate(4 * kKiB);
    kvmem::bench::do_not_optimize(x);
    a.free(*x);
  });
}

// A request above every free block, in a full arena: the failure path.
PairNs arena_reject_ns(std::uint64_t iters) {
  kvmem::SharedArena arena(arena_options(0));
  arena.add_segment(64 * kMiB);
  std::vector<kvmem::ArenaHandle> hs;
  while (auto h = arena.allocate(kMiB)) hs.push_back(std::move(*h));
  return time_per_call(iters, [&] {
    auto h = arena.allocate(2 * kMiB);
    kvmem::bench::do_not_optimize(h);
  });
}

PairNs baseline_reject_ns(std::uint64_t iters) {
  auto seg = MooncakeSegment::create(64 * kMiB);
  std::vector<MooncakeSegment::Handle> hs;
  while (auto h = seg->allocate(kMiB)) hs.push_back(std::move(*h));
  return time_per_call(iters, [&] {
    auto h = seg->allocate(2 * kMiB);
    kvmem::bench::do_not_optimize(h);
  });
}

// ---- 2/3. threads -------------------------------------------------------------------------------

struct ThreadResult {
  double contended_per_m = 0;  // SharedArena: contended stripe locks per million pairs
  double pairs_per_s = 0;      // pairs / wall time
  double pairs_per_cpu_s = 0;  // pairs / the busiest thread's CPU time
  double p50_ns = 0;
  double p99_ns = 0;
};

// One thread's loop: replace ring[i % kRing] with a new allocation. `timed`: record each pair.
template <class Alloc, class H>
std::uint64_t ring_loop(Alloc&& alloc, std::vector<H>& ring, std::atomic<bool>& stop, int t,
                        std::vector<double>* lat) {
  std::uint64_t n = 0;
  std::uint64_t k = static_cast<std::uint64_t>(t) * 3;
  while (!stop.load(std::memory_order_relaxed)) {
    for (int j = 0; j < 64; ++j, ++n, ++k) {
      auto& slot = ring[k % kRing];
      const std::uint64_t size = kSizes[k % 8];
      if (lat != nullptr) {
        const std::uint64_t t0 = kvmem::bench::now_ns();
        slot = H{};
        auto h = alloc(size);
        if (h) slot = std::move(*h);
        lat->push_back(static_cast<double>(kvmem::bench::now_ns() - t0));
      } else {
        slot = H{};
        auto h = alloc(size);
        if (h) slot = std::move(*h);
      }
    }
  }
  return n;
}

ThreadResult arena_threads(int threads, double seconds, bool timed) {
  kvmem::SharedArena arena(arena_options(0));
  arena.add_segment(8 * kGiB);
  std::atomic<std::uint64_t> pairs{0};
  std::vector<std::vector<double>> lats(static_cast<std::size_t>(threads));
  const Times s = run_threads(threads, seconds, [&](int t, std::atomic<bool>& stop) {
    std::vector<kvmem::ArenaHandle> ring(kRing);
    if (timed) lats[static_cast<std::size_t>(t)].reserve(4'000'000);
    const std::uint64_t n = ring_loop([&](std::uint64_t size) { return arena.allocate(size); }, ring, stop, t,
                                      timed ? &lats[static_cast<std::size_t>(t)] : nullptr);
    pairs.fetch_add(n);
  });
  ThreadResult r;
  r.pairs_per_s = static_cast<double>(pairs.load()) / s.wall_s;
  r.pairs_per_cpu_s = static_cast<double>(pairs.load()) / s.max_cpu_s;
  r.contended_per_m = static_cast<double>(arena.stats().contended_locks) * 1e6 / static_cast<double>(pairs.load());
  if (timed) {
    std::vector<double> all;
    for (auto& l : lats) all.insert(all.end(), l.begin(), l.end());
    r.p50_ns = kvmem::bench::percentile(all, 0.50);
    r.p99_ns = kvmem::bench::percentile(all, 0.99);
  }
  return r;
}

// The control: one SharedArena per thread, nothing shared. Its scaling is what the machine
// gives two threads at that moment (on a shared 2-core VM that can be far below 2x).
ThreadResult independent_threads(int threads, double seconds, bool /*timed*/) {
  std::vector<std::unique_ptr<kvmem::SharedArena>> arenas;
  for (int t = 0; t < threads; ++t) {
    arenas.push_back(std::make_unique<kvmem::SharedArena>(arena_options(0)));
    arenas.back()->add_segment(8 * kGiB);
  }
  std::atomic<std::uint64_t> pairs{0};
  const Times s = run_threads(threads, seconds, [&](int t, std::atomic<bool>& stop) {
    std::vector<kvmem::ArenaHandle> ring(kRing);
    kvmem::SharedArena& mine = *arenas[static_cast<std::size_t>(t)];
    pairs.fetch_add(ring_loop([&](std::uint64_t size) { return mine.allocate(size); }, ring, stop, t, nullptr));
  });
  ThreadResult r;
  r.pairs_per_s = static_cast<double>(pairs.load()) / s.wall_s;
  r.pairs_per_cpu_s = static_cast<double>(pairs.load()) / s.max_cpu_s;
  return r;
}

// The second control: a pure compute loop (no memory traffic): the CPU the machine gives.
ThreadResult compute_threads(int threads, double seconds, bool /*timed*/) {
  std::atomic<std::uint64_t> work{0};
  const Times s = run_threads(threads, seconds, [&](int, std::atomic<bool>& stop) {
    std::uint64_t n = 0, x = 1;
    while (!stop.load(std::memory_order_relaxed)) {
      for (int i = 0; i < 64; ++i) x = x * 6364136223846793005ull + 1442695040888963407ull;
      ++n;
    }
    kvmem::bench::do_not_optimize(x);
    work.fetch_add(n);
  });
  ThreadResult r;
  r.pairs_per_s = static_cast<double>(work.load()) / s.wall_s;
  r.pairs_per_cpu_s = static_cast<double>(work.load()) / s.max_cpu_s;
  return r;
}

ThreadResult baseline_threads(int threads, double seconds, bool timed) {
  auto seg = MooncakeSegment::create(8 * kGiB);
  std::atomic<std::uint64_t> pairs{0};
  std::vector<std::vector<double>> lats(static_cast<std::size_t>(threads));
  const Times s = run_threads(threads, seconds, [&](int t, std::atomic<bool>& stop) {
    std::vector<MooncakeSegment::Handle> ring(kRing);
    if (timed) lats[static_cast<std::size_t>(t)].reserve(4'000'000);
    const std::uint64_t n = ring_loop([&](std::uint64_t size) { return seg->allocate(size); }, ring, stop, t,
                                      timed ? &lats[static_cast<std::size_t>(t)] : nullptr);
    pairs.fetch_add(n);
  });
  ThreadResult r;
  r.pairs_per_s = static_cast<double>(pairs.load()) / s.wall_s;
  r.pairs_per_cpu_s = static_cast<double>(pairs.load()) / s.max_cpu_s;
  if (timed) {
    std::vector<double> all;
    for (auto& l : lats) all.insert(all.end(), l.begin(), l.end());
    r.p50_ns = kvmem::bench::percentile(all, 0.50);
    r.p99_ns = kvmem::bench::percentile(all, 0.99);
  }
  return r;
}

// ---- 4/5. placement over unequal segments ------------------------------------------------------

struct FillResult {
  double utilization = 0;     // requested bytes placed / total capacity, at first failure
  double spread_half = 0;     // max - min per-segment utilization when half the capacity is used
  double spread_end = 0;      // the same at first failure
  std::uint64_t objects = 0;
};

std::vector<std::uint64_t> unequal_sizes(bool smoke) {
  // 8 segments of i x 500 MB + i x 12,345 B (0.47 to 3.73 GiB, 16.8 GiB in all): no segment
  // or stripe is a multiple of 1 MiB, so every stripe strands a partial object at its end.
  std::vector<std::uint64_t> s;
  for (int i = 1; i <= 8; ++i) {
    const std::uint64_t base = static_cast<std::uint64_t>(i) * (smoke ? 50'000'000ull : 500'000'000ull);
    s.push_back(base + static_cast<std::uint64_t>(i) * 12345);
  }
  return s;
}

template <class SizeFn>
FillResult arena_fill(const std::vector<std::uint64_t>& segs, unsigned stripes, kvmem::PlacementPolicy policy,
                      SizeFn next_size) {
  kvmem::SharedArena::Options o = arena_options(std::max(stripes, 1u));
  kvmem::SharedArena arena(o);
  std::vector<kvmem::SegmentId> ids;
  std::uint64_t total = 0;
  for (const std::uint64_t s : segs) {
    ids.push_back(arena.add_segment(s, nullptr, {}, stripes));
    total += s;
  }
  auto spread = [&] {
    double lo = 1, hi = 0;
    for (const auto& st : arena.segment_stats()) {
      const double u = static_cast<double>(st.used) / static_cast<double>(st.capacity);
      lo = std::min(lo, u);
      hi = std::max(hi, u);
    }
    return hi - lo;
  };
  std::vector<kvmem::ArenaHandle> hs;
  FillResult r;
  std::uint64_t placed = 0;
  bool half = false;
  for (;;) {
    const std::uint64_t size = next_size();
    auto h = arena.allocate(size, policy);
    if (!h) break;
    placed += size;
    hs.push_back(std::move(*h));
    if (!half && placed * 2 >= total) {
      half = true;
      r.spread_half = spread();
    }
  }
  r.utilization = static_cast<double>(placed) / static_cast<double>(total);
  r.spread_end = spread();
  r.objects = hs.size();
  return r;
}

template <class SizeFn>
FillResult baseline_fill(const std::vector<std::uint64_t>& segs, std::uint64_t seed, SizeFn next_size) {
  std::vector<std::shared_ptr<MooncakeSegment>> ss;
  std::uint64_t total = 0;
  for (const std::uint64_t s : segs) {
    ss.push_back(MooncakeSegment::create(s));
    total += s;
  }
  auto spread = [&] {
    double lo = 1, hi = 0;
    for (auto& s : ss) {
      const double u = static_cast<double>(s->used()) / static_cast<double>(s->capacity());
      lo = std::min(lo, u);
      hi = std::max(hi, u);
    }
    return hi - lo;
  };
  std::mt19937_64 rng(seed);
  std::vector<MooncakeSegment::Handle> hs;
  FillResult r;
  std::uint64_t placed = 0;
  bool half = false;
  for (;;) {
    const std::uint64_t size = next_size();
    const std::size_t start = rng() % ss.size();
    std::optional<MooncakeSegment::Handle> h;
    for (std::size_t k = 0; k < ss.size() && !h; ++k) h = ss[(start + k) % ss.size()]->allocate(size);
    if (!h) break;
    placed += size;
    hs.push_back(std::move(*h));
    if (!half && placed * 2 >= total) {
      half = true;
      r.spread_half = spread();
    }
  }
  r.utilization = static_cast<double>(placed) / static_cast<double>(total);
  r.spread_end = spread();
  r.objects = hs.size();
  return r;
}

const char* policy_name(kvmem::PlacementPolicy p) {
  switch (p) {
    case kvmem::PlacementPolicy::kLocal: return "local";
    case kvmem::PlacementPolicy::kLargestFree: return "largest-free";
    case kvmem::PlacementPolicy::kRoundRobin: return "round-robin";
    case kvmem::PlacementPolicy::kRandom: return "random";
    case kvmem::PlacementPolicy::kLeastUtilized: return "least-utilized";
  }
  return "?";
}

// ---- the suite ------------------------------------------------------------------------------------

void arena_suite(const Options& opt, Report& report) {
  const int reps = opt.smoke ? 1 : 5;
  const std::uint64_t iters = opt.smoke ? 20'000 : 5'000'000;
  const double seconds = opt.smoke ? 0.02 : (opt.duration_s > 0 ? opt.duration_s : 0.25);
  std::size_t step = 0;
  const std::size_t steps = 4;

  // 1. single thread
  report.progress("hot pair", ++step, steps);
  auto med_pair = [&](PairNs (*fn)(std::uint64_t)) {
    std::vector<double> w, c;
    for (int r = 0; r < reps; ++r) {
      const PairNs p = fn(iters);
      w.push_back(p.wall);
      c.push_back(p.cpu);
    }
    return PairNs{kvmem::bench::median(w), kvmem::bench::median(c)};
  };
  const PairNs core = med_pair(raw_core_pair_ns);
  const PairNs arena_ns = med_pair(arena_hot_pair_ns);
  const PairNs base_ns = med_pair(baseline_hot_pair_ns);
  const PairNs arena_rej = med_pair(arena_reject_ns);
  const PairNs base_rej = med_pair(baseline_reject_ns);
  {
    Table t;
    t.title = "arena: single-thread handle allocate + free of 4 KiB, empty 4 GiB segment (ns per pair, median of " +
              std::to_string(reps) + ")";
    t.columns = {"allocator", "wall ns/pair", "CPU ns/pair", "CPU vs mooncake-style"};
    t.rows.push_back({"OffsetAllocator core (no lock, no handle)", Cell(core.wall, 1), Cell(core.cpu, 1),
                      kvmem::bench::ratio(core.cpu, base_ns.cpu)});
    t.rows.push_back({"SharedArena (handle, stripe lock, stripe cache)", Cell(arena_ns.wall, 1), Cell(arena_ns.cpu, 1),
                      kvmem::bench::ratio(arena_ns.cpu, base_ns.cpu)});
    t.rows.push_back({"mooncake-style (mutex, weak_ptr handle)", Cell(base_ns.wall, 1), Cell(base_ns.cpu, 1), "1.00x"});
    t.rows.push_back({"SharedArena: rejected request (full arena)", Cell(arena_rej.wall, 1), Cell(arena_rej.cpu, 1),
                      kvmem::bench::ratio(arena_rej.cpu, base_rej.cpu)});
    t.rows.push_back({"mooncake-style: rejected request (hint)", Cell(base_rej.wall, 1), Cell(base_rej.cpu, 1), "1.00x"});
    t.note = "Target: SharedArena <= 40 ns per pair. The handle is created and destroyed in the loop. CPU ns = "
             "thread CPU time / pairs (wall time includes time the shared machine gave to other processes). "
             "Rejected: a 2 MiB request to a 64 MiB segment full of 1 MiB objects (no lock taken by either); the "
             "ratio column compares it with the mooncake-style rejection.";
    t.plot = {"bar", "allocator", {"CPU ns/pair"}, "ns per alloc+free", false, false};
    report.add(std::move(t));
    report.figure("arena.hot_pair_ns", arena_ns.wall);
    report.figure("arena.hot_pair_cpu_ns", arena_ns.cpu);
    report.figure("arena.baseline_hot_pair_ns", base_ns.wall);
    report.figure("arena.baseline_hot_pair_cpu_ns", base_ns.cpu);
    report.figure("arena.core_pair_cpu_ns", core.cpu);
    report.figure("arena.reject_cpu_ns", arena_rej.cpu);
  }

  // 2. threads
  report.progress("threads", ++step, steps);
  const int max_t = std::max(2, opt.threads);
  std::vector<int> counts = {1, 2};
  if (max_t > 2) counts.push_back(max_t);
  counts.push_back(4 * max_t);
  counts.push_back(8 * max_t);
  struct Tp {
    double wall = 0;
    double cpu = 0;
    double contended = 0;  // of the best run
  };
  // Best of `tp_reps` short runs: on a shared machine the best run is the one least disturbed
  // by other processes.
  const int tp_reps = opt.smoke ? 1 : 9;
  auto best_tp = [&](ThreadResult (*fn)(int, double, bool), int n) {
    Tp best;
    for (int r = 0; r < tp_reps; ++r) {
      const ThreadResult x = fn(n, seconds, false);
      if (x.pairs_per_s > best.wall) best.contended = x.contended_per_m;
      best.wall = std::max(best.wall, x.pairs_per_s);
      best.cpu = std::max(best.cpu, x.pairs_per_cpu_s);
    }
    return best;
  };
  const double compute_1t = best_tp(compute_threads, 1).wall;
  const double compute_2t = best_tp(compute_threads, 2).wall / compute_1t;
  std::vector<Tp> a_tp, b_tp, i_tp;
  // The three allocators take turns run by run, so a change in what the shared machine gives
  // (another engineer's build starting) hits all three alike.
  auto keep_best = [](Tp& best, const ThreadResult& x) {
    if (x.pairs_per_s > best.wall) best.contended = x.contended_per_m;
    best.wall = std::max(best.wall, x.pairs_per_s);
    best.cpu = std::max(best.cpu, x.pairs_per_cpu_s);
  };
  for (const int n : counts) {
    Tp a, b, c;
    for (int r = 0; r < tp_reps; ++r) {
      keep_best(a, arena_threads(n, seconds, false));
      keep_best(b, baseline_threads(n, seconds, false));
      keep_best(c, independent_threads(n, seconds, false));
    }
    a_tp.push_back(a);
    b_tp.push_back(b);
    i_tp.push_back(c);
  }
  {
    Table t;
    t.title = "arena: alloc+free pairs per second, all threads in one 8 GiB segment (" + std::to_string(kRing) +
              " live handles per thread, sizes 4-256 KiB), best of " + std::to_string(tp_reps) + " runs of " +
              kvmem::bench::fmt(seconds, 2) + " s";
    t.columns = {"threads", "SharedArena M pairs/s", "scaling", "mooncake-style M pairs/s", "scaling",
                 "control: arena per thread", "scaling", "arena vs control", "arena vs mooncake",
                 "SharedArena M pairs/CPU-s", "scaling (CPU)", "SharedArena contended locks per M pairs"};
    for (std::size_t i = 0; i < counts.size(); ++i) {
      t.rows.push_back({Cell(counts[i]), Cell(a_tp[i].wall / 1e6, 2), kvmem::bench::ratio(a_tp[i].wall, a_tp[0].wall),
                        Cell(b_tp[i].wall / 1e6, 2), kvmem::bench::ratio(b_tp[i].wall, b_tp[0].wall),
                        Cell(i_tp[i].wall / 1e6, 2), kvmem::bench::ratio(i_tp[i].wall, i_tp[0].wall),
                        kvmem::bench::ratio(a_tp[i].wall, i_tp[i].wall), kvmem::bench::ratio(a_tp[i].wall, b_tp[i].wall),
                        Cell(a_tp[i].cpu / 1e6, 2), kvmem::bench::ratio(a_tp[i].cpu, a_tp[0].cpu),
                        Cell(a_tp[i].contended, 1)});
    }
    double load = 0;
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
      if (std::fscanf(f, "%lf", &load) != 1) load = 0;
      std::fclose(f);
    }
    t.note = "pairs / elapsed (wall) time. Scaling = throughput / 1-thread throughput of the same allocator. "
             "Control = one SharedArena per thread (no shared state at all): its scaling is the most this machine "
             "allowed at that moment, and 'arena vs control' is how much of it the shared arena keeps. "
             "Target: SharedArena >= 1.6x at 2 threads. Rows above the core count are oversubscribed (" +
             std::to_string(std::thread::hardware_concurrency()) +
             " hardware threads here). 1-minute load average at the end of this table: " +
             kvmem::bench::fmt(load, 2) + "; a pure compute loop scaled " + kvmem::bench::ratio(compute_2t, 1.0) +
             " from 1 to 2 threads in this run (other processes share the cores). M pairs/CPU-s = pairs / the "
             "busiest thread's CPU time: the throughput on dedicated cores when waiting costs CPU (the arena's "
             "spin lock spins; a std::mutex sleeps, so this column is not given for the baseline); rows above "
             "the core count do not project. Contended locks: allocations and drops that found their stripe "
             "lock held (each would be a blocking wait on the single mutex of the mooncake-style design).";
    t.plot = {"line", "threads", {"SharedArena M pairs/s", "mooncake-style M pairs/s"}, "M pairs/s", true, false};
    report.add(std::move(t));
    report.figure("arena.scaling_2t", a_tp[1].wall / a_tp[0].wall);
    report.figure("arena.baseline_scaling_2t", b_tp[1].wall / b_tp[0].wall);
    report.figure("arena.control_scaling_2t", i_tp[1].wall / i_tp[0].wall);
    report.figure("arena.compute_scaling_2t", compute_2t);
    report.figure("arena.vs_control_2t", a_tp[1].wall / i_tp[1].wall);
    report.figure("arena.scaling_2t_cpu", a_tp[1].cpu / a_tp[0].cpu);
    report.figure("arena.contended_per_m_2t", a_tp[1].contended);
    report.figure("arena.pairs_per_s_1t", a_tp[0].wall);
    report.figure("arena.pairs_per_s_2t", a_tp[1].wall);
    report.figure("arena.load_average", load);
  }

  // 3. latency
  report.progress("latency", ++step, steps);
  {
    Table t;
    t.title = "arena: latency of one alloc+free pair (ns), same workload, every pair timed";
    t.columns = {"threads", "SharedArena p50", "SharedArena p99", "mooncake-style p50", "mooncake-style p99"};
    for (const int n : {1, 2, 4 * max_t}) {
      const ThreadResult a = arena_threads(n, seconds, true);
      const ThreadResult b = baseline_threads(n, seconds, true);
      t.rows.push_back({Cell(n), Cell(a.p50_ns, 0), Cell(a.p99_ns, 0), Cell(b.p50_ns, 0), Cell(b.p99_ns, 0)});
      if (n == 2) {
        report.figure("arena.p99_ns_2t", a.p99_ns);
        report.figure("arena.baseline_p99_ns_2t", b.p99_ns);
      }
    }
    t.note = "Each pair includes two clock reads (~20-40 ns here). One run per row.";
    report.add(std::move(t));
  }

  // 4/5. placement
  report.progress("placement", ++step, steps);
  const std::vector<std::uint64_t> segs = unequal_sizes(opt.smoke);
  {
    Table t;
    t.title = "arena: KV placement, uniform 1 MiB objects into 8 segments of 0.47-3.73 GiB (unequal), until "
              "the first failure";
    t.columns = {"allocator", "policy", "objects", "utilization at first failure", "util spread at half fill",
                 "util spread at failure"};
    auto uniform = [] { return kMiB; };
    double best_util = 0;
    for (const unsigned stripes : {0u, 1u}) {
      for (const auto p : {kvmem::PlacementPolicy::kLocal, kvmem::PlacementPolicy::kLargestFree,
                           kvmem::PlacementPolicy::kRoundRobin, kvmem::PlacementPolicy::kRandom,
                           kvmem::PlacementPolicy::kLeastUtilized}) {
        const FillResult r = arena_fill(segs, stripes, p, uniform);
        t.rows.push_back({stripes == 0 ? "SharedArena (default stripes)" : "SharedArena (1 stripe)",
                          policy_name(p), Cell(r.objects), Cell(r.utilization, 4), Cell(r.spread_half, 3),
                          Cell(r.spread_end, 4)});
        if (stripes == 0) {
          report.figure(std::string("arena.kv_util.") + policy_name(p), r.utilization);
          report.figure(std::string("arena.kv_spread_half.") + policy_name(p), r.spread_half);
          best_util = std::max(best_util, r.utilization);
        }
      }
    }
    const FillResult b = baseline_fill(segs, opt.seed, uniform);
    t.rows.push_back({"mooncake-style", "random + fallback", Cell(b.objects), Cell(b.utilization, 4),
                      Cell(b.spread_half, 3), Cell(b.spread_end, 4)});
    report.figure("arena.kv_util.baseline", b.utilization);
    t.note = "utilization = bytes placed / total capacity when the first request fails (target >= 0.97). spread = "
             "max - min of per-segment used/capacity: 0 is perfectly balanced (largest-free balances free bytes, "
             "not ratios, so it fills big segments first).";
    report.add(std::move(t));
  }
  {
    Table t;
    t.title = "arena: the stripe trade, random sizes 64 KiB - 16 MiB into the same 8 segments, until the first failure";
    t.columns = {"allocator", "stripes per segment", "objects", "utilization at first failure"};
    for (const unsigned stripes : {1u, 4u, 8u}) {
      std::mt19937_64 rng(opt.seed);
      std::uniform_int_distribution<std::uint64_t> d(64 * kKiB, 16 * kMiB);
      const FillResult r =
          arena_fill(segs, stripes, kvmem::PlacementPolicy::kLocal, [&] { return d(rng); });
      t.rows.push_back({"SharedArena", Cell(stripes), Cell(r.objects), Cell(r.utilization, 4)});
      report.figure("arena.random_util.stripes_" + std::to_string(stripes), r.utilization);
    }
    std::mt19937_64 rng(opt.seed);
    std::uniform_int_distribution<std::uint64_t> d(64 * kKiB, 16 * kMiB);
    const FillResult b = baseline_fill(segs, opt.seed, [&] { return d(rng); });
    t.rows.push_back({"mooncake-style", Cell(1), Cell(b.objects), Cell(b.utilization, 4)});
    t.note = "Same size sequence for every row. Each stripe can strand up to one object's size at its end, so "
             "more stripes lose more at the first failure when objects are large relative to a stripe.";
    report.add(std::move(t));
  }
}

}  // namespace

KVMEM_BENCH_SUITE("arena",
                  "SharedArena vs a Mooncake-style mutex+weak_ptr wrapper: hot pair, 1-2-N thread scaling, p99, "
                  "KV placement utilization and balance over 8 unequal segments",
                  arena_suite);
