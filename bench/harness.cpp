#include "harness.hpp"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kvmem::bench {

Cell::Cell(double v, int precision) : text(fmt(v, precision)), number(v) {}
Cell::Cell(std::int64_t v) : text(std::to_string(v)), number(static_cast<double>(v)) {}
Cell::Cell(std::uint64_t v) : text(std::to_string(v)), number(static_cast<double>(v)) {}

std::string fmt(double v, int precision) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

std::string ratio(double numerator, double denominator) {
  if (denominator == 0 || std::isnan(numerator) || std::isnan(denominator)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2fx", numerator / denominator);
  return buf;
}

double percentile(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  p = std::clamp(p, 0.0, 1.0);
  const auto idx = static_cast<std::size_t>(p * static_cast<double>(samples.size() - 1) + 0.5);
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(idx), samples.end());
  return samples[idx];
}

double median(std::vector<double> samples) { return percentile(std::move(samples), 0.5); }

double median_of(int reps, const std::function<double()>& fn) {
  std::vector<double> results;
  results.reserve(static_cast<std::size_t>(reps));
  for (int i = 0; i < reps; ++i) results.push_back(fn());
  return median(std::move(results));
}

bool run_in_child(const std::function<void(int fd)>& child, void* out, std::size_t bytes, std::string& why) {
  int fds[2];
  if (::pipe(fds) != 0) {
    why = "pipe failed";
    return false;
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    why = "fork failed";
    return false;
  }
  if (pid == 0) {
    ::close(fds[0]);
    child(fds[1]);
    ::_exit(1);
  }
  ::close(fds[1]);
  std::size_t got = 0;
  auto* buf = static_cast<char*>(out);
  while (got < bytes) {
    const ssize_t k = ::read(fds[0], buf + got, bytes - got);
    if (k <= 0) break;
    got += static_cast<std::size_t>(k);
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (got != bytes) {
    why = WIFSIGNALED(status) ? "child died with signal " + std::to_string(WTERMSIG(status))
                              : "child exited without a result";
    return false;
  }
  return true;
}

namespace {

std::vector<SuiteInfo>& registry() {
  static std::vector<SuiteInfo> r;
  return r;
}

void print_table(const Table& t) {
  std::vector<std::size_t> width(t.columns.size(), 0);
  for (std::size_t c = 0; c < t.columns.size(); ++c) width[c] = t.columns[c].size();
  for (const auto& row : t.rows)
    for (std::size_t c = 0; c < row.size() && c < width.size(); ++c)
      width[c] = std::max(width[c], row[c].text.size());
  std::printf("\n%s\n", t.title.c_str());
  auto line = [&](auto get) {
    for (std::size_t c = 0; c < width.size(); ++c) {
      const std::string s = get(c);
      // first column left-aligned (a label), the rest right-aligned (figures)
      if (c == 0)
        std::printf("  %-*s", static_cast<int>(width[c]), s.c_str());
      else
        std::printf("  %*s", static_cast<int>(width[c]), s.c_str());
    }
    std::printf("\n");
  };
  line([&](std::size_t c) { return t.columns[c]; });
  line([&](std::size_t c) { return std::string(width[c], '-'); });
  for (const auto& row : t.rows) line([&](std::size_t c) { return c < row.size() ? row[c].text : ""; });
  if (!t.note.empty()) std::printf("  %s\n", t.note.c_str());
  std::fflush(stdout);
}

std::string json_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", ch);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out;
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

}  // namespace

bool register_suite(SuiteInfo info) {
  registry().push_back(std::move(info));
  return true;
}

const std::vector<SuiteInfo>& suites() { return registry(); }

Report::Report(const Options& options) : options_(options) {}

void Report::begin_suite(const std::string& name, const std::string& summary) {
  suites_.push_back({name, summary, {}, {}});
  suite_start_ = std::chrono::steady_clock::now();
  std::printf("\n=== kvmem-bench %s: %s%s\n", name.c_str(), summary.c_str(),
              options_.smoke ? " (smoke)" : "");
  std::fflush(stdout);
}

void Report::add(Table table) {
  print_table(table);
  if (suites_.empty()) begin_suite("?", "");
  suites_.back().tables.push_back(std::move(table));
}

void Report::figure(const std::string& key, double value) {
  if (suites_.empty()) begin_suite("?", "");
  suites_.back().figures.emplace_back(key, value);
}

void Report::progress(const std::string& what, std::size_t done, std::size_t total) {
  if (options_.quiet) return;
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - suite_start_).count();
  const double left = done > 0 && total > done
                          ? elapsed / static_cast<double>(done) * static_cast<double>(total - done)
                          : 0.0;
  std::fprintf(stderr, "[%s] %s (%zu/%zu) elapsed %.1fs, ~%.1fs left\n",
               suites_.empty() ? "?" : suites_.back().name.c_str(), what.c_str(), done, total,
               elapsed, left);
}

bool Report::write_json(const std::string& path) const {
  std::ofstream out(path);
  if (!out) return false;
  out << "{\n  \"smoke\": " << (options_.smoke ? "true" : "false") << ",\n  \"seed\": " << options_.seed
      << ",\n  \"threads\": " << options_.threads << ",\n  \"suites\": [";
  for (std::size_t s = 0; s < suites_.size(); ++s) {
    const auto& suite = suites_[s];
    out << (s ? "," : "") << "\n    {\"name\": \"" << json_escape(suite.name) << "\", \"summary\": \""
        << json_escape(suite.summary) << "\",\n     \"figures\": {";
    for (std::size_t f = 0; f < suite.figures.size(); ++f)
      out << (f ? ", " : "") << "\"" << json_escape(suite.figures[f].first)
          << "\": " << json_number(suite.figures[f].second);
    out << "},\n     \"tables\": [";
    for (std::size_t t = 0; t < suite.tables.size(); ++t) {
      const auto& table = suite.tables[t];
      out << (t ? "," : "") << "\n      {\"title\": \"" << json_escape(table.title) << "\", \"note\": \""
          << json_escape(table.note) << "\", ";
      if (!table.plot.kind.empty()) {
        out << "\"plot\": {\"kind\": \"" << json_escape(table.plot.kind) << "\", \"x\": \""
            << json_escape(table.plot.x) << "\", \"y_label\": \"" << json_escape(table.plot.y_label)
            << "\", \"log_x\": " << (table.plot.log_x ? "true" : "false")
            << ", \"log_y\": " << (table.plot.log_y ? "true" : "false") << ", \"y\": [";
        for (std::size_t c = 0; c < table.plot.y.size(); ++c)
          out << (c ? ", " : "") << "\"" << json_escape(table.plot.y[c]) << "\"";
        out << "]}, ";
      }
      out << "\"columns\": [";
      for (std::size_t c = 0; c < table.columns.size(); ++c)
        out << (c ? ", " : "") << "\"" << json_escape(table.columns[c]) << "\"";
      out << "],\n       \"rows\": [";
      for (std::size_t r = 0; r < table.rows.size(); ++r) {
        out << (r ? ",\n         " : "\n         ") << "[";
        for (std::size_t c = 0; c < table.rows[r].size(); ++c) {
          const Cell& cell = table.rows[r][c];
          out << (c ? ", " : "");
          if (cell.number)
            out << json_number(*cell.number);
          else
            out << "\"" << json_escape(cell.text) << "\"";
        }
        out << "]";
      }
      out << "]}";
    }
    out << "]}";
  }
  out << "\n  ]\n}\n";
  return static_cast<bool>(out);
}

namespace {
// One write per 4 KiB page of a fresh THP-advised mapping, then unmaps it; returns the thread
// CPU ns the writes took (0 if the mapping failed).
std::uint64_t touch_fresh(std::size_t bytes) {
  void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return 0;
  ::madvise(m, bytes, MADV_HUGEPAGE);
  auto* p = static_cast<volatile char*>(m);
  const std::uint64_t c0 = thread_cpu_ns();
  for (std::size_t o = 0; o < bytes; o += 4096) p[o] = 1;
  const std::uint64_t spent = thread_cpu_ns() - c0;
  ::munmap(m, bytes);
  return spent;
}
}  // namespace

double two_thread_ceiling() {
  constexpr std::uint64_t kSteps = std::uint64_t{1} << 26;  // a dependent multiply-add chain
  auto work = [](std::uint64_t steps, std::uint64_t seed) {
    std::uint64_t x = seed;
    for (std::uint64_t i = 0; i < steps; ++i) x = x * 6364136223846793005ull + 1442695040888963407ull;
    do_not_optimize(x);
  };
  std::uint64_t t0 = now_ns();
  work(kSteps, 1);
  const std::uint64_t one = now_ns() - t0;
  // The second thread spins until the clock starts, as the suites' worker threads do: an idle
  // vCPU the host has descheduled can take milliseconds to wake, which would be timed here
  // but not in a suite's phase.
  std::atomic<bool> ready{false}, go{false};
  std::thread other([&] {
    ready.store(true, std::memory_order_release);
    while (!go.load(std::memory_order_acquire)) {
    }
    work(kSteps / 2, 2);
  });
  while (!ready.load(std::memory_order_acquire)) {
  }
  t0 = now_ns();
  go.store(true, std::memory_order_release);
  work(kSteps / 2, 3);
  other.join();
  const std::uint64_t two = now_ns() - t0;
  return two == 0 ? NAN : static_cast<double>(one) / static_cast<double>(two);
}

void back_guest_memory(std::size_t bytes) { touch_fresh(bytes); }

double first_touch_us_per_page(std::size_t bytes) {
  return static_cast<double>(touch_fresh(bytes)) / 1000.0 / static_cast<double>(bytes / 4096);
}

}  // namespace kvmem::bench
