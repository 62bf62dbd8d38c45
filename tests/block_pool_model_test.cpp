// Randomized model test: FixedBlockPool against a std::unordered_map of live blocks, each
// carrying a pattern that must survive until it is freed; validate() after every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <unordered_map>
#include <vector>

#include "kvmem/block_pool.hpp"

namespace {

struct Config {
  std::size_t size, align, chunk;
  bool checks;
  std::size_t watermark;
};

void fill(unsigned char* p, std::size_t n, std::uint64_t tag) {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>((tag >> ((i % 8) * 8)) + i);
}
bool check(const unsigned char* p, std::size_t n, std::uint64_t tag) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != static_cast<unsigned char>((tag >> ((i % 8) * 8)) + i)) return false;
  return true;
}

void run(const Config& cfg, std::uint64_t seed, int steps) {
  kvmem::FixedBlockPool::Options o;
  o.chunk_bytes = cfg.chunk;
  o.detect_misuse = cfg.checks;
  o.release_watermark_bytes = cfg.watermark;
  kvmem::FixedBlockPool pool(cfg.size, cfg.align, o);
  std::mt19937_64 rng(seed);
  std::unordered_map<unsigned char*, std::uint64_t> live;  // the model
  std::vector<unsigned char*> order;                        // for random picks
  std::vector<unsigned char*> freed;                        // recently freed, for misuse probes
  std::uint64_t next_tag = 1;
  for (int step = 0; step < steps; ++step) {
    const unsigned op = static_cast<unsigned>(rng() % 100);
    if (op < 55 || live.empty()) {
      auto* p = static_cast<unsigned char*>(pool.allocate_block());
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % cfg.align, 0u);
      ASSERT_TRUE(live.emplace(p, next_tag).second) << "block handed out twice";
      fill(p, cfg.size, next_tag++);
      order.push_back(p);
      freed.erase(std::remove(freed.begin(), freed.end(), p), freed.end());
    } else if (op < 95) {
      const std::size_t i = static_cast<std::size_t>(rng() % order.size());
      unsigned char* p = order[i];
      order[i] = order.back();
      order.pop_back();
      ASSERT_TRUE(check(p, cfg.size, live.at(p))) << "block contents changed while live";
      live.erase(p);
      pool.deallocate_block(p);
      freed.push_back(p);
      if (freed.size() > 8) freed.erase(freed.begin());
    } else if (op < 98) {
      const auto before = pool.stats();
      const std::size_t released = pool.release_empty_chunks();
      EXPECT_EQ(pool.stats().chunks, before.chunks - released);
      freed.clear();  // their chunks may be gone: a probe would hit foreign memory
    } else if (cfg.checks && !freed.empty()) {
      unsigned char* p = freed[static_cast<std::size_t>(rng() % freed.size())];
      EXPECT_THROW(pool.deallocate_block(p), kvmem::UsageError);
    }
    const auto s = pool.stats();
    ASSERT_EQ(s.blocks_in_use, live.size());
    ASSERT_LE(s.blocks_in_use + s.blocks_free, s.blocks_held);
    ASSERT_TRUE(pool.validate()) << "step " << step;
  }
  // Non-overlap of every live block, then drain and release everything.
  std::map<unsigned char*, std::uint64_t> sorted(live.begin(), live.end());
  unsigned char* prev = nullptr;
  for (auto& [p, tag] : sorted) {
    if (prev != nullptr) {
      ASSERT_GE(static_cast<std::size_t>(p - prev), cfg.size);
    }
    ASSERT_TRUE(check(p, cfg.size, tag));
    prev = p;
  }
  for (auto& [p, tag] : live) pool.deallocate_block(p);
  pool.release_empty_chunks();
  EXPECT_EQ(pool.stats().chunks, 0u);
  EXPECT_TRUE(pool.validate());
}

TEST(FixedBlockPoolModel, RandomOperationsMatchTheModel) {
  const Config configs[] = {
      {1, 1, 4096, true, SIZE_MAX},      {7, 1, 4096, true, SIZE_MAX},     {16, 8, 4096, false, SIZE_MAX},
      {100, 64, 8192, true, 16384},      {272, 16, 65536, true, SIZE_MAX}, {528, 8, 16384, false, 32768},
      {4096, 4096, 65536, true, 131072}, {3000, 512, 16384, true, SIZE_MAX}};
  std::uint64_t seed = 12345;
  for (const auto& cfg : configs) {
    SCOPED_TRACE(testing::Message() << "size " << cfg.size << " align " << cfg.align << " chunk " << cfg.chunk);
    run(cfg, seed++, 4000);
  }
}

}  // namespace
