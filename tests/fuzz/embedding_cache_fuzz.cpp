// libFuzzer target: a byte-driven sequence of set / get / erase / eviction / import /
// export on a small EmbeddingCache (L2-norm policy, so the model can predict every victim),
// checked against a std::unordered_map model; validate() after every operation.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <unordered_map>
#include <vector>

#include "kvmem/embedding_cache.hpp"

namespace {

struct Input {
  const std::uint8_t* data;
  std::size_t size;
  std::size_t pos = 0;
  std::uint8_t byte() { return pos < size ? data[pos++] : 0; }
  bool done() const { return pos >= size; }
};

void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in{data, size};
  const std::size_t dim = 1 + in.byte() % 9;
  const std::size_t shards = 1 + in.byte() % 5;
  const std::uint8_t mode = in.byte();
  kvmem::EmbeddingCache::Options o;
  o.dim = dim;
  o.shards = shards;
  o.pool_chunk_bytes = 4096;
  o.huge_pages = false;
  o.storage = (mode & 1) ? kvmem::RowStorage::kBFloat16 : kvmem::RowStorage::kFloat32;
  o.eviction.policy = kvmem::EvictionPolicy::kL2Norm;
  o.eviction.l2_threshold = static_cast<float>(mode >> 4);
  o.eviction.slice_slots = 1 + (mode >> 1) % 8;
  kvmem::EmbeddingCache cache(o);
  // Values are small integers: exact in float32 and in bfloat16.
  std::unordered_map<std::int64_t, std::vector<float>> model;
  int ops = 0;
  while (!in.done() && ops++ < 2000) {
    const std::uint8_t op = in.byte();
    const std::size_t n = 1 + (op >> 3) % 6;
    std::vector<std::int64_t> ids(n);
    for (auto& id : ids) id = static_cast<std::int64_t>(in.byte() % 64) - 20;
    switch (op % 6) {
      case 0:
      case 1: {
        std::vector<float> rows(n * dim);
        for (auto& v : rows) v = static_cast<float>(static_cast<int>(in.byte() % 16) - 8);
        cache.set(ids, rows);
        for (std::size_t i = 0; i < n; ++i) model[ids[i]] = std::vector<float>(rows.begin() + static_cast<std::ptrdiff_t>(i * dim), rows.begin() + static_cast<std::ptrdiff_t>((i + 1) * dim));
        break;
      }
      case 2: {
        std::vector<float> out(n * dim);
        std::vector<std::uint8_t> hits(n);
        std::size_t expect = 0;
        const std::size_t got = cache.get(ids, out, hits);
        for (std::size_t i = 0; i < n; ++i) {
          auto it = model.find(ids[i]);
          require((hits[i] != 0) == (it != model.end()));
          for (std::size_t j = 0; j < dim; ++j) require(out[i * dim + j] == (it != model.end() ? it->second[j] : 0.0f));
          expect += it != model.end();
        }
        require(got == expect);
        break;
      }
      case 3: {
        std::size_t expect = 0;
        for (auto id : ids) expect += model.erase(id);
        require(cache.erase(ids) == expect);
        break;
      }
      case 4: {
        std::size_t expect = 0;
        for (auto it = model.begin(); it != model.end();) {
          double s = 0;
          for (float v : it->second) s += static_cast<double>(v) * v;
          if (static_cast<float>(std::sqrt(s)) < o.eviction.l2_threshold) {
            it = model.erase(it);
            ++expect;
          } else {
            ++it;
          }
        }
        require(cache.evict_now() == expect);
        break;
      }
      case 5: {
        std::vector<kvmem::RowHeader> hs;
        std::vector<float> vals;
        cache.export_rows(hs, vals);
        require(hs.size() == model.size());
        for (std::size_t i = 0; i < hs.size(); ++i) {
          auto it = model.find(hs[i].key);
          require(it != model.end());
          for (std::size_t j = 0; j < dim; ++j) require(vals[i * dim + j] == it->second[j]);
        }
        cache.erase(std::vector<std::int64_t>(1, hs.empty() ? 0 : hs[0].key));
        cache.import_rows(hs, vals);  // round trip restores what was erased
        break;
      }
    }
    require(cache.size() == model.size());
    require(cache.validate());
  }
  return 0;
}
