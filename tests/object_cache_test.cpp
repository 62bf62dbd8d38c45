// Unit tests for kvmem::ObjectCache: the functional contract, handles, eviction with min/max,
// memory reporting. Deterministic: background wash off, eviction driven by wash_now()/put.
#include "kvmem/object_cache.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace {

using kvmem::CacheId;
using kvmem::ObjectCache;
using kvmem::PutStatus;

ObjectCache::Options small_options(std::size_t limit = 1 << 20, std::size_t block = 16 << 10) {
  ObjectCache::Options o;
  o.memory_limit = limit;
  o.block_size = block;
  o.background_wash = false;
  return o;
}

std::string value_of(int i, std::size_t len) {
  std::string v(len, '\0');
  for (std::size_t k = 0; k < len; ++k) v[k] = static_cast<char>('a' + (i * 31 + static_cast<int>(k)) % 26);
  return v;
}

TEST(ObjectCache, RejectsBadOptionsAndArguments) {
  auto o = small_options();
  o.block_size = 5000;
  EXPECT_THROW(ObjectCache{o}, std::invalid_argument);
  o = small_options();
  o.memory_limit = o.block_size;
  EXPECT_THROW(ObjectCache{o}, std::invalid_argument);
  o = small_options();
  o.low_watermark = 0.99;
  EXPECT_THROW(ObjectCache{o}, std::invalid_argument);
  o = small_options();
  o.score_decay = 1.0;
  EXPECT_THROW(ObjectCache{o}, std::invalid_argument);

  ObjectCache cache(small_options());
  EXPECT_THROW(cache.register_cache("", 1), std::invalid_argument);
  EXPECT_THROW(cache.register_cache("x", 0), std::invalid_argument);
  EXPECT_THROW(cache.register_cache("x", 1, 0, 1024), std::invalid_argument);  // max < block
  EXPECT_THROW(cache.register_cache("x", 1, 1 << 20), std::invalid_argument);  // min > limit/2
  const CacheId a = cache.register_cache("a", 1);
  EXPECT_THROW(cache.register_cache("a", 1), std::invalid_argument);  // duplicate name
  EXPECT_THROW((void)cache.get(a + 1, "k"), std::invalid_argument);
  EXPECT_THROW(cache.put(a + 1, "k", "v"), std::invalid_argument);
  EXPECT_THROW(cache.erase(7, "k"), std::invalid_argument);
  EXPECT_THROW(cache.put(a, "k", std::string(600 << 10, 'x')), std::invalid_argument);
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, PutGetEraseRoundTrip) {
  ObjectCache cache(small_options());
  const CacheId a = cache.register_cache("row", 1);
  const CacheId b = cache.register_cache("block", 10);
  EXPECT_FALSE(cache.get(a, "k1").has_value());
  EXPECT_EQ(cache.put(a, "k1", "value-one"), PutStatus::kStored);
  EXPECT_EQ(cache.put(b, "k1", "other cache"), PutStatus::kStored);
  EXPECT_EQ(cache.put(a, "", ""), PutStatus::kStored);  // empty key and value are byte strings too
  ASSERT_TRUE(cache.validate());
  auto h = cache.get(a, "k1");
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->value(), "value-one");
  EXPECT_EQ(cache.get(b, "k1")->value(), "other cache");
  EXPECT_EQ(cache.get(a, "")->value(), "");
  EXPECT_EQ(cache.entry_count(), 3u);
  EXPECT_TRUE(cache.erase(a, "k1"));
  EXPECT_FALSE(cache.erase(a, "k1"));
  EXPECT_FALSE(cache.get(a, "k1").has_value());
  EXPECT_EQ(cache.get(b, "k1")->value(), "other cache");
  EXPECT_EQ(h->value(), "value-one");  // the handle outlives the erase
  h.reset();
  EXPECT_TRUE(cache.validate());
  const auto report = cache.memory_report();
  ASSERT_EQ(report.caches.size(), 2u);
  EXPECT_EQ(report.caches[0].name, "row");
  EXPECT_EQ(report.caches[0].entries, 1u);
  EXPECT_EQ(report.caches[1].entries, 1u);
  EXPECT_GE(report.caches[1].hits, 0u);
}

TEST(ObjectCache, HeldHandlesKeepOverwrittenValues) {
  ObjectCache cache(small_options());
  const CacheId a = cache.register_cache("a", 1);
  std::vector<kvmem::ValueHandle> held;
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(cache.put(a, "key", value_of(i, 100 + static_cast<std::size_t>(i))), PutStatus::kStored);
    auto h = cache.get(a, "key");
    ASSERT_TRUE(h.has_value());
    held.push_back(std::move(*h));
    ASSERT_TRUE(cache.validate());
  }
  for (int i = 0; i < 10; ++i) EXPECT_EQ(held[static_cast<std::size_t>(i)].value(), value_of(i, 100 + static_cast<std::size_t>(i)));
  EXPECT_EQ(cache.get(a, "key")->value(), value_of(9, 109));
  EXPECT_EQ(cache.entry_count(), 1u);
}

TEST(ObjectCache, HandleSurvivesEvictionAndBlockIsFreedOnRelease) {
  ObjectCache cache(small_options(1 << 20, 16 << 10));
  const CacheId a = cache.register_cache("a", 1);
  ASSERT_EQ(cache.put(a, "pinned", value_of(1, 1000)), PutStatus::kStored);
  auto h = cache.get(a, "pinned");
  ASSERT_TRUE(h.has_value());
  // Fill more blocks so the first one is sealed, then evict everything washable.
  for (int i = 0; i < 100; ++i) ASSERT_EQ(cache.put(a, "k" + std::to_string(i), value_of(i, 1000)), PutStatus::kStored);
  const std::size_t before = cache.memory_report().value_blocks.held;
  EXPECT_GT(cache.evict_bytes(std::size_t{1} << 30), 0u);
  EXPECT_FALSE(cache.get(a, "pinned").has_value());
  EXPECT_EQ(h->value(), value_of(1, 1000));  // still readable, block pinned
  ASSERT_TRUE(cache.validate());
  const std::size_t pinned = cache.memory_report().value_blocks.held;
  EXPECT_LT(pinned, before);
  h.reset();  // last handle: the block goes back to the OS
  EXPECT_EQ(cache.memory_report().value_blocks.held, pinned - (16u << 10));
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, LargeValueGetsItsOwnBlock) {
  ObjectCache cache(small_options(4 << 20, 64 << 10));
  const CacheId a = cache.register_cache("a", 1);
  const std::string big = value_of(3, 300 << 10);
  ASSERT_EQ(cache.put(a, "big", big), PutStatus::kStored);
  ASSERT_EQ(cache.put(a, "small", "s"), PutStatus::kStored);
  EXPECT_EQ(cache.get(a, "big")->value(), big);
  EXPECT_EQ(cache.get(a, "small")->value(), "s");
  EXPECT_TRUE(cache.validate());
  EXPECT_TRUE(cache.erase(a, "big"));  // its block is emptied and returned at once
  EXPECT_EQ(cache.memory_report().value_blocks.held, 64u << 10);
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, ColdStartMetadataIsSmall) {
  ObjectCache::Options o;  // defaults: 1 GiB, 2 MiB blocks
  o.background_wash = false;
  ObjectCache cache(o);
  for (int i = 0; i < 16; ++i) cache.register_cache("cache" + std::to_string(i), 1 + i % 3);
  const auto r = cache.memory_report();
  EXPECT_EQ(r.value_blocks.held, 0u);
  EXPECT_EQ(r.map_buckets.held, 0u);
  EXPECT_LE(r.total().held, 64u << 10);
  EXPECT_EQ(cache.held_bytes(), r.total().held - sizeof(ObjectCache));
}

TEST(ObjectCache, EraseEverythingReturnsTheBlocks) {
  ObjectCache cache(small_options(4 << 20, 16 << 10));
  const CacheId a = cache.register_cache("a", 1);
  const CacheId b = cache.register_cache("b", 1);
  for (int i = 0; i < 2000; ++i) {
    ASSERT_EQ(cache.put(i % 2 ? a : b, "k" + std::to_string(i), value_of(i, 300)), PutStatus::kStored);
  }
  EXPECT_GT(cache.memory_report().value_blocks.held, 40u * (16 << 10));
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(cache.erase(i % 2 ? a : b, "k" + std::to_string(i)));
  ASSERT_TRUE(cache.validate());
  const auto r = cache.memory_report();
  // Idle: at most the one active block per cache remains, plus the one spare mapping.
  EXPECT_LE(r.value_blocks.held, 3u * (16 << 10));
  EXPECT_EQ(r.value_blocks.used, 0u);
  EXPECT_EQ(r.map_nodes.used, 0u);
  EXPECT_LE(r.map_buckets.held, 64u * 16 * 4);  // shrunk back
}

TEST(ObjectCache, SyncWashKeepsPutsSucceedingAtTheLimit) {
  ObjectCache cache(small_options(1 << 20, 16 << 10));
  const CacheId a = cache.register_cache("a", 1);
  for (int i = 0; i < 20000; ++i) {
    ASSERT_EQ(cache.put(a, "k" + std::to_string(i), value_of(i, 200)), PutStatus::kStored) << i;
    ASSERT_TRUE(cache.get(a, "k" + std::to_string(i)).has_value());
    // Value blocks are charged against the limit before they are mapped; metadata is counted in
    // that charge but may overshoot by its latest growth step (a node segment, a bucket doubling).
    ASSERT_LE(cache.memory_report().value_blocks.held, std::size_t{1} << 20);
    ASSERT_LE(cache.held_bytes(), (std::size_t{1} << 20) * 11 / 10);
    if (i % 1000 == 0) {
      ASSERT_TRUE(cache.validate());
    }
  }
  EXPECT_GT(cache.stats().sync_washes, 0u);
  EXPECT_GT(cache.stats().blocks_washed, 0u);
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, FailsClearlyOnlyWhenNothingCanBeFreed) {
  ObjectCache cache(small_options(256 << 10, 16 << 10));
  const CacheId a = cache.register_cache("a", 1);
  std::vector<kvmem::ValueHandle> pins;
  PutStatus last = PutStatus::kStored;
  for (int i = 0; i < 1000 && last == PutStatus::kStored; ++i) {
    last = cache.put(a, "k" + std::to_string(i), value_of(i, 4000));
    if (last == PutStatus::kStored) {
      auto h = cache.get(a, "k" + std::to_string(i));
      if (h) pins.push_back(std::move(*h));  // pin every block
    }
  }
  EXPECT_EQ(last, PutStatus::kNoMemory);
  EXPECT_NE(std::string(kvmem::to_string(last)).find("no memory"), std::string::npos);
  EXPECT_GE(cache.stats().failed_puts, 1u);
  for (const auto& h : pins) EXPECT_EQ(h.size(), 4000u);
  pins.clear();  // released: memory comes back and puts succeed again
  EXPECT_EQ(cache.put(a, "after", value_of(0, 4000)), PutStatus::kStored);
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, OverCacheMaxWhenItsOwnBlocksArePinned) {
  ObjectCache cache(small_options(1 << 20, 16 << 10));
  const CacheId a = cache.register_cache("a", 1, 0, 32 << 10);
  std::vector<kvmem::ValueHandle> pins;
  PutStatus last = PutStatus::kStored;
  for (int i = 0; i < 100 && last == PutStatus::kStored; ++i) {
    last = cache.put(a, "k" + std::to_string(i), value_of(i, 4000));
    if (auto h = cache.get(a, "k" + std::to_string(i))) pins.push_back(std::move(*h));
  }
  EXPECT_EQ(last, PutStatus::kOverCacheMax);
  EXPECT_LE(cache.memory_report().caches[a].values.held, std::size_t{48} << 10);  // max + pinned retiree
  EXPECT_TRUE(cache.validate());
  pins.clear();
  EXPECT_EQ(cache.put(a, "after", value_of(1, 4000)), PutStatus::kStored);
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, MaxBytesIsRespected) {
  ObjectCache cache(small_options(2 << 20, 16 << 10));
  const CacheId capped = cache.register_cache("capped", 1, 0, 64 << 10);
  const CacheId free_cache = cache.register_cache("free", 1);
  for (int i = 0; i < 3000; ++i) {
    ASSERT_EQ(cache.put(capped, "c" + std::to_string(i), value_of(i, 500)), PutStatus::kStored);
    ASSERT_EQ(cache.put(free_cache, "f" + std::to_string(i % 500), value_of(i, 100)), PutStatus::kStored);
    ASSERT_LE(cache.memory_report().caches[capped].values.held, std::size_t{64} << 10);
  }
  EXPECT_TRUE(cache.validate());
  EXPECT_GT(cache.memory_report().caches[capped].evicted_blocks, 0u);
}

TEST(ObjectCache, MinBytesIsRespected) {
  ObjectCache cache(small_options(1 << 20, 16 << 10));
  const CacheId floor = cache.register_cache("floor", 0.1, 256 << 10);  // low priority, protected
  const CacheId hog = cache.register_cache("hog", 10);
  for (int i = 0; i < 400; ++i) ASSERT_EQ(cache.put(floor, "f" + std::to_string(i), value_of(i, 1000)), PutStatus::kStored);
  const std::size_t floor_held = cache.memory_report().caches[floor].values.held;
  ASSERT_GE(floor_held, std::size_t{256} << 10);
  for (int i = 0; i < 20000; ++i) {
    ASSERT_EQ(cache.put(hog, "h" + std::to_string(i), value_of(i, 1000)), PutStatus::kStored);
    (void)cache.get(hog, "h" + std::to_string(i));
    if (i % 500 == 0) cache.wash_now();
  }
  EXPECT_GE(cache.memory_report().caches[floor].values.held, std::size_t{256} << 10);
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, WashPrefersColdBlocksAndHighPriority) {
  ObjectCache cache(small_options(1 << 20, 16 << 10));
  const CacheId hot = cache.register_cache("hot", 1);
  const CacheId cold = cache.register_cache("cold", 1);
  for (int i = 0; i < 200; ++i) ASSERT_EQ(cache.put(hot, "h" + std::to_string(i), value_of(i, 1000)), PutStatus::kStored);
  for (int r = 0; r < 5; ++r) {
    for (int i = 0; i < 200; ++i) ASSERT_TRUE(cache.get(hot, "h" + std::to_string(i)).has_value());
  }
  cache.wash_now();  // scores: hot blocks have hits, cold ones will not
  for (int i = 0; i < 1200; ++i) {
    ASSERT_EQ(cache.put(cold, "c" + std::to_string(i), value_of(i, 1000)), PutStatus::kStored);
  }
  // The limit forced evictions; they fell on cold blocks, not on the hot cache's full blocks.
  int hot_left = 0;
  for (int i = 0; i < 200; ++i) hot_left += cache.get(hot, "h" + std::to_string(i)).has_value() ? 1 : 0;
  EXPECT_GE(hot_left, 190);
  EXPECT_GT(cache.memory_report().caches[cold].evicted_blocks, 0u);
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, RescueMovesHotEntriesOutOfVictimBlocks) {
  for (bool rescue : {true, false}) {
    auto o = small_options(1 << 20, 16 << 10);
    o.rescue_hot = rescue;
    ObjectCache cache(o);
    const CacheId a = cache.register_cache("a", 1);
    // Block 1 gets k0..k15 (16 x 1 KiB entries), then k16 opens block 2 and seals block 1.
    for (int i = 0; i < 17; ++i) ASSERT_EQ(cache.put(a, "k" + std::to_string(i), value_of(i, 1000)), PutStatus::kStored);
    for (int r = 0; r < 3; ++r) {
      for (int i = 0; i < 4; ++i) ASSERT_TRUE(cache.get(a, "k" + std::to_string(i)).has_value());
    }
    auto pinned = cache.get(a, "k5");  // a handle on a cold entry of the victim
    EXPECT_EQ(cache.evict_bytes(1), std::size_t{16} << 10);  // the one full block
    ASSERT_TRUE(cache.validate());
    for (int i = 0; i < 4; ++i) {
      auto h = cache.get(a, "k" + std::to_string(i));
      EXPECT_EQ(h.has_value(), rescue) << i;
      if (h) {
        EXPECT_EQ(h->value(), value_of(i, 1000));
      }
    }
    for (int i = 4; i < 16; ++i) EXPECT_FALSE(cache.get(a, "k" + std::to_string(i)).has_value()) << i;
    EXPECT_EQ(pinned->value(), value_of(5, 1000));
    EXPECT_EQ(cache.stats().entries_rescued, rescue ? 4u : 0u);
    pinned.reset();
    EXPECT_TRUE(cache.validate());
  }
}

TEST(ObjectCache, WashNowRespectsWatermarks) {
  auto o = small_options(1 << 20, 16 << 10);
  o.high_watermark = 0.5;
  o.low_watermark = 0.25;
  ObjectCache cache(o);
  const CacheId a = cache.register_cache("a", 1);
  EXPECT_EQ(cache.wash_now(), 0u);  // empty wash is cheap and safe
  for (int i = 0; i < 600; ++i) ASSERT_EQ(cache.put(a, "k" + std::to_string(i), value_of(i, 1000)), PutStatus::kStored);
  ASSERT_GT(cache.held_bytes(), std::size_t{1} << 19);
  EXPECT_GT(cache.wash_now(), 0u);
  EXPECT_LE(cache.held_bytes(), (std::size_t{1} << 18) + (16 << 10));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(cache.wash_now(), 0u);
  EXPECT_TRUE(cache.validate());
  EXPECT_GE(cache.stats().wash_rounds, 100u);
}

TEST(ObjectCache, BackgroundWashKeepsHeldBelowTheLimit) {
  auto o = small_options(1 << 20, 16 << 10);
  o.background_wash = true;
  ObjectCache cache(o);
  const CacheId a = cache.register_cache("a", 1);
  for (int i = 0; i < 5000; ++i) {
    ASSERT_EQ(cache.put(a, "k" + std::to_string(i), value_of(i, 700)), PutStatus::kStored);
    ASSERT_LE(cache.memory_report().value_blocks.held, std::size_t{1} << 20);
    ASSERT_LE(cache.held_bytes(), (std::size_t{1} << 20) * 11 / 10);
  }
  cache.wash_now();
  EXPECT_TRUE(cache.validate());
}

TEST(ObjectCache, SmallMemoryModeUsesSmallBlocks) {
  const auto o = ObjectCache::Options::small_memory(8 << 20);
  EXPECT_EQ(o.block_size, 256u << 10);
  ObjectCache cache(o);
  const CacheId a = cache.register_cache("a", 1);
  ASSERT_EQ(cache.put(a, "k", "v"), PutStatus::kStored);
  EXPECT_EQ(cache.memory_report().value_blocks.held, 256u << 10);
}

}  // namespace
