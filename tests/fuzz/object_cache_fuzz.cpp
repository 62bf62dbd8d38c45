// libFuzzer target for kvmem::ObjectCache: the input is a sequence of operations (put, get,
// erase, hold/drop a handle, wash, evict) on three caches sharing a tiny budget with 4 KiB
// blocks, so sealing, dedicated blocks, sync wash, min/max and pinned evictions all happen
// within a few hundred bytes of input. After every operation validate() must hold, every value
// returned must be the latest one put, and every held handle must still show its bytes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kvmem/object_cache.hpp"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "object_cache_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kvmem::ObjectCache::Options o;
  o.memory_limit = 64 << 10;
  o.block_size = 4 << 10;
  o.background_wash = false;
  o.high_watermark = 0.75;
  o.low_watermark = 0.5;
  kvmem::ObjectCache cache(o);
  const kvmem::CacheId ids[3] = {cache.register_cache("a", 1), cache.register_cache("b", 3, 8 << 10),
                                 cache.register_cache("c", 1, 0, 16 << 10)};
  std::map<std::pair<kvmem::CacheId, std::string>, std::string> model;
  std::vector<std::pair<kvmem::ValueHandle, std::string>> held;

  std::size_t pos = 0;
  auto next = [&]() -> std::uint8_t { return pos < size ? data[pos++] : 0; };
  while (pos < size) {
    const std::uint8_t op = next();
    const kvmem::CacheId id = ids[(op >> 4) % 3];
    const std::string key(1 + next() % 24, static_cast<char>('a' + op % 7));
    switch (op % 8) {
      case 0:
      case 1: {
        std::size_t len = next();
        if (op & 0x80) len = len * 64;  // up to 16 KiB: larger than a block
        std::string value(len, static_cast<char>(pos));
        const auto st = cache.put(id, key, value);
        if (st == kvmem::PutStatus::kStored) {
          model[{id, key}] = value;
        } else {
          model.erase({id, key});
          cache.erase(id, key);
        }
        break;
      }
      case 2:
      case 3: {
        auto h = cache.get(id, key);
        if (h) {
          auto it = model.find({id, key});
          if (it == model.end()) fail("get returned a key that was never put or was erased");
          if (h->value() != it->second) fail("get returned a stale or corrupt value");
          if ((op & 0x40) && held.size() < 16) held.emplace_back(std::move(*h), it->second);
        }
        break;
      }
      case 4: {
        const bool had = model.erase({id, key}) > 0;
        if (cache.erase(id, key) && !had) fail("erase found a key the model does not have");
        break;
      }
      case 5:
        if (!held.empty()) held.erase(held.begin() + static_cast<std::ptrdiff_t>(next() % held.size()));
        break;
      case 6:
        cache.wash_now();
        break;
      default:
        cache.evict_bytes(std::size_t{next()} * 64);
        break;
    }
    if (!cache.validate()) fail("validate() failed");
    for (const auto& [h, v] : held) {
      if (h.value() != v) fail("a held handle's bytes changed");
    }
  }
  held.clear();
  if (!cache.validate()) fail("validate() failed after dropping handles");
  return 0;
}
