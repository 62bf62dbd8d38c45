// Suite "kvbuffer": kvmem::KVBuffer's page_ranges() as a storage write path would use it:
// gather random pages into a staging buffer, for the page-first and layer-first layouts of
// the same K/V shape (page-first is the baseline: one range per page).
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "harness.hpp"
#include "kvmem/kv_buffer.hpp"

namespace {

using kvmem::bench::now_ns;

// KVBuffer: gather random pages into a staging buffer through page_ranges() (the storage
// write path), for both layouts of the same K/V shape. Layer-first pages are 2 x layers
// blocks far apart; page-first pages are one range.
void run(const kvmem::bench::Options& opt, kvmem::bench::Report& report) {
  kvmem::bench::Table table;
  table.title = "KVBuffer: gather 64 random pages via page_ranges()";
  table.columns = {"layout", "pages", "page bytes", "ranges/page", "ns per page_ranges",
                   "gather GB/s", "GB/s vs page-first"};
  double page_first_gbs = 0;
  for (const auto order : {kvmem::KVOrder::kPageFirst, kvmem::KVOrder::kLayerFirst}) {
    kvmem::KVLayout layout;
    layout.num_pages = opt.smoke ? 128 : 1024;
    layout.page_tokens = 16;
    layout.num_layers = 8;
    layout.k_bytes_per_token = 1024;  // e.g. 4 KV heads x 128 dims x bf16
    layout.v_bytes_per_token = 1024;
    layout.order = order;
    kvmem::KVBuffer::Options o;
    o.huge_pages = kvmem::KVBuffer::Need::kTry;
    o.prefault = true;
    kvmem::KVBuffer buf(layout, o);
    std::memset(buf.data(), 1, buf.size_bytes());
    std::vector<std::byte> staging(64 * layout.page_bytes());
    std::mt19937_64 rng(opt.seed);
    std::vector<kvmem::ByteRange> ranges(buf.ranges_per_page());
    const int rounds = opt.smoke ? 20 : 200;
    std::uint64_t bytes = 0, copy_ns = 0, ranges_ns = 0, range_calls = 0;
    for (int r = 0; r < rounds; ++r) {
      std::byte* out = staging.data();
      for (int i = 0; i < 64; ++i) {
        const auto page = static_cast<std::uint32_t>(rng() % layout.num_pages);
        const std::uint64_t t0 = now_ns();
        const std::size_t k = buf.page_ranges(page, ranges);
        const std::uint64_t t1 = now_ns();
        for (std::size_t j = 0; j < k; ++j) {
          std::memcpy(out, ranges[j].data, ranges[j].size);
          out += ranges[j].size;
        }
        copy_ns += now_ns() - t1;
        ranges_ns += t1 - t0;
        ++range_calls;
        bytes += layout.page_bytes();
      }
      kvmem::bench::do_not_optimize(staging[0]);
    }
    const double gbs = static_cast<double>(bytes) / static_cast<double>(copy_ns);
    if (order == kvmem::KVOrder::kPageFirst) page_first_gbs = gbs;
    table.rows.push_back({order == kvmem::KVOrder::kPageFirst ? "page-first" : "layer-first",
                          kvmem::bench::Cell(std::uint64_t{layout.num_pages}),
                          kvmem::bench::Cell(layout.page_bytes()),
                          kvmem::bench::Cell(static_cast<std::uint64_t>(buf.ranges_per_page())),
                          kvmem::bench::Cell(static_cast<double>(ranges_ns) /
                                                 static_cast<double>(range_calls), 1),
                          kvmem::bench::Cell(gbs, 2), kvmem::bench::ratio(gbs, page_first_gbs)});
    report.figure(std::string("pages.kv_buffer.") +
                      (order == kvmem::KVOrder::kPageFirst ? "page_first" : "layer_first") +
                      ".gather_gbs",
                  gbs);
  }
  table.note = "K and V 1 KiB/token/layer, 16-token pages, 8 layers (256 KiB per page); "
               "ns per page_ranges includes ~20 ns of timer";
  report.add(std::move(table));
}

}  // namespace

KVMEM_BENCH_SUITE("kvbuffer", "KVBuffer page gather through page_ranges, page-first vs layer-first",
                  run);
