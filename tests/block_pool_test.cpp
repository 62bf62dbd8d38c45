#include "kvmem/block_pool.hpp"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory_resource>
#include <set>
#include <vector>

namespace {

using kvmem::FixedBlockPool;

// Upstream that counts what it hands out and what comes back (for leak/return checks).
class CountingResource final : public std::pmr::memory_resource {
 public:
  std::size_t allocations = 0, deallocations = 0, live_bytes = 0;
  bool fail = false;

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    if (fail) throw std::bad_alloc();
    ++allocations;
    live_bytes += bytes;
    return kvmem::os_page_resource()->allocate(bytes, alignment);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    ++deallocations;
    live_bytes -= bytes;
    kvmem::os_page_resource()->deallocate(p, bytes, alignment);
  }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
};

TEST(FixedBlockPool, RejectsBadArguments) {
  EXPECT_THROW(FixedBlockPool(0), std::invalid_argument);
  EXPECT_THROW(FixedBlockPool(8, 3), std::invalid_argument);
  EXPECT_THROW(FixedBlockPool(8, 0), std::invalid_argument);
  FixedBlockPool::Options o;
  o.chunk_bytes = (std::size_t{1} << 32) + 1;
  EXPECT_THROW(FixedBlockPool(8, 8, o), std::invalid_argument);
}

TEST(FixedBlockPool, DistinctAlignedWritableBlocksOfEveryShape) {
  const std::size_t sizes[] = {1, 3, 7, 8, 15, 16, 24, 100, 272, 528, 1040, 4096, 5000};
  const std::size_t aligns[] = {1, 8, 16, 64, 4096};
  for (std::size_t size : sizes) {
    for (std::size_t align : aligns) {
      FixedBlockPool::Options o;
      o.chunk_bytes = 64 * 1024;  // several chunks per run
      FixedBlockPool pool(size, align, o);
      EXPECT_EQ(pool.stride() % align, 0u);
      EXPECT_GE(pool.stride(), size);
      const std::size_t n = std::min<std::size_t>(3 * pool.blocks_per_chunk() + 5, 2000);
      std::vector<unsigned char*> blocks;
      for (std::size_t i = 0; i < n; ++i) {
        auto* p = static_cast<unsigned char*>(pool.allocate_block());
        ASSERT_NE(p, nullptr);
        ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u) << size << "/" << align;
        std::memset(p, static_cast<int>(i & 0xff), size);
        blocks.push_back(p);
      }
      ASSERT_TRUE(pool.validate());
      // Every block still holds exactly its own pattern: no block overlaps another.
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t b = 0; b < size; ++b) ASSERT_EQ(blocks[i][b], static_cast<unsigned char>(i & 0xff));
      std::vector<unsigned char*> sorted = blocks;
      std::sort(sorted.begin(), sorted.end());
      for (std::size_t i = 1; i < sorted.size(); ++i)
        ASSERT_GE(static_cast<std::size_t>(sorted[i] - sorted[i - 1]), size);
      EXPECT_EQ(pool.stats().blocks_in_use, n);
      for (auto* p : blocks) pool.deallocate_block(p);
      EXPECT_EQ(pool.stats().blocks_in_use, 0u);
      EXPECT_TRUE(pool.validate());
    }
  }
}

TEST(FixedBlockPool, FreeBlocksAreReusedLastInFirstOut) {
  FixedBlockPool pool(64);
  void* a = pool.allocate_block();
  void* b = pool.allocate_block();
  pool.deallocate_block(a);
  pool.deallocate_block(b);
  EXPECT_EQ(pool.allocate_block(), b);
  EXPECT_EQ(pool.allocate_block(), a);
  EXPECT_EQ(pool.stats().chunks, 1u);
}

TEST(FixedBlockPool, FreedBlockKeepsItsContents) {
  // The free list lives outside the blocks, so even a 1-byte block is never overwritten.
  FixedBlockPool pool(1, 1);
  auto* a = static_cast<unsigned char*>(pool.allocate_block());
  auto* b = static_cast<unsigned char*>(pool.allocate_block());
  *a = 0xAB;
  *b = 0xCD;
  pool.deallocate_block(a);
  pool.deallocate_block(b);
  EXPECT_EQ(*a, 0xAB);
  EXPECT_EQ(*b, 0xCD);
}

TEST(FixedBlockPool, NewChunkIsNotTouchedByThePool) {
  FixedBlockPool::Options o;
  o.chunk_bytes = 1 << 20;
  FixedBlockPool pool(4096, 4096, o);
  std::vector<void*> blocks;
  for (int i = 0; i < 100; ++i) blocks.push_back(pool.allocate_block());
  ASSERT_EQ(pool.stats().chunks, 1u);
  const long page = ::sysconf(_SC_PAGESIZE);
  auto* base = static_cast<unsigned char*>(blocks[0]);
  std::vector<unsigned char> vec((o.chunk_bytes + static_cast<std::size_t>(page) - 1) / static_cast<std::size_t>(page));
  ASSERT_EQ(::mincore(base, o.chunk_bytes, vec.data()), 0);
  std::size_t resident = 0;
  for (unsigned char v : vec) resident += v & 1u;
  EXPECT_EQ(resident, 0u) << "the pool wrote into blocks it only handed out";
  static_cast<unsigned char*>(blocks[3])[0] = 1;  // the caller's first touch makes one page resident
  ASSERT_EQ(::mincore(base, o.chunk_bytes, vec.data()), 0);
  resident = 0;
  for (unsigned char v : vec) resident += v & 1u;
  EXPECT_GE(resident, 1u);
  EXPECT_LE(resident, 16u);  // fault-around may map a few neighbours, never the whole chunk
}

TEST(FixedBlockPool, DetectsMisuseAndStaysIntact) {
  FixedBlockPool pool(48, 16);
  void* a = pool.allocate_block();
  void* b = pool.allocate_block();
  pool.deallocate_block(a);
  EXPECT_THROW(pool.deallocate_block(a), kvmem::UsageError);  // double free
  int local = 0;
  EXPECT_THROW(pool.deallocate_block(&local), kvmem::UsageError);  // foreign
  EXPECT_THROW(pool.deallocate_block(static_cast<char*>(b) + 16), kvmem::UsageError);  // interior
  // a block of the current chunk that was never handed out
  EXPECT_THROW(pool.deallocate_block(static_cast<char*>(b) + 10 * pool.stride()), kvmem::UsageError);
  EXPECT_TRUE(pool.validate());
  EXPECT_EQ(pool.stats().blocks_in_use, 1u);
  EXPECT_EQ(pool.stats().blocks_free, 1u);
  pool.deallocate_block(b);
  pool.deallocate_block(nullptr);
  EXPECT_TRUE(pool.validate());
}

TEST(FixedBlockPool, OwnsOnlyItsBlocks) {
  FixedBlockPool pool(40, 8);
  void* a = pool.allocate_block();
  EXPECT_TRUE(pool.owns(a));
  EXPECT_FALSE(pool.owns(static_cast<char*>(a) + 8));
  int x = 0;
  EXPECT_FALSE(pool.owns(&x));
}

TEST(FixedBlockPool, UncheckedModeWorks) {
  FixedBlockPool::Options o;
  o.detect_misuse = false;
  o.chunk_bytes = 4096;
  FixedBlockPool pool(24, 8, o);
  std::vector<void*> v;
  for (int i = 0; i < 1000; ++i) v.push_back(pool.allocate_block());
  for (int i = 0; i < 1000; i += 2) pool.deallocate_block(v[static_cast<std::size_t>(i)]);
  EXPECT_TRUE(pool.validate());
  EXPECT_EQ(pool.stats().blocks_in_use, 500u);
  for (int i = 1; i < 1000; i += 2) pool.deallocate_block(v[static_cast<std::size_t>(i)]);
  EXPECT_EQ(pool.release_empty_chunks(), pool.stats().chunks_allocated);
  EXPECT_TRUE(pool.validate());
}

TEST(FixedBlockPool, PmrInterface) {
  FixedBlockPool pool(sizeof(double) * 4, alignof(double));
  std::pmr::memory_resource& r = pool;
  void* p = r.allocate(sizeof(double) * 4, alignof(double));
  EXPECT_THROW((void)r.allocate(sizeof(double) * 3, alignof(double)), std::bad_alloc);
  EXPECT_THROW((void)r.allocate(sizeof(double) * 4, 64), std::bad_alloc);
  EXPECT_THROW(r.deallocate(p, 8, alignof(double)), kvmem::UsageError);
  r.deallocate(p, sizeof(double) * 4, alignof(double));
  EXPECT_TRUE(r.is_equal(pool));
  FixedBlockPool other(32);
  EXPECT_FALSE(r.is_equal(other));
  std::pmr::polymorphic_allocator<double> alloc(&pool);
  double* d = alloc.allocate(4);
  d[3] = 1.5;
  alloc.deallocate(d, 4);
  EXPECT_EQ(pool.stats().blocks_in_use, 0u);
}

TEST(FixedBlockPool, ExhaustionReturnsNullAndPmrThrows) {
  FixedBlockPool::Options o;
  o.chunk_bytes = 4096;
  o.max_bytes = 2 * 4096;
  FixedBlockPool pool(1024, 1024, o);
  std::vector<void*> v;
  for (int i = 0; i < 8; ++i) v.push_back(pool.allocate_block());
  for (void* p : v) ASSERT_NE(p, nullptr);
  EXPECT_EQ(pool.allocate_block(), nullptr);
  EXPECT_EQ(pool.stats().failed_allocations, 1u);
  EXPECT_THROW((void)static_cast<std::pmr::memory_resource&>(pool).allocate(1024, 1024), std::bad_alloc);
  pool.deallocate_block(v.back());
  EXPECT_EQ(pool.allocate_block(), v.back());
  EXPECT_TRUE(pool.validate());
}

TEST(FixedBlockPool, UpstreamFailureIsExhaustion) {
  CountingResource up;
  FixedBlockPool::Options o;
  o.upstream = &up;
  o.chunk_bytes = 4096;
  FixedBlockPool pool(512, 8, o);
  up.fail = true;
  EXPECT_EQ(pool.allocate_block(), nullptr);
  EXPECT_TRUE(pool.validate());
  up.fail = false;
  EXPECT_NE(pool.allocate_block(), nullptr);
  EXPECT_TRUE(pool.validate());
}

TEST(FixedBlockPool, ChunksComeFromUpstreamAlignedAndGoBack) {
  CountingResource up;
  {
    FixedBlockPool::Options o;
    o.upstream = &up;
    o.chunk_bytes = 8192;
    FixedBlockPool pool(100, 4, o);
    EXPECT_EQ(up.allocations, 0u);  // no chunk before the first allocation
    for (int i = 0; i < 1000; ++i) ASSERT_NE(pool.allocate_block(), nullptr);
    EXPECT_EQ(up.allocations, pool.stats().chunks);
    EXPECT_EQ(up.live_bytes, pool.stats().bytes_held);
  }
  EXPECT_EQ(up.allocations, up.deallocations);
  EXPECT_EQ(up.live_bytes, 0u);
}

TEST(FixedBlockPool, ReleaseEmptyChunksKeepsLiveOnes) {
  CountingResource up;
  FixedBlockPool::Options o;
  o.upstream = &up;
  o.chunk_bytes = 4096;
  FixedBlockPool pool(256, 256, o);  // 16 blocks per chunk
  std::vector<void*> v;
  for (int i = 0; i < 16 * 5; ++i) v.push_back(pool.allocate_block());
  ASSERT_EQ(pool.stats().chunks, 5u);
  // free everything except one block in chunk 2
  for (std::size_t i = 0; i < v.size(); ++i)
    if (i != 2 * 16 + 7) pool.deallocate_block(v[i]);
  EXPECT_EQ(pool.release_empty_chunks(), 4u);
  EXPECT_EQ(pool.stats().chunks, 1u);
  EXPECT_EQ(up.live_bytes, 4096u);
  EXPECT_EQ(pool.stats().blocks_in_use, 1u);
  EXPECT_EQ(pool.stats().blocks_free, 15u);
  EXPECT_TRUE(pool.validate());
  EXPECT_THROW(pool.deallocate_block(v[0]), kvmem::UsageError);  // its chunk is gone
  // allocation continues: first the 15 free blocks, then new chunks
  for (int i = 0; i < 40; ++i) ASSERT_NE(pool.allocate_block(), nullptr);
  EXPECT_TRUE(pool.validate());
  EXPECT_EQ(pool.stats().blocks_in_use, 41u);
  pool.deallocate_block(v[2 * 16 + 7]);
  EXPECT_TRUE(pool.validate());
}

TEST(FixedBlockPool, ReleaseWhilePartiallyCarved) {
  FixedBlockPool::Options o;
  o.chunk_bytes = 4096;
  FixedBlockPool pool(64, 64, o);  // 64 per chunk
  std::vector<void*> v;
  for (int i = 0; i < 70; ++i) v.push_back(pool.allocate_block());  // chunk 2 carved 6/64
  for (std::size_t i = 64; i < 70; ++i) pool.deallocate_block(v[i]);
  EXPECT_EQ(pool.release_empty_chunks(), 1u);  // the partially carved current chunk
  EXPECT_TRUE(pool.validate());
  for (int i = 0; i < 100; ++i) ASSERT_NE(pool.allocate_block(), nullptr);
  EXPECT_TRUE(pool.validate());
  EXPECT_EQ(pool.stats().blocks_in_use, 164u);
}

TEST(FixedBlockPool, AutomaticReleaseAboveWatermark) {
  CountingResource up;
  FixedBlockPool::Options o;
  o.upstream = &up;
  o.chunk_bytes = 4096;
  o.release_watermark_bytes = 4 * 4096;
  FixedBlockPool pool(128, 8, o);  // 32 per chunk
  std::vector<void*> v;
  for (int i = 0; i < 32 * 20; ++i) v.push_back(pool.allocate_block());
  for (void* p : v) {
    pool.deallocate_block(p);
    ASSERT_TRUE(pool.stats().blocks_free * 128 <= 4 * 4096 + 2 * 4096) << pool.stats().blocks_free;
  }
  EXPECT_LT(pool.stats().chunks, 20u);
  EXPECT_GT(pool.stats().chunks_released, 0u);
  EXPECT_TRUE(pool.validate());
  for (int i = 0; i < 32 * 20; ++i) ASSERT_NE(pool.allocate_block(), nullptr);
  EXPECT_TRUE(pool.validate());
}

TEST(FixedBlockPool, HugePageChunks) {
  FixedBlockPool::Options o;
  o.huge_pages = true;
  o.chunk_bytes = 4096;
  FixedBlockPool pool(528, 8, o);
  EXPECT_GE(pool.chunk_bytes(), std::size_t{2} << 20);
  void* p = pool.allocate_block();
  ASSERT_NE(p, nullptr);
  std::memset(p, 1, 528);
  EXPECT_TRUE(pool.validate());
}

TEST(FixedBlockPool, StatsAreConsistent) {
  FixedBlockPool::Options o;
  o.chunk_bytes = 1 << 16;
  FixedBlockPool pool(1000, 8, o);
  std::vector<void*> v;
  for (int i = 0; i < 200; ++i) v.push_back(pool.allocate_block());
  for (int i = 0; i < 50; ++i) pool.deallocate_block(v[static_cast<std::size_t>(i)]);
  const auto s = pool.stats();
  EXPECT_EQ(s.blocks_in_use, 150u);
  EXPECT_EQ(s.blocks_free, 50u);
  EXPECT_EQ(s.blocks_held, s.chunks * pool.blocks_per_chunk());
  EXPECT_EQ(s.bytes_held, s.chunks * pool.chunk_bytes());
  EXPECT_EQ(s.chunks, (200 + pool.blocks_per_chunk() - 1) / pool.blocks_per_chunk());
}

}  // namespace

namespace {

// Hands out chunks far apart (alignment x 256), so the pool's dense chunk index cannot be
// used and every lookup goes through its hash table.
class ScatteringResource final : public std::pmr::memory_resource {
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    return kvmem::os_page_resource()->allocate(bytes, alignment * 256);
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t alignment) override {
    kvmem::os_page_resource()->deallocate(p, bytes, alignment * 256);
  }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
};

TEST(FixedBlockPool, ScatteredChunksUseTheHashLookup) {
  ScatteringResource up;
  FixedBlockPool::Options o;
  o.upstream = &up;
  o.chunk_bytes = 4096;
  FixedBlockPool pool(200, 8, o);  // 20 blocks per chunk
  std::vector<void*> v;
  for (int i = 0; i < 200; ++i) v.push_back(pool.allocate_block());
  ASSERT_EQ(pool.stats().chunks, 10u);
  for (std::size_t i = 0; i < v.size(); i += 3) pool.deallocate_block(v[i]);
  EXPECT_THROW(pool.deallocate_block(v[0]), kvmem::UsageError);
  EXPECT_THROW(pool.deallocate_block(static_cast<char*>(v[1]) + 8), kvmem::UsageError);
  int x = 0;
  EXPECT_THROW(pool.deallocate_block(&x), kvmem::UsageError);
  EXPECT_TRUE(pool.validate());
  for (std::size_t i = 0; i < v.size(); ++i)
    if (i % 3 != 0) pool.deallocate_block(v[i]);
  EXPECT_EQ(pool.release_empty_chunks(), 10u);
  EXPECT_TRUE(pool.validate());
}

}  // namespace

namespace {

TEST(FixedBlockPool, EveryInteriorPointerIsRejected) {
  for (std::size_t size : {2u, 3u, 24u, 100u, 528u, 1000u, 4104u}) {
    for (std::size_t align : {1u, 8u, 64u}) {
      FixedBlockPool pool(size, align);
      std::vector<char*> b;
      for (int i = 0; i < 3; ++i) b.push_back(static_cast<char*>(pool.allocate_block()));
      for (std::size_t d = 1; d < pool.stride(); ++d)
        ASSERT_THROW(pool.deallocate_block(b[1] + d), kvmem::UsageError) << size << "/" << align << " +" << d;
      for (char* p : b) pool.deallocate_block(p);
      EXPECT_TRUE(pool.validate());
    }
  }
}

}  // namespace
