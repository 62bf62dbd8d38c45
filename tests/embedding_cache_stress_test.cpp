// Readers, writers, an eraser, an exporter and the background evictor on one cache at once.
// Every row carries its id, a version and a checksum; every read of a hit verifies all three,
// every miss must come back as the zero initializer. Sized to finish in seconds under TSan.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "kvmem/embedding_cache.hpp"

namespace {

using kvmem::EmbeddingCache;

constexpr std::size_t kDim = 16;
constexpr std::int64_t kIds = 3000;

// Values are small integers (exact in float); the last element is a weighted sum of the rest.
void make_row(std::int64_t id, std::uint32_t version, float* r) {
  r[0] = static_cast<float>(id % 4096);
  r[1] = static_cast<float>(version % 4096);
  std::uint64_t sum = 0;
  for (std::size_t j = 0; j + 1 < kDim; ++j) {
    if (j >= 2) r[j] = static_cast<float>((static_cast<std::uint64_t>(id) * 31 + version * 7 + j) % 4096);
    sum += static_cast<std::uint64_t>(r[j]) * (j + 1);
  }
  r[kDim - 1] = static_cast<float>(sum);
}

bool row_ok(std::int64_t id, const float* r) {
  if (r[0] != static_cast<float>(id % 4096)) return false;
  const auto version = static_cast<std::uint32_t>(r[1]);
  std::uint64_t sum = 0;
  for (std::size_t j = 0; j + 1 < kDim; ++j) {
    if (j >= 2 && r[j] != static_cast<float>((static_cast<std::uint64_t>(id) * 31 + version * 7 + j) % 4096))
      return false;
    sum += static_cast<std::uint64_t>(r[j]) * (j + 1);
  }
  return r[kDim - 1] == static_cast<float>(sum);
}

void run_stress(kvmem::EvictionPolicy policy) {
  EmbeddingCache::Options o;
  o.dim = kDim;
  o.shards = 8;
  o.pool_chunk_bytes = 16 * 1024;
  o.huge_pages = false;  // small chunks: exercise chunk turnover
  o.eviction.policy = policy;
  o.eviction.count_decay = 0.5;
  o.eviction.count_threshold = 2;
  o.eviction.l2_threshold = 250000.0f;  // about half the rows (the checksum dominates the norm)
  o.eviction.max_rows = 1500;  // the writers keep pushing past it: rounds run all the time
  o.eviction.background = true;
  o.eviction.check_interval = std::chrono::milliseconds(1);
  o.eviction.slice_slots = 64;
  EmbeddingCache cache(o);

  std::atomic<bool> bad{false};
  std::atomic<std::uint64_t> gets{0}, hits_seen{0};
  auto writer = [&](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::int64_t> ids(24);
    std::vector<float> rows(ids.size() * kDim);
    for (int it = 0; it < 2000; ++it) {
      for (std::size_t i = 0; i < ids.size(); ++i) {
        ids[i] = static_cast<std::int64_t>(rng() % kIds);
        make_row(ids[i], static_cast<std::uint32_t>(rng() % 4096), &rows[i * kDim]);
      }
      cache.set(ids, rows);
    }
  };
  auto reader = [&](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<std::int64_t> ids(32);
    std::vector<float> out(ids.size() * kDim);
    std::vector<std::uint8_t> hits(ids.size());
    for (int it = 0; it < 2000; ++it) {
      for (auto& id : ids) id = static_cast<std::int64_t>(rng() % kIds);
      const std::size_t h = cache.get(ids, out, hits);
      std::size_t counted = 0;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const float* r = &out[i * kDim];
        if (hits[i]) {
          ++counted;
          if (!row_ok(ids[i], r)) bad = true;
        } else {
          for (std::size_t j = 0; j < kDim; ++j)
            if (r[j] != 0.0f) bad = true;
        }
      }
      if (counted != h) bad = true;
      gets += ids.size();
      hits_seen += h;
    }
  };
  auto eraser = [&] {
    std::mt19937_64 rng(99);
    std::vector<std::int64_t> ids(8);
    for (int it = 0; it < 1000; ++it) {
      for (auto& id : ids) id = static_cast<std::int64_t>(rng() % kIds);
      cache.erase(ids);
      if (it % 100 == 0) cache.evict_now();  // on-demand rounds race the background ones
    }
  };
  auto exporter = [&] {
    for (int it = 0; it < 5; ++it) {
      cache.for_each_row([&](const kvmem::RowHeader& h, std::span<const float> v) {
        if (!row_ok(h.key, v.data())) bad = true;
      });
    }
  };
  // metrics() is a per-shard snapshot: its accounting identity holds mid-run, with rounds going.
  auto auditor = [&] {
    for (int it = 0; it < 2000; ++it) {
      const auto m = cache.metrics();
      if (m.inserts != m.rows + m.erased + m.evictions) bad = true;
    }
  };
  std::vector<std::thread> threads;
  threads.emplace_back(auditor);
  threads.emplace_back(writer, 1);
  threads.emplace_back(writer, 2);
  threads.emplace_back(reader, 3);
  threads.emplace_back(reader, 4);
  threads.emplace_back(eraser);
  threads.emplace_back(exporter);
  for (auto& t : threads) t.join();
  cache.request_eviction();
  cache.wait_for_eviction();
  EXPECT_FALSE(bad.load()) << "a row failed its checksum, a miss was not zero-filled, or metrics() broke "
                              "inserts == rows + erased + evictions";
  EXPECT_TRUE(cache.validate());
  const auto m = cache.metrics();
  EXPECT_EQ(m.hits + m.misses, gets.load());
  EXPECT_EQ(m.hits, hits_seen.load());
  EXPECT_EQ(m.inserts, m.rows + m.erased + m.evictions);
  EXPECT_GT(m.eviction_rounds, 0u);
  EXPECT_GT(m.evictions, 0u);
  // every row still present is intact
  std::vector<kvmem::RowHeader> hs;
  std::vector<float> vals;
  cache.export_rows(hs, vals);
  EXPECT_EQ(hs.size(), m.rows);
  for (std::size_t i = 0; i < hs.size(); ++i) EXPECT_TRUE(row_ok(hs[i].key, &vals[i * kDim]));
}

TEST(EmbeddingCacheStress, CountPolicyUnderLoad) { run_stress(kvmem::EvictionPolicy::kCount); }
TEST(EmbeddingCacheStress, L2PolicyUnderLoad) { run_stress(kvmem::EvictionPolicy::kL2Norm); }

}  // namespace
