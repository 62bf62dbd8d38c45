#include "kvmem/detail/hash.hpp"
#include "kvmem/embedding_cache.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include <sys/mman.h>

namespace kvmem {

namespace {

constexpr std::uint16_t kRoundBit = 0x8000;
constexpr std::size_t kHeaderBytes = sizeof(RowHeader);

// A shard's table holds at most 3/4 of its slots. Linear probing's cost of placing a new key
// grows as 1 / (1 - load)^2: measured on a 1M-row dim-128 cold insert, the probe loop was the
// hottest user-space line at a 7/8 limit, and 3/4 cut the insert by 4%.
constexpr std::size_t kMaxLoadNum = 3, kMaxLoadDen = 4;
bool over_max_load(std::size_t rows, std::size_t slots) noexcept { return rows * kMaxLoadDen > slots * kMaxLoadNum; }
// A table under 1 MiB quadruples when full, a larger one doubles. Every growth moves each row
// the table holds into fresh memory (on this VM a 4 KiB page fault with its zeroing cost
// ~1.1 us, and the moves' probes mispredict), so skipping every other small size cuts the
// moves of a cold start by a third: 1M-row dim-128 insert 144 -> 132 ns/row, of which the
// growths took 30 -> 20. The extra memory is bounded: a shard's table is never more than
// 1 MiB larger than doubling would have made it.
constexpr std::size_t kQuadrupleBelowBytes = std::size_t{1} << 20;

using detail::mix64;

// Takes a deferred shard lock: blocking, or a single try (false when held elsewhere).
template <class Lock>
bool lock_shard(Lock& lk, bool try_only) {
  if (try_only) return lk.try_lock();
  lk.lock();
  return true;
}

// Visits the shards a batch touches (starts[sh] != starts[sh + 1]): visit(sh, try_only) holds
// shard sh's lock for its slice. The first pass only try-locks, beginning at a shard that
// differs per thread and per call; shards found busy get a second, blocking pass. Two threads
// working through batches so spread over different shards instead of one queueing behind the
// other shard after shard (every batch touches every shard). visit returns false when
// try_only found the lock held.
template <class Visit>
void visit_batch_shards(std::size_t shard_count, const std::vector<std::uint32_t>& starts, Visit&& visit) {
  thread_local std::size_t rotation = static_cast<std::size_t>(mix64(reinterpret_cast<std::uintptr_t>(&rotation)));
  thread_local std::vector<std::uint32_t> busy;
  busy.clear();
  const std::size_t first = rotation++ % shard_count;
  for (std::size_t j = 0; j < shard_count; ++j) {
    const std::size_t sh = first + j < shard_count ? first + j : first + j - shard_count;
    if (starts[sh] == starts[sh + 1]) continue;
    if (!visit(sh, true)) busy.push_back(static_cast<std::uint32_t>(sh));
  }
  for (const std::uint32_t sh : busy) visit(sh, false);
}

std::uint16_t float_to_half(float f) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t exp = (x >> 23) & 0xffu;
  std::uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<std::uint16_t>(sign | 0x7c00u | (mant != 0 ? 0x200u : 0u));
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (e <= 0) {  // subnormal half (or zero)
    if (e < -10) return static_cast<std::uint16_t>(sign);
    mant |= 0x800000u;
    const unsigned shift = static_cast<unsigned>(14 - e);
    std::uint32_t half = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t half = sign | (static_cast<std::uint32_t>(e) << 10) | (mant >> 13);
  const std::uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // a carry rounds up to inf
  return static_cast<std::uint16_t>(half);
}

float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  return std::bit_cast<float>(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

std::uint16_t float_to_bf16(float f) noexcept {
  std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest even
  return static_cast<std::uint16_t>(x >> 16);
}

float bf16_to_float(std::uint16_t b) noexcept { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

// Header statistics are written by readers holding a shard's shared lock, so every access
// that can race with one goes through atomic_ref (relaxed: they are statistics).
void touch(RowHeader* row, std::uint32_t now) noexcept {
  std::atomic_ref<std::uint32_t> last(row->last_access);
  if (last.load(std::memory_order_relaxed) != now) last.store(now, std::memory_order_relaxed);
  std::atomic_ref<std::uint16_t> count(row->count);
  const std::uint16_t c = count.load(std::memory_order_relaxed);
  if (c != 0xffff) count.store(static_cast<std::uint16_t>(c + 1), std::memory_order_relaxed);
}

RowHeader snapshot(const RowHeader* row) noexcept {
  RowHeader h;
  h.key = row->key;
  h.last_access = std::atomic_ref<std::uint32_t>(const_cast<RowHeader*>(row)->last_access).load(std::memory_order_relaxed);
  h.count = std::atomic_ref<std::uint16_t>(const_cast<RowHeader*>(row)->count).load(std::memory_order_relaxed);
  h.flags = static_cast<std::uint16_t>(row->flags & kRowUserFlagsMask);
  return h;
}

}  // namespace

// Defined before its first use so that every probe and rehash loop inlines it.
inline std::uint64_t EmbeddingCache::mix(std::int64_t id) noexcept {
  return mix64(static_cast<std::uint64_t>(id) + 0x9E3779B97F4A7C15ull);
}

// A shard's slot array: zeroed slots, fixed size. Tables of 2 MiB and more are mapped from
// the OS on 2 MiB boundaries (already zero, faulted in as they are written) and, with
// Options::huge_pages, backed by transparent huge pages: a 1M-row cache's tables are 32 MiB
// probed at random, which on 4 KiB pages costs a page fault per 4 KiB when a table is built
// and a TLB miss on nearly every probe afterwards.
class EmbeddingCache::SlotTable {
 public:
  SlotTable() = default;
  SlotTable(std::size_t n, bool huge_pages) : size_(n) {
    const std::size_t bytes = n * sizeof(Slot);
    if (mapped()) {
      data_ = static_cast<Slot*>(os_page_resource()->allocate(bytes, kHugePage));
      if (huge_pages) ::madvise(data_, bytes, MADV_HUGEPAGE);  // a hint: failure only costs speed
    } else {
      data_ = new Slot[n]();
    }
  }
  SlotTable(SlotTable&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  SlotTable& operator=(SlotTable&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  SlotTable(const SlotTable&) = delete;
  SlotTable& operator=(const SlotTable&) = delete;
  ~SlotTable() { release(); }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  Slot& operator[](std::size_t i) noexcept { return data_[i]; }
  const Slot& operator[](std::size_t i) const noexcept { return data_[i]; }
  [[nodiscard]] const Slot* begin() const noexcept { return data_; }
  [[nodiscard]] const Slot* end() const noexcept { return data_ + size_; }

 private:
  static constexpr std::size_t kHugePage = std::size_t{1} << 21;
  // Where the slots came from follows from the size: the OS for 2 MiB and more, else the heap.
  [[nodiscard]] bool mapped() const noexcept { return size_ * sizeof(Slot) >= kHugePage; }
  void release() noexcept {
    if (data_ == nullptr) return;
    if (mapped()) {
      os_page_resource()->deallocate(data_, size_ * sizeof(Slot), kHugePage);
    } else {
      delete[] data_;
    }
  }
  Slot* data_ = nullptr;
  std::size_t size_ = 0;
};

// Three cache lines: the lock; what every probe reads (written only under the exclusive
// lock); the counters. Readers of one shard on two cores bump hits/misses once per batch, and
// with the counters beside `slots` each bump cost the other core a miss on its next probe
// (measured: 2-thread lookups used 13% more CPU per row than 1-thread ones before the split).
struct alignas(64) EmbeddingCache::Shard {
  mutable std::shared_mutex mu;
  alignas(64) SlotTable slots;  // power-of-two size; linear probing; no tombstones
  std::unique_ptr<FixedBlockPool> pool;
  bool huge_pages = true;  // Options::huge_pages, for the table as it grows
  std::size_t size = 0;
  // Lock-free mirrors for metrics() and the triggers, written under the exclusive lock.
  alignas(64) std::atomic<std::size_t> rows{0};
  std::atomic<std::size_t> held{0};
  std::atomic<std::uint64_t> hits{0}, misses{0}, inserts{0}, updates{0}, erased{0}, evictions{0};

  // The slot holding `id`, or the empty slot that ended the search (where `id` would go).
  std::size_t probe(std::int64_t id, std::uint64_t h) const noexcept {
    const std::size_t mask = slots.size() - 1;
    std::size_t i = h & mask;
    while (slots[i].row != nullptr && slots[i].key != id) i = (i + 1) & mask;
    return i;
  }
  std::size_t find(std::int64_t id, std::uint64_t h) const noexcept {
    const std::size_t i = probe(id, h);
    return slots[i].row != nullptr ? i : SIZE_MAX;
  }

  void grow() {
    const std::size_t factor = slots.size() * sizeof(Slot) < kQuadrupleBelowBytes ? 4 : 2;
    SlotTable bigger(slots.size() * factor, huge_pages);
    const std::size_t mask = bigger.size() - 1;
    for (const Slot& slot : slots) {
      if (slot.row == nullptr) continue;
      std::size_t i = EmbeddingCache::mix(slot.key) & mask;
      while (bigger[i].row != nullptr) i = (i + 1) & mask;
      bigger[i] = slot;
    }
    slots = std::move(bigger);
  }

  // Backward-shift deletion: later members of the probe run move up so no tombstones remain.
  void erase_at(std::size_t i) noexcept {
    const std::size_t mask = slots.size() - 1;
    std::size_t j = i;
    for (;;) {
      j = (j + 1) & mask;
      if (slots[j].row == nullptr) break;
      const std::size_t home = EmbeddingCache::mix(slots[j].key) & mask;
      const bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
      if (!stays) {
        slots[i] = slots[j];
        i = j;
      }
    }
    slots[i] = Slot{};
    --size;
  }

  // Software pipeline for batches: the home slot of an id a few positions ahead is
  // prefetched, and the row of a nearer id once its slot is likely cached. Rows and slots are
  // random DRAM accesses at scale, so overlapping them is most of a lookup's cost.
  static constexpr std::size_t kSlotAhead = 8, kRowAhead = 4;
  void prefetch_slot(std::uint64_t h) const noexcept { __builtin_prefetch(&slots[h & (slots.size() - 1)]); }
  // The loop prefetches kSlotAhead ids ahead, so the first ones of each shard's part of a
  // batch are prefetched here, once the lock is held (measured: ~2% of a cold insert).
  void prefetch_first_slots(const std::uint64_t* hashes, const std::uint32_t* positions, std::size_t n) const noexcept {
    for (std::size_t k = 0; k < n && k < kSlotAhead; ++k) prefetch_slot(hashes[positions[k]]);
  }
  void prefetch_row(std::int64_t id, std::uint64_t h, std::size_t bytes) const noexcept {
    const Slot& slot = slots[h & (slots.size() - 1)];
    if (slot.row == nullptr || slot.key != id) return;
    const char* p = reinterpret_cast<const char*>(slot.row);
    for (std::size_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off);
  }

  void publish() noexcept {
    rows.store(size, std::memory_order_relaxed);
    held.store(pool->stats().bytes_held + slots.size() * sizeof(Slot), std::memory_order_relaxed);
  }
};

EmbeddingCache::EmbeddingCache(Options o)
    : dim_(o.dim),
      storage_(o.storage),
      shard_count_(o.shards),
      initializer_(o.initializer),
      init_low_(o.init_low),
      init_high_(o.init_high),
      seed_(o.seed),
      clock_(std::move(o.clock)),
      eviction_(o.eviction) {
  if (dim_ == 0) throw std::invalid_argument("EmbeddingCache: Options::dim must be >= 1");
  if (dim_ > (std::size_t{1} << 24)) throw std::invalid_argument("EmbeddingCache: Options::dim must be <= 2^24");
  if (shard_count_ == 0 || shard_count_ > 65536)
    throw std::invalid_argument("EmbeddingCache: Options::shards must be in [1, 65536]");
  if (!(init_low_ <= init_high_)) throw std::invalid_argument("EmbeddingCache: init_low must be <= init_high");
  if (!(eviction_.count_decay > 0.0 && eviction_.count_decay <= 1.0))
    throw std::invalid_argument("EmbeddingCache: EvictionOptions::count_decay must be in (0, 1]");
  if (!(eviction_.l2_threshold >= 0.0f))
    throw std::invalid_argument("EmbeddingCache: EvictionOptions::l2_threshold must be >= 0");
  if (eviction_.slice_slots == 0) throw std::invalid_argument("EmbeddingCache: EvictionOptions::slice_slots must be >= 1");
  elem_bytes_ = storage_ == RowStorage::kFloat32 ? 4 : 2;
  block_bytes_ = (kHeaderBytes + dim_ * elem_bytes_ + 7) / 8 * 8;
  if (!clock_) {
    const auto start = std::chrono::steady_clock::now();
    clock_ = [start] {
      return static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start).count());
    };
  }
  shards_ = std::make_unique<Shard[]>(shard_count_);
  FixedBlockPool::Options po;
  po.chunk_bytes = o.pool_chunk_bytes;
  po.huge_pages = o.huge_pages;
  po.detect_misuse = false;  // the cache frees only rows it just found in its own table
  std::size_t initial_slots = 16;
  if (o.expected_rows != 0) {
    const std::size_t per_shard = o.expected_rows / shard_count_ + 1;
    initial_slots = std::max<std::size_t>(16, std::bit_ceil(per_shard * kMaxLoadDen / kMaxLoadNum + 1));
  }
  for (std::size_t i = 0; i < shard_count_; ++i) {
    shards_[i].pool = std::make_unique<FixedBlockPool>(block_bytes_, 8, po);
    shards_[i].huge_pages = o.huge_pages;
    shards_[i].slots = SlotTable(initial_slots, o.huge_pages);
    shards_[i].publish();
  }
  if (eviction_.background) evictor_ = std::thread([this] { evictor_loop(); });
}

EmbeddingCache::~EmbeddingCache() {
  if (evictor_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(bg_mu_);
      bg_stop_ = true;
    }
    bg_cv_.notify_all();
    evictor_.join();
  }
}

void EmbeddingCache::group(std::span<const std::int64_t> ids, std::vector<std::uint32_t>& order,
                           std::vector<std::uint32_t>& starts, std::vector<std::uint64_t>& hashes) const {
  const std::size_t n = ids.size();
  hashes.resize(n);
  starts.assign(shard_count_ + 1, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t h = mix(ids[i]);
    hashes[i] = h;
    ++starts[shard_of(h) + 1];
  }
  for (std::size_t s = 0; s < shard_count_; ++s) starts[s + 1] += starts[s];
  order.resize(n);
  thread_local std::vector<std::uint32_t> cursor;
  cursor.assign(starts.begin(), starts.end() - 1);
  for (std::size_t i = 0; i < n; ++i) order[cursor[shard_of(hashes[i])]++] = static_cast<std::uint32_t>(i);
}

// Inline: the batch loops of set() and import_rows() run it once per row.
inline void EmbeddingCache::write_row(RowHeader* row, const float* values) const noexcept {
  std::byte* dst = reinterpret_cast<std::byte*>(row) + kHeaderBytes;
  switch (storage_) {
    case RowStorage::kFloat32:
      std::memcpy(dst, values, dim_ * sizeof(float));
      break;
    case RowStorage::kFloat16:
      for (std::size_t j = 0; j < dim_; ++j) {
        const std::uint16_t v = float_to_half(values[j]);
        std::memcpy(dst + 2 * j, &v, 2);
      }
      break;
    case RowStorage::kBFloat16:
      for (std::size_t j = 0; j < dim_; ++j) {
        const std::uint16_t v = float_to_bf16(values[j]);
        std::memcpy(dst + 2 * j, &v, 2);
      }
      break;
  }
}

void EmbeddingCache::read_row(const RowHeader* row, float* out) const noexcept {
  const std::byte* src = reinterpret_cast<const std::byte*>(row) + kHeaderBytes;
  switch (storage_) {
    case RowStorage::kFloat32:
      std::memcpy(out, src, dim_ * sizeof(float));
      break;
    case RowStorage::kFloat16:
      for (std::size_t j = 0; j < dim_; ++j) {
        std::uint16_t v;
        std::memcpy(&v, src + 2 * j, 2);
        out[j] = half_to_float(v);
      }
      break;
    case RowStorage::kBFloat16:
      for (std::size_t j = 0; j < dim_; ++j) {
        std::uint16_t v;
        std::memcpy(&v, src + 2 * j, 2);
        out[j] = bf16_to_float(v);
      }
      break;
  }
}

void EmbeddingCache::init_row(std::int64_t id, float* out) const noexcept {
  if (initializer_ == RowInitializer::kZeros) {
    std::fill(out, out + dim_, 0.0f);
    return;
  }
  std::uint64_t state = mix64(seed_ ^ mix(id));
  const float span = init_high_ - init_low_;
  for (std::size_t j = 0; j < dim_; ++j) {
    state += 0x9E3779B97F4A7C15ull;
    const float u = static_cast<float>(mix64(state) >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    out[j] = init_low_ + span * u;
  }
}

float EmbeddingCache::row_norm(const RowHeader* row) const noexcept {
  thread_local std::vector<float> tmp;
  tmp.resize(dim_);
  read_row(row, tmp.data());
  double sum = 0;
  for (float v : tmp) sum += static_cast<double>(v) * static_cast<double>(v);
  return static_cast<float>(std::sqrt(sum));
}

// One probe: a new id goes into the empty slot that ended the search (unless the table grows).
inline RowHeader* EmbeddingCache::upsert_locked(Shard& s, std::int64_t id, std::uint64_t h, bool& inserted) {
  std::size_t i = s.probe(id, h);
  if (s.slots[i].row != nullptr) {
    inserted = false;
    return s.slots[i].row;
  }
  if (over_max_load(s.size + 1, s.slots.size())) {
    s.grow();
    i = s.probe(id, h);
  }
  auto* row = static_cast<RowHeader*>(s.pool->allocate_block());
  if (row == nullptr) throw std::bad_alloc();
  row->key = id;
  row->last_access = 0;
  row->count = 0;
  // New rows carry the round bit of the latest round, so the next round visits them.
  row->flags = (rounds_started_.load(std::memory_order_relaxed) & 1) ? kRoundBit : 0;
  s.slots[i] = Slot{id, row};
  ++s.size;
  inserted = true;
  return row;
}

bool EmbeddingCache::set_in_shard(Shard& s, std::span<const std::uint32_t> positions,
                                  std::span<const std::int64_t> ids, const std::uint64_t* hashes,
                                  std::span<const float> rows, const RowHeader* headers, std::uint32_t now_s,
                                  bool try_only) {
  std::unique_lock<std::shared_mutex> lk(s.mu, std::defer_lock);
  if (!lock_shard(lk, try_only)) return false;
  // The counters move with the rows, under the lock, also when a block cannot be allocated
  // (std::bad_alloc leaves this scope): metrics() reads a shard under its shared lock and
  // always sees inserts == rows + erased + evictions. Destroyed before `lk` releases the lock.
  struct Publish {
    Shard& s;
    std::uint64_t inserts = 0, updates = 0;
    ~Publish() {
      s.inserts.fetch_add(inserts, std::memory_order_relaxed);
      s.updates.fetch_add(updates, std::memory_order_relaxed);
      s.publish();
    }
  } counted{s};
  const std::size_t n = positions.size();
  s.prefetch_first_slots(hashes, positions.data(), n);
  for (std::size_t k = 0; k < n; ++k) {
    if (k + Shard::kSlotAhead < n) s.prefetch_slot(hashes[positions[k + Shard::kSlotAhead]]);
    if (k + Shard::kRowAhead < n) {
      const std::uint32_t ahead = positions[k + Shard::kRowAhead];
      s.prefetch_row(ids[ahead], hashes[ahead], block_bytes_);
    }
    const std::uint32_t pos = positions[k];
    const std::int64_t id = ids[pos];
    bool inserted = false;
    RowHeader* row = upsert_locked(s, id, hashes[pos], inserted);
    if (headers != nullptr) {
      row->last_access = headers[pos].last_access;
      row->count = headers[pos].count;
      row->flags = static_cast<std::uint16_t>((row->flags & kRoundBit) | (headers[pos].flags & kRowUserFlagsMask));
    } else {
      row->last_access = now_s;
      if (row->count != 0xffff) ++row->count;
    }
    write_row(row, rows.data() + static_cast<std::size_t>(pos) * dim_);
    inserted ? ++counted.inserts : ++counted.updates;
  }
  return true;
}

void EmbeddingCache::set(std::span<const std::int64_t> ids, std::span<const float> rows) {
  if (rows.size() != ids.size() * dim_)
    throw std::invalid_argument("EmbeddingCache::set: rows.size() must be ids.size() * dim (" +
                                std::to_string(ids.size() * dim_) + "), got " + std::to_string(rows.size()));
  thread_local std::vector<std::uint32_t> order, starts;
  thread_local std::vector<std::uint64_t> hashes;
  group(ids, order, starts, hashes);
  const std::uint32_t t = now();
  visit_batch_shards(shard_count_, starts, [&](std::size_t sh, bool try_only) {
    return set_in_shard(shards_[sh],
                        std::span<const std::uint32_t>(order.data() + starts[sh], starts[sh + 1] - starts[sh]), ids,
                        hashes.data(), rows, nullptr, t, try_only);
  });
  if (eviction_.background && (eviction_.max_rows != 0 || eviction_.max_bytes != 0) && triggered())
    request_eviction();
}

std::size_t EmbeddingCache::get(std::span<const std::int64_t> ids, std::span<float> out,
                                std::span<std::uint8_t> hits) {
  if (out.size() != ids.size() * dim_)
    throw std::invalid_argument("EmbeddingCache::get: out.size() must be ids.size() * dim (" +
                                std::to_string(ids.size() * dim_) + "), got " + std::to_string(out.size()));
  if (!hits.empty() && hits.size() != ids.size())
    throw std::invalid_argument("EmbeddingCache::get: hits must be empty or ids.size() long");
  thread_local std::vector<std::uint32_t> order, starts, missed;
  thread_local std::vector<std::uint64_t> hashes;
  group(ids, order, starts, hashes);
  missed.clear();
  const std::uint32_t t = now();
  std::size_t total_hits = 0;
  visit_batch_shards(shard_count_, starts, [&](std::size_t sh, bool try_only) {
    Shard& s = shards_[sh];
    std::uint64_t h = 0, m = 0;
    {
      std::shared_lock<std::shared_mutex> lk(s.mu, std::defer_lock);
      if (!lock_shard(lk, try_only)) return false;
      const std::uint32_t end = starts[sh + 1];
      s.prefetch_first_slots(hashes.data(), order.data() + starts[sh], end - starts[sh]);
      for (std::uint32_t k = starts[sh]; k < end; ++k) {
        if (k + Shard::kSlotAhead < end) s.prefetch_slot(hashes[order[k + Shard::kSlotAhead]]);
        if (k + Shard::kRowAhead < end) {
          const std::uint32_t ahead = order[k + Shard::kRowAhead];
          s.prefetch_row(ids[ahead], hashes[ahead], block_bytes_);
        }
        const std::uint32_t pos = order[k];
        const std::size_t i = s.find(ids[pos], hashes[pos]);
        if (i == SIZE_MAX) {
          missed.push_back(pos);
          ++m;
          if (!hits.empty()) hits[pos] = 0;
          continue;
        }
        RowHeader* row = s.slots[i].row;
        read_row(row, out.data() + static_cast<std::size_t>(pos) * dim_);
        touch(row, t);
        if (!hits.empty()) hits[pos] = 1;
        ++h;
      }
    }
    s.hits.fetch_add(h, std::memory_order_relaxed);
    s.misses.fetch_add(m, std::memory_order_relaxed);
    total_hits += h;
    return true;
  });
  for (std::uint32_t pos : missed) init_row(ids[pos], out.data() + static_cast<std::size_t>(pos) * dim_);
  return total_hits;
}

std::size_t EmbeddingCache::erase(std::span<const std::int64_t> ids) {
  thread_local std::vector<std::uint32_t> order, starts;
  thread_local std::vector<std::uint64_t> hashes;
  group(ids, order, starts, hashes);
  std::size_t removed = 0;
  visit_batch_shards(shard_count_, starts, [&](std::size_t sh, bool try_only) {
    Shard& s = shards_[sh];
    std::uint64_t r = 0;
    {
      std::unique_lock<std::shared_mutex> lk(s.mu, std::defer_lock);
      if (!lock_shard(lk, try_only)) return false;
      for (std::uint32_t k = starts[sh]; k < starts[sh + 1]; ++k) {
        const std::uint32_t pos = order[k];
        const std::size_t i = s.find(ids[pos], hashes[pos]);
        if (i == SIZE_MAX) continue;
        RowHeader* row = s.slots[i].row;
        // Erase from the table before freeing the block (FBGEMM #5954's use-after-free).
        s.erase_at(i);
        s.pool->deallocate_block(row);
        ++r;
      }
      s.erased.fetch_add(r, std::memory_order_relaxed);  // with the rows, under the lock
      s.publish();
    }
    removed += r;
    return true;
  });
  return removed;
}

bool EmbeddingCache::contains(std::int64_t id) const {
  const std::uint64_t h = mix(id);
  const Shard& s = shards_[shard_of(h)];
  std::shared_lock<std::shared_mutex> lk(s.mu);
  return s.find(id, h) != SIZE_MAX;
}

std::size_t EmbeddingCache::size() const noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) n += shards_[i].rows.load(std::memory_order_relaxed);
  return n;
}

void EmbeddingCache::for_each_row(const std::function<void(const RowHeader&, std::span<const float>)>& fn) const {
  std::vector<float> tmp(dim_);
  for (std::size_t sh = 0; sh < shard_count_; ++sh) {
    const Shard& s = shards_[sh];
    std::shared_lock<std::shared_mutex> lk(s.mu);
    for (const Slot& slot : s.slots) {
      if (slot.row == nullptr) continue;
      const RowHeader h = snapshot(slot.row);
      read_row(slot.row, tmp.data());
      fn(h, std::span<const float>(tmp));
    }
  }
}

void EmbeddingCache::export_rows(std::vector<RowHeader>& headers, std::vector<float>& values) const {
  for_each_row([&](const RowHeader& h, std::span<const float> v) {
    headers.push_back(h);
    values.insert(values.end(), v.begin(), v.end());
  });
}

void EmbeddingCache::import_rows(std::span<const RowHeader> headers, std::span<const float> values) {
  if (values.size() != headers.size() * dim_)
    throw std::invalid_argument("EmbeddingCache::import_rows: values.size() must be headers.size() * dim");
  std::vector<std::int64_t> ids(headers.size());
  for (std::size_t i = 0; i < headers.size(); ++i) ids[i] = headers[i].key;
  thread_local std::vector<std::uint32_t> order, starts;
  thread_local std::vector<std::uint64_t> hashes;
  group(ids, order, starts, hashes);
  visit_batch_shards(shard_count_, starts, [&](std::size_t sh, bool try_only) {
    return set_in_shard(shards_[sh],
                        std::span<const std::uint32_t>(order.data() + starts[sh], starts[sh + 1] - starts[sh]), ids,
                        hashes.data(), values, headers.data(), 0, try_only);
  });
}

std::size_t EmbeddingCache::evict_round() {
  const EvictionPolicy policy = eviction_.policy;
  std::lock_guard<std::mutex> round_guard(round_mu_);
  const std::uint64_t round = rounds_started_.fetch_add(1, std::memory_order_relaxed) + 1;
  const std::uint16_t bit = (round & 1) ? kRoundBit : 0;
  const std::uint32_t t = now();
  const bool uses_ttl = policy == EvictionPolicy::kTtl || policy == EvictionPolicy::kTtlAndCount;
  const bool uses_count = policy == EvictionPolicy::kCount || policy == EvictionPolicy::kTtlAndCount;
  std::size_t evicted_total = 0;
  for (std::size_t sh = 0; sh < shard_count_ && policy != EvictionPolicy::kNone; ++sh) {
    Shard& s = shards_[sh];
    std::size_t pos = 0;
    for (;;) {
      std::unique_lock<std::shared_mutex> lk(s.mu);  // one slice per lock hold
      const std::size_t cap = s.slots.size();
      if (pos >= cap) break;
      const std::size_t end = std::min(cap, pos + eviction_.slice_slots);
      std::uint64_t evicted = 0;
      std::size_t i = pos;
      while (i < end) {
        RowHeader* row = s.slots[i].row;
        if (row == nullptr || (row->flags & kRoundBit) == bit) {
          ++i;
          continue;
        }
        row->flags = static_cast<std::uint16_t>((row->flags & kRowUserFlagsMask) | bit);
        bool victim = true;
        if (uses_count) {
          row->count = static_cast<std::uint16_t>(std::floor(row->count * eviction_.count_decay));
          victim = victim && row->count < eviction_.count_threshold;
        }
        if (uses_ttl) {
          const std::uint32_t age = t >= row->last_access ? t - row->last_access : 0;
          victim = victim && eviction_.ttl_seconds != 0 && age > eviction_.ttl_seconds;
        }
        if (policy == EvictionPolicy::kL2Norm) victim = row_norm(row) < eviction_.l2_threshold;
        if (victim) {
          s.erase_at(i);  // a later row may shift into slot i: examine it next
          s.pool->deallocate_block(row);
          ++evicted;
        } else {
          ++i;
        }
      }
      pos = end;
      s.evictions.fetch_add(evicted, std::memory_order_relaxed);  // with the rows, under the lock
      s.publish();
      evicted_total += evicted;
    }
    if (eviction_.release_memory) {
      std::unique_lock<std::shared_mutex> lk(s.mu);
      s.pool->release_empty_chunks();
      s.publish();
    }
  }
  eviction_rounds_.fetch_add(1, std::memory_order_relaxed);
  return evicted_total;
}

std::size_t EmbeddingCache::evict_now() { return evict_round(); }

bool EmbeddingCache::triggered() const noexcept {
  if (eviction_.max_rows == 0 && eviction_.max_bytes == 0) return false;
  std::size_t rows = 0, held = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    rows += shards_[i].rows.load(std::memory_order_relaxed);
    held += shards_[i].held.load(std::memory_order_relaxed);
  }
  return (eviction_.max_rows != 0 && rows > eviction_.max_rows) ||
         (eviction_.max_bytes != 0 && held > eviction_.max_bytes);
}

bool EmbeddingCache::maybe_evict() {
  if (!triggered()) return false;
  if (eviction_.background) {
    request_eviction();
  } else {
    evict_round();
  }
  return true;
}

void EmbeddingCache::request_eviction() {
  if (!eviction_.background) return;
  {
    std::lock_guard<std::mutex> lk(bg_mu_);
    if (bg_requested_) return;
    bg_requested_ = true;
  }
  bg_cv_.notify_all();
}

void EmbeddingCache::wait_for_eviction() {
  if (!eviction_.background) return;
  std::unique_lock<std::mutex> lk(bg_mu_);
  bg_idle_cv_.wait(lk, [&] { return bg_stop_ || (!bg_requested_ && !bg_running_); });
}

void EmbeddingCache::evictor_loop() {
  std::unique_lock<std::mutex> lk(bg_mu_);
  while (!bg_stop_) {
    bg_cv_.wait_for(lk, eviction_.check_interval, [&] { return bg_stop_ || bg_requested_; });
    if (bg_stop_) break;
    const bool run = bg_requested_ || triggered();
    if (run) {
      bg_running_ = true;
      bg_requested_ = false;
      lk.unlock();
      evict_round();
      lk.lock();
      bg_running_ = false;
    }
    bg_idle_cv_.notify_all();
  }
  bg_idle_cv_.notify_all();
}

EmbeddingCacheMetrics EmbeddingCache::metrics() const noexcept {
  EmbeddingCacheMetrics m;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    const Shard& s = shards_[i];
    // Every counter below but hits/misses changes under the exclusive lock together with the
    // rows: under the shared lock a shard's figures are one consistent snapshot.
    std::shared_lock<std::shared_mutex> lk(s.mu);
    m.rows += s.rows.load(std::memory_order_relaxed);
    m.bytes_held += s.held.load(std::memory_order_relaxed);
    m.hits += s.hits.load(std::memory_order_relaxed);
    m.misses += s.misses.load(std::memory_order_relaxed);
    m.inserts += s.inserts.load(std::memory_order_relaxed);
    m.updates += s.updates.load(std::memory_order_relaxed);
    m.erased += s.erased.load(std::memory_order_relaxed);
    m.evictions += s.evictions.load(std::memory_order_relaxed);
  }
  m.bytes_used = m.rows * (block_bytes_ + sizeof(Slot));
  m.eviction_rounds = eviction_rounds_.load(std::memory_order_relaxed);
  return m;
}

bool EmbeddingCache::validate() const {
  for (std::size_t sh = 0; sh < shard_count_; ++sh) {
    const Shard& s = shards_[sh];
    std::shared_lock<std::shared_mutex> lk(s.mu);
    if (s.slots.empty() || !std::has_single_bit(s.slots.size())) return false;
    if (over_max_load(s.size, s.slots.size())) return false;
    std::size_t n = 0;
    for (std::size_t i = 0; i < s.slots.size(); ++i) {
      const Slot& slot = s.slots[i];
      if (slot.row == nullptr) continue;
      ++n;
      if (slot.row->key != slot.key) return false;
      const std::uint64_t h = mix(slot.key);
      if (shard_of(h) != sh) return false;
      if (s.find(slot.key, h) != i) return false;  // reachable from home, and no duplicate before it
      if (!s.pool->owns(slot.row)) return false;
    }
    if (n != s.size) return false;
    if (s.rows.load(std::memory_order_relaxed) != s.size) return false;
    if (!s.pool->validate()) return false;
    if (s.pool->blocks_in_use() != s.size) return false;
  }
  return true;
}

}  // namespace kvmem
