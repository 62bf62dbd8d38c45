// libFuzzer target: the input picks a pool shape, then drives a sequence of operations
// (allocate, free, double free, foreign free, release) against a model of live blocks.
// validate() runs after every operation; any divergence aborts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unordered_set>
#include <vector>

#include "kvmem/block_pool.hpp"

namespace {

struct Input {
  const std::uint8_t* data;
  std::size_t size;
  std::size_t pos = 0;
  std::uint8_t byte() { return pos < size ? data[pos++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(byte() | (byte() << 8)); }
  bool done() const { return pos >= size; }
};

void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in{data, size};
  const std::size_t block = 1 + in.u16() % 3000;
  const std::size_t align = std::size_t{1} << (in.byte() % 13);
  kvmem::FixedBlockPool::Options o;
  o.chunk_bytes = std::size_t{4096} << (in.byte() % 5);
  const std::uint8_t flags = in.byte();
  o.detect_misuse = (flags & 1) == 0;
  if (flags & 2) o.release_watermark_bytes = o.chunk_bytes * (1 + (flags >> 4));
  if (flags & 4) o.max_bytes = o.chunk_bytes * (1 + ((flags >> 3) & 7));
  kvmem::FixedBlockPool pool(block, align, o);
  std::vector<unsigned char*> live;
  std::unordered_set<unsigned char*> live_set;
  std::vector<unsigned char*> freed;
  int ops = 0;
  while (!in.done() && ops++ < 4000) {
    const std::uint8_t op = in.byte();
    switch (op % 6) {
      case 0:
      case 1: {
        const unsigned n = 1 + (op >> 3);
        for (unsigned k = 0; k < n; ++k) {
          auto* p = static_cast<unsigned char*>(pool.allocate_block());
          if (p == nullptr) {
            require(o.max_bytes != 0);
            break;
          }
          require(reinterpret_cast<std::uintptr_t>(p) % align == 0);
          require(live_set.insert(p).second);
          p[0] = 0x5a;
          p[block - 1] = 0xa5;
          live.push_back(p);
        }
        break;
      }
      case 2:
      case 3: {
        if (live.empty()) break;
        const std::size_t i = in.u16() % live.size();
        unsigned char* p = live[i];
        require(p[0] == (block > 1 ? 0x5a : 0xa5) && p[block - 1] == 0xa5);
        live[i] = live.back();
        live.pop_back();
        live_set.erase(p);
        if (block > 1) p[0] = 0;  // the pool must not care what a freed block holds
        pool.deallocate_block(p);
        freed.push_back(p);
        break;
      }
      case 4: {
        if (!o.detect_misuse || freed.empty()) break;
        unsigned char* p = freed[in.u16() % freed.size()];
        if (live_set.count(p)) break;  // reused since
        bool threw = false;
        try {
          pool.deallocate_block(((op & 8) && pool.stride() > 1) ? p + 1 : p);
        } catch (const kvmem::UsageError&) {
          threw = true;
        }
        require(threw);
        break;
      }
      case 5:
        pool.release_empty_chunks();
        freed.clear();
        break;
    }
    require(pool.stats().blocks_in_use == live.size());
    require(pool.validate());
  }
  for (unsigned char* p : live) pool.deallocate_block(p);
  pool.release_empty_chunks();
  require(pool.stats().chunks == 0);
  require(pool.validate());
  return 0;
}
