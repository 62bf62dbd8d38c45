// kvmem-bench: every claim kvmem makes, measured next to its peers in one run.
//
//   kvmem-bench [SUITE...] [--smoke] [--seed N] [--threads N] [--duration S]
//               [--json FILE] [--plot DIR] [--quiet] [--list]
//
// SUITE is one of the registered suites (offset, arena, pool, embedding, pages, objects) or
// `all` (the default): the default suite that the README's main command runs.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "harness.hpp"

namespace {

// The order `all` runs in: lowest layer first, as in CMakeLists.txt.
constexpr std::string_view kOrder[] = {"offset", "arena", "pool", "embedding", "pages", "objects"};

int usage(FILE* to) {
  std::fprintf(to,
               "usage: kvmem-bench [SUITE...] [--smoke] [--seed N] [--threads N] [--duration S]\n"
               "                   [--json FILE] [--plot DIR] [--quiet] [--list]\n"
               "  --smoke       every case shrunk to seconds (what ctest runs); figures are not results\n"
               "  --seed N      seed of every random workload (default 42)\n"
               "  --threads N   largest thread count of the scaling cases (default 2; more = oversubscribed)\n"
               "  --duration S  seconds per timed throughput case, where a suite has them (arena)\n"
               "  --json FILE   all tables and key figures as JSON (tools/kvmem_report.py renders it)\n"
               "  --plot DIR    PNG charts of the tables, drawn by tools/kvmem_plot.py (python3-matplotlib)\n"
               "  --quiet       no progress lines on stderr\n"
               "suites:\n");
  for (const auto& s : kvmem::bench::suites()) std::fprintf(to, "  %-10s %s\n", s.name.c_str(), s.summary.c_str());
  std::fprintf(to, "  %-10s every suite above, in layer order (default)\n", "all");
  return to == stderr ? 2 : 0;
}

bool parse_number(const char* text, double& out) {
  char* end = nullptr;
  out = std::strtod(text, &end);
  return end != text && *end == '\0';
}

}  // namespace

int main(int argc, char** argv) {
  kvmem::bench::Options options;
  std::string json_path;
  std::string plot_dir;
  std::vector<std::string> wanted;

  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "kvmem-bench: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    double number = 0;
    if (arg == "--smoke") {
      options.smoke = true;
    } else if (arg == "--quiet") {
      options.quiet = true;
    } else if (arg == "--list") {
      return usage(stdout);
    } else if (arg == "-h" || arg == "--help") {
      return usage(stdout);
    } else if (arg == "--seed") {
      if (!parse_number(value("--seed"), number) || number < 0) return usage(stderr);
      options.seed = static_cast<std::uint64_t>(number);
    } else if (arg == "--threads") {
      if (!parse_number(value("--threads"), number) || number < 1 || number > 256) return usage(stderr);
      options.threads = static_cast<int>(number);
    } else if (arg == "--duration") {
      if (!parse_number(value("--duration"), number) || number <= 0) return usage(stderr);
      options.duration_s = number;
    } else if (arg == "--json") {
      json_path = value("--json");
    } else if (arg == "--plot") {
      plot_dir = value("--plot");
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "kvmem-bench: unknown flag %s\n", argv[i]);
      return usage(stderr);
    } else {
      wanted.emplace_back(arg);
    }
  }
  if (wanted.empty()) wanted.emplace_back("all");

  std::vector<const kvmem::bench::SuiteInfo*> to_run;
  auto find = [](std::string_view name) -> const kvmem::bench::SuiteInfo* {
    for (const auto& s : kvmem::bench::suites())
      if (s.name == name) return &s;
    return nullptr;
  };
  for (const auto& name : wanted) {
    if (name == "all") {
      for (auto n : kOrder)
        if (const auto* s = find(n)) to_run.push_back(s);
      for (const auto& s : kvmem::bench::suites()) {  // any suite not in kOrder, after the rest
        bool listed = false;
        for (auto n : kOrder) listed = listed || s.name == n;
        if (!listed) to_run.push_back(&s);
      }
    } else if (const auto* s = find(name)) {
      to_run.push_back(s);
    } else {
      std::fprintf(stderr, "kvmem-bench: no suite named '%s'\n", name.c_str());
      return usage(stderr);
    }
  }
  if (to_run.empty()) {
    std::fprintf(stderr, "kvmem-bench: no suites built\n");
    return 1;
  }

  kvmem::bench::Report report(options);
  for (const auto* s : to_run) {
    report.begin_suite(s->name, s->summary);
    s->run(options, report);
  }

  if (!plot_dir.empty() && json_path.empty()) json_path = plot_dir + "/kvmem-bench.json";
  if (!json_path.empty()) {
    if (!plot_dir.empty()) {
      const std::string mk = "mkdir -p '" + plot_dir + "'";
      if (std::system(mk.c_str()) != 0) return 1;
    }
    if (!report.write_json(json_path)) {
      std::fprintf(stderr, "kvmem-bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::printf("\nkvmem-bench: results written to %s\n", json_path.c_str());
  }
  if (!plot_dir.empty()) {
    const std::string cmd = std::string(KVMEM_PLOT_PYTHON " '") + KVMEM_SOURCE_DIR "/tools/kvmem_plot.py' '" +
                            json_path + "' '" + plot_dir + "'";
    const int rc = std::system(cmd.c_str());
    if (rc != 0) {
      std::fprintf(stderr, "kvmem-bench: plotting failed (%d)\n", rc);
      return 1;
    }
  }
  return 0;
}
