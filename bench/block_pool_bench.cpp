// Suite "pool": kvmem::FixedBlockPool against std::pmr::unsynchronized_pool_resource, glibc
// malloc, jemalloc, mimalloc and tcmalloc (Debian's shared libraries, loaded with dlopen).
//
// Every (allocator, repetition) runs in its own forked child process so that resident-memory
// figures are not polluted by another allocator's cached memory and a peer library that
// misbehaves when loaded cannot take the run down; each figure is the median over
// repetitions. Workloads, per block size:
//   hot pair        allocate, write 1 byte, free; 1,024 other blocks live
//   hot churn       free live[i % 1024], allocate a replacement, write 8 bytes
//   first 1,024     the first 1,024 allocations from a fresh allocator (no writes)
//   fill            grow to N live blocks, writing an 8-byte key into each
//   replace         free a random live block + allocate one, N times (N live)
//   evict 50%       free a random half of the N blocks
//   refill          allocate the freed half again, writing the key
//   resident/payload RSS increase after fill (every byte written) / (N x block size)
//   returned        share of that RSS given back after freeing all and the allocator's
//                   release call (pool: release_empty_chunks, pmr: release, glibc:
//                   malloc_trim, mimalloc: mi_collect, tcmalloc: ReleaseFreeMemory,
//                   jemalloc: arena purge)
#include <dlfcn.h>
#include <malloc.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory_resource>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "harness.hpp"
#include "kvmem/block_pool.hpp"

namespace {

// Thread CPU time (user + kernel, e.g. page faults), not wall time: on a shared 2-vCPU
// machine a descheduled benchmark would otherwise charge other processes' work to the
// allocator. The workloads are single-threaded, so this is the allocator's own cost.
std::uint64_t now_ns() { return kvmem::bench::thread_cpu_ns(); }

std::size_t rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long pages = 0, resident = 0;
  const int got = std::fscanf(f, "%lu %lu", &pages, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

// ---- allocators: each exposes alloc(), free(p), release(), and its name -------------------

struct PoolAlloc {
  kvmem::FixedBlockPool pool;
  PoolAlloc(std::size_t size, bool checks, bool huge)
      : pool(size, 8, [&] {
          kvmem::FixedBlockPool::Options o;
          o.detect_misuse = checks;
          o.huge_pages = huge;
          return o;
        }()) {}
  void* alloc() { return pool.allocate_block(); }
  void free(void* p) { pool.deallocate_block(p); }
  void release() { pool.release_empty_chunks(); }
};

struct PmrAlloc {
  std::pmr::unsynchronized_pool_resource res;
  std::size_t size;
  explicit PmrAlloc(std::size_t s) : size(s) {}
  void* alloc() { return res.allocate(size, 8); }
  void free(void* p) { res.deallocate(p, size, 8); }
  void release() { res.release(); }
};

struct GlibcAlloc {
  std::size_t size;
  explicit GlibcAlloc(std::size_t s) : size(s) {}
  void* alloc() { return std::malloc(size); }
  void free(void* p) { std::free(p); }
  void release() { ::malloc_trim(0); }
};

// A peer loaded with dlopen: calls go through function pointers, as through the PLT.
struct DlAlloc {
  using MallocFn = void* (*)(std::size_t);
  using MallocxFn = void* (*)(std::size_t, int);
  using FreeFn = void (*)(void*);
  using SizedFreeFn = void (*)(void*, std::size_t, int);
  using VoidFn = void (*)();
  using CollectFn = void (*)(bool);
  using MallctlFn = int (*)(const char*, void*, std::size_t*, void*, std::size_t);
  std::size_t size;
  int kind = 0;  // 1 jemalloc, 2 mimalloc, 3 tcmalloc
  MallocFn malloc_fn = nullptr;
  MallocxFn mallocx_fn = nullptr;
  FreeFn free_fn = nullptr;
  SizedFreeFn sdallocx_fn = nullptr;
  VoidFn release_fn = nullptr;
  CollectFn collect_fn = nullptr;
  MallctlFn mallctl_fn = nullptr;
  std::string error;

  template <class F>
  static F sym(void* h, const char* name) {
    return reinterpret_cast<F>(::dlsym(h, name));
  }

  DlAlloc(int k, std::size_t s) : size(s), kind(k) {
    const char* lib = k == 1 ? "libjemalloc.so.2" : k == 2 ? "libmimalloc.so.2" : "libtcmalloc_minimal.so.4";
    void* h = ::dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char* e = ::dlerror();
      error = std::string("dlopen failed: ") + (e ? e : "?");
      return;
    }
    if (k == 1) {
      mallocx_fn = sym<MallocxFn>(h, "mallocx");
      sdallocx_fn = sym<SizedFreeFn>(h, "sdallocx");
      mallctl_fn = sym<MallctlFn>(h, "mallctl");
      if (!mallocx_fn || !sdallocx_fn) error = "mallocx/sdallocx not exported";
    } else if (k == 2) {
      malloc_fn = sym<MallocFn>(h, "mi_malloc");
      free_fn = sym<FreeFn>(h, "mi_free");
      collect_fn = sym<CollectFn>(h, "mi_collect");
      if (!malloc_fn || !free_fn) error = "mi_malloc/mi_free not exported";
    } else {
      malloc_fn = sym<MallocFn>(h, "tc_malloc");
      free_fn = sym<FreeFn>(h, "tc_free");
      release_fn = sym<VoidFn>(h, "MallocExtension_ReleaseFreeMemory");
      if (!malloc_fn || !free_fn) error = "tc_malloc/tc_free not exported";
    }
  }
  void* alloc() { return kind == 1 ? mallocx_fn(size, 0) : malloc_fn(size); }
  void free(void* p) {
    if (kind == 1)
      sdallocx_fn(p, size, 0);
    else
      free_fn(p);
  }
  void release() {
    if (collect_fn) collect_fn(true);
    if (release_fn) release_fn();
    if (mallctl_fn) mallctl_fn("arena.4096.purge", nullptr, nullptr, nullptr, 0);  // all arenas
  }
};

// ---- one child's measurements ------------------------------------------------------------

struct Result {
  double hot_pair = NAN, hot_churn = NAN, first_us = NAN, fill = NAN, replace = NAN, evict = NAN,
         refill = NAN, rss_ratio = NAN, returned = NAN;
};

struct Workload {
  std::size_t size;
  std::size_t live;        // N
  std::size_t hot_iters;
  std::uint64_t seed;
};

inline void write_key(void* p, std::uint64_t key, std::size_t size) {
  if (size >= 8) {
    std::memcpy(p, &key, 8);
  } else {
    *static_cast<volatile unsigned char*>(p) = static_cast<unsigned char>(key);
  }
}

template <class A>
Result run_workload(A& a, const Workload& w) {
  Result r;
  // first 1,024 allocations from empty; kept live until the end so that the fill below
  // measures fresh memory only
  std::vector<void*> v(1024);
  // first 1,024 allocations from empty
  {
    const auto t0 = now_ns();
    for (auto& p : v) p = a.alloc();
    const auto t1 = now_ns();
    kvmem::bench::do_not_optimize(v.data());
    r.first_us = static_cast<double>(t1 - t0) / 1000.0;
  }
  // 1M-block phases
  const std::size_t n = w.live;
  std::vector<void*> live(n, nullptr);
  std::vector<std::uint32_t> picks(n);
  std::vector<std::uint32_t> order(n);
  std::mt19937_64 rng(w.seed);
  for (auto& x : picks) x = static_cast<std::uint32_t>(rng() % n);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), rng);
  const std::size_t rss0 = rss_bytes();
  auto t0 = now_ns();
  for (std::size_t i = 0; i < n; ++i) {
    live[i] = a.alloc();
    write_key(live[i], i, w.size);
  }
  auto t1 = now_ns();
  r.fill = static_cast<double>(t1 - t0) / static_cast<double>(n);
  for (void* p : live) std::memset(p, 0x11, w.size);  // make the payload resident
  const std::size_t rss_full = rss_bytes();
  r.rss_ratio = static_cast<double>(rss_full - rss0) / (static_cast<double>(n) * static_cast<double>(w.size));
  t0 = now_ns();
  for (std::size_t i = 0; i < n; ++i) {
    void*& slot = live[picks[i]];
    a.free(slot);
    slot = a.alloc();
    write_key(slot, i, w.size);
  }
  t1 = now_ns();
  r.replace = static_cast<double>(t1 - t0) / static_cast<double>(n);
  const std::size_t half = n / 2;
  t0 = now_ns();
  for (std::size_t i = 0; i < half; ++i) a.free(live[order[i]]);
  t1 = now_ns();
  r.evict = static_cast<double>(t1 - t0) / static_cast<double>(half);
  t0 = now_ns();
  for (std::size_t i = 0; i < half; ++i) {
    void*& slot = live[order[i]];
    slot = a.alloc();
    write_key(slot, i, w.size);
  }
  t1 = now_ns();
  r.refill = static_cast<double>(t1 - t0) / static_cast<double>(half);
  for (void* p : live) a.free(p);
  a.release();
  const std::size_t rss_end = rss_bytes();
  const double grown = static_cast<double>(rss_full) - static_cast<double>(rss0);
  r.returned = grown > 0 ? (static_cast<double>(rss_full) - static_cast<double>(rss_end)) / grown : NAN;
  // hot pair and hot churn, 1,024 live
  {
    std::vector<void*> hot_live(1024);
    for (auto& p : hot_live) {
      p = a.alloc();
      write_key(p, 1, w.size);
    }
    auto h0 = now_ns();
    for (std::size_t i = 0; i < w.hot_iters; ++i) {
      void* p = a.alloc();
      *static_cast<volatile unsigned char*>(p) = static_cast<unsigned char>(i);
      a.free(p);
    }
    auto h1 = now_ns();
    r.hot_pair = static_cast<double>(h1 - h0) / static_cast<double>(w.hot_iters);
    h0 = now_ns();
    for (std::size_t i = 0; i < w.hot_iters; ++i) {
      void*& slot = hot_live[i & 1023];
      a.free(slot);
      slot = a.alloc();
      write_key(slot, i, w.size);
    }
    h1 = now_ns();
    r.hot_churn = static_cast<double>(h1 - h0) / static_cast<double>(w.hot_iters);
    for (void* p : hot_live) a.free(p);
  }
  for (void* p : v) a.free(p);
  return r;
}

const char* const kNames[] = {"kvmem FixedBlockPool",
                              "kvmem FixedBlockPool, no misuse checks",
                              "kvmem FixedBlockPool, 2 MiB huge pages",
                              "std::pmr::unsynchronized_pool_resource",
                              "glibc malloc",
                              "jemalloc 5 (mallocx/sdallocx)",
                              "mimalloc 2 (mi_malloc/mi_free)",
                              "tcmalloc-minimal (tc_malloc/tc_free)"};
constexpr int kAllocators = 8;

[[noreturn]] void child_body(int which, const Workload& w, int fd) {
  Result r;
  char err[160] = {0};
  bool ok = true;
  if (which <= 2) {
    PoolAlloc a(w.size, which != 1, which == 2);
    r = run_workload(a, w);
  } else if (which == 3) {
    PmrAlloc a(w.size);
    r = run_workload(a, w);
  } else if (which == 4) {
    GlibcAlloc a(w.size);
    r = run_workload(a, w);
  } else {
    DlAlloc a(which - 4, w.size);
    if (!a.error.empty()) {
      ok = false;
      std::snprintf(err, sizeof err, "%s", a.error.c_str());
    } else {
      r = run_workload(a, w);
    }
  }
  char buf[sizeof(Result) + 1 + sizeof err];
  buf[0] = ok ? 1 : 0;
  std::memcpy(buf + 1, &r, sizeof r);
  std::memcpy(buf + 1 + sizeof r, err, sizeof err);
  const ssize_t wrote = ::write(fd, buf, sizeof buf);
  ::_exit(wrote == static_cast<ssize_t>(sizeof buf) ? 0 : 1);
}

// The re-executed jemalloc child (see run_child) runs here, before main().
[[maybe_unused]] const bool kChildRan = [] {
  const char* spec = std::getenv("KVMEM_POOL_BENCH_CHILD");
  if (spec == nullptr) return false;
  int which = 0, fd = -1;
  std::size_t size = 0, live = 0, hot = 0;
  unsigned long long seed = 0;
  if (std::sscanf(spec, "%d %zu %zu %zu %llu %d", &which, &size, &live, &hot, &seed, &fd) != 6) ::_exit(4);
  child_body(which, Workload{size, live, hot, seed}, fd);
}();

// Runs allocator `which` in a forked child; fills `out` or sets `why`.
bool run_child(int which, const Workload& w, Result& out, std::string& why) {
  char buf[sizeof(Result) + 1 + 160];
  const bool ran = kvmem::bench::run_in_child(
      [&](int fd) {
        // jemalloc uses initial-exec TLS, which dlopen cannot place unless glibc reserves static
        // TLS for it at process start: re-execute this binary with the tunable set; a static
        // initializer above recognizes the child and runs it before main().
        if (which == 5 && std::getenv("KVMEM_POOL_BENCH_CHILD") == nullptr) {
          char spec[160];
          std::snprintf(spec, sizeof spec, "%d %zu %zu %zu %llu %d", which, w.size, w.live, w.hot_iters,
                        static_cast<unsigned long long>(w.seed), fd);
          ::setenv("KVMEM_POOL_BENCH_CHILD", spec, 1);
          ::setenv("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=65536", 1);
          char self[] = "kvmem-bench-pool-child";
          char* argv[] = {self, nullptr};
          ::execv("/proc/self/exe", argv);
          ::_exit(3);
        }
        child_body(which, w, fd);
      },
      buf, sizeof buf, why);
  if (!ran) return false;
  if (buf[0] == 0) {
    why = std::string(buf + 1 + sizeof(Result));
    return false;
  }
  std::memcpy(&out, buf + 1, sizeof out);
  return true;
}

void pool_suite(const kvmem::bench::Options& opt, kvmem::bench::Report& report) {
  const std::vector<std::size_t> sizes = opt.smoke ? std::vector<std::size_t>{528}
                                                   : std::vector<std::size_t>{128, 272, 528, 1040};
  const int reps = opt.smoke ? 1 : 3;
  const std::size_t n = opt.smoke ? 20000 : 1000000;
  const std::size_t hot = opt.smoke ? 200000 : 20000000;
  std::size_t step = 0;
  const std::size_t steps = sizes.size() * static_cast<std::size_t>(kAllocators);
  for (std::size_t size : sizes) {
    kvmem::bench::Table t;
    t.title = "pool: block " + std::to_string(size) + " B, " + std::to_string(n) +
              " live blocks, median of " + std::to_string(reps) + " (ns per operation unless noted)";
    t.columns = {"allocator", "hot pair", "hot churn", "first 1024 (us)", "fill", "replace", "evict 50%",
                 "refill", "resident/payload", "returned", "refill vs pool"};
    std::vector<Result> med(kAllocators);
    std::vector<std::string> why(kAllocators);
    for (int a = 0; a < kAllocators; ++a) {
      report.progress("pool size " + std::to_string(size) + " " + kNames[a], ++step, steps);
      std::vector<Result> rs;
      for (int rep = 0; rep < reps; ++rep) {
        Result r;
        std::string w;
        if (run_child(a, Workload{size, n, hot, opt.seed + static_cast<std::uint64_t>(rep)}, r, w)) {
          rs.push_back(r);
        } else {
          why[static_cast<std::size_t>(a)] = w;
          break;
        }
      }
      Result m;
      if (!rs.empty()) {
        auto med_of = [&](double Result::*f) {
          std::vector<double> v;
          for (auto& r : rs) v.push_back(r.*f);
          return kvmem::bench::median(v);
        };
        m.hot_pair = med_of(&Result::hot_pair);
        m.hot_churn = med_of(&Result::hot_churn);
        m.first_us = med_of(&Result::first_us);
        m.fill = med_of(&Result::fill);
        m.replace = med_of(&Result::replace);
        m.evict = med_of(&Result::evict);
        m.refill = med_of(&Result::refill);
        m.rss_ratio = med_of(&Result::rss_ratio);
        m.returned = med_of(&Result::returned);
      }
      med[static_cast<std::size_t>(a)] = m;
    }
    for (int a = 0; a < kAllocators; ++a) {
      const Result& m = med[static_cast<std::size_t>(a)];
      const std::string& w = why[static_cast<std::size_t>(a)];
      if (!w.empty() && std::isnan(m.hot_pair)) {
        t.rows.push_back({kNames[a], "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a", "n/a",
                          "n/a: " + w});
        continue;
      }
      t.rows.push_back({kNames[a], kvmem::bench::Cell(m.hot_pair, 2), kvmem::bench::Cell(m.hot_churn, 2),
                        kvmem::bench::Cell(m.first_us, 1), kvmem::bench::Cell(m.fill, 1),
                        kvmem::bench::Cell(m.replace, 1), kvmem::bench::Cell(m.evict, 1),
                        kvmem::bench::Cell(m.refill, 1), kvmem::bench::Cell(m.rss_ratio, 3),
                        kvmem::bench::Cell(m.returned, 2), kvmem::bench::ratio(m.refill, med[0].refill)});
    }
    t.note =
        "Times are thread CPU time (user + kernel), so time stolen by other processes is excluded. "
        "Each cell: median over repetitions, each in a fresh forked process. hot pair = allocate, write 1 B, "
        "free (1,024 other blocks live); hot churn = replace live[i % 1024]; first 1024 = microseconds for the "
        "first 1,024 allocations of a fresh allocator, no writes; fill/replace/evict/refill at N live blocks "
        "(8-byte key written per allocation); resident/payload = RSS growth after writing every byte / "
        "(N x block); returned = share of that RSS given back after freeing all + the allocator's release "
        "call; refill vs pool = refill time / kvmem FixedBlockPool's.";
    t.plot = {"bar", "allocator", {"hot pair", "replace", "refill"}, "ns per operation (log)", false, true};
    report.add(std::move(t));
    const std::string k = "pool." + std::to_string(size) + ".";
    report.figure(k + "hot_pair_ns", med[0].hot_pair);
    report.figure(k + "hot_pair_unchecked_ns", med[1].hot_pair);
    report.figure(k + "refill_ns", med[0].refill);
    report.figure(k + "resident_over_payload", med[0].rss_ratio);
    report.figure(k + "returned_share", med[0].returned);
    report.figure(k + "first_1024_us", med[0].first_us);
  }
}

}  // namespace

KVMEM_BENCH_SUITE("pool",
                  "FixedBlockPool vs std::pmr pool, glibc, jemalloc, mimalloc, tcmalloc: hot pair, 1M-block "
                  "churn, refill after random 50% free, resident/payload, first 1,024 allocations",
                  pool_suite);
