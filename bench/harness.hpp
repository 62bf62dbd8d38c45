#pragma once
// kvmem::bench: the shared harness behind kvmem-bench.
//
// Each component's benchmark lives in bench/<component>_bench.cpp and registers one suite
// with KVMEM_BENCH_SUITE("name", "summary", function). A suite measures kvmem and its peers
// in the same process and reports tables through a Report: the tables are printed aligned
// as they complete and are written to JSON (--json) for docs/benchmarks.md and the plots.
//
// Rules every suite follows: a baseline runs in the same process as the thing it is compared
// with (ratios hold on a noisy machine, absolute times drift); --smoke shrinks every case to
// seconds and is what ctest runs; --seed makes every random workload repeatable.

#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace kvmem::bench {

struct Options {
  bool smoke = false;          // tiny sizes and counts: seconds per suite (ctest)
  std::uint64_t seed = 42;     // every random workload derives from it
  int threads = 2;             // the largest thread count a suite runs (plus oversubscribed cases)
  double duration_s = 0;       // > 0: suites with time-bounded loops use it
  bool quiet = false;          // no progress lines
};

// One cell of a table: text, with the number it came from when it is numeric.
struct Cell {
  Cell(const char* s) : text(s) {}  // NOLINT(google-explicit-constructor)
  Cell(std::string s) : text(std::move(s)) {}  // NOLINT
  Cell(double v, int precision = 3);  // NOLINT
  Cell(std::int64_t v);  // NOLINT
  Cell(std::uint64_t v);  // NOLINT
  Cell(int v) : Cell(static_cast<std::int64_t>(v)) {}  // NOLINT
  Cell(unsigned v) : Cell(static_cast<std::uint64_t>(v)) {}  // NOLINT
  std::string text;
  std::optional<double> number;
};

// How tools/kvmem_plot.py draws a table (from the JSON): kind "bar" (one group of bars per
// row, one bar per y column), "line" (x column against each y column) or "cdf" (as line, with
// the x axis read as a percentile). An empty kind means the table is not plotted.
struct PlotSpec {
  std::string kind;
  std::string x;               // column whose cells label the rows / give the x values
  std::vector<std::string> y;  // numeric columns to draw
  std::string y_label;
  bool log_x = false;
  bool log_y = false;
};

struct Table {
  std::string title;
  std::vector<std::string> columns;
  std::vector<std::vector<Cell>> rows;
  std::string note;  // printed under the table: what was measured and how to read it
  PlotSpec plot;     // optional chart of this table (--plot DIR)
};

class Report {
 public:
  explicit Report(const Options& options);

  // Starts a suite section (called by the runner).
  void begin_suite(const std::string& name, const std::string& summary);

  // Adds a finished table and prints it.
  void add(Table table);

  // A progress line for long suites: "[offset] size 2065 (12/55) elapsed 3.1s, ~9.8s left".
  void progress(const std::string& what, std::size_t done, std::size_t total);

  // A free-form key figure (also in JSON), e.g. ("offset.uniform.worst_min_ratio", 0.999).
  void figure(const std::string& key, double value);

  bool write_json(const std::string& path) const;

 private:
  struct Suite {
    std::string name;
    std::string summary;
    std::vector<Table> tables;
    std::vector<std::pair<std::string, double>> figures;
  };
  const Options& options_;
  std::vector<Suite> suites_;
  std::chrono::steady_clock::time_point suite_start_;
};

using SuiteFn = std::function<void(const Options&, Report&)>;

struct SuiteInfo {
  std::string name;
  std::string summary;
  SuiteFn run;
};

// Registration; returns true so it can initialize a namespace-scope bool.
bool register_suite(SuiteInfo info);
const std::vector<SuiteInfo>& suites();

// ---- measuring helpers -------------------------------------------------------------------

inline std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// CPU time of the calling thread (user + kernel, e.g. page faults). On a shared 2-vCPU
// machine wall time also charges the thread for time it was descheduled or its vCPU stolen.
inline std::uint64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// Kernel CPU time of the calling thread (page faults, zeroing, system calls), ns.
inline std::uint64_t thread_sys_ns() {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  return static_cast<std::uint64_t>(ru.ru_stime.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ru.ru_stime.tv_usec) * 1000ull;
}

// Keeps the compiler from discarding a computed value. A value wider than a register is
// passed by address (the "memory" clobber says the asm may read it): given the value itself
// as an "m" operand, GCC copies it to a temporary first, and for a result just stored field
// by field (a 48-byte std::optional<Allocation>) the copy's 16-byte loads miss store
// forwarding, a stall of the harness's own that no caller pays (measured: 1.5 ns per
// OffsetAllocator allocate + free pair).
template <class T>
inline void do_not_optimize(T const& value) {
  if constexpr (sizeof(T) <= sizeof(void*) && std::is_trivially_copyable_v<T>) {
    asm volatile("" : : "r,m"(value) : "memory");
  } else {
    asm volatile("" : : "r"(&value) : "memory");
  }
}
inline void clobber_memory() { asm volatile("" : : : "memory"); }

// p in [0, 1]; sorts a copy. Empty input gives 0.
double percentile(std::vector<double> samples, double p);
double median(std::vector<double> samples);

// Runs fn() `reps` times and returns the median of its results (each a figure such as ns/op).
double median_of(int reps, const std::function<double()>& fn);

std::string fmt(double v, int precision = 3);

// Runs child(fd) in a forked process, which must write exactly `bytes` bytes to fd (its
// result) and then exit; copies them to `out`. Each case then starts from a fresh heap and
// page table, so one allocator's leftovers cannot slow the next. On failure (fork, a crash, a
// short write) returns false with the reason in `why`. If child returns, the child exits 1.
bool run_in_child(const std::function<void(int fd)>& child, void* out, std::size_t bytes, std::string& why);

// Formats a ratio as "2.41x".
std::string ratio(double numerator, double denominator);

// Wall-time speed-up this machine gives a CPU-bound loop with no shared data on 2 threads
// over 1 thread, each measured once for about 2 x 60 ms: 2.0 on two idle cores, less when
// the host runs the VM's two vCPUs on fewer cores at the time. The ceiling of any 2-thread
// figure measured right next to it.
double two_thread_ceiling();

// ---- fresh memory on a virtual machine ----------------------------------------------------
//
// The first write to a fresh page costs the kernel's fault and zeroing (0.4 us per 4 KiB page
// here), and on a VM whose balloon reports free guest memory to the host ("free page
// reporting": about 2 s after memory is freed, the host takes its backing away) also the
// host's work to back the page again: measured here, 600 MB written 2-5 s after another
// 600 MB was freed cost 5.5-10.6 us per 4 KiB page, against 0.4-0.5 us with no pause. Whether a
// run gets host-backed or reclaimed pages then depends on how long ago other memory was
// freed, and a cold-fill figure measures that rather than the code.

// Writes one byte per 4 KiB page of `bytes` of fresh anonymous memory (THP-advised, as the
// caches' chunks are) and unmaps it: for the next ~2 s the guest's free lists hold that many
// pages the host backs, and fresh memory costs what it costs on bare metal or on a VM without
// free page reporting. Call it right before a timed cold fill, outside the timing.
void back_guest_memory(std::size_t bytes);

// CPU microseconds per 4 KiB page of the first write to `bytes` of fresh anonymous memory.
double first_touch_us_per_page(std::size_t bytes);

}  // namespace kvmem::bench

#define KVMEM_BENCH_CONCAT2(a, b) a##b
#define KVMEM_BENCH_CONCAT(a, b) KVMEM_BENCH_CONCAT2(a, b)
#define KVMEM_BENCH_SUITE(name, summary, fn)                                    \
  static const bool KVMEM_BENCH_CONCAT(kvmem_bench_registered_, __LINE__) = \
      ::kvmem::bench::register_suite({name, summary, fn})
