// Randomized model test: EmbeddingCache against a std::unordered_map reference that applies
// the same header rules (last_access, saturating count, decay) and eviction policies.
// validate() runs after every operation; contents and headers are compared periodically.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

#include "kvmem/embedding_cache.hpp"

namespace {

using kvmem::EmbeddingCache;
using kvmem::EvictionPolicy;
using kvmem::RowHeader;

struct ModelRow {
  std::vector<float> v;
  std::uint32_t last = 0;
  std::uint32_t count = 0;
  std::uint16_t flags = 0;
};

void bump(ModelRow& r, std::uint32_t now) {
  r.last = now;
  if (r.count != 0xffff) ++r.count;
}

void run(EvictionPolicy policy, std::size_t dim, std::size_t shards, std::uint64_t seed, int steps) {
  auto clock = std::make_shared<std::atomic<std::uint32_t>>(1000);
  EmbeddingCache::Options o;
  o.dim = dim;
  o.shards = shards;
  o.pool_chunk_bytes = 16 * 1024;
  o.huge_pages = false;  // small chunks: exercise chunk turnover
  o.clock = [clock] { return clock->load(); };
  o.eviction.policy = policy;
  o.eviction.ttl_seconds = 20;
  o.eviction.count_decay = 0.75;
  o.eviction.count_threshold = 3;
  o.eviction.l2_threshold = 4.0f;
  o.eviction.slice_slots = 7;  // many slices per shard
  EmbeddingCache cache(o);
  std::unordered_map<std::int64_t, ModelRow> model;
  std::mt19937_64 rng(seed);
  auto rand_id = [&] { return static_cast<std::int64_t>(rng() % 600) - 300; };
  auto rand_row = [&] {
    std::vector<float> r(dim);
    for (auto& x : r) x = static_cast<float>(static_cast<int>(rng() % 9) - 4) * 0.5f;
    return r;
  };
  for (int step = 0; step < steps; ++step) {
    const unsigned op = static_cast<unsigned>(rng() % 100);
    if (op < 5) clock->fetch_add(static_cast<std::uint32_t>(rng() % 8));
    const std::uint32_t now = clock->load();
    const std::size_t batch = 1 + rng() % 12;
    std::vector<std::int64_t> ids(batch);
    for (auto& id : ids) id = rand_id();
    if (op < 40) {  // set
      std::vector<float> rows;
      for (auto id : ids) {
        auto r = rand_row();
        rows.insert(rows.end(), r.begin(), r.end());
        auto& m = model[id];
        m.v = r;
        bump(m, now);
      }
      cache.set(ids, rows);
    } else if (op < 75) {  // get
      std::vector<float> out(batch * dim, -1.0f);
      std::vector<std::uint8_t> hits(batch);
      std::size_t expect_hits = 0;
      const std::size_t got = cache.get(ids, out, hits);
      for (std::size_t i = 0; i < batch; ++i) {
        auto it = model.find(ids[i]);
        ASSERT_EQ(hits[i] != 0, it != model.end()) << "id " << ids[i];
        const std::vector<float> row(out.begin() + static_cast<std::ptrdiff_t>(i * dim),
                                     out.begin() + static_cast<std::ptrdiff_t>((i + 1) * dim));
        if (it != model.end()) {
          ++expect_hits;
          ASSERT_EQ(row, it->second.v);
          bump(it->second, now);
        } else {
          ASSERT_EQ(row, std::vector<float>(dim, 0.0f));
        }
      }
      ASSERT_EQ(got, expect_hits);
    } else if (op < 85) {  // erase
      std::size_t expect = 0;
      for (auto id : ids) expect += model.erase(id);
      ASSERT_EQ(cache.erase(ids), expect);
    } else if (op < 92) {  // eviction round
      std::size_t expect = 0;
      for (auto it = model.begin(); it != model.end();) {
        ModelRow& m = it->second;
        bool victim = true;
        const bool ttl = policy == EvictionPolicy::kTtl || policy == EvictionPolicy::kTtlAndCount;
        const bool cnt = policy == EvictionPolicy::kCount || policy == EvictionPolicy::kTtlAndCount;
        if (cnt) {
          m.count = static_cast<std::uint32_t>(std::floor(m.count * 0.75));
          victim = victim && m.count < 3;
        }
        if (ttl) victim = victim && (now >= m.last ? now - m.last : 0) > 20;
        if (policy == EvictionPolicy::kL2Norm) {
          double s = 0;
          for (float x : m.v) s += static_cast<double>(x) * x;
          victim = static_cast<float>(std::sqrt(s)) < 4.0f;
        }
        if (policy == EvictionPolicy::kNone) victim = false;
        if (victim) {
          it = model.erase(it);
          ++expect;
        } else {
          ++it;
        }
      }
      ASSERT_EQ(cache.evict_now(), expect);
    } else if (op < 96) {  // import some rows with explicit headers
      std::vector<RowHeader> hs;
      std::vector<float> vals;
      for (auto id : ids) {
        RowHeader h;
        h.key = id;
        h.last_access = now - static_cast<std::uint32_t>(rng() % 40);
        h.count = static_cast<std::uint16_t>(rng() % 10);
        h.flags = static_cast<std::uint16_t>(rng() & 0xffff);
        auto r = rand_row();
        hs.push_back(h);
        vals.insert(vals.end(), r.begin(), r.end());
        auto& m = model[id];
        m.v = r;
        m.last = h.last_access;
        m.count = h.count;
        m.flags = static_cast<std::uint16_t>(h.flags & kvmem::kRowUserFlagsMask);
      }
      cache.import_rows(hs, vals);
    } else {  // full comparison through export
      std::vector<RowHeader> hs;
      std::vector<float> vals;
      cache.export_rows(hs, vals);
      ASSERT_EQ(hs.size(), model.size());
      for (std::size_t i = 0; i < hs.size(); ++i) {
        auto it = model.find(hs[i].key);
        ASSERT_NE(it, model.end());
        ASSERT_EQ(hs[i].last_access, it->second.last);
        ASSERT_EQ(hs[i].count, it->second.count);
        ASSERT_EQ(hs[i].flags, it->second.flags);
        ASSERT_EQ(std::vector<float>(vals.begin() + static_cast<std::ptrdiff_t>(i * dim),
                                     vals.begin() + static_cast<std::ptrdiff_t>((i + 1) * dim)),
                  it->second.v);
      }
    }
    ASSERT_EQ(cache.size(), model.size());
    ASSERT_TRUE(cache.validate()) << "step " << step;
  }
  const auto m = cache.metrics();
  EXPECT_EQ(m.rows, model.size());
}

TEST(EmbeddingCacheModel, TtlPolicy) { run(EvictionPolicy::kTtl, 4, 3, 1, 4000); }
TEST(EmbeddingCacheModel, CountPolicy) { run(EvictionPolicy::kCount, 3, 5, 2, 4000); }
TEST(EmbeddingCacheModel, TtlAndCountPolicy) { run(EvictionPolicy::kTtlAndCount, 5, 1, 3, 4000); }
TEST(EmbeddingCacheModel, L2Policy) { run(EvictionPolicy::kL2Norm, 8, 4, 4, 4000); }
TEST(EmbeddingCacheModel, NoEviction) { run(EvictionPolicy::kNone, 2, 16, 5, 3000); }

}  // namespace
