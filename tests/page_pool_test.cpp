// Unit tests for kvmem::PagePool: allocation order, misuse detection, sharing, LRU eviction,
// the prefix index, reservations and the ticketed deferred-release protocol.
#include "kvmem/page_pool.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <set>

#include "kvmem/error.hpp"

namespace kvmem {
namespace {

using Ids = std::vector<PageId>;

TEST(PagePool, FreshPoolAllocatesAscendingIdsAllOrNothing) {
  PagePool pool(8);
  EXPECT_EQ(pool.capacity(), 8u);
  EXPECT_EQ(pool.available(), 8u);
  auto a = pool.alloc(3);
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, (Ids{0, 1, 2}));
  EXPECT_FALSE(pool.alloc(6));  // only 5 left: nothing taken
  EXPECT_EQ(pool.available(), 5u);
  EXPECT_EQ(pool.stats().failed_allocs, 1u);
  auto b = pool.alloc(5);
  ASSERT_TRUE(b);
  EXPECT_EQ(pool.available(), 0u);
  auto empty = pool.alloc(0);
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, FreeIsLifo) {
  PagePool pool(8);
  auto a = *pool.alloc(4);
  pool.free(Ids{a[1], a[3]});
  auto b = *pool.alloc(2);
  EXPECT_EQ(b, (Ids{3, 1}));  // the page freed last comes back first
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, AllocIntoSpan) {
  PagePool pool(4);
  PageId out[3];
  EXPECT_TRUE(pool.alloc_into(out));
  EXPECT_EQ(out[0], 0u);
  PageId big[2];
  EXPECT_FALSE(pool.alloc_into(big));
  EXPECT_EQ(pool.available(), 1u);
}

TEST(PagePool, ReturnedIdsAreOwnedNotAViewOfTheFreeList) {
  PagePool pool(8);
  auto a = *pool.alloc(4);
  const Ids copy = a;
  pool.free(a);
  (void)pool.alloc(8);  // rewrites the whole free stack
  EXPECT_EQ(a, copy);
}

TEST(PagePool, BadArgumentsThrowInvalidArgument) {
  EXPECT_THROW(PagePool(0), std::invalid_argument);
  PagePool pool(4);
  EXPECT_THROW(pool.free(Ids{4}), std::invalid_argument);
  EXPECT_THROW(pool.retain(Ids{99}), std::invalid_argument);
  EXPECT_THROW(BlockHash::from_bytes("short"), std::invalid_argument);
  auto a = *pool.alloc(1);
  EXPECT_THROW(pool.publish(BlockHash{}, a[0]), std::invalid_argument);
}

TEST(PagePool, MisuseThrowsAndLeavesStateUnchanged) {
  PagePool pool(8);
  auto a = *pool.alloc(3);
  pool.free(Ids{a[0]});
  EXPECT_THROW(pool.free(Ids{a[0]}), UsageError);              // double free
  EXPECT_THROW(pool.free(Ids{a[1], a[2], a[1]}), UsageError);  // duplicate within a batch
  EXPECT_EQ(pool.refcount(a[1]), 1u);                           // batch rolled back
  EXPECT_EQ(pool.refcount(a[2]), 1u);
  EXPECT_THROW(pool.free(Ids{7}), UsageError);  // never allocated
  EXPECT_THROW(pool.release(Ids{7}), UsageError);
  EXPECT_THROW(pool.retain(Ids{7}), UsageError);
  pool.retain(Ids{a[1]});
  EXPECT_THROW(pool.free(Ids{a[1]}), UsageError);  // shared: must use release
  pool.release(Ids{a[1]});
  pool.free(Ids{a[1], a[2]});
  EXPECT_EQ(pool.available(), 8u);
  EXPECT_EQ(pool.stats().misuse, 6u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, CountIgnorePolicySkipsBadIds) {
  PagePool::Options o;
  o.misuse = PagePool::MisusePolicy::kCountIgnore;
  PagePool pool(8, o);
  auto a = *pool.alloc(2);
  pool.free(Ids{a[0], a[0], a[1]});
  EXPECT_EQ(pool.available(), 8u);
  EXPECT_EQ(pool.stats().misuse, 1u);
  pool.release(Ids{a[0]});
  EXPECT_EQ(pool.stats().misuse, 2u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, StaleIdAfterResetIsDetected) {
  PagePool pool(8);
  auto a = *pool.alloc(4);
  pool.reset();
  EXPECT_EQ(pool.available(), 8u);
  EXPECT_THROW(pool.free(a), UsageError);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, RefcountsAndLruKeepHashedPagesCached) {
  std::vector<PrefixEvent> events;
  PagePool::Options o;
  o.on_event = [&](const PrefixEvent& e) { events.push_back(e); };
  PagePool pool(4, o);
  auto a = *pool.alloc(4);
  const auto h0 = BlockHash::from_u64(100), h1 = BlockHash::from_u64(101);
  EXPECT_TRUE(pool.publish(h0, a[0]));
  EXPECT_TRUE(pool.publish(h1, a[1]));
  EXPECT_FALSE(pool.publish(h0, a[2]));  // already indexed: first page stays the copy
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, PrefixEvent::Kind::kStored);
  // Release: hashed pages become cached (still available), unhashed go to the free stack.
  pool.release(Ids{a[1], a[0], a[3], a[2]});
  EXPECT_EQ(pool.available(), 4u);
  EXPECT_EQ(pool.stats().cached_pages, 2u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
  // Unhashed pages are reused first.
  auto b = *pool.alloc(2);
  EXPECT_EQ((std::set<PageId>(b.begin(), b.end())), (std::set<PageId>{a[2], a[3]}));
  EXPECT_EQ(pool.indexed_hashes(), 2u);
  // Then the LRU front: a[1] was released first.
  auto c = *pool.alloc(1);
  EXPECT_EQ(c[0], a[1]);
  EXPECT_EQ(pool.indexed_hashes(), 1u);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].kind, PrefixEvent::Kind::kRemoved);
  EXPECT_TRUE(events[2].hash == h1);
  EXPECT_EQ(pool.stats().evictions, 1u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, MatchPrefixTakesReferencesAndRescuesFromLru) {
  PagePool pool(8);
  auto a = *pool.alloc(3);
  std::vector<BlockHash> chain;
  for (int i = 0; i < 3; ++i) {
    std::string d(32, '\0');
    d[0] = static_cast<char>(i);
    chain.push_back(BlockHash::from_bytes(d));
    ASSERT_TRUE(pool.publish(chain.back(), a[static_cast<std::size_t>(i)]));
  }
  pool.release(Ids{a[2], a[1], a[0]});  // tail first
  EXPECT_EQ(pool.stats().cached_pages, 3u);
  // Evict the LRU front (the tail a[2]) by allocating everything else plus one.
  auto b = *pool.alloc(6);
  EXPECT_EQ(b.back(), a[2]);
  EXPECT_EQ(pool.peek_prefix(chain), 2u);
  auto hit = pool.match_prefix(chain);
  EXPECT_EQ(hit, (Ids{a[0], a[1]}));
  EXPECT_EQ(pool.refcount(a[0]), 1u);
  EXPECT_EQ(pool.stats().cached_pages, 0u);
  auto hit2 = pool.match_prefix(chain);
  EXPECT_EQ(pool.refcount(a[1]), 2u);
  ASSERT_TRUE(pool.hash_of(a[0]));
  EXPECT_TRUE(*pool.hash_of(a[0]) == chain[0]);
  EXPECT_FALSE(pool.hash_of(a[2]));
  EXPECT_TRUE(pool.validate()) << pool.last_error();
  EXPECT_NE(BlockHash::from_u64(5), BlockHash::from_bytes(std::string(32, '\0')));
}

TEST(PagePool, ReserveCommitAbort) {
  PagePool pool(8);
  auto a = *pool.alloc(2);
  pool.publish(BlockHash::from_u64(1), a[0]);
  pool.release(a);  // a[0] cached, a[1] free
  auto before = *pool.alloc(8);
  pool.release(before);  // back; order of the pool is now what we compare against
  const auto snapshot_ids = [&] {
    PagePool* p = &pool;
    auto t = p->reserve(8);
    EXPECT_TRUE(t);
    auto ids = p->commit(*t);
    p->release(ids);
    return ids;
  };
  (void)snapshot_ids;
  // reserve + abort leaves the pool as it was: the next alloc returns the same ids.
  auto t = pool.reserve(5);
  ASSERT_TRUE(t);
  EXPECT_EQ(pool.available(), 3u);
  EXPECT_EQ(pool.stats().reserved_pages, 5u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
  pool.abort(*t);
  EXPECT_EQ(pool.available(), 8u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
  EXPECT_THROW(pool.abort(*t), UsageError);
  EXPECT_THROW(pool.commit(*t), UsageError);
  EXPECT_FALSE(pool.reserve(9));
  auto t2 = pool.reserve(8);
  ASSERT_TRUE(t2);
  auto ids = pool.commit(*t2);
  EXPECT_EQ(ids.size(), 8u);
  EXPECT_EQ(pool.available(), 0u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, AbortRestoresExactOrderIncludingCachedPages) {
  auto build = [](PagePool& pool) {
    auto a = *pool.alloc(6);
    for (PageId i = 0; i < 3; ++i) pool.publish(BlockHash::from_u64(i), a[i]);
    pool.release(a);
  };
  PagePool x(6), y(6);
  build(x);
  build(y);
  auto t = x.reserve(5);  // takes 3 free + 2 cached (evicting two hashes)
  ASSERT_TRUE(t);
  EXPECT_EQ(x.indexed_hashes(), 1u);
  x.abort(*t);
  EXPECT_EQ(x.indexed_hashes(), 3u);
  EXPECT_EQ(*x.alloc(6), *y.alloc(6));
}

TEST(PagePool, TicketedDrainFollowsTicketOrderNotArrival) {
  PagePool pool(16);
  auto a = *pool.alloc(16);
  const auto t0 = pool.issue_ticket();
  const auto t1 = pool.issue_ticket();
  const auto t2 = pool.issue_ticket();
  pool.release_deferred(t2, Ids{a[5], a[6]});
  pool.release_deferred(t1, Ids{a[3], a[4]});
  EXPECT_EQ(pool.pending_release().pages, 0u);  // t0 missing: nothing ready
  EXPECT_EQ(pool.stats().waiting_pages, 4u);
  pool.release_deferred(t0, Ids{a[0], a[1], a[2]});
  auto p = pool.pending_release();
  EXPECT_EQ(p.pages, 7u);
  EXPECT_EQ(p.items, 3u);
  EXPECT_EQ(pool.drain(4), 4u);  // t0 whole + first page of t1
  EXPECT_EQ(pool.pending_release().pages, 3u);
  EXPECT_EQ(pool.pending_release().items, 2u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
  auto b = *pool.alloc(4);
  EXPECT_EQ(b, (Ids{a[3], a[2], a[1], a[0]}));  // LIFO of the applied order
  EXPECT_EQ(pool.drain(100), 3u);
  EXPECT_EQ(pool.available(), 3u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, EmptyReleasesCountAsNothing) {
  PagePool pool(8);
  auto a = *pool.alloc(2);
  pool.release_deferred(Ids{});
  const auto t0 = pool.issue_ticket();
  const auto t1 = pool.issue_ticket();
  pool.release_deferred(t1, Ids{a[0]});
  EXPECT_EQ(pool.pending_release(), (PagePool::Pending{0, 0}));
  pool.release_deferred(t0, Ids{});  // empty, but unblocks t1
  EXPECT_EQ(pool.pending_release(), (PagePool::Pending{1, 1}));
  EXPECT_EQ(pool.drain(1), 1u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

// Items of up to kCachedItemIds ids come from the item cache, which grows in doubling chunks
// up to Options::release_item_cache items; past the cap, and for longer lists, from the heap.
// Whatever their source, pending counts and drains see the same thing.
TEST(PagePool, DeferredItemsFromTheCacheAndTheHeapDrainAlike) {
  for (const std::size_t cap : {std::size_t{0}, std::size_t{64}, std::size_t{1} << 16}) {
    SCOPED_TRACE("release_item_cache = " + std::to_string(cap));
    PagePool::Options o;
    o.release_item_cache = cap;
    PagePool pool(4096, o);
    EXPECT_EQ(pool.stats().release_cache_items, 0u);  // nothing before the first release
    auto pages = *pool.alloc(4096);
    // 300 one-page items in flight at once (past a cap of 64), then long items.
    std::size_t at = 0, items = 0;
    for (; at < 300; ++at, ++items) pool.release_deferred(Ids{pages[at]});
    const std::size_t long_len = PagePool::kCachedItemIds + 1;
    for (; at + long_len <= 1000; at += long_len, ++items) {
      pool.release_deferred(Ids(pages.begin() + static_cast<long>(at),
                                pages.begin() + static_cast<long>(at + long_len)));
    }
    EXPECT_EQ(pool.pending_release(), (PagePool::Pending{at, items}));
    const std::uint64_t held = pool.stats().release_cache_items;
    EXPECT_EQ(held, cap == 0 ? 0u : cap == 64 ? 64u : 64u + 128u + 256u);
    EXPECT_EQ(pool.drain(at), at);
    // Drained items go back to the cache: another round grows nothing.
    for (std::size_t k = at; k < at + 250; ++k) pool.release_deferred(Ids{pages[k]});
    EXPECT_EQ(pool.drain(250), 250u);
    EXPECT_EQ(pool.stats().release_cache_items, held);
    EXPECT_EQ(pool.available(), at + 250);
    EXPECT_TRUE(pool.validate()) << pool.last_error();
  }
}

TEST(PagePool, DeferredMisuseIsDetectedAfterTheDrainCompletes) {
  PagePool pool(8);
  auto a = *pool.alloc(2);
  const auto t0 = pool.issue_ticket();
  const auto t1 = pool.issue_ticket();
  pool.release_deferred(t0, Ids{a[0]});
  pool.release_deferred(t1, Ids{a[0], a[1]});  // a[0] released twice
  EXPECT_EQ(pool.pending_release().pages, 3u);
  EXPECT_THROW(pool.drain(3), UsageError);
  EXPECT_EQ(pool.available(), 8u);  // the good entries were applied
  EXPECT_EQ(pool.pending_release().pages, 0u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
  // A ticket used twice, and one never issued.
  const auto t2 = pool.issue_ticket();
  pool.release_deferred(t2, Ids{});
  pool.release_deferred(t2, Ids{});
  EXPECT_THROW(pool.pending_release(), UsageError);
  pool.release_deferred(ReleaseTicket{pool.epoch(), 1000}, Ids{});
  EXPECT_THROW(pool.pending_release(), UsageError);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, ResetDiscardsPendingAndStaleTickets) {
  PagePool pool(8);
  auto a = *pool.alloc(4);
  const auto t0 = pool.issue_ticket();
  pool.release_deferred(t0, Ids{a[0]});
  pool.release_deferred(Ids{a[1]});
  EXPECT_EQ(pool.pending_release().pages, 2u);
  const auto old = pool.issue_ticket();
  pool.reset();
  EXPECT_EQ(pool.pending_release().pages, 0u);
  pool.release_deferred(old, Ids{a[2]});  // pre-reset ticket arrives late
  EXPECT_EQ(pool.pending_release().pages, 0u);
  EXPECT_EQ(pool.stats().stale_items, 1u);
  EXPECT_EQ(pool.available(), 8u);
  const auto fresh = pool.issue_ticket();
  EXPECT_EQ(fresh.seq, 0u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, UnticketedLaneDrainsAfterTicketedPrefix) {
  PagePool pool(8);
  auto a = *pool.alloc(4);
  pool.release_deferred(Ids{a[0], a[1]});
  const auto t = pool.issue_ticket();
  pool.release_deferred(t, Ids{a[2]});
  EXPECT_EQ(pool.pending_release(), (PagePool::Pending{3, 2}));
  EXPECT_EQ(pool.drain(2), 2u);  // t first, then a[0]
  EXPECT_EQ(pool.refcount(a[2]), 0u);
  EXPECT_EQ(pool.refcount(a[0]), 0u);
  EXPECT_EQ(pool.refcount(a[1]), 1u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

TEST(PagePool, IndexReserveKeepsBehaviour) {
  PagePool::Options o;
  o.index_reserve = 64;
  PagePool pool(64, o);
  auto a = *pool.alloc(64);
  for (PageId i = 0; i < 64; ++i) ASSERT_TRUE(pool.publish(BlockHash::from_u64(i), a[i]));
  pool.release(a);
  EXPECT_EQ(pool.stats().cached_pages, 64u);
  EXPECT_EQ(*pool.alloc(1), Ids{a[0]});  // LRU front = released first
  pool.reset();
  EXPECT_EQ(pool.indexed_hashes(), 0u);
  EXPECT_TRUE(pool.validate()) << pool.last_error();
}

}  // namespace
}  // namespace kvmem
