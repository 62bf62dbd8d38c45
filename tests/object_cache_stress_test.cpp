// Concurrency stress for kvmem::ObjectCache: writers, readers, erasers and washers at once on
// a memory limit small enough that blocks are evicted all the time. Every value carries its
// key, a version and a checksum, verified on every read and again on every held handle before
// it is dropped. Run under TSan and ASan by the presets (label "concurrent"); bounded by
// operation counts, not by time.
#include "kvmem/object_cache.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using kvmem::CacheId;
using kvmem::ObjectCache;
using kvmem::PutStatus;

std::uint64_t checksum(const char* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
  return h;
}

// [key id 8][version 8][payload ...][checksum of everything before 8]
std::string make_value(std::uint64_t key, std::uint64_t version, std::size_t payload, std::mt19937_64& rng) {
  std::string v(16 + payload + 8, '\0');
  std::memcpy(v.data(), &key, 8);
  std::memcpy(v.data() + 8, &version, 8);
  for (std::size_t i = 0; i < payload; ++i) v[16 + i] = static_cast<char>(rng());
  const std::uint64_t sum = checksum(v.data(), 16 + payload);
  std::memcpy(v.data() + 16 + payload, &sum, 8);
  return v;
}

// Returns true when the value is intact and belongs to `key`.
bool check_value(std::string_view v, std::uint64_t key) {
  if (v.size() < 24) return false;
  std::uint64_t k, sum;
  std::memcpy(&k, v.data(), 8);
  std::memcpy(&sum, v.data() + v.size() - 8, 8);
  return k == key && sum == checksum(v.data(), v.size() - 8);
}

std::string key_of(std::uint64_t k) { return "key-" + std::to_string(k); }

TEST(ObjectCacheStress, ReadersWritersErasersAndWash) {
  ObjectCache::Options o;
  o.memory_limit = 2 << 20;
  o.block_size = 32 << 10;
  o.background_wash = true;
  o.high_watermark = 0.8;
  o.low_watermark = 0.6;
  ObjectCache cache(o);
  const CacheId caches[3] = {cache.register_cache("row", 1), cache.register_cache("block", 4, 256 << 10),
                             cache.register_cache("capped", 1, 0, 256 << 10)};
  constexpr std::uint64_t kKeys = 2000;
  constexpr int kWriters = 2, kReaders = 2, kErasers = 1, kWashers = 1;
  constexpr int kOpsPerThread = 12000;
  std::atomic<std::uint64_t> reads_checked{0}, held_checked{0}, failures{0};
  std::atomic<int> writers_left{kWriters};
  std::barrier start(kWriters + kReaders + kErasers + kWashers);
  std::vector<std::thread> threads;

  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(100 + static_cast<std::uint64_t>(w));
      start.arrive_and_wait();
      for (int i = 0; i < kOpsPerThread; ++i) {
        const std::uint64_t k = rng() % kKeys;
        const std::size_t payload = rng() % 16 == 0 ? (40 << 10) : rng() % 600;  // some larger than a block
        const PutStatus st = cache.put(caches[k % 3], key_of(k), make_value(k, static_cast<std::uint64_t>(i), payload, rng));
        if (st != PutStatus::kStored) failures.fetch_add(1);
      }
      writers_left.fetch_sub(1, std::memory_order_release);
    });
  }
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937_64 rng(200 + static_cast<std::uint64_t>(r));
      std::vector<std::pair<kvmem::ValueHandle, std::uint64_t>> held;
      std::vector<std::string> copies;
      // Pinned bytes must be exactly what they were, whatever happened to the key meanwhile.
      auto check_held = [&] {
        for (std::size_t j = 0; j < held.size(); ++j) {
          ASSERT_TRUE(check_value(held[j].first.value(), held[j].second));
          ASSERT_EQ(held[j].first.value(), copies[j]);
          held_checked.fetch_add(1, std::memory_order_relaxed);
        }
      };
      start.arrive_and_wait();
      // Read for as long as any writer writes (and at least kOpsPerThread gets): on 2 cores the
      // readers could otherwise finish all their gets, every one a miss, before a put lands.
      for (int i = 0; i < kOpsPerThread || writers_left.load(std::memory_order_acquire) > 0; ++i) {
        const std::uint64_t k = rng() % kKeys;
        auto h = cache.get(caches[k % 3], key_of(k));
        if (!h) continue;
        ASSERT_TRUE(check_value(h->value(), k)) << "corrupt value for key " << k;
        reads_checked.fetch_add(1, std::memory_order_relaxed);
        if (rng() % 8 == 0) {
          copies.emplace_back(h->value());
          held.emplace_back(std::move(*h), k);
        }
        if (held.size() > 32 || (i % 64 == 0 && !held.empty())) {
          check_held();
          held.clear();
          copies.clear();
        }
      }
      check_held();
    });
  }
  for (int e = 0; e < kErasers; ++e) {
    threads.emplace_back([&, e] {
      std::mt19937_64 rng(300 + static_cast<std::uint64_t>(e));
      start.arrive_and_wait();
      for (int i = 0; i < kOpsPerThread / 2; ++i) {
        const std::uint64_t k = rng() % kKeys;
        cache.erase(caches[k % 3], key_of(k));
      }
    });
  }
  for (int x = 0; x < kWashers; ++x) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < 400; ++i) {
        cache.wash_now();
        if (i % 10 == 0) cache.evict_bytes(64 << 10);
        (void)cache.memory_report();
        std::this_thread::yield();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(reads_checked.load(), 0u);
  EXPECT_GT(held_checked.load(), 0u);
  // Puts fail only when nothing is washable; with handles dropped regularly that is rare.
  EXPECT_LT(failures.load(), static_cast<std::uint64_t>(kWriters * kOpsPerThread / 10));
  EXPECT_TRUE(cache.validate());
  const auto r = cache.memory_report();
  EXPECT_LE(r.caches[2].values.held, std::size_t{256} << 10);
  EXPECT_GT(cache.stats().blocks_washed, 0u);
}

// The cache_handle_pin scenario: threads take and drop handles while another thread keeps
// evicting everything; no use-after-free (ASan), no race (TSan), values intact.
TEST(ObjectCacheStress, HandlesSurviveAggressiveEviction) {
  ObjectCache::Options o;
  o.memory_limit = 1 << 20;
  o.block_size = 16 << 10;
  o.background_wash = false;
  ObjectCache cache(o);
  const CacheId id = cache.register_cache("pin", 1);
  constexpr int kThreads = 3;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 7);
      std::vector<std::pair<kvmem::ValueHandle, std::uint64_t>> held;
      for (int i = 0; i < 6000; ++i) {
        const std::uint64_t k = rng() % 500;
        cache.put(id, key_of(k), make_value(k, static_cast<std::uint64_t>(i), rng() % 200, rng));
        if (auto h = cache.get(id, key_of(k))) {
          ASSERT_TRUE(check_value(h->value(), k));
          held.emplace_back(std::move(*h), k);
        }
        if (held.size() > static_cast<std::size_t>(16 * (t + 1))) {
          kvmem::ValueHandle moved = std::move(held.front().first);  // move, then check
          ASSERT_TRUE(check_value(moved.value(), held.front().second));
          held.erase(held.begin());
        }
      }
      for (auto& [h, k] : held) ASSERT_TRUE(check_value(h.value(), k));
    });
  }
  std::thread evictor([&] {
    while (!stop.load(std::memory_order_acquire)) {
      cache.evict_bytes(std::size_t{1} << 30);
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) t.join();
  stop.store(true, std::memory_order_release);
  evictor.join();
  EXPECT_TRUE(cache.validate());
}

// Few hot keys (so every thread works on the same shards and nodes) read by more threads than
// there are reader stripes, while a writer overwrites them, an eraser removes them and a washer
// retires their blocks: exercises the striped shard-lock handshake (readers vs. the exclusive
// lock) and pins taken on blocks that are being retired. Each reader checks every value's
// checksum and that a key's version never goes backwards (one writer per key, and a get sees a
// linked entry only), then re-checks the handles it held.
TEST(ObjectCacheStress, HotKeysReadersRaceOverwriteEraseAndWash) {
  ObjectCache::Options o;
  o.memory_limit = 512 << 10;
  o.block_size = 8 << 10;
  o.background_wash = false;
  ObjectCache cache(o);
  const CacheId id = cache.register_cache("hot", 1);
  constexpr std::uint64_t kKeys = 8;
  constexpr int kReaders = 6;  // more than the 4 stripes: some readers share a stripe
  constexpr int kWrites = 8000;
  std::atomic<bool> writer_done{false};
  std::atomic<std::uint64_t> hits{0};
  {
    std::mt19937_64 rng(10);
    for (std::uint64_t k = 0; k < kKeys; ++k) ASSERT_EQ(cache.put(id, key_of(k), make_value(k, 0, 100, rng)), PutStatus::kStored);
  }
  std::barrier start(kReaders + 3);
  std::vector<std::thread> threads;
  threads.emplace_back([&] {  // the only writer: versions of each key increase
    std::mt19937_64 rng(11);
    start.arrive_and_wait();
    for (int i = 1; i <= kWrites; ++i) {
      const std::uint64_t k = static_cast<std::uint64_t>(i) % kKeys;
      (void)cache.put(id, key_of(k), make_value(k, static_cast<std::uint64_t>(i), rng() % 300, rng));
    }
    writer_done.store(true, std::memory_order_release);
  });
  threads.emplace_back([&] {
    std::mt19937_64 rng(12);
    start.arrive_and_wait();
    for (int i = 0; i < kWrites / 4; ++i) cache.erase(id, key_of(rng() % kKeys));
  });
  threads.emplace_back([&] {
    start.arrive_and_wait();
    for (int i = 0; i < 300; ++i) {
      if (i % 3 == 0) {
        cache.evict_bytes(std::size_t{1} << 30);
      } else {
        cache.wash_now();
      }
      std::this_thread::yield();
    }
  });
  for (int r = 0; r < kReaders; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937_64 rng(400 + static_cast<std::uint64_t>(r));
      std::vector<std::uint64_t> last(kKeys, 0);
      std::vector<std::pair<kvmem::ValueHandle, std::string>> held;
      start.arrive_and_wait();
      // Read for as long as the writer writes (and at least 2,000 gets).
      for (int i = 0; i < 2000 || !writer_done.load(std::memory_order_acquire); ++i) {
        const std::uint64_t k = rng() % kKeys;
        auto h = cache.get(id, key_of(k));
        if (!h) continue;
        ASSERT_TRUE(check_value(h->value(), k)) << "corrupt value for key " << k;
        std::uint64_t version;
        std::memcpy(&version, h->data() + 8, 8);
        ASSERT_GE(version, last[k]) << "key " << k << " went back from version " << last[k];
        last[k] = version;
        hits.fetch_add(1, std::memory_order_relaxed);
        if (rng() % 4 == 0) {
          std::string copy(h->value());
          held.emplace_back(std::move(*h), std::move(copy));
        }
        if (held.size() >= 8) {
          for (auto& [hh, copy] : held) ASSERT_EQ(hh.value(), copy);
          held.clear();
        }
      }
      for (auto& [hh, copy] : held) ASSERT_EQ(hh.value(), copy);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_GT(hits.load(), 0u);
  EXPECT_TRUE(cache.validate());
}

}  // namespace
