// Randomized model test: thousands of random operations on an ObjectCache checked against a
// std::map reference, validate() after every step. With a large limit the cache must match the
// model exactly; with a small one it may have evicted a key, but whatever it returns must be the
// latest value put, and every held handle must keep the bytes it was created with.
#include "kvmem/object_cache.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using kvmem::CacheId;
using kvmem::ObjectCache;
using kvmem::PutStatus;

void run_model(std::size_t limit, std::size_t block, bool exact, std::uint64_t seed, int ops) {
  ObjectCache::Options o;
  o.memory_limit = limit;
  o.block_size = block;
  o.background_wash = false;
  o.high_watermark = 0.8;
  o.low_watermark = 0.6;
  ObjectCache cache(o);
  std::mt19937_64 rng(seed);
  std::vector<CacheId> ids;
  ids.push_back(cache.register_cache("a", 1));
  ids.push_back(cache.register_cache("b", 5, 0, limit / 2));
  ids.push_back(cache.register_cache("c", 0.5, block * 2));
  std::map<std::pair<CacheId, std::string>, std::string> model;
  std::vector<std::pair<kvmem::ValueHandle, std::string>> held;

  auto random_value = [&] {
    const std::size_t len = rng() % 8 == 0 ? rng() % (block * 2) : rng() % 300;  // some larger than a block
    std::string v(len, '\0');
    for (auto& ch : v) ch = static_cast<char>(rng());
    return v;
  };
  for (int op = 0; op < ops; ++op) {
    const CacheId id = ids[rng() % ids.size()];
    const std::string key = "k" + std::to_string(rng() % 300);
    const int kind = static_cast<int>(rng() % 100);
    if (kind < 40) {
      const std::string v = random_value();
      const PutStatus st = cache.put(id, key, v);
      if (exact) {
        ASSERT_EQ(st, PutStatus::kStored);
      }
      if (st == PutStatus::kStored) {
        model[{id, key}] = v;
      } else {
        model.erase({id, key});  // a failed put may leave the old value or nothing; forget it
        cache.erase(id, key);
      }
    } else if (kind < 80) {
      auto h = cache.get(id, key);
      auto it = model.find({id, key});
      if (exact) {
        ASSERT_EQ(h.has_value(), it != model.end()) << op;
      }
      if (h) {
        ASSERT_NE(it, model.end()) << "cache returned a key the model does not have, op " << op;
        ASSERT_EQ(h->value(), it->second) << op;
        if (rng() % 4 == 0 && held.size() < 40) held.emplace_back(std::move(*h), it->second);
      }
    } else if (kind < 92) {
      const bool had = model.erase({id, key}) > 0;
      const bool erased = cache.erase(id, key);
      if (exact) {
        ASSERT_EQ(erased, had) << op;
      } else if (erased) {
        ASSERT_TRUE(had) << op;
      }
    } else if (kind < 96) {
      if (!held.empty()) {
        const std::size_t i = rng() % held.size();
        ASSERT_EQ(held[i].first.value(), held[i].second);
        held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      }
    } else if (kind < 98) {
      cache.wash_now();
    } else if (!exact) {
      cache.evict_bytes(block * (1 + rng() % 4));
    }
    ASSERT_TRUE(cache.validate()) << "after op " << op;
    for (const auto& [h, v] : held) ASSERT_EQ(h.value(), v);
    if (exact) {
      ASSERT_EQ(cache.entry_count(), model.size());
    }
  }
  // Per-cache accounting matches the model when nothing was evicted.
  if (exact) {
    const auto r = cache.memory_report();
    std::size_t entries = 0;
    for (const auto& c : r.caches) entries += c.entries;
    EXPECT_EQ(entries, model.size());
  }
  held.clear();
  ASSERT_TRUE(cache.validate());
}

TEST(ObjectCacheModel, ExactWithoutEviction) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) run_model(64 << 20, 16 << 10, true, seed, 4000);
}

TEST(ObjectCacheModel, NeverStaleUnderEviction) {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) run_model(512 << 10, 8 << 10, false, seed, 5000);
}

TEST(ObjectCacheModel, TinyBlocksHeavyEviction) {
  run_model(64 << 10, 4 << 10, false, 99, 5000);
}

}  // namespace
