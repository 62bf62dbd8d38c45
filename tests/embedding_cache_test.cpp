#include "kvmem/embedding_cache.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

namespace {

using kvmem::EmbeddingCache;
using kvmem::EvictionPolicy;
using kvmem::RowHeader;
using kvmem::RowStorage;

struct ManualClock {
  std::shared_ptr<std::atomic<std::uint32_t>> t = std::make_shared<std::atomic<std::uint32_t>>(100);
  std::function<std::uint32_t()> fn() const {
    auto p = t;
    return [p] { return p->load(); };
  }
};

EmbeddingCache::Options opts(std::size_t dim, std::size_t shards = 4) {
  EmbeddingCache::Options o;
  o.dim = dim;
  o.shards = shards;
  o.pool_chunk_bytes = 64 * 1024;
  o.huge_pages = false;  // small chunks: exercise chunk turnover
  return o;
}

std::vector<float> row_for(std::int64_t id, std::size_t dim, float version = 0) {
  std::vector<float> r(dim);
  for (std::size_t j = 0; j < dim; ++j) r[j] = static_cast<float>(id) * 0.5f + static_cast<float>(j) + version;
  return r;
}

TEST(EmbeddingCache, RejectsBadArguments) {
  EXPECT_THROW(EmbeddingCache(opts(0)), std::invalid_argument);
  EXPECT_THROW(EmbeddingCache(opts(4, 0)), std::invalid_argument);
  auto o = opts(4);
  o.init_low = 1;
  o.init_high = 0;
  EXPECT_THROW(EmbeddingCache{o}, std::invalid_argument);
  o = opts(4);
  o.eviction.count_decay = 0;
  EXPECT_THROW(EmbeddingCache{o}, std::invalid_argument);
  EmbeddingCache c(opts(4));
  std::vector<std::int64_t> ids{1, 2};
  std::vector<float> rows(7);
  EXPECT_THROW(c.set(ids, rows), std::invalid_argument);
  std::vector<float> out(9);
  EXPECT_THROW(c.get(ids, out), std::invalid_argument);
  std::vector<float> out2(8);
  std::vector<std::uint8_t> hits(3);
  EXPECT_THROW(c.get(ids, out2, hits), std::invalid_argument);
}

TEST(EmbeddingCache, SetGetUpdateErase) {
  EmbeddingCache c(opts(8));
  std::vector<std::int64_t> ids{5, -7, 1LL << 40, 0};
  std::vector<float> rows;
  for (auto id : ids) {
    auto r = row_for(id, 8);
    rows.insert(rows.end(), r.begin(), r.end());
  }
  c.set(ids, rows);
  EXPECT_EQ(c.size(), 4u);
  std::vector<std::int64_t> q{0, 5, 99, -7};
  std::vector<float> out(q.size() * 8);
  std::vector<std::uint8_t> hits(q.size());
  EXPECT_EQ(c.get(q, out, hits), 3u);
  EXPECT_EQ(hits, (std::vector<std::uint8_t>{1, 1, 0, 1}));
  for (std::size_t j = 0; j < 8; ++j) {
    EXPECT_EQ(out[0 * 8 + j], row_for(0, 8)[j]);
    EXPECT_EQ(out[1 * 8 + j], row_for(5, 8)[j]);
    EXPECT_EQ(out[2 * 8 + j], 0.0f);  // zeros initializer for the miss
    EXPECT_EQ(out[3 * 8 + j], row_for(-7, 8)[j]);
  }
  // update in place
  auto r5 = row_for(5, 8, 100);
  c.set(std::vector<std::int64_t>{5}, r5);
  EXPECT_EQ(c.size(), 4u);
  std::vector<float> one(8);
  c.get(std::vector<std::int64_t>{5}, one);
  EXPECT_EQ(one, r5);
  EXPECT_EQ(c.erase(std::vector<std::int64_t>{5, 5, 12345}), 1u);
  EXPECT_FALSE(c.contains(5));
  EXPECT_TRUE(c.contains(-7));
  const auto m = c.metrics();
  EXPECT_EQ(m.rows, 3u);
  EXPECT_EQ(m.hits, 4u);
  EXPECT_EQ(m.misses, 1u);
  EXPECT_EQ(m.inserts, 4u);
  EXPECT_EQ(m.updates, 1u);
  EXPECT_EQ(m.erased, 1u);
  EXPECT_GT(m.bytes_held, m.bytes_used);
  EXPECT_TRUE(c.validate());
}

TEST(EmbeddingCache, DuplicateIdsInABatchLastWins) {
  EmbeddingCache c(opts(2, 1));
  std::vector<std::int64_t> ids{3, 3, 3};
  std::vector<float> rows{1, 1, 2, 2, 3, 3};
  c.set(ids, rows);
  std::vector<float> out(2);
  c.get(std::vector<std::int64_t>{3}, out);
  EXPECT_EQ(out, (std::vector<float>{3, 3}));
  EXPECT_EQ(c.size(), 1u);
}

TEST(EmbeddingCache, UniformInitializerIsSeededAndInRange) {
  auto o = opts(64);
  o.initializer = kvmem::RowInitializer::kUniform;
  o.init_low = -0.5f;
  o.init_high = 0.25f;
  o.seed = 9;
  EmbeddingCache a(o), b(o);
  o.seed = 10;
  EmbeddingCache c(o);
  std::vector<std::int64_t> ids{1, 2};
  std::vector<float> x(128), y(128), z(128);
  EXPECT_EQ(a.get(ids, x), 0u);
  b.get(ids, y);
  c.get(ids, z);
  EXPECT_EQ(x, y);
  EXPECT_NE(x, z);
  EXPECT_NE(std::vector<float>(x.begin(), x.begin() + 64), std::vector<float>(x.begin() + 64, x.end()));
  for (float v : x) {
    EXPECT_GE(v, -0.5f);
    EXPECT_LT(v, 0.25f);
  }
  EXPECT_EQ(a.size(), 0u);  // misses are not inserted
}

TEST(EmbeddingCache, HalfAndBFloat16Storage) {
  for (RowStorage st : {RowStorage::kFloat16, RowStorage::kBFloat16}) {
    auto o = opts(6);
    o.storage = st;
    EmbeddingCache c(o);
    EXPECT_EQ(c.row_block_bytes(), 16u + 12u + 4u);  // rounded to 8
    std::vector<float> row{1.0f, -2.5f, 0.0f, 65504.0f, 1e-3f, 3.14159f};
    c.set(std::vector<std::int64_t>{1}, row);
    std::vector<float> out(6);
    c.get(std::vector<std::int64_t>{1}, out);
    const float tol = st == RowStorage::kFloat16 ? 1e-3f : 1e-2f;
    for (std::size_t j = 0; j < 6; ++j) EXPECT_NEAR(out[j], row[j], std::abs(row[j]) * tol + 1e-6f) << j;
    EXPECT_EQ(out[0], 1.0f);
    EXPECT_EQ(out[1], -2.5f);
  }
}

TEST(EmbeddingCache, HeadersTrackAccessAndExportImportRoundTrips) {
  ManualClock clock;
  auto o = opts(3);
  o.clock = clock.fn();
  EmbeddingCache c(o);
  c.set(std::vector<std::int64_t>{1, 2}, std::vector<float>{1, 2, 3, 4, 5, 6});
  clock.t->store(150);
  std::vector<float> out(3);
  c.get(std::vector<std::int64_t>{1}, out);
  c.get(std::vector<std::int64_t>{1}, out);
  std::vector<RowHeader> headers;
  std::vector<float> values;
  c.export_rows(headers, values);
  ASSERT_EQ(headers.size(), 2u);
  std::map<std::int64_t, RowHeader> by_key;
  for (auto& h : headers) by_key[h.key] = h;
  EXPECT_EQ(by_key[1].last_access, 150u);
  EXPECT_EQ(by_key[1].count, 3u);
  EXPECT_EQ(by_key[2].last_access, 100u);
  EXPECT_EQ(by_key[2].count, 1u);
  headers[0].flags = 0x1234;
  EmbeddingCache d(o);
  d.import_rows(headers, values);
  std::vector<RowHeader> h2;
  std::vector<float> v2;
  d.export_rows(h2, v2);
  ASSERT_EQ(h2.size(), 2u);
  std::map<std::int64_t, std::pair<RowHeader, std::vector<float>>> a, b;
  for (std::size_t i = 0; i < 2; ++i) {
    a[headers[i].key] = {headers[i], std::vector<float>(values.begin() + 3 * i, values.begin() + 3 * i + 3)};
    b[h2[i].key] = {h2[i], std::vector<float>(v2.begin() + 3 * i, v2.begin() + 3 * i + 3)};
  }
  for (auto& [k, hv] : a) {
    EXPECT_EQ(b[k].first.last_access, hv.first.last_access);
    EXPECT_EQ(b[k].first.count, hv.first.count);
    EXPECT_EQ(b[k].first.flags, hv.first.flags);
    EXPECT_EQ(b[k].second, hv.second);
  }
  EXPECT_TRUE(d.validate());
  EXPECT_THROW(d.import_rows(headers, std::vector<float>(5)), std::invalid_argument);
}

TEST(EmbeddingCache, TtlEviction) {
  ManualClock clock;
  auto o = opts(2);
  o.clock = clock.fn();
  o.eviction.policy = EvictionPolicy::kTtl;
  o.eviction.ttl_seconds = 10;
  EmbeddingCache c(o);
  for (std::int64_t i = 0; i < 100; ++i) c.set(std::vector<std::int64_t>{i}, std::vector<float>{1, 1});
  clock.t->store(105);
  std::vector<float> out(2);
  for (std::int64_t i = 0; i < 100; i += 2) c.get(std::vector<std::int64_t>{i}, out);  // refresh evens
  clock.t->store(112);  // odds are 12 s old, evens 7 s
  EXPECT_EQ(c.evict_now(), 50u);
  for (std::int64_t i = 0; i < 100; ++i) EXPECT_EQ(c.contains(i), i % 2 == 0) << i;
  EXPECT_EQ(c.metrics().evictions, 50u);
  EXPECT_TRUE(c.validate());
}

TEST(EmbeddingCache, CountEvictionWithDecay) {
  auto o = opts(1, 2);
  o.eviction.policy = EvictionPolicy::kCount;
  o.eviction.count_decay = 0.5;
  o.eviction.count_threshold = 2;
  EmbeddingCache c(o);
  // id i written i+1 times -> count i+1
  for (std::int64_t i = 0; i < 10; ++i)
    for (std::int64_t k = 0; k <= i; ++k) c.set(std::vector<std::int64_t>{i}, std::vector<float>{1});
  // round 1: count -> floor((i+1)/2); evict when < 2: i+1 < 4 -> ids 0,1,2
  EXPECT_EQ(c.evict_now(), 3u);
  // round 2: counts floor(floor((i+1)/2)/2) < 2 -> (i+1)/2 < 4 -> i+1 < 8 -> ids 3..6
  EXPECT_EQ(c.evict_now(), 4u);
  EXPECT_EQ(c.size(), 3u);
  EXPECT_TRUE(c.validate());
}

TEST(EmbeddingCache, L2NormEvictionAndBlockReuse) {
  auto o = opts(4, 1);
  o.eviction.policy = EvictionPolicy::kL2Norm;
  o.eviction.l2_threshold = 1.0f;
  o.eviction.release_memory = false;
  EmbeddingCache c(o);
  for (std::int64_t i = 0; i < 200; ++i) {
    const float v = (i % 4 == 0) ? 0.1f : 1.0f;  // norm 0.2 or 2
    c.set(std::vector<std::int64_t>{i}, std::vector<float>{v, v, v, v});
  }
  const auto held = c.metrics().bytes_held;
  EXPECT_EQ(c.evict_now(), 50u);
  for (std::int64_t i = 200; i < 250; ++i) c.set(std::vector<std::int64_t>{i}, std::vector<float>{1, 1, 1, 1});
  EXPECT_EQ(c.metrics().bytes_held, held);  // freed blocks were reused, no new chunk
  EXPECT_TRUE(c.validate());
}

TEST(EmbeddingCache, RowBudgetTriggerOnDemand) {
  ManualClock clock;
  auto o = opts(2);
  o.clock = clock.fn();
  o.eviction.policy = EvictionPolicy::kTtl;
  o.eviction.ttl_seconds = 5;
  o.eviction.max_rows = 50;
  EmbeddingCache c(o);
  for (std::int64_t i = 0; i < 40; ++i) c.set(std::vector<std::int64_t>{i}, std::vector<float>{1, 1});
  EXPECT_FALSE(c.maybe_evict());
  clock.t->store(200);
  for (std::int64_t i = 40; i < 60; ++i) c.set(std::vector<std::int64_t>{i}, std::vector<float>{1, 1});
  EXPECT_TRUE(c.maybe_evict());  // 60 > 50: the round drops the 40 old rows
  EXPECT_EQ(c.size(), 20u);
  EXPECT_FALSE(c.maybe_evict());
}

TEST(EmbeddingCache, BackgroundEvictorHonoursMemoryBudget) {
  ManualClock clock;
  auto o = opts(64);
  o.clock = clock.fn();
  o.eviction.policy = EvictionPolicy::kTtl;
  o.eviction.ttl_seconds = 1;
  o.eviction.background = true;
  o.eviction.max_bytes = 1;  // always over budget: every trigger check fires
  EmbeddingCache c(o);
  std::vector<float> row(64, 1.0f);
  for (std::int64_t i = 0; i < 1000; ++i) c.set(std::vector<std::int64_t>{i}, row);
  clock.t->store(1000);
  c.request_eviction();
  c.wait_for_eviction();
  c.request_eviction();  // the first round may have started before the clock moved
  c.wait_for_eviction();
  EXPECT_EQ(c.size(), 0u);
  EXPECT_GE(c.metrics().eviction_rounds, 1u);
  EXPECT_TRUE(c.validate());
  // the emptied pools gave their chunks back
  EXPECT_LT(c.metrics().bytes_held, 1000u * 80u);
}

TEST(EmbeddingCache, ManyRowsAcrossShardsAndResizes) {
  EmbeddingCache c(opts(3, 7));
  std::vector<std::int64_t> ids;
  std::vector<float> rows;
  for (std::int64_t i = 0; i < 20000; ++i) {
    ids.push_back(i * 7919);
    auto r = row_for(i, 3);
    rows.insert(rows.end(), r.begin(), r.end());
  }
  c.set(ids, rows);
  EXPECT_EQ(c.size(), 20000u);
  std::vector<float> out(rows.size());
  EXPECT_EQ(c.get(ids, out), 20000u);
  EXPECT_EQ(out, rows);
  EXPECT_TRUE(c.validate());
  std::vector<std::int64_t> half(ids.begin(), ids.begin() + 10000);
  EXPECT_EQ(c.erase(half), 10000u);
  EXPECT_TRUE(c.validate());
  std::size_t visited = 0;
  c.for_each_row([&](const RowHeader& h, std::span<const float> v) {
    ++visited;
    EXPECT_EQ(v.size(), 3u);
    EXPECT_EQ(h.key % 7919, 0);
  });
  EXPECT_EQ(visited, 10000u);
}

}  // namespace

namespace {

TEST(EmbeddingCache, ExpectedRowsPresizesTheTables) {
  auto o = opts(2, 2);
  o.expected_rows = 10000;
  EmbeddingCache c(o);
  const auto before = c.metrics().bytes_held;
  EXPECT_GE(before, 10000u * 16u);  // slots for 10,000 rows at load <= 3/4
  std::vector<std::int64_t> ids(10000);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(i);
  c.set(ids, std::vector<float>(20000, 1.0f));
  EXPECT_EQ(c.size(), 10000u);
  EXPECT_TRUE(c.validate());
}

}  // namespace

namespace {

// The table's growth policy, read back from bytes_held (one shard, one pool chunk, so
// bytes_held = chunk + 16 B per slot): load <= 3/4; a table under 1 MiB (65,536 slots)
// quadruples when full, a larger one doubles.
TEST(EmbeddingCache, TableGrowthKeepsLoadUnderThreeQuarters) {
  auto o = opts(1, 1);
  o.pool_chunk_bytes = std::size_t{8} << 20;  // 24-byte rows: all 150,000 in one chunk
  EmbeddingCache c(o);
  auto slots = [&] { return (c.metrics().bytes_held - o.pool_chunk_bytes) / 16; };
  std::size_t expected = 16;
  for (std::int64_t i = 0; i < 150000; ++i) {
    const std::size_t rows = static_cast<std::size_t>(i) + 1;
    if (rows * 4 > expected * 3) expected *= expected < 65536 ? 4 : 2;
    const float v = static_cast<float>(i);
    c.set(std::span<const std::int64_t>(&i, 1), std::span<const float>(&v, 1));
    ASSERT_EQ(slots(), expected) << "after " << rows << " rows";
  }
  EXPECT_EQ(expected, 262144u);  // 16, 64, ..., 65,536, then 131,072 and 262,144
  EXPECT_TRUE(c.validate());
}

TEST(EmbeddingCache, DefaultOptionsWithHugePageChunks) {
  kvmem::EmbeddingCache::Options o;
  o.dim = 32;
  EmbeddingCache c(o);
  std::vector<std::int64_t> ids(5000);
  std::vector<float> rows(ids.size() * 32);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<std::int64_t>(i) * 13;
    for (std::size_t j = 0; j < 32; ++j) rows[i * 32 + j] = static_cast<float>(i + j);
  }
  c.set(ids, rows);
  std::vector<float> out(rows.size());
  EXPECT_EQ(c.get(ids, out), ids.size());
  EXPECT_EQ(out, rows);
  EXPECT_TRUE(c.validate());
}

}  // namespace

namespace {

// A shard's table past 2 MiB (131,072 slots) is mapped from the OS rather than the heap, with
// and without huge pages: rows stay findable through the growth into it and its release.
TEST(EmbeddingCache, TablesGrowIntoMappedMemory) {
  for (const bool huge : {false, true}) {
    auto o = opts(1, 1);
    o.huge_pages = huge;
    EmbeddingCache c(o);
    const std::size_t n = 150000;  // one shard: 262,144 slots (4 MiB) at load <= 3/4
    std::vector<std::int64_t> ids(n);
    std::vector<float> rows(n);
    for (std::size_t i = 0; i < n; ++i) {
      ids[i] = static_cast<std::int64_t>(i * 2654435761u);
      rows[i] = static_cast<float>(i);
    }
    c.set(ids, rows);
    EXPECT_GE(c.metrics().bytes_held, (std::size_t{4} << 20));
    EXPECT_TRUE(c.validate());
    std::vector<float> out(n);
    EXPECT_EQ(c.get(ids, out), n);
    EXPECT_EQ(out, rows);
    std::vector<std::int64_t> half(ids.begin(), ids.begin() + n / 2);
    EXPECT_EQ(c.erase(half), n / 2);
    EXPECT_TRUE(c.validate());
    EXPECT_EQ(c.size(), n - n / 2);
  }
}

}  // namespace
