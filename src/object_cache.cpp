// kvmem::ObjectCache implementation. The contract is in include/kvmem/object_cache.hpp; the
// design notes (why blocks, why shards, why refcounts rather than hazard pointers) are in
// docs/object_cache.md.
//
// LOCK ORDER (never taken in the other direction):
//   CacheState::mu (append) -> wash_mu -> store_mu
//   CacheState::mu (append) -> wash_mu -> Shard::lock (one at a time)
//   Shard::lock is never held while taking any other lock; store_mu is a leaf.
//
// BLOCK LIFE: Free -> Active (the cache's append target) -> Full (sealed) -> Retired -> Free.
//   refs = 1 owner reference while not Retired + one per ValueHandle + one per in-flight put.
//   Retire (exactly once, by CAS on the state word with its generation) unlinks the block's
//   entries from the map, then drops the owner reference; whoever drops the last reference
//   unmaps the memory and returns the handle to the free list.
//   A map node always points to a block that is not Retired-and-unlinked, because the retirer
//   unlinks under the shard locks and a put re-checks the state under its shard lock.

#include "kvmem/object_cache.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "kvmem/segmented_array.hpp"

namespace kvmem {
namespace detail {

namespace {

constexpr std::uint32_t kNil = 0xffffffffu;
constexpr std::uint64_t kStateMask = 0xff;
enum BlockState : std::uint64_t { kFree = 0, kActive = 1, kFull = 2, kRetired = 3, kReclaiming = 4 };
// Pins are spread over kRefStripes counters on separate cache lines, one per thread (round
// robin), so two threads reading values of the same block do not bounce one line.
constexpr std::uint32_t kRefStripes = 4;
std::atomic<std::uint32_t> g_next_stripe{0};
// The library is built position-independent, where a thread_local costs a __tls_get_addr call
// per access (general/local-dynamic model; with a dynamic initializer also a guard check).
// initial-exec makes it one %fs-relative load; a constant initializer removes the guard. (Most
// of the PIC cost of a get was the lost inlining, see find_in_chain; this is the smaller part.) (A dlopen'ed module, e.g. the Python binding, takes these
// 4 bytes from glibc's static TLS surplus, which exists for exactly this.)
constexpr std::uint32_t kNoStripe = 0xffffffffu;
[[gnu::tls_model("initial-exec")]] thread_local std::uint32_t t_stripe = kNoStripe;
inline std::uint32_t my_stripe() {
  std::uint32_t stripe = t_stripe;
  if (stripe == kNoStripe) [[unlikely]] {
    stripe = g_next_stripe.fetch_add(1, std::memory_order_relaxed) % kRefStripes;
    t_stripe = stripe;
  }
  return stripe;
}
constexpr std::size_t kPage = 4096;

__extension__ typedef unsigned __int128 U128;

inline std::uint64_t mum(std::uint64_t a, std::uint64_t b) {
  const U128 r = static_cast<U128>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}
inline std::uint64_t load64(const char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// 128-bit multiply-fold hash over 16-byte strides; keyed by the cache id so equal keys of
// different caches land in different buckets.
std::uint64_t hash_key(CacheId cache, std::string_view key) {
  constexpr std::uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull,
                          k2 = 0x8ebc6af09c88c6e3ull, k3 = 0x589965cc75374cc3ull;
  const char* p = key.data();
  std::size_t n = key.size();
  std::uint64_t h = (static_cast<std::uint64_t>(cache) + 1) * k0 ^ (n * k1);
  while (n >= 16) {
    h = mum(load64(p) ^ k1 ^ h, load64(p + 8) ^ k2);
    p += 16;
    n -= 16;
  }
  std::uint64_t a = 0, b = 0;
  if (n >= 8) {
    a = load64(p);
    std::memcpy(&b, p + 8, n - 8);
  } else {
    std::memcpy(&a, p, n);
  }
  h = mum(a ^ k3 ^ h, b ^ k1 ^ key.size());
  return mum(h ^ k2, k3);
}

inline std::size_t align8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

// Reader counts of the shard locks, grouped by stripe: stripe k holds one counter per shard,
// and only the threads of stripe k write it. A get therefore writes no line that a thread of
// another stripe writes (a single-word reader count put every reader's RMW on the shard's line,
// which bounced between cores when two threads read the same few hot keys: 1.42x from 1 to 2
// threads with 1,000 keys). 128-byte alignment keeps adjacent-line prefetch pairs apart.
struct alignas(128) ReaderStripe {
  std::atomic<std::uint32_t> count[ObjectCache::kShards];
};

// Reader-writer spin lock with striped reader counts (a "big-reader" lock): a read is one
// fetch_add and one fetch_sub on the caller's stripe counter plus a load of the writer word,
// which readers never write, so it stays shared in every core's cache. A writer claims the
// writer word first (readers that see it back off, so a stream of readers cannot starve it),
// then waits until every stripe's count for this shard is zero.
// Dekker handshake: the reader's increment and the writer's claim are seq_cst, as are the
// reader's check of the writer word and the writer's reads of the counts, so at least one of
// the two sees the other. Data visibility: unlock (release) -> reader's load of the writer
// word; a reader's release decrement -> the writer's count load.
class RwSpinLock {
 public:
  void attach(ReaderStripe* stripes, std::uint32_t shard) noexcept {
    stripes_ = stripes;
    shard_ = shard;
  }
  void lock_shared(std::uint32_t stripe) noexcept {
    std::atomic<std::uint32_t>& mine = stripes_[stripe].count[shard_];
    for (;;) {
      mine.fetch_add(1, std::memory_order_seq_cst);
      if (writer_.load(std::memory_order_seq_cst) == 0) return;
      mine.fetch_sub(1, std::memory_order_release);
      wait_while([&] { return writer_.load(std::memory_order_relaxed) != 0; });
    }
  }
  void unlock_shared(std::uint32_t stripe) noexcept {
    stripes_[stripe].count[shard_].fetch_sub(1, std::memory_order_release);
  }
  void lock() noexcept {
    for (;;) {
      if (writer_.exchange(1, std::memory_order_seq_cst) == 0) break;
      wait_while([&] { return writer_.load(std::memory_order_relaxed) != 0; });
    }
    for (std::uint32_t k = 0; k < kRefStripes; ++k) {
      const std::atomic<std::uint32_t>& c = stripes_[k].count[shard_];
      wait_while([&] { return c.load(std::memory_order_seq_cst) != 0; });
    }
  }
  void unlock() noexcept { writer_.store(0, std::memory_order_release); }

 private:
  template <class F>
  static void wait_while(F&& busy) noexcept {
    for (int spins = 0; busy(); ++spins) {
      if (spins >= 64) std::this_thread::yield();  // 2-core machines: let the holder run
    }
  }
  std::atomic<std::uint32_t> writer_{0};
  std::uint32_t shard_ = 0;
  ReaderStripe* stripes_ = nullptr;
};

struct SharedGuard {
  SharedGuard(RwSpinLock& l, std::uint32_t s) : lock(l), stripe(s) { lock.lock_shared(stripe); }
  ~SharedGuard() { lock.unlock_shared(stripe); }
  RwSpinLock& lock;
  std::uint32_t stripe;
};
struct ExclusiveGuard {
  explicit ExclusiveGuard(RwSpinLock& l) : lock(l) { lock.lock(); }
  ~ExclusiveGuard() { lock.unlock(); }
  RwSpinLock& lock;
};

}  // namespace

// Written under the owning shard's exclusive lock, read under its shared lock.
struct Node {
  std::uint64_t hash = 0;
  std::uint32_t next = kNil;
  std::uint32_t block = kNil;
  std::uint32_t offset = 0;
  std::uint32_t key_len = 0;
  std::uint32_t value_len = 0;
  // Gets since the entry was put or last rescued: a relaxed load+store (not an RMW) on a line
  // the get reads anyway; a lost increment only delays a rescue.
  std::atomic<std::uint32_t> hits{0};
};
static_assert(sizeof(Node) == 32);

struct alignas(64) RefStripe {
  std::atomic<std::int64_t> refs{0};   // pins taken on this stripe (+1 owner on stripe 0)
  std::atomic<std::uint64_t> hits{0};  // gets since the last score refresh
};

// 64 bytes of metadata (one line, read-mostly) + kRefStripes lines of pin counters.
struct alignas(64) OcBlock {
  std::atomic<std::uint64_t> state{0};  // generation << 8 | BlockState
  std::atomic<std::uint64_t> reserved{0};     // bump offset; advanced under the cache's mu
  std::atomic<std::uint64_t> committed{0};    // bytes fully written (release)
  std::atomic<std::uint32_t> live_entries{0}; // entries in the map or being put
  std::uint32_t index = kNil;                 // own position (set once under store_mu)
  // Set under store_mu when the block is allocated; published to readers through the cache
  // mutex / shard locks before any entry points here.
  char* memory = nullptr;
  std::uint32_t capacity = 0;
  std::uint32_t cache = 0;
  std::uint32_t next_free = kNil;  // store_mu
  std::atomic<std::uint32_t> seal_seq{0};  // seal order, tie-break among equal scores (wraps after 2^32 seals)
  double score = 0;                // store_mu (refreshed by the wash)
  RefStripe stripes[kRefStripes];

  [[nodiscard]] std::int64_t ref_sum() const noexcept {
    std::int64_t n = 0;
    for (const auto& st : stripes) n += st.refs.load(std::memory_order_seq_cst);
    return n;
  }
  std::uint64_t take_hits() noexcept {
    std::uint64_t n = 0;
    for (auto& st : stripes) n += st.hits.exchange(0, std::memory_order_relaxed);
    return n;
  }
};

static_assert(sizeof(OcBlock) == 64 * (1 + kRefStripes), "block handle: one metadata line + the pin stripes");

struct CacheState {
  std::mutex mu;  // append: active block and its bump offset
  std::string name;
  double priority = 1;
  std::size_t min_bytes = 0;
  std::size_t max_bytes = 0;
  std::uint32_t active = kNil;  // mu
  std::uint32_t rescue = kNil;  // wash_mu: where the wash moves hot entries of a victim block
  std::atomic<std::size_t> held{0};
  std::atomic<std::size_t> used{0};
  std::atomic<std::size_t> entries{0};
  std::atomic<std::size_t> blocks{0};
  std::atomic<std::uint64_t> hits{0};  // folded in from blocks at score refresh / retire
  std::atomic<std::uint64_t> misses{0};
  std::atomic<std::uint64_t> puts{0};
  std::atomic<std::uint64_t> failed_puts{0};
  std::atomic<std::uint64_t> evicted_blocks{0};
  std::atomic<std::uint64_t> evicted_entries{0};
};

struct alignas(64) Shard {
  RwSpinLock lock;
  std::uint32_t* buckets = nullptr;
  std::uint32_t bucket_count = 0;  // 0 or a power of two
  std::uint32_t count = 0;
  std::uint32_t free_nodes = kNil;
};

struct ObjectCacheCore {
  explicit ObjectCacheCore(const ObjectCache::Options& o);
  ~ObjectCacheCore();

  ObjectCache::Options opt;
  // Node hits only feed the rescue test (hits >= rescue_min_hits), so counting stops there.
  std::uint32_t hit_cap = 0;
  SegmentedArray<OcBlock> blocks{16};
  SegmentedArray<Node> nodes{256};
  SegmentedArray<CacheState> caches{16, 1u << 20};
  std::unique_ptr<Shard[]> shards;
  ReaderStripe readers[kRefStripes] = {};  // the shard locks' reader counts, by stripe
  std::atomic<std::uint32_t> cache_count{0};
  std::mutex registry_mu;
  std::size_t min_sum = 0;  // registry_mu

  std::mutex store_mu;
  std::uint32_t free_blocks = kNil;          // store_mu
  // One emptied block-sized mapping kept for the next block (store_mu): a cache that churns
  // through blocks then reuses faulted-in pages instead of paying mmap + page faults per block.
  // Its bytes stay charged in block_bytes; it is the first thing given back under pressure.
  char* spare = nullptr;
  std::atomic<std::size_t> spare_bytes{0};
  std::atomic<std::size_t> block_bytes{0};   // mapped value-block bytes
  std::atomic<std::size_t> live_blocks{0};
  std::atomic<std::size_t> bucket_bytes{0};
  std::atomic<std::size_t> live_nodes{0};
  std::atomic<std::size_t> scratch_bytes{0};
  std::atomic<std::uint64_t> seal_counter{0};

  std::mutex wash_mu;
  std::atomic<std::uint64_t> wash_rounds{0}, sync_washes{0}, blocks_washed{0}, blocks_emptied{0},
      blocks_allocated{0}, failed_puts{0};
  std::atomic<std::size_t> scratch_peak{0};
  std::atomic<std::uint64_t> entries_rescued{0}, bytes_rescued{0};
  std::vector<std::uint8_t> rescue_wanted;  // wash_mu: caches whose hot entries found no rescue room

  std::mutex bg_mu;
  std::condition_variable bg_cv;
  bool bg_stop = false;     // bg_mu
  bool bg_pending = false;  // bg_mu
  std::thread washer;

  // ---- helpers ----
  CacheState& cache_of(CacheId id) {
    if (id >= cache_count.load(std::memory_order_acquire)) {
      throw std::invalid_argument("ObjectCache: unknown CacheId " + std::to_string(id) +
                                  " (register_cache returns valid ids)");
    }
    return caches[id];
  }
  Shard& shard_of(std::uint64_t h) { return shards[h >> 58]; }
  std::size_t metadata_held() const {
    return nodes.held_bytes() + blocks.held_bytes() + caches.held_bytes() +
           bucket_bytes.load(std::memory_order_relaxed) + sizeof(Shard) * ObjectCache::kShards +
           sizeof(ObjectCacheCore);
  }
  std::size_t total_held() const { return block_bytes.load(std::memory_order_relaxed) + metadata_held(); }

  static std::size_t entry_bytes(std::size_t klen, std::size_t vlen) {
    return align8(ObjectCache::kEntryHeader + klen + vlen);
  }
  std::uint32_t find_in_chain(Shard& s, std::uint64_t h, CacheId id, std::string_view key,
                              std::uint32_t* prev_out);
  void unlink(Shard& s, std::uint64_t h, std::uint32_t idx, std::uint32_t prev);
  bool ensure_buckets_for(Shard& s, std::uint32_t count);
  void rehash(Shard& s, std::uint32_t new_count);
  std::uint32_t alloc_node(Shard& s);

  PutStatus put(CacheId id, std::string_view key, std::string_view value);
  std::optional<ValueHandle> get(CacheId id, std::string_view key);
  bool erase(CacheId id, std::string_view key);

  std::uint32_t alloc_block(CacheState& c, CacheId id, std::size_t size, PutStatus* status);
  std::uint32_t map_block(CacheState& c, CacheId id, std::size_t size, char* reuse = nullptr);
  bool drop_spare();
  bool rescue_reserve(CacheState& c, CacheId id, std::size_t bytes, std::uint32_t* block, std::uint64_t* off);
  bool open_rescue_block(CacheState& c, CacheId id);
  bool charge(std::size_t size);
  void seal(OcBlock& b);
  void release_entry(std::uint32_t block, std::size_t bytes, CacheState& c);
  bool retire(OcBlock& b, std::uint64_t expected_state, bool rescue = false);
  void unpin(OcBlock& b, std::uint32_t stripe) noexcept;
  void free_block(OcBlock& b) noexcept;
  std::size_t wash(std::size_t need, std::uint32_t only_cache, bool refresh);
  void notify_washer();
  void washer_loop();
  bool validate();
};

ObjectCacheCore::ObjectCacheCore(const ObjectCache::Options& o)
    : opt(o), hit_cap(o.rescue_hot ? std::min<std::uint32_t>(o.rescue_min_hits, 0xffffu) : 0) {
  if (!std::has_single_bit(o.block_size) || o.block_size < kPage || o.block_size > (std::size_t{1} << 30)) {
    throw std::invalid_argument("ObjectCache: block_size must be a power of two in [4 KiB, 1 GiB], got " +
                                std::to_string(o.block_size));
  }
  if (o.memory_limit < 2 * o.block_size) {
    throw std::invalid_argument("ObjectCache: memory_limit must be at least 2 * block_size (" +
                                std::to_string(2 * o.block_size) + "), got " + std::to_string(o.memory_limit));
  }
  if (!(o.low_watermark > 0 && o.low_watermark <= o.high_watermark && o.high_watermark <= 1)) {
    throw std::invalid_argument("ObjectCache: need 0 < low_watermark <= high_watermark <= 1");
  }
  if (!(o.score_decay >= 0 && o.score_decay < 1)) {
    throw std::invalid_argument("ObjectCache: score_decay must be in [0, 1)");
  }
  shards = std::make_unique<Shard[]>(ObjectCache::kShards);
  for (std::uint32_t i = 0; i < ObjectCache::kShards; ++i) shards[i].lock.attach(readers, i);
  if (opt.background_wash) washer = std::thread([this] { washer_loop(); });
}

ObjectCacheCore::~ObjectCacheCore() {
  if (washer.joinable()) {
    {
      std::lock_guard<std::mutex> lk(bg_mu);
      bg_stop = true;
    }
    bg_cv.notify_one();
    washer.join();
  }
  const std::size_t n = blocks.size();
  for (std::size_t i = 0; i < n; ++i) {
    OcBlock& b = blocks[i];
    const std::uint64_t st = b.state.load(std::memory_order_acquire) & kStateMask;
    if (st == kFree) continue;
    if (st == kRetired || b.ref_sum() != 1) {
      std::fprintf(stderr, "kvmem::ObjectCache destroyed while a ValueHandle still pins block %zu\n", i);
      std::abort();
    }
    ::munmap(b.memory, b.capacity);
  }
  for (std::size_t s = 0; s < ObjectCache::kShards; ++s) delete[] shards[s].buckets;
  if (spare != nullptr) ::munmap(spare, opt.block_size);
}

// ---- map ----------------------------------------------------------------------------------

// `inline` on the get path (find_in_chain, get, unpin): the library is compiled with -fPIC,
// where GCC treats a default-visibility function as interposable and will not inline it;
// measured 75 ns per get without, 54 ns with (64 B keys, 1,000 keys, one thread).
inline std::uint32_t ObjectCacheCore::find_in_chain(Shard& s, std::uint64_t h, CacheId id, std::string_view key,
                                             std::uint32_t* prev_out) {
  if (s.bucket_count == 0) return kNil;
  std::uint32_t prev = kNil;
  for (std::uint32_t idx = s.buckets[h & (s.bucket_count - 1)]; idx != kNil;) {
    const Node& n = nodes[idx];
    if (n.hash == h && n.key_len == key.size()) {
      const OcBlock& b = blocks[n.block];
      if (b.cache == id && std::memcmp(b.memory + n.offset + ObjectCache::kEntryHeader, key.data(), key.size()) == 0) {
        if (prev_out != nullptr) *prev_out = prev;
        return idx;
      }
    }
    prev = idx;
    idx = n.next;
  }
  return kNil;
}

void ObjectCacheCore::unlink(Shard& s, std::uint64_t h, std::uint32_t idx, std::uint32_t prev) {
  Node& n = nodes[idx];
  if (prev == kNil) {
    s.buckets[h & (s.bucket_count - 1)] = n.next;
  } else {
    nodes[prev].next = n.next;
  }
  n.next = s.free_nodes;
  n.block = kNil;
  s.free_nodes = idx;
  --s.count;
  live_nodes.fetch_sub(1, std::memory_order_relaxed);
  // Shrink when a shard holds fewer entries than 1/8 of its buckets, so idle hold follows use.
  if (s.bucket_count > 16 && s.count < s.bucket_count / 8) rehash(s, s.bucket_count / 2);
}

void ObjectCacheCore::rehash(Shard& s, std::uint32_t new_count) {
  auto* fresh = new (std::nothrow) std::uint32_t[new_count];
  if (fresh == nullptr) return;  // keep the old array: longer chains, still correct
  std::fill(fresh, fresh + new_count, kNil);
  for (std::uint32_t b = 0; b < s.bucket_count; ++b) {
    for (std::uint32_t idx = s.buckets[b]; idx != kNil;) {
      Node& n = nodes[idx];
      const std::uint32_t next = n.next;
      std::uint32_t& head = fresh[n.hash & (new_count - 1)];
      n.next = head;
      head = idx;
      idx = next;
    }
  }
  delete[] s.buckets;
  bucket_bytes.fetch_add(std::size_t{new_count} * 4, std::memory_order_relaxed);
  bucket_bytes.fetch_sub(std::size_t{s.bucket_count} * 4, std::memory_order_relaxed);
  s.buckets = fresh;
  s.bucket_count = new_count;
}

bool ObjectCacheCore::ensure_buckets_for(Shard& s, std::uint32_t count) {
  if (s.bucket_count == 0) {
    rehash(s, 16);
    return s.bucket_count != 0;
  }
  if (count > s.bucket_count && s.bucket_count < (1u << 30)) rehash(s, s.bucket_count * 2);
  return true;
}

std::uint32_t ObjectCacheCore::alloc_node(Shard& s) {
  if (s.free_nodes == kNil) {
    // Take nodes from the shared array eight at a time: one CAS per eight inserts.
    constexpr std::size_t kBatch = 8;
    auto first = nodes.grow(kBatch);
    if (!first) {
      auto one = nodes.grow(1);
      if (!one) return kNil;
      first = one;
      nodes[*first].next = kNil;
      s.free_nodes = static_cast<std::uint32_t>(*first);
    } else {
      for (std::size_t k = 0; k < kBatch; ++k) {
        nodes[*first + k].next = k + 1 < kBatch ? static_cast<std::uint32_t>(*first + k + 1) : kNil;
      }
      s.free_nodes = static_cast<std::uint32_t>(*first);
    }
  }
  const std::uint32_t idx = s.free_nodes;
  s.free_nodes = nodes[idx].next;
  live_nodes.fetch_add(1, std::memory_order_relaxed);
  return idx;
}

// ---- blocks -------------------------------------------------------------------------------

bool ObjectCacheCore::charge(std::size_t size) {
  const std::size_t meta = metadata_held();
  std::size_t cur = block_bytes.load(std::memory_order_relaxed);
  for (;;) {
    if (cur + size + meta > opt.memory_limit) return false;
    if (block_bytes.compare_exchange_weak(cur, cur + size, std::memory_order_relaxed)) return true;
  }
}

std::uint32_t ObjectCacheCore::alloc_block(CacheState& c, CacheId id, std::size_t size, PutStatus* status) {
  // Per-cache ceiling first: a cache at its max washes its own blocks.
  while (c.held.load(std::memory_order_relaxed) + size > c.max_bytes) {
    if (wash(c.held.load(std::memory_order_relaxed) + size - c.max_bytes, id, false) == 0) {
      // Retired blocks still pinned by handles count until released; nothing more to take.
      *status = PutStatus::kOverCacheMax;
      return kNil;
    }
  }
  // A block-sized request first takes the spare: already charged and already faulted in.
  if (size == opt.block_size) {
    char* mem = nullptr;
    {
      std::lock_guard<std::mutex> lk(store_mu);
      std::swap(mem, spare);
    }
    if (mem != nullptr) {
      spare_bytes.store(0, std::memory_order_relaxed);
      const std::uint32_t idx = map_block(c, id, size, mem);
      if (idx == kNil) *status = PutStatus::kNoMemory;
      return idx;
    }
  }
  while (!charge(size)) {
    if (drop_spare()) continue;  // give the spare back to the OS before evicting anything
    sync_washes.fetch_add(1, std::memory_order_relaxed);
    const std::size_t short_by = total_held() + size - std::min(opt.memory_limit, total_held() + size);
    if (wash(std::max(short_by, size), kNil, false) == 0) {
      *status = PutStatus::kNoMemory;
      return kNil;
    }
  }
  const std::uint32_t idx = map_block(c, id, size);
  if (idx == kNil) *status = PutStatus::kNoMemory;
  return idx;
}

// REQUIRES: `size` bytes already charged to block_bytes (released here on failure).
bool ObjectCacheCore::drop_spare() {
  char* mem = nullptr;
  {
    std::lock_guard<std::mutex> lk(store_mu);
    std::swap(mem, spare);
  }
  if (mem == nullptr) return false;
  spare_bytes.store(0, std::memory_order_relaxed);
  ::munmap(mem, opt.block_size);
  block_bytes.fetch_sub(opt.block_size, std::memory_order_relaxed);
  return true;
}

std::uint32_t ObjectCacheCore::map_block(CacheState& c, CacheId id, std::size_t size, char* reuse) {
  void* mem = reuse;
  if (mem == nullptr) mem = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    block_bytes.fetch_sub(size, std::memory_order_relaxed);
    return kNil;
  }
  std::uint32_t idx = kNil;
  {
    std::lock_guard<std::mutex> lk(store_mu);
    if (free_blocks != kNil) {
      idx = free_blocks;
      free_blocks = blocks[idx].next_free;
    } else if (auto g = blocks.grow(1)) {
      idx = static_cast<std::uint32_t>(*g);
      blocks[idx].index = idx;
    }
    if (idx != kNil) {
      OcBlock& b = blocks[idx];
      b.memory = static_cast<char*>(mem);
      b.capacity = static_cast<std::uint32_t>(size);
      b.cache = id;
      b.next_free = kNil;
      b.score = 0;
      b.reserved.store(0, std::memory_order_relaxed);
      b.committed.store(0, std::memory_order_relaxed);
      b.live_entries.store(0, std::memory_order_relaxed);
      b.take_hits();
      b.seal_seq.store(0, std::memory_order_relaxed);
      for (auto& st : b.stripes) st.refs.store(0, std::memory_order_relaxed);
      b.stripes[0].refs.store(1, std::memory_order_relaxed);  // the owner reference
      const std::uint64_t gen = (b.state.load(std::memory_order_relaxed) >> 8) + 1;
      b.state.store(gen << 8 | kActive, std::memory_order_release);
    }
  }
  if (idx == kNil) {
    ::munmap(mem, size);
    block_bytes.fetch_sub(size, std::memory_order_relaxed);
    return kNil;
  }
  live_blocks.fetch_add(1, std::memory_order_relaxed);
  blocks_allocated.fetch_add(1, std::memory_order_relaxed);
  c.held.fetch_add(size, std::memory_order_relaxed);
  c.blocks.fetch_add(1, std::memory_order_relaxed);
  if (opt.background_wash &&
      static_cast<double>(total_held()) > opt.high_watermark * static_cast<double>(opt.memory_limit)) {
    notify_washer();
  }
  return idx;
}

void ObjectCacheCore::seal(OcBlock& b) {
  b.seal_seq.store(static_cast<std::uint32_t>(seal_counter.fetch_add(1, std::memory_order_relaxed) + 1),
                   std::memory_order_relaxed);
  const std::uint64_t word = (b.state.load(std::memory_order_relaxed) & ~kStateMask) | kFull;
  b.state.store(word, std::memory_order_seq_cst);
  // Every entry erased while the block was active: return it now (erase saw kActive and left it).
  if (b.live_entries.load(std::memory_order_seq_cst) == 0 && retire(b, word)) {
    blocks_emptied.fetch_add(1, std::memory_order_relaxed);
  }
}

void ObjectCacheCore::release_entry(std::uint32_t block, std::size_t bytes, CacheState& c) {
  OcBlock& b = blocks[block];
  c.used.fetch_sub(bytes, std::memory_order_relaxed);
  if (b.live_entries.fetch_sub(1, std::memory_order_seq_cst) == 1) {
    const std::uint64_t word = b.state.load(std::memory_order_seq_cst);
    if ((word & kStateMask) == kFull && retire(b, word)) blocks_emptied.fetch_add(1, std::memory_order_relaxed);
  }
}

// Opens a fresh rescue block for cache c without washing (the caller is the wash). REQUIRES wash_mu.
bool ObjectCacheCore::open_rescue_block(CacheState& c, CacheId id) {
  if (c.held.load(std::memory_order_relaxed) + opt.block_size > c.max_bytes) return false;
  char* mem = nullptr;
  {
    std::lock_guard<std::mutex> lk(store_mu);
    std::swap(mem, spare);
  }
  if (mem != nullptr) {
    spare_bytes.store(0, std::memory_order_relaxed);  // already charged
  } else if (!charge(opt.block_size)) {
    return false;
  }
  const std::uint32_t idx = map_block(c, id, opt.block_size, mem);
  if (idx == kNil) return false;
  c.rescue = idx;
  return true;
}

// Reserves `bytes` in cache c's rescue block. REQUIRES wash_mu (the only writer of rescue blocks).
bool ObjectCacheCore::rescue_reserve(CacheState& c, CacheId id, std::size_t bytes, std::uint32_t* block,
                                     std::uint64_t* off) {
  if (bytes > opt.block_size / 4) return false;  // moving big values costs more than it saves
  if (c.rescue != kNil) {
    OcBlock& r = blocks[c.rescue];
    if (r.reserved.load(std::memory_order_relaxed) + bytes > r.capacity) {
      c.rescue = kNil;
      seal(r);
    }
  }
  if (c.rescue == kNil && !open_rescue_block(c, id)) return false;
  OcBlock& r = blocks[c.rescue];
  *block = c.rescue;
  *off = r.reserved.load(std::memory_order_relaxed);
  r.reserved.store(*off + bytes, std::memory_order_relaxed);
  r.live_entries.fetch_add(1, std::memory_order_seq_cst);
  return true;
}

// Exactly one caller wins the CAS Full -> Retired for a given generation; it unlinks whatever
// is still mapped into the block and drops the owner reference. With `rescue` (the wash), hot
// entries (node hits >= rescue_min_hits) are first copied into the cache's rescue block and
// their nodes repointed, up to half the block's capacity, so block-granular eviction does not
// throw hot values out with their cold neighbours.
bool ObjectCacheCore::retire(OcBlock& b, std::uint64_t expected_state, bool rescue) {
  if ((expected_state & kStateMask) != kFull) return false;
  const std::uint64_t retired = (expected_state & ~kStateMask) | kRetired;
  if (!b.state.compare_exchange_strong(expected_state, retired, std::memory_order_seq_cst)) return false;
  const CacheId id = b.cache;
  CacheState& c = caches[id];
  c.hits.fetch_add(b.take_hits(), std::memory_order_relaxed);
  if (b.live_entries.load(std::memory_order_seq_cst) != 0) {
    struct Item {
      std::uint64_t hash;
      std::uint32_t offset;
      std::uint32_t bytes;
      std::uint32_t new_block;  // kNil: not rescued
      std::uint64_t new_offset;
    };
    std::vector<Item> items, hot;
    const std::uint64_t end = b.committed.load(std::memory_order_acquire);
    for (std::uint64_t off = 0; off < end;) {
      std::uint64_t h;
      std::uint32_t lens[2];
      std::memcpy(&h, b.memory + off, 8);
      std::memcpy(lens, b.memory + off + 8, 8);
      const std::size_t bytes = entry_bytes(lens[0], lens[1]);
      items.push_back({h, static_cast<std::uint32_t>(off), static_cast<std::uint32_t>(bytes), kNil, 0});
      off += bytes;
    }
    const std::size_t scratch = items.capacity() * sizeof(Item);
    scratch_bytes.fetch_add(scratch, std::memory_order_relaxed);
    // Group the block's entries by shard so each shard lock is taken once per pass.
    std::sort(items.begin(), items.end(), [](const Item& x, const Item& y) { return (x.hash >> 58) < (y.hash >> 58); });
    std::size_t unlinked = 0, unlinked_bytes = 0, moved = 0, hot_bytes = 0;
    // Finds the node still pointing at (b, offset); kNil when erased or overwritten meanwhile.
    auto find_node = [&](Shard& s, const Item& it, std::uint32_t* prev_out) {
      if (s.bucket_count == 0) return kNil;
      std::uint32_t prev = kNil;
      for (std::uint32_t idx = s.buckets[it.hash & (s.bucket_count - 1)]; idx != kNil;) {
        const Node& n = nodes[idx];
        if (n.block == b.index && n.offset == it.offset) {
          *prev_out = prev;
          return idx;
        }
        prev = idx;
        idx = n.next;
      }
      return kNil;
    };
    // Pass 1: unlink cold entries; keep hot ones linked (readers still find them in b).
    for (std::size_t i = 0; i < items.size();) {
      Shard& s = shard_of(items[i].hash);
      ExclusiveGuard g(s.lock);
      for (; i < items.size() && &shard_of(items[i].hash) == &s; ++i) {
        std::uint32_t prev = kNil;
        const std::uint32_t idx = find_node(s, items[i], &prev);
        if (idx == kNil) continue;
        if (rescue && nodes[idx].hits.load(std::memory_order_relaxed) >= opt.rescue_min_hits &&
            hot_bytes + items[i].bytes <= b.capacity / 2) {
          hot.push_back(items[i]);
          hot_bytes += items[i].bytes;
          continue;
        }
        unlink(s, items[i].hash, idx, prev);
        ++unlinked;
        unlinked_bytes += items[i].bytes;
      }
    }
    if (!hot.empty()) {
      // Pass 2, no shard lock: copy hot entries into the rescue block.
      bool wanted = false;
      for (Item& it : hot) {
        if (rescue_reserve(c, id, it.bytes, &it.new_block, &it.new_offset)) {
          OcBlock& r = blocks[it.new_block];
          std::memcpy(r.memory + it.new_offset, b.memory + it.offset, it.bytes);
          r.committed.fetch_add(it.bytes, std::memory_order_release);
        } else {
          wanted = true;
        }
      }
      if (wanted && id < rescue_wanted.size()) rescue_wanted[id] = 1;
      // Pass 3: repoint the nodes that still point at b; a copy whose key was erased or
      // overwritten meanwhile is dead on arrival.
      for (std::size_t i = 0; i < hot.size();) {
        Shard& s = shard_of(hot[i].hash);
        std::vector<std::uint32_t> dead;
        {
          ExclusiveGuard g(s.lock);
          for (; i < hot.size() && &shard_of(hot[i].hash) == &s; ++i) {
            const Item& it = hot[i];
            std::uint32_t prev = kNil;
            const std::uint32_t idx = find_node(s, it, &prev);
            if (idx != kNil && it.new_block != kNil) {
              Node& n = nodes[idx];
              n.block = it.new_block;
              n.offset = static_cast<std::uint32_t>(it.new_offset);
              n.hits.store(0, std::memory_order_relaxed);
              ++moved;
            } else if (idx != kNil) {
              unlink(s, it.hash, idx, prev);
              ++unlinked;
              unlinked_bytes += it.bytes;
            } else if (it.new_block != kNil) {
              dead.push_back(it.new_block);
            }
          }
        }
        for (std::uint32_t blk : dead) {
          OcBlock& r = blocks[blk];
          if (r.live_entries.fetch_sub(1, std::memory_order_seq_cst) == 1) {
            const std::uint64_t word = r.state.load(std::memory_order_seq_cst);
            if ((word & kStateMask) == kFull && retire(r, word)) blocks_emptied.fetch_add(1, std::memory_order_relaxed);
          }
        }
      }
      entries_rescued.fetch_add(moved, std::memory_order_relaxed);
      std::size_t moved_bytes = 0;
      for (const Item& it : hot) moved_bytes += it.new_block != kNil ? it.bytes : 0;
      bytes_rescued.fetch_add(moved_bytes, std::memory_order_relaxed);
    }
    const std::size_t now = scratch_bytes.load(std::memory_order_relaxed) + hot.capacity() * sizeof(Item);
    std::size_t peak = scratch_peak.load(std::memory_order_relaxed);
    while (now > peak && !scratch_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    scratch_bytes.fetch_sub(scratch, std::memory_order_relaxed);
    if (unlinked + moved != 0) {
      b.live_entries.fetch_sub(static_cast<std::uint32_t>(unlinked + moved), std::memory_order_seq_cst);
    }
    if (unlinked != 0) {
      c.used.fetch_sub(unlinked_bytes, std::memory_order_relaxed);
      c.entries.fetch_sub(unlinked, std::memory_order_relaxed);
      c.evicted_entries.fetch_add(unlinked, std::memory_order_relaxed);
    }
  }
  unpin(b, 0);  // the owner reference
  return true;
}

// Drop one pin. Pins are only taken while the block is not yet unlinked (its owner reference
// is held), so once it is Retired and the owner reference is gone the stripes only fall. The
// decrement and the state check are seq_cst, as are the retirer's CAS to Retired, its owner
// drop and its stripe reads: whichever of the last unpinner and the retirer comes second sees
// every stripe at zero, and the CAS Retired -> Reclaiming makes exactly one of them free.
inline void ObjectCacheCore::unpin(OcBlock& b, std::uint32_t stripe) noexcept {
  b.stripes[stripe].refs.fetch_sub(1, std::memory_order_seq_cst);
  std::uint64_t word = b.state.load(std::memory_order_seq_cst);
  if ((word & kStateMask) != kRetired || b.ref_sum() != 0) return;
  const std::uint64_t claimed = (word & ~kStateMask) | kReclaiming;
  if (b.state.compare_exchange_strong(word, claimed, std::memory_order_seq_cst)) free_block(b);
}

void ObjectCacheCore::free_block(OcBlock& b) noexcept {
  CacheState& c = caches[b.cache];
  const std::size_t cap = b.capacity;
  c.held.fetch_sub(cap, std::memory_order_relaxed);
  c.blocks.fetch_sub(1, std::memory_order_relaxed);
  live_blocks.fetch_sub(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lk(store_mu);
  if (spare == nullptr && cap == opt.block_size) {
    spare = b.memory;
    spare_bytes.store(cap, std::memory_order_relaxed);
  } else {
    ::munmap(b.memory, cap);
    block_bytes.fetch_sub(cap, std::memory_order_relaxed);
  }
  b.memory = nullptr;
  b.capacity = 0;
  b.state.store(b.state.load(std::memory_order_relaxed) & ~kStateMask, std::memory_order_release);  // kFree
  b.next_free = free_blocks;
  free_blocks = b.index;
}

// Retires lowest-score full blocks until `need` bytes are retired (need == 0 with refresh:
// only refresh scores). only_cache != kNil restricts victims to one cache and ignores min_bytes
// of that cache's siblings (it is the cache's own max being enforced).
std::size_t ObjectCacheCore::wash(std::size_t need, std::uint32_t only_cache, bool refresh) {
  std::lock_guard<std::mutex> wl(wash_mu);
  struct Candidate {
    double score;
    std::uint64_t seal;
    std::uint64_t state;
    std::uint32_t index;
    std::uint32_t cache;
    std::size_t capacity;
  };
  std::vector<Candidate> cands;
  std::vector<std::size_t> projected;
  rescue_wanted.assign(cache_count.load(std::memory_order_acquire), 0);
  {
    std::lock_guard<std::mutex> lk(store_mu);
    const std::uint32_t ncache = cache_count.load(std::memory_order_acquire);
    projected.resize(ncache);
    for (std::uint32_t i = 0; i < ncache; ++i) projected[i] = caches[i].held.load(std::memory_order_relaxed);
    const std::size_t n = blocks.size();
    for (std::size_t i = 0; i < n; ++i) {
      OcBlock& b = blocks[i];
      const std::uint64_t st = b.state.load(std::memory_order_acquire);
      const std::uint64_t kind = st & kStateMask;
      if (kind != kActive && kind != kFull) continue;
      if (refresh) {
        const std::uint64_t h = b.take_hits();
        caches[b.cache].hits.fetch_add(h, std::memory_order_relaxed);
        b.score = opt.score_decay * b.score + static_cast<double>(h) * caches[b.cache].priority;
      }
      if (kind != kFull || need == 0) continue;
      if (only_cache != kNil && b.cache != only_cache) continue;
      // A put still copying into a sealed block: skip it this round.
      if (b.committed.load(std::memory_order_acquire) != b.reserved.load(std::memory_order_acquire)) continue;
      cands.push_back({b.score, b.seal_seq.load(std::memory_order_relaxed), st, b.index, b.cache, b.capacity});
    }
  }
  if (refresh) wash_rounds.fetch_add(1, std::memory_order_relaxed);
  const std::size_t scratch = cands.capacity() * sizeof(Candidate) + projected.capacity() * sizeof(std::size_t);
  scratch_bytes.fetch_add(scratch, std::memory_order_relaxed);
  std::size_t peak = scratch_peak.load(std::memory_order_relaxed);
  while (scratch > peak && !scratch_peak.compare_exchange_weak(peak, scratch, std::memory_order_relaxed)) {
  }
  std::sort(cands.begin(), cands.end(), [](const Candidate& x, const Candidate& y) {
    return x.score != y.score ? x.score < y.score : x.seal < y.seal;
  });
  std::size_t retired = 0;
  for (const Candidate& cand : cands) {
    if (retired >= need) break;
    const CacheState& c = caches[cand.cache];
    if (only_cache == kNil && projected[cand.cache] < c.min_bytes + cand.capacity) continue;
    if (retire(blocks[cand.index], cand.state, opt.rescue_hot)) {
      retired += cand.capacity;
      projected[cand.cache] -= std::min(projected[cand.cache], cand.capacity);
      blocks_washed.fetch_add(1, std::memory_order_relaxed);
      caches[cand.cache].evicted_blocks.fetch_add(1, std::memory_order_relaxed);
    }
  }
  scratch_bytes.fetch_sub(scratch, std::memory_order_relaxed);
  // Hot entries that found no rescue room this time (the budget was full until the victims
  // were freed): open the rescue block now, from the memory just returned.
  for (std::size_t i = 0; i < rescue_wanted.size(); ++i) {
    if (rescue_wanted[i] != 0 && caches[i].rescue == kNil) open_rescue_block(caches[i], static_cast<CacheId>(i));
  }
  return retired;
}

void ObjectCacheCore::notify_washer() {
  {
    std::lock_guard<std::mutex> lk(bg_mu);
    bg_pending = true;
  }
  bg_cv.notify_one();
}

void ObjectCacheCore::washer_loop() {
  std::unique_lock<std::mutex> lk(bg_mu);
  for (;;) {
    bg_cv.wait(lk, [&] { return bg_stop || bg_pending; });
    if (bg_stop) return;
    bg_pending = false;
    lk.unlock();
    const double limit = static_cast<double>(opt.memory_limit);
    const std::size_t held = total_held();
    const std::size_t low = static_cast<std::size_t>(opt.low_watermark * limit);
    wash(held > low ? held - low : 0, kNil, true);
    lk.lock();
  }
}

// ---- operations ---------------------------------------------------------------------------

PutStatus ObjectCacheCore::put(CacheId id, std::string_view key, std::string_view value) {
  CacheState& c = cache_of(id);
  if (key.size() > 0x7fffffffu || value.size() > 0xffffffffu ||
      entry_bytes(key.size(), value.size()) > opt.memory_limit / 2) {
    throw std::invalid_argument("ObjectCache::put: key " + std::to_string(key.size()) + " B + value " +
                                std::to_string(value.size()) + " B does not fit in memory_limit / 2 (" +
                                std::to_string(opt.memory_limit / 2) + " B)");
  }
  const std::uint64_t h = hash_key(id, key);
  const std::size_t bytes = entry_bytes(key.size(), value.size());
  c.puts.fetch_add(1, std::memory_order_relaxed);
  PutStatus status = PutStatus::kStored;
  const std::uint32_t stripe = my_stripe();
  std::uint32_t bidx = kNil;
  std::uint64_t off = 0;
  {
    std::lock_guard<std::mutex> lk(c.mu);
    if (bytes > opt.block_size) {
      // A value larger than a block gets a block of its own, sealed at once.
      const std::size_t size = (bytes + kPage - 1) & ~(kPage - 1);
      bidx = alloc_block(c, id, size, &status);
      if (bidx != kNil) {
        OcBlock& b = blocks[bidx];
        b.reserved.store(bytes, std::memory_order_relaxed);
        b.live_entries.fetch_add(1, std::memory_order_seq_cst);
        b.stripes[stripe].refs.fetch_add(1, std::memory_order_relaxed);
        seal(b);
      }
    } else {
      if (c.active == kNil ||
          blocks[c.active].reserved.load(std::memory_order_relaxed) + bytes > blocks[c.active].capacity) {
        // Seal first: the old block becomes washable, so a cache at its max can make room.
        if (c.active != kNil) {
          const std::uint32_t old = c.active;
          c.active = kNil;
          seal(blocks[old]);
        }
        c.active = alloc_block(c, id, opt.block_size, &status);
      }
      if (status == PutStatus::kStored) {
        bidx = c.active;
        OcBlock& b = blocks[bidx];
        off = b.reserved.load(std::memory_order_relaxed);
        b.reserved.store(off + bytes, std::memory_order_relaxed);
        b.live_entries.fetch_add(1, std::memory_order_seq_cst);
        b.stripes[stripe].refs.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  if (status != PutStatus::kStored) {
    c.failed_puts.fetch_add(1, std::memory_order_relaxed);
    failed_puts.fetch_add(1, std::memory_order_relaxed);
    return status;
  }
  OcBlock& b = blocks[bidx];
  char* dst = b.memory + off;
  const std::uint32_t lens[2] = {static_cast<std::uint32_t>(key.size()), static_cast<std::uint32_t>(value.size())};
  std::memcpy(dst, &h, 8);
  std::memcpy(dst + 8, lens, 8);
  if (!key.empty()) std::memcpy(dst + ObjectCache::kEntryHeader, key.data(), key.size());
  if (!value.empty()) std::memcpy(dst + ObjectCache::kEntryHeader + key.size(), value.data(), value.size());
  c.used.fetch_add(bytes, std::memory_order_relaxed);
  b.committed.fetch_add(bytes, std::memory_order_release);

  bool inserted = false;
  bool node_failed = false;
  std::uint32_t old_block = kNil;
  std::size_t old_bytes = 0;
  {
    Shard& s = shard_of(h);
    ExclusiveGuard g(s.lock);
    // A wash that retired this block after we reserved has already unlinked its entries; the
    // new entry must not be linked into a block on its way out.
    if ((b.state.load(std::memory_order_seq_cst) & kStateMask) != kRetired) {
      std::uint32_t prev = kNil;
      const std::uint32_t found = find_in_chain(s, h, id, key, &prev);
      if (found != kNil) {
        Node& n = nodes[found];
        old_block = n.block;
        old_bytes = entry_bytes(n.key_len, n.value_len);
        n.block = bidx;
        n.offset = static_cast<std::uint32_t>(off);
        n.value_len = lens[1];
        inserted = true;
      } else if (ensure_buckets_for(s, s.count + 1)) {
        const std::uint32_t idx = alloc_node(s);
        if (idx != kNil) {
          Node& n = nodes[idx];
          n.hash = h;
          n.block = bidx;
          n.offset = static_cast<std::uint32_t>(off);
          n.key_len = lens[0];
          n.value_len = lens[1];
          n.hits.store(0, std::memory_order_relaxed);
          std::uint32_t& head = s.buckets[h & (s.bucket_count - 1)];
          n.next = head;
          head = idx;
          ++s.count;
          inserted = true;
        } else {
          node_failed = true;
        }
      } else {
        node_failed = true;
      }
    }
  }
  if (!inserted) {
    // Dropped: the block was retired under us (the value counts as stored and evicted), or
    // no memory was left for a map node.
    if (!node_failed) {
      c.evicted_entries.fetch_add(1, std::memory_order_relaxed);
    } else {
      status = PutStatus::kNoMemory;
      c.failed_puts.fetch_add(1, std::memory_order_relaxed);
      failed_puts.fetch_add(1, std::memory_order_relaxed);
    }
    release_entry(bidx, bytes, c);
  } else if (old_block != kNil) {
    release_entry(old_block, old_bytes, c);
  } else {
    c.entries.fetch_add(1, std::memory_order_relaxed);
  }
  unpin(b, stripe);
  return status;
}

inline std::optional<ValueHandle> ObjectCacheCore::get(CacheId id, std::string_view key) {
  if (id >= cache_count.load(std::memory_order_acquire)) (void)cache_of(id);  // throws
  const std::uint64_t h = hash_key(id, key);
  Shard& s = shard_of(h);
  // Every line a hit writes belongs to this thread's stripe (the shard's reader count, the
  // block's pin and hit counters); the node's hit count is written only until it reaches the
  // rescue threshold, so hot keys read by several threads do not bounce their node lines.
  const std::uint32_t stripe = my_stripe();
  {
    SharedGuard g(s.lock, stripe);
    const std::uint32_t idx = find_in_chain(s, h, id, key, nullptr);
    if (idx != kNil) {
      Node& n = nodes[idx];
      OcBlock& b = blocks[n.block];
      const std::uint32_t seen = n.hits.load(std::memory_order_relaxed);
      if (seen < hit_cap) n.hits.store(seen + 1, std::memory_order_relaxed);
      // Safe: the node is linked, so the block's owner reference is still held (the retirer
      // unlinks under this shard's exclusive lock before dropping it).
      RefStripe& st = b.stripes[stripe];
      st.refs.fetch_add(1, std::memory_order_relaxed);
      // Score input, not a ledger: a load+store instead of an RMW saves one locked instruction
      // per get; two threads sharing a stripe may lose an increment.
      st.hits.store(st.hits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return ValueHandle(this, &b, stripe, b.memory + n.offset + ObjectCache::kEntryHeader + n.key_len, n.value_len);
    }
  }
  caches[id].misses.fetch_add(1, std::memory_order_relaxed);
  return std::nullopt;
}

bool ObjectCacheCore::erase(CacheId id, std::string_view key) {
  CacheState& c = cache_of(id);
  const std::uint64_t h = hash_key(id, key);
  Shard& s = shard_of(h);
  std::uint32_t block = kNil;
  std::size_t bytes = 0;
  {
    ExclusiveGuard g(s.lock);
    std::uint32_t prev = kNil;
    const std::uint32_t idx = find_in_chain(s, h, id, key, &prev);
    if (idx == kNil) return false;
    const Node& n = nodes[idx];
    block = n.block;
    bytes = entry_bytes(n.key_len, n.value_len);
    unlink(s, h, idx, prev);
  }
  c.entries.fetch_sub(1, std::memory_order_relaxed);
  release_entry(block, bytes, c);
  return true;
}

// ---- validate -----------------------------------------------------------------------------

bool ObjectCacheCore::validate() {
  // The background wash (a thread the caller does not control) is held off for the whole walk:
  // the shards are visited one at a time, and a wash round between two of them would make
  // the totals disagree. Lock order: wash_mu, then each Shard::lock, then store_mu.
  std::lock_guard<std::mutex> wash_guard(wash_mu);
  const std::uint32_t ncache = cache_count.load(std::memory_order_acquire);
  std::vector<std::size_t> used(ncache, 0), entries(ncache, 0), held(ncache, 0), nblocks(ncache, 0);
  const std::size_t nb = blocks.size();
  std::vector<std::uint32_t> live(nb, 0);
  std::size_t node_count = 0, bucket_total = 0;
  for (std::size_t si = 0; si < ObjectCache::kShards; ++si) {
    Shard& s = shards[si];
    ExclusiveGuard g(s.lock);
    bucket_total += std::size_t{s.bucket_count} * 4;
    if (s.bucket_count != 0 && !std::has_single_bit(s.bucket_count)) return false;
    std::uint32_t count = 0;
    for (std::uint32_t bi = 0; bi < s.bucket_count; ++bi) {
      for (std::uint32_t idx = s.buckets[bi]; idx != kNil; idx = nodes[idx].next) {
        if (idx >= nodes.size() || ++count > s.count) return false;
        const Node& n = nodes[idx];
        if ((n.hash & (s.bucket_count - 1)) != bi || (n.hash >> 58) != si) return false;
        if (n.block >= nb) return false;
        const OcBlock& b = blocks[n.block];
        const std::uint64_t st = b.state.load(std::memory_order_acquire) & kStateMask;
        if (st != kActive && st != kFull) return false;
        const std::size_t bytes = entry_bytes(n.key_len, n.value_len);
        if (n.offset + bytes > b.committed.load(std::memory_order_acquire)) return false;
        std::uint64_t h;
        std::uint32_t lens[2];
        std::memcpy(&h, b.memory + n.offset, 8);
        std::memcpy(lens, b.memory + n.offset + 8, 8);
        if (h != n.hash || lens[0] != n.key_len || lens[1] != n.value_len) return false;
        const std::string_view key(b.memory + n.offset + ObjectCache::kEntryHeader, n.key_len);
        if (hash_key(b.cache, key) != n.hash) return false;
        ++live[n.block];
        used[b.cache] += bytes;
        ++entries[b.cache];
      }
    }
    if (count != s.count) return false;
    node_count += count;
    std::uint32_t free_count = 0;
    for (std::uint32_t idx = s.free_nodes; idx != kNil; idx = nodes[idx].next) {
      if (idx >= nodes.size() || ++free_count > nodes.size()) return false;
    }
  }
  if (node_count != live_nodes.load() || bucket_total != bucket_bytes.load()) return false;
  std::lock_guard<std::mutex> lk(store_mu);
  std::size_t mapped = 0, nlive = 0;
  for (std::size_t i = 0; i < nb; ++i) {
    const OcBlock& b = blocks[i];
    if (b.index != i) return false;
    const std::uint64_t st = b.state.load(std::memory_order_acquire) & kStateMask;
    if (st == kFree) {
      if (live[i] != 0 || b.memory != nullptr) return false;
      continue;
    }
    if (b.cache >= ncache || b.memory == nullptr) return false;
    if (b.reserved.load() > b.capacity || b.committed.load() != b.reserved.load()) return false;
    if (st != kRetired && b.live_entries.load() != live[i]) return false;
    if (st != kRetired && b.ref_sum() < 1) return false;
    if (st == kReclaiming) return false;
    mapped += b.capacity;
    ++nlive;
    held[b.cache] += b.capacity;
    ++nblocks[b.cache];
    if (st == kActive && caches[b.cache].active != i && caches[b.cache].rescue != i) return false;
  }
  std::size_t free_count = 0;
  for (std::uint32_t idx = free_blocks; idx != kNil; idx = blocks[idx].next_free) {
    if (idx >= nb || (blocks[idx].state.load() & kStateMask) != kFree || ++free_count > nb) return false;
  }
  if (spare != nullptr) mapped += opt.block_size;
  if (free_count + nlive != nb || mapped != block_bytes.load() || nlive != live_blocks.load()) return false;
  for (std::uint32_t i = 0; i < ncache; ++i) {
    const CacheState& c = caches[i];
    if (c.used.load() != used[i] || c.entries.load() != entries[i] || c.held.load() != held[i] ||
        c.blocks.load() != nblocks[i]) {
      return false;
    }
  }
  return blocks.validate() && nodes.validate() && caches.validate();
}

}  // namespace detail

// ---- public surface -----------------------------------------------------------------------

const char* to_string(PutStatus status) noexcept {
  switch (status) {
    case PutStatus::kStored:
      return "stored";
    case PutStatus::kNoMemory:
      return "no memory: memory_limit reached and every block is active, pinned by a handle or under a min_bytes floor";
    case PutStatus::kOverCacheMax:
      return "cache at max_bytes: all of its blocks are active or pinned by handles";
  }
  return "unknown";
}

ValueHandle::ValueHandle(ValueHandle&& other) noexcept
    : core_(other.core_), block_(other.block_), stripe_(other.stripe_), data_(other.data_), size_(other.size_) {
  other.core_ = nullptr;
  other.block_ = nullptr;
  other.data_ = nullptr;
  other.size_ = 0;
}

ValueHandle& ValueHandle::operator=(ValueHandle&& other) noexcept {
  if (this != &other) {
    reset();
    core_ = other.core_;
    block_ = other.block_;
    stripe_ = other.stripe_;
    data_ = other.data_;
    size_ = other.size_;
    other.core_ = nullptr;
    other.block_ = nullptr;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void ValueHandle::reset() noexcept {
  if (block_ != nullptr) core_->unpin(*block_, stripe_);
  core_ = nullptr;
  block_ = nullptr;
  data_ = nullptr;
  size_ = 0;
}

MemoryUsage MemoryReport::metadata() const noexcept {
  MemoryUsage m;
  for (const MemoryUsage* u : {&map_buckets, &map_nodes, &block_handles, &wash_scratch, &fixed}) {
    m.used += u->used;
    m.held += u->held;
  }
  return m;
}

MemoryUsage MemoryReport::total() const noexcept {
  MemoryUsage m = metadata();
  m.used += value_blocks.used;
  m.held += value_blocks.held;
  return m;
}

ObjectCache::ObjectCache() : ObjectCache(Options{}) {}
ObjectCache::ObjectCache(const Options& options) : core_(std::make_unique<detail::ObjectCacheCore>(options)) {}
ObjectCache::~ObjectCache() = default;

CacheId ObjectCache::register_cache(std::string_view name, double priority, std::size_t min_bytes,
                                    std::size_t max_bytes) {
  auto& core = *core_;
  if (name.empty()) throw std::invalid_argument("ObjectCache::register_cache: name must not be empty");
  if (!(priority > 0)) throw std::invalid_argument("ObjectCache::register_cache: priority must be > 0");
  if (max_bytes < core.opt.block_size || min_bytes > max_bytes) {
    throw std::invalid_argument("ObjectCache::register_cache: need block_size (" + std::to_string(core.opt.block_size) +
                                ") <= max_bytes and min_bytes <= max_bytes");
  }
  std::lock_guard<std::mutex> lk(core.registry_mu);
  const std::uint32_t n = core.cache_count.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < n; ++i) {
    if (core.caches[i].name == name) {
      throw std::invalid_argument("ObjectCache::register_cache: a cache named '" + std::string(name) +
                                  "' is already registered");
    }
  }
  if (core.min_sum + min_bytes > core.opt.memory_limit / 2) {
    throw std::invalid_argument("ObjectCache::register_cache: the sum of min_bytes must stay <= memory_limit / 2");
  }
  auto idx = core.caches.grow(1);
  if (!idx) throw std::invalid_argument("ObjectCache::register_cache: too many caches");
  detail::CacheState& c = core.caches[*idx];
  c.name = std::string(name);
  c.priority = priority;
  c.min_bytes = min_bytes;
  c.max_bytes = max_bytes;
  core.min_sum += min_bytes;
  core.cache_count.store(static_cast<std::uint32_t>(*idx + 1), std::memory_order_release);
  return static_cast<CacheId>(*idx);
}

PutStatus ObjectCache::put(CacheId cache, std::string_view key, std::string_view value) {
  return core_->put(cache, key, value);
}
std::optional<ValueHandle> ObjectCache::get(CacheId cache, std::string_view key) { return core_->get(cache, key); }
bool ObjectCache::erase(CacheId cache, std::string_view key) { return core_->erase(cache, key); }

std::size_t ObjectCache::wash_now() {
  auto& core = *core_;
  const double limit = static_cast<double>(core.opt.memory_limit);
  const std::size_t held = core.total_held();
  std::size_t need = 0;
  if (static_cast<double>(held) > core.opt.high_watermark * limit) {
    need = held - static_cast<std::size_t>(core.opt.low_watermark * limit);
  }
  return core.wash(need, detail::kNil, true);
}

std::size_t ObjectCache::evict_bytes(std::size_t bytes) { return core_->wash(bytes, detail::kNil, false); }

std::size_t ObjectCache::held_bytes() const noexcept { return core_->total_held(); }
std::size_t ObjectCache::entry_count() const noexcept { return core_->live_nodes.load(std::memory_order_relaxed); }
std::size_t ObjectCache::cache_count() const noexcept { return core_->cache_count.load(std::memory_order_acquire); }
const ObjectCache::Options& ObjectCache::options() const noexcept { return core_->opt; }

MemoryReport ObjectCache::memory_report() const {
  auto& core = *core_;
  MemoryReport r;
  const std::size_t bucket_bytes = core.bucket_bytes.load(std::memory_order_relaxed);
  std::size_t entries = core.live_nodes.load(std::memory_order_relaxed);
  r.map_buckets = {std::min(bucket_bytes, entries * 4), bucket_bytes};
  r.map_nodes = {entries * sizeof(detail::Node), core.nodes.held_bytes()};
  r.block_handles = {core.live_blocks.load(std::memory_order_relaxed) * sizeof(detail::OcBlock), core.blocks.held_bytes()};
  const std::size_t scratch = core.scratch_bytes.load(std::memory_order_relaxed);
  r.wash_scratch = {scratch, scratch};
  const std::size_t fixed = sizeof(detail::Shard) * kShards + sizeof(detail::ObjectCacheCore) + sizeof(ObjectCache);
  const std::uint32_t n = core.cache_count.load(std::memory_order_acquire);
  r.fixed = {fixed + n * sizeof(detail::CacheState), fixed + core.caches.held_bytes()};
  for (std::uint32_t i = 0; i < n; ++i) {
    detail::CacheState& c = core.caches[i];
    CacheReport cr;
    cr.id = i;
    cr.name = c.name;
    cr.priority = c.priority;
    cr.min_bytes = c.min_bytes;
    cr.max_bytes = c.max_bytes;
    cr.values = {c.used.load(std::memory_order_relaxed), c.held.load(std::memory_order_relaxed)};
    cr.entries = c.entries.load(std::memory_order_relaxed);
    cr.nodes = {cr.entries * sizeof(detail::Node), cr.entries * sizeof(detail::Node)};
    cr.blocks = c.blocks.load(std::memory_order_relaxed);
    cr.hits = c.hits.load(std::memory_order_relaxed);
    cr.misses = c.misses.load(std::memory_order_relaxed);
    cr.puts = c.puts.load(std::memory_order_relaxed);
    cr.failed_puts = c.failed_puts.load(std::memory_order_relaxed);
    cr.evicted_blocks = c.evicted_blocks.load(std::memory_order_relaxed);
    cr.evicted_entries = c.evicted_entries.load(std::memory_order_relaxed);
    r.value_blocks.used += cr.values.used;
    r.value_blocks.held += cr.values.held;
    r.caches.push_back(std::move(cr));
  }
  r.value_blocks.held += core.spare_bytes.load(std::memory_order_relaxed);
  return r;
}

ObjectCacheStats ObjectCache::stats() const noexcept {
  auto& core = *core_;
  ObjectCacheStats s;
  s.wash_rounds = core.wash_rounds.load(std::memory_order_relaxed);
  s.sync_washes = core.sync_washes.load(std::memory_order_relaxed);
  s.blocks_washed = core.blocks_washed.load(std::memory_order_relaxed);
  s.blocks_emptied = core.blocks_emptied.load(std::memory_order_relaxed);
  s.blocks_allocated = core.blocks_allocated.load(std::memory_order_relaxed);
  s.failed_puts = core.failed_puts.load(std::memory_order_relaxed);
  s.wash_scratch_peak = core.scratch_peak.load(std::memory_order_relaxed);
  s.entries_rescued = core.entries_rescued.load(std::memory_order_relaxed);
  s.bytes_rescued = core.bytes_rescued.load(std::memory_order_relaxed);
  return s;
}

bool ObjectCache::validate() const { return core_->validate(); }

}  // namespace kvmem
