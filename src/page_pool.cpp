// kvmem::PagePool. The contract is in include/kvmem/page_pool.hpp; docs/page_pool.md has the
// design notes. Two rules shape this file:
//  - Owner-thread batches check every id before changing anything (kThrow), so a UsageError
//    leaves the pool exactly as it was; under kCountIgnore bad ids are skipped one by one.
//  - Deferred work is only moved between owner-side queues by collect(); no page state
//    changes until drain(), so collecting at any moment never changes a decision.
#include "kvmem/detail/hash.hpp"
#include "kvmem/page_pool.hpp"

#include <algorithm>
#include <bit>
#include <limits>
#include <new>
#include <stdexcept>
#include <utility>

#include "kvmem/error.hpp"

namespace kvmem {

namespace {

using detail::mix64;

std::string page_str(PageId id) { return "page " + std::to_string(id); }

}  // namespace

// ---- BlockHash ------------------------------------------------------------------------------

BlockHash BlockHash::from_u64(std::uint64_t value) {
  BlockHash h;
  h.words_[0] = value;
  h.size_ = 8;
  return h;
}

BlockHash BlockHash::from_bytes(std::string_view digest) {
  if (digest.size() != 32) {
    throw std::invalid_argument("BlockHash::from_bytes: digest must be exactly 32 bytes (got " +
                                std::to_string(digest.size()) + "); use from_u64 for 64-bit hashes");
  }
  BlockHash h;
  std::memcpy(h.words_.data(), digest.data(), 32);
  h.size_ = 32;
  return h;
}

std::size_t BlockHash::hash_value() const {
  // A digest is already uniform; 64-bit engine hashes may not be (sequential test values).
  std::uint64_t x = words_[0] ^ (words_[1] * 0x9e3779b97f4a7c15ull) ^ (words_[2] << 1) ^
                    (words_[3] >> 1) ^ size_;
  return static_cast<std::size_t>(mix64(x));
}

// ---- construction ---------------------------------------------------------------------------

PagePool::PagePool(std::uint32_t num_pages, Options options)
    : capacity_(num_pages), options_(std::move(options)) {
  if (num_pages == 0 || num_pages >= kNoHash) {
    throw std::invalid_argument("PagePool: num_pages must be in [1, 2^32 - 2] (got " +
                                std::to_string(num_pages) + ")");
  }
  meta_.assign(std::size_t{capacity_} + 1, PageMeta{});  // + the LRU sentinel
  meta_[capacity_].prev = meta_[capacity_].next = capacity_;
  free_.resize(capacity_);
  for (std::uint32_t i = 0; i < capacity_; ++i) free_[i] = capacity_ - 1 - i;
  free_top_ = capacity_;
  if (options_.index_reserve > 0) {
    index_.reserve(options_.index_reserve);
    hash_slab_.reserve(options_.index_reserve);
    hash_slab_free_.reserve(options_.index_reserve);
  }
}

PagePool::~PagePool() {
  discard_deferred();
  for (std::size_t c = 0; c < item_chunk_count_; ++c) {
    ::operator delete[](item_chunks_[c].load(std::memory_order_relaxed),
                        std::align_val_t{alignof(Item)});
  }
}

// ---- helpers --------------------------------------------------------------------------------

void PagePool::misuse(const std::string& what) {
  ++counters_.misuse;
  if (options_.misuse == MisusePolicy::kThrow) throw UsageError("PagePool: " + what);
}

void PagePool::check_id(PageId id) const {
  if (id >= capacity_) {
    throw std::invalid_argument("PagePool: " + page_str(id) + " is out of range (capacity " +
                                std::to_string(capacity_) + ")");
  }
}

void PagePool::emit(PrefixEvent::Kind kind, const BlockHash& hash, PageId page) {
  if (options_.on_event) options_.on_event(PrefixEvent{kind, hash, page});
}

void PagePool::lru_push_back(PageId id) {
  const std::uint32_t s = capacity_;
  const std::uint32_t last = meta_[s].prev;
  meta_[id].prev = last;
  meta_[id].next = s;
  meta_[last].next = id;
  meta_[s].prev = id;
  ++lru_size_;
}

void PagePool::lru_push_front(PageId id) {
  const std::uint32_t s = capacity_;
  const std::uint32_t first = meta_[s].next;
  meta_[id].next = first;
  meta_[id].prev = s;
  meta_[first].prev = id;
  meta_[s].next = id;
  ++lru_size_;
}

void PagePool::lru_remove(PageId id) {
  const std::uint32_t p = meta_[id].prev;
  const std::uint32_t n = meta_[id].next;
  meta_[p].next = n;
  meta_[n].prev = p;
  --lru_size_;
}

PageId PagePool::lru_pop_front() {
  const PageId id = meta_[capacity_].next;
  lru_remove(id);
  return id;
}

void PagePool::unhash(PageId id, bool emit_event) {
  const std::uint32_t slot = meta_[id].hash_slot;
  const BlockHash hash = hash_slab_[slot];
  index_.erase(hash);
  hash_slab_free_.push_back(slot);
  meta_[id].hash_slot = kNoHash;
  if (emit_event) emit(PrefixEvent::Kind::kRemoved, hash, id);
}

void PagePool::take(std::size_t n, PageId* out,
                    std::vector<std::pair<PageId, BlockHash>>* evicted) {
  const std::size_t from_stack = std::min<std::size_t>(n, free_top_);
  for (std::size_t i = 0; i < from_stack; ++i) {
    const PageId id = free_[--free_top_];
    out[i] = id;
    meta_[id].state = kAllocated;
    meta_[id].refcount = 1;
  }
  for (std::size_t i = from_stack; i < n; ++i) {
    const PageId id = lru_pop_front();
    if (evicted != nullptr) evicted->emplace_back(id, hash_slab_[meta_[id].hash_slot]);
    unhash(id, true);
    ++counters_.evictions;
    out[i] = id;
    meta_[id].state = kAllocated;
    meta_[id].refcount = 1;
  }
}

// meta_[id].refcount has just reached 0 on an allocated page.
void PagePool::drop_ref(PageId id) {
  if (meta_[id].hash_slot != kNoHash) {
    meta_[id].state = kCached;
    lru_push_back(id);
  } else {
    meta_[id].state = kFree;
    free_[free_top_++] = id;
  }
}

// ---- allocation -----------------------------------------------------------------------------

// The inline alloc_into() handles the common case (enough pages on the free stack).
bool PagePool::alloc_into_slow(std::span<PageId> out) {
  if (out.size() > available()) {
    ++counters_.failed_allocs;
    return false;
  }
  take(out.size(), out.data(), nullptr);
  return true;
}

std::optional<std::vector<PageId>> PagePool::alloc(std::size_t n) {
  if (n > available()) {
    ++counters_.failed_allocs;
    return std::nullopt;
  }
  std::vector<PageId> ids(n);
  take(n, ids.data(), nullptr);
  return ids;
}

const char* PagePool::free_problem(PageId id) const {
  if (id >= capacity_) return nullptr;  // reported as std::invalid_argument
  switch (meta_[id].state) {
    case kFree: return "free of a page that is not allocated (double free or stale id)";
    case kCached: return "free of a cached page with no reference (double free)";
    case kReserved: return "free of a reserved page (commit or abort its reservation)";
    default: break;
  }
  if (meta_[id].refcount > 1) return "free of a shared page (refcount > 1): use release()";
  return "double free within one batch";
}

// Undoes drop_ref(id) for the page that drop_ref handled last (LIFO), for batch rollback.
void PagePool::undo_drop(PageId id) {
  if (meta_[id].state == kCached) {
    lru_remove(id);
  } else {
    --free_top_;  // id is on top: pushes are undone in reverse order
  }
  meta_[id].state = kAllocated;
}

void PagePool::reject_batch(std::span<const PageId> ids, std::size_t bad, const char* what,
                            bool release_semantics) {
  // Roll back ids[0..bad) in reverse so the pool is exactly as before the call.
  for (std::size_t j = bad; j-- > 0;) {
    const PageId id = ids[j];
    if (meta_[id].state != kAllocated) undo_drop(id);
    if (release_semantics) {
      ++meta_[id].refcount;
    } else {
      meta_[id].refcount = 1;
    }
  }
  check_id(ids[bad]);  // out of range: std::invalid_argument
  ++counters_.misuse;
  throw UsageError("PagePool: " + std::string(what) + ": " + page_str(ids[bad]));
}

// One pass; a bad id rolls back the ids before it (kThrow) or is skipped (kCountIgnore).
void PagePool::check_ids(std::span<const PageId> ids) const {
  for (const PageId id : ids) check_id(id);
}

void PagePool::free_bad(std::span<const PageId> ids, std::size_t i) {
  const PageId id = ids[i];
  if (options_.misuse == MisusePolicy::kThrow || id >= capacity_) {
    reject_batch(ids, i, free_problem(id), false);
  }
  ++counters_.misuse;
}

void PagePool::park_cached(PageId id) {
  meta_[id].state = kCached;
  lru_push_back(id);
}

// ---- sharing --------------------------------------------------------------------------------

void PagePool::retain(std::span<const PageId> ids) {
  // Check first: a retain has no duplicate problem, and undoing a removal from the middle
  // of the LRU would need the old position.
  for (const PageId id : ids) {
    if (id >= capacity_ || (meta_[id].state != kAllocated && meta_[id].state != kCached)) [[unlikely]] {
      check_id(id);
      if (options_.misuse == MisusePolicy::kThrow) {
        misuse("retain of a page that is neither allocated nor cached: " + page_str(id));
      }
    }
  }
  for (const PageId id : ids) {
    if (meta_[id].state == kCached) {
      lru_remove(id);
      meta_[id].state = kAllocated;
    } else if (meta_[id].state != kAllocated) [[unlikely]] {
      ++counters_.misuse;  // kCountIgnore only
      continue;
    }
    ++meta_[id].refcount;
  }
}

void PagePool::release(std::span<const PageId> ids) {
  if (options_.misuse == MisusePolicy::kCountIgnore) {
    // Skipped ids cannot be rolled back, so bad arguments are found before any change.
    for (const PageId id : ids) check_id(id);
  }
  const std::size_t n = ids.size();
  for (std::size_t i = 0; i < n; ++i) {
    const PageId id = ids[i];
    if (id >= capacity_ || meta_[id].state != kAllocated) [[unlikely]] {
      if (options_.misuse == MisusePolicy::kThrow || id >= capacity_) {
        reject_batch(ids, i,
                     id < capacity_ && meta_[id].state == kReserved
                         ? "release of a reserved page"
                         : "release of a page with refcount 0",
                     true);
      }
      ++counters_.misuse;
      continue;
    }
    if (--meta_[id].refcount == 0) drop_ref(id);
  }
}

std::uint32_t PagePool::refcount(PageId id) const {
  check_id(id);
  return meta_[id].refcount;
}

// ---- prefix index ---------------------------------------------------------------------------

bool PagePool::publish(const BlockHash& hash, PageId page) {
  check_id(page);
  if (hash.size() == 0) throw std::invalid_argument("PagePool::publish: the hash is unset");
  if (meta_[page].state != kAllocated) {
    misuse("publish of a page that is not allocated: " + page_str(page));
    return false;
  }
  if (meta_[page].hash_slot != kNoHash) {
    if (hash_slab_[meta_[page].hash_slot] == hash) return false;
    misuse("publish of a page that already carries another hash: " + page_str(page));
    return false;
  }
  auto [it, inserted] = index_.try_emplace(hash, page);
  if (!inserted) return false;
  std::uint32_t slot;
  if (!hash_slab_free_.empty()) {
    slot = hash_slab_free_.back();
    hash_slab_free_.pop_back();
    hash_slab_[slot] = hash;
  } else {
    slot = static_cast<std::uint32_t>(hash_slab_.size());
    hash_slab_.push_back(hash);
  }
  meta_[page].hash_slot = slot;
  emit(PrefixEvent::Kind::kStored, hash, page);
  return true;
}

std::vector<PageId> PagePool::match_prefix(std::span<const BlockHash> chain) {
  std::vector<PageId> pages;
  for (const BlockHash& h : chain) {
    auto it = index_.find(h);
    if (it == index_.end()) break;
    const PageId id = it->second;
    if (meta_[id].state == kCached) {
      lru_remove(id);
      meta_[id].state = kAllocated;
    }
    ++meta_[id].refcount;
    pages.push_back(id);
  }
  return pages;
}

std::size_t PagePool::peek_prefix(std::span<const BlockHash> chain) const {
  std::size_t n = 0;
  while (n < chain.size() && index_.count(chain[n]) != 0) ++n;
  return n;
}

std::optional<BlockHash> PagePool::hash_of(PageId id) const {
  check_id(id);
  if (meta_[id].hash_slot == kNoHash) return std::nullopt;
  return hash_slab_[meta_[id].hash_slot];
}

// ---- reservations ---------------------------------------------------------------------------

std::optional<ReservationToken> PagePool::reserve(std::size_t n) {
  if (n > available()) {
    ++counters_.failed_allocs;
    return std::nullopt;
  }
  Reservation r;
  r.pages.resize(n);
  r.from_stack = std::min<std::size_t>(n, free_top_);
  take(n, r.pages.data(), &r.evicted);
  for (const PageId id : r.pages) {
    meta_[id].state = kReserved;
    meta_[id].refcount = 0;
  }
  reserved_pages_ += n;
  const ReservationToken token{next_reservation_++};
  reservations_.emplace(token.id, std::move(r));
  return token;
}

std::vector<PageId> PagePool::commit(ReservationToken token) {
  auto it = reservations_.find(token.id);
  if (it == reservations_.end()) {
    misuse("commit of an unknown, resolved or pre-reset reservation " + std::to_string(token.id));
    return {};
  }
  std::vector<PageId> pages = std::move(it->second.pages);
  reservations_.erase(it);
  for (const PageId id : pages) {
    meta_[id].state = kAllocated;
    meta_[id].refcount = 1;
  }
  reserved_pages_ -= pages.size();
  return pages;
}

void PagePool::abort(ReservationToken token) {
  auto it = reservations_.find(token.id);
  if (it == reservations_.end()) {
    misuse("abort of an unknown, resolved or pre-reset reservation " + std::to_string(token.id));
    return;
  }
  Reservation r = std::move(it->second);
  reservations_.erase(it);
  reserved_pages_ -= r.pages.size();
  // Undo take() in reverse: LRU pages back to the front (latest taken first), then stack
  // pages back on top, so the pool is as before when nothing happened in between.
  for (std::size_t k = r.evicted.size(); k-- > 0;) {
    const auto& [id, hash] = r.evicted[k];
    meta_[id].refcount = 0;
    auto [pos, inserted] = index_.try_emplace(hash, id);
    if (!inserted) {  // the hash was published again meanwhile: the page comes back bare
      meta_[id].state = kFree;
      free_[free_top_++] = id;
      continue;
    }
    std::uint32_t slot;
    if (!hash_slab_free_.empty()) {
      slot = hash_slab_free_.back();
      hash_slab_free_.pop_back();
      hash_slab_[slot] = hash;
    } else {
      slot = static_cast<std::uint32_t>(hash_slab_.size());
      hash_slab_.push_back(hash);
    }
    meta_[id].hash_slot = slot;
    meta_[id].state = kCached;
    lru_push_front(id);
    emit(PrefixEvent::Kind::kStored, hash, id);
  }
  for (std::size_t k = r.from_stack; k-- > 0;) {
    const PageId id = r.pages[k];
    meta_[id].refcount = 0;
    meta_[id].state = kFree;
    free_[free_top_++] = id;
  }
}

// ---- deferred releases ----------------------------------------------------------------------

PagePool::Item* PagePool::make_item(std::span<const PageId> ids) {
  if (ids.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw std::invalid_argument("PagePool: release_deferred of more than 2^32-1 ids in one call");
  }
  Item* item = ids.size() <= kCachedItemIds ? pop_cached_item() : nullptr;
  if (item == nullptr) {
    void* raw = ::operator new(sizeof(Item) + ids.size() * sizeof(PageId));
    item = new (raw) Item{nullptr, 0, 0, 0, 0, false};
  }
  item->count = static_cast<std::uint32_t>(ids.size());
  if (!ids.empty()) std::memcpy(item->ids(), ids.data(), ids.size() * sizeof(PageId));
  return item;
}

// A chunk is its items followed by their free-list links: the links live apart so that the
// owner, handing items back, writes only the link lines and leaves the item lines it just read
// clean for the producer that takes them next.
PagePool::CacheSlot PagePool::cache_slot(std::uint32_t slot) const {
  // Slot s (1-based) lives in chunk c = bit_width((s - 1) / 64 + 1) - 1, after the
  // 64 * (2^c - 1) slots of the chunks before it.
  const std::uint64_t i = slot - 1;
  const auto c = static_cast<std::size_t>(std::bit_width(i / kFirstChunkItems + 1) - 1);
  const std::uint64_t items = std::uint64_t{kFirstChunkItems} << c;
  const std::uint64_t k = i - (items - kFirstChunkItems);  // index inside the chunk
  std::byte* chunk = item_chunks_[c].load(std::memory_order_relaxed);
  return {reinterpret_cast<Item*>(chunk + k * kCachedItemBytes),
          reinterpret_cast<std::atomic<std::uint32_t>*>(chunk + items * kCachedItemBytes) + k};
}

PagePool::Item* PagePool::pop_cached_item() {
  std::uint64_t head = item_cache_head_.load(std::memory_order_acquire);
  while (true) {
    const auto slot = static_cast<std::uint32_t>(head);
    if (slot == 0) {
      bool refilled = false;
      Item* fresh = grow_item_cache(refilled);
      if (!refilled) return fresh;
      head = item_cache_head_.load(std::memory_order_acquire);
      continue;
    }
    const CacheSlot at = cache_slot(slot);
    // May be stale if another thread popped this item meanwhile; the tag then fails the CAS.
    const std::uint32_t next = at.link->load(std::memory_order_relaxed);
    const std::uint64_t desired = ((head >> 32) + 1) << 32 | next;
    if (item_cache_head_.compare_exchange_weak(head, desired, std::memory_order_acquire,
                                               std::memory_order_acquire)) {
      at.item->ticketed = false;
      at.item->seq = 0;
      return at.item;
    }
  }
}

// Slow path of pop_cached_item: the cache is empty. Adds the next chunk (keeping one item of
// it for the caller), or returns nullptr (heap item) at the cap. Sets `refilled` instead when
// the owner handed items back meanwhile.
PagePool::Item* PagePool::grow_item_cache(bool& refilled) {
  std::lock_guard<std::mutex> lock(item_grow_mu_);
  const std::uint64_t head = item_cache_head_.load(std::memory_order_acquire);
  if (static_cast<std::uint32_t>(head) != 0) {
    refilled = true;
    return nullptr;
  }
  const std::size_t c = item_chunk_count_;
  const std::uint64_t items = std::uint64_t{kFirstChunkItems} << c;
  if (c == kMaxItemChunks || item_cache_slots_ + items > options_.release_item_cache) {
    return nullptr;
  }
  auto* chunk = static_cast<std::byte*>(::operator new[](
      items * (kCachedItemBytes + sizeof(std::atomic<std::uint32_t>)), std::align_val_t{alignof(Item)}));
  auto* links = reinterpret_cast<std::atomic<std::uint32_t>*>(chunk + items * kCachedItemBytes);
  const auto first = static_cast<std::uint32_t>(item_cache_slots_ + 1);
  const auto last = static_cast<std::uint32_t>(item_cache_slots_ + items);
  for (std::uint64_t k = 0; k < items; ++k) {
    const auto slot = static_cast<std::uint32_t>(first + k);
    new (chunk + k * kCachedItemBytes) Item{nullptr, 0, 0, 0, slot, false};
    new (links + k) std::atomic<std::uint32_t>(slot < last ? slot + 1 : 0);
  }
  item_chunks_[c].store(chunk, std::memory_order_relaxed);
  item_chunk_count_ = c + 1;
  item_cache_slots_ += items;
  // The caller keeps `first`; first + 1 .. last go onto the stack (items >= 64).
  push_free_chain(first + 1, &links[items - 1]);
  return reinterpret_cast<Item*>(chunk);
}

void PagePool::destroy_item(Item* item) {
  if (item->cache_slot == 0) {
    item->~Item();
    ::operator delete(static_cast<void*>(item));
    return;
  }
  // Kept on the owner's chain until flush_recycled(): one CAS per batch, not per item.
  cache_slot(item->cache_slot).link->store(recycled_first_, std::memory_order_relaxed);
  if (recycled_first_ == 0) recycled_last_ = item->cache_slot;
  recycled_first_ = item->cache_slot;
}

void PagePool::flush_recycled() {
  if (recycled_first_ == 0) return;
  push_free_chain(recycled_first_, cache_slot(recycled_last_).link);
  recycled_first_ = recycled_last_ = 0;
}

// Pushes the chain first .. (the slot whose link is last_link) onto the free-item stack.
void PagePool::push_free_chain(std::uint32_t first, std::atomic<std::uint32_t>* last_link) {
  std::uint64_t head = item_cache_head_.load(std::memory_order_relaxed);
  std::uint64_t desired;
  do {
    last_link->store(static_cast<std::uint32_t>(head), std::memory_order_relaxed);
    desired = ((head >> 32) + 1) << 32 | first;
  } while (!item_cache_head_.compare_exchange_weak(head, desired, std::memory_order_release,
                                                   std::memory_order_relaxed));
}

void PagePool::push_item(Item* item) {
  Item* head = inbox_.load(std::memory_order_relaxed);
  do {
    item->next = head;
  } while (!inbox_.compare_exchange_weak(head, item, std::memory_order_release,
                                         std::memory_order_relaxed));
}

ReleaseTicket PagePool::issue_ticket() {
  slots_.push_back(nullptr);
  return ReleaseTicket{epoch_.load(std::memory_order_relaxed), next_ticket_++};
}

void PagePool::release_deferred(ReleaseTicket ticket, std::span<const PageId> ids) {
  Item* item = make_item(ids);
  item->ticketed = true;
  item->seq = ticket.seq;
  item->epoch = ticket.epoch;
  push_item(item);
}

void PagePool::release_deferred(std::uint32_t epoch, std::span<const PageId> ids) {
  if (ids.empty()) return;  // counts as nothing (SGLang #11005)
  Item* item = make_item(ids);
  item->epoch = epoch;
  push_item(item);
}

void PagePool::accept(Item* item) {
  if (item->epoch != epoch_.load(std::memory_order_relaxed)) {
    ++counters_.stale_items;
    destroy_item(item);
    return;
  }
  if (!item->ticketed) {
    unordered_.push_back(item);
    pending_.pages += item->count;
    pending_.items += 1;
    return;
  }
  if (item->seq < slot_base_ || item->seq >= next_ticket_ ||
      slots_[item->seq - slot_base_] != nullptr) {
    ++counters_.misuse;
    if (first_drain_error_.empty()) {
      first_drain_error_ = "PagePool: release ticket " + std::to_string(item->seq) +
                           (item->seq >= next_ticket_ ? " was never issued" : " was used twice");
    }
    destroy_item(item);
    return;
  }
  slots_[item->seq - slot_base_] = item;
  waiting_pages_ += item->count;
  while (!slots_.empty() && slots_.front() != nullptr) {
    Item* ready = slots_.front();
    slots_.pop_front();
    ++slot_base_;
    waiting_pages_ -= ready->count;
    if (ready->count == 0) {
      destroy_item(ready);  // a ticketed empty release only unblocks the ones after it
      continue;
    }
    ready_.push_back(ready);
    pending_.pages += ready->count;
    pending_.items += 1;
  }
}

void PagePool::collect() {
  Item* list = inbox_.exchange(nullptr, std::memory_order_acquire);
  Item* reversed = nullptr;  // the stack is newest-first; accept in arrival order
  while (list != nullptr) {
    Item* next = list->next;
    list->next = reversed;
    reversed = list;
    list = next;
  }
  while (reversed != nullptr) {
    Item* next = reversed->next;
    accept(reversed);
    reversed = next;
  }
  flush_recycled();
}

PagePool::Pending PagePool::pending_release() {
  collect();
  if (!first_drain_error_.empty() && options_.misuse == MisusePolicy::kThrow) {
    throw UsageError(std::exchange(first_drain_error_, std::string()));
  }
  first_drain_error_.clear();
  return pending_;
}

bool PagePool::apply_deferred(PageId id) {
  if (id >= capacity_ || meta_[id].state != kAllocated || meta_[id].refcount == 0) {
    ++counters_.misuse;
    if (first_drain_error_.empty()) {
      first_drain_error_ = "PagePool: deferred release of " + page_str(id) +
                           (id >= capacity_ ? " (out of range)" : " which holds no reference");
    }
    return false;
  }
  if (--meta_[id].refcount == 0) drop_ref(id);
  return true;
}

std::uint64_t PagePool::drain(std::uint64_t max_pages) {
  collect();
  const std::uint64_t total = std::min(max_pages, pending_.pages);
  std::uint64_t remaining = total;
  while (remaining > 0) {
    const bool from_ready = !ready_.empty();
    std::deque<Item*>& lane = from_ready ? ready_ : unordered_;
    std::uint32_t& offset = from_ready ? ready_offset_ : unordered_offset_;
    Item* item = lane.front();
    const std::uint32_t step =
        static_cast<std::uint32_t>(std::min<std::uint64_t>(item->count - offset, remaining));
    const PageId* ids = item->ids();
    for (std::uint32_t j = offset; j < offset + step; ++j) apply_deferred(ids[j]);
    offset += step;
    remaining -= step;
    pending_.pages -= step;
    if (offset == item->count) {
      lane.pop_front();
      destroy_item(item);
      offset = 0;
      pending_.items -= 1;
    }
  }
  counters_.drained_pages += total;
  flush_recycled();
  if (!first_drain_error_.empty() && options_.misuse == MisusePolicy::kThrow) {
    throw UsageError(std::exchange(first_drain_error_, std::string()));
  }
  first_drain_error_.clear();
  return total;
}

void PagePool::discard_deferred() {
  Item* list = inbox_.exchange(nullptr, std::memory_order_acq_rel);
  while (list != nullptr) {
    Item* next = list->next;
    destroy_item(list);
    list = next;
  }
  for (Item* item : slots_) {
    if (item != nullptr) destroy_item(item);
  }
  for (Item* item : ready_) destroy_item(item);
  for (Item* item : unordered_) destroy_item(item);
  flush_recycled();
  slots_.clear();
  ready_.clear();
  unordered_.clear();
  ready_offset_ = 0;
  unordered_offset_ = 0;
  waiting_pages_ = 0;
  pending_ = Pending{};
  slot_base_ = 0;
  next_ticket_ = 0;
  first_drain_error_.clear();
}

// ---- whole pool -----------------------------------------------------------------------------

void PagePool::reset() {
  // New epoch first: an item a producer is pushing right now either lands before the
  // exchange below (discarded here) or carries the old epoch (dropped when collected).
  std::uint32_t next_epoch = epoch_.load(std::memory_order_relaxed) + 1;
  if (next_epoch == 0) next_epoch = 1;
  epoch_.store(next_epoch, std::memory_order_release);
  discard_deferred();
  std::fill(meta_.begin(), meta_.end(), PageMeta{});
  meta_[capacity_].prev = meta_[capacity_].next = capacity_;
  lru_size_ = 0;
  for (std::uint32_t i = 0; i < capacity_; ++i) free_[i] = capacity_ - 1 - i;
  free_top_ = capacity_;
  const bool had_index = !index_.empty();
  index_.clear();
  hash_slab_.clear();
  hash_slab_free_.clear();
  reservations_.clear();
  reserved_pages_ = 0;
  if (had_index) emit(PrefixEvent::Kind::kCleared, BlockHash{}, 0);
}

PagePool::Stats PagePool::stats() {
  collect();
  Stats s = counters_;
  s.free_pages = free_top_;
  s.cached_pages = lru_size_;
  s.reserved_pages = reserved_pages_;
  s.allocated_pages = capacity_ - free_top_ - lru_size_ - reserved_pages_;
  s.waiting_pages = waiting_pages_;
  {
    std::lock_guard<std::mutex> lock(item_grow_mu_);
    s.release_cache_items = item_cache_slots_;
  }
  return s;
}

bool PagePool::validate() {
  collect();
  auto fail = [&](const std::string& why) {
    last_error_ = why;
    return false;
  };
  if (free_top_ > capacity_) return fail("free stack deeper than capacity");
  std::vector<std::uint8_t> seen(capacity_, 0);
  for (std::uint64_t i = 0; i < free_top_; ++i) {
    const PageId id = free_[i];
    if (id >= capacity_) return fail("free stack holds an out-of-range id");
    if (seen[id]++ != 0) return fail("free stack holds " + page_str(id) + " twice");
    if (meta_[id].state != kFree) return fail("free stack holds non-free " + page_str(id));
  }
  std::uint64_t walked = 0;
  for (std::uint32_t id = meta_[capacity_].next; id != capacity_; id = meta_[id].next) {
    if (id > capacity_) return fail("LRU link out of range");
    if (meta_[meta_[id].next].prev != id) return fail("LRU links broken at " + page_str(id));
    if (seen[id]++ != 0) return fail("LRU holds " + page_str(id) + " twice or also free");
    if (meta_[id].state != kCached) return fail("LRU holds non-cached " + page_str(id));
    if (++walked > capacity_) return fail("LRU has a cycle");
  }
  if (walked != lru_size_) return fail("LRU size counter disagrees with the list");
  std::uint64_t counts[4] = {0, 0, 0, 0};
  std::uint64_t hashed = 0;
  for (std::uint32_t id = 0; id < capacity_; ++id) {
    const std::uint8_t st = meta_[id].state;
    if (st > kCached) return fail("bad state byte at " + page_str(id));
    ++counts[st];
    if ((st == kAllocated) != (meta_[id].refcount > 0)) {
      return fail("refcount and state disagree at " + page_str(id));
    }
    if (meta_[id].hash_slot != kNoHash) {
      ++hashed;
      if (st != kAllocated && st != kCached) return fail("free/reserved page carries a hash");
      if (meta_[id].hash_slot >= hash_slab_.size()) return fail("hash slot out of range");
      auto it = index_.find(hash_slab_[meta_[id].hash_slot]);
      if (it == index_.end() || it->second != id) return fail("index misses " + page_str(id));
    } else if (st == kCached) {
      return fail("cached page without a hash: " + page_str(id));
    }
  }
  if (counts[kFree] != free_top_) return fail("free pages not all on the free stack");
  if (counts[kCached] != lru_size_) return fail("cached pages not all in the LRU");
  if (counts[kReserved] != reserved_pages_) return fail("reserved page count mismatch");
  if (counts[kFree] + counts[kAllocated] + counts[kReserved] + counts[kCached] != capacity_) {
    return fail("free + allocated + reserved + cached != capacity");
  }
  if (hashed != index_.size()) return fail("index holds entries for no page");
  if (hashed + hash_slab_free_.size() != hash_slab_.size()) return fail("hash slab leak");
  std::uint64_t in_reservations = 0;
  for (const auto& [id, r] : reservations_) {
    in_reservations += r.pages.size();
    for (const PageId p : r.pages) {
      if (meta_[p].state != kReserved) return fail("reservation holds a non-reserved page");
    }
  }
  if (in_reservations != reserved_pages_) return fail("reservations disagree with counter");
  // Deferred queues.
  if (slots_.size() != next_ticket_ - slot_base_) return fail("ticket slots out of step");
  if (!slots_.empty() && slots_.front() != nullptr) return fail("ready ticket left waiting");
  std::uint64_t waiting = 0;
  for (const Item* item : slots_) waiting += item != nullptr ? item->count : 0;
  if (waiting != waiting_pages_) return fail("waiting page counter mismatch");
  Pending p{};
  for (std::size_t i = 0; i < ready_.size(); ++i) {
    p.pages += ready_[i]->count - (i == 0 ? ready_offset_ : 0);
    if (ready_[i]->count == 0) return fail("empty item in the ready lane");
  }
  for (std::size_t i = 0; i < unordered_.size(); ++i) {
    p.pages += unordered_[i]->count - (i == 0 ? unordered_offset_ : 0);
  }
  p.items = ready_.size() + unordered_.size();
  if (!(p == pending_)) return fail("pending counters disagree with the queues");
  last_error_.clear();
  return true;
}

}  // namespace kvmem
