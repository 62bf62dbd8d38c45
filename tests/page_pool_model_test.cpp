// Randomized model test: PagePool against a deliberately naive reference (std::list LRU,
// std::map index, linear scans), thousands of random operations including misuse, with
// validate() after every step and every returned id compared.
#include <gtest/gtest.h>

#include <algorithm>
#include <list>
#include <map>
#include <optional>
#include <random>

#include "kvmem/error.hpp"
#include "kvmem/page_pool.hpp"

namespace kvmem {
namespace {

using Ids = std::vector<PageId>;

// The specified behaviour, written the slow and obvious way.
class RefPool {
 public:
  enum St { kFree, kAlloc, kReserved, kCached };
  explicit RefPool(std::uint32_t n) : n_(n) { reset(); }
  void reset() {
    st_.assign(n_, kFree);
    rc_.assign(n_, 0);
    free_.clear();
    for (std::uint32_t i = 0; i < n_; ++i) free_.push_back(n_ - 1 - i);
    lru_.clear();
    hash_.clear();
    index_.clear();
    res_.clear();
    tickets_.clear();
    next_ticket_ = 0;
    drained_upto_ = 0;
    offset_ = 0;
  }
  std::size_t available() const { return free_.size() + lru_.size(); }
  std::optional<Ids> alloc(std::size_t k) {
    if (k > available()) return std::nullopt;
    Ids out;
    while (out.size() < k && !free_.empty()) {
      out.push_back(free_.back());
      free_.pop_back();
    }
    while (out.size() < k) {
      PageId p = lru_.front();
      lru_.pop_front();
      index_.erase(hash_[p]);
      hash_.erase(p);
      out.push_back(p);
    }
    for (PageId p : out) {
      st_[p] = kAlloc;
      rc_[p] = 1;
    }
    return out;
  }
  void to_zero(PageId p) {
    if (hash_.count(p)) {
      st_[p] = kCached;
      lru_.push_back(p);
    } else {
      st_[p] = kFree;
      free_.push_back(p);
    }
  }
  bool can_free(const Ids& ids) const {
    std::map<PageId, int> c;
    for (PageId p : ids) {
      if (st_[p] != kAlloc || rc_[p] != 1 || ++c[p] > 1) return false;
    }
    return true;
  }
  void free(const Ids& ids) {
    for (PageId p : ids) {
      rc_[p] = 0;
      to_zero(p);
    }
  }
  // kCountIgnore forms: bad entries are skipped one by one and counted.
  std::uint64_t free_ci(const Ids& ids) {
    std::uint64_t bad = 0;
    for (PageId p : ids) {
      if (st_[p] != kAlloc || rc_[p] != 1) {
        ++bad;
        continue;
      }
      rc_[p] = 0;
      to_zero(p);
    }
    return bad;
  }
  std::uint64_t release_ci(const Ids& ids) {
    std::uint64_t bad = 0;
    for (PageId p : ids) {
      if (st_[p] != kAlloc) {
        ++bad;
        continue;
      }
      if (--rc_[p] == 0) to_zero(p);
    }
    return bad;
  }
  std::uint64_t retain_ci(const Ids& ids) {
    std::uint64_t bad = 0;
    for (PageId p : ids) {
      if (st_[p] != kAlloc && st_[p] != kCached) {
        ++bad;
        continue;
      }
      retain(Ids{p});
    }
    return bad;
  }
  bool can_release(const Ids& ids) const {
    std::map<PageId, std::uint32_t> c;
    for (PageId p : ids) {
      if (st_[p] != kAlloc || ++c[p] > rc_[p]) return false;
    }
    return true;
  }
  void release(const Ids& ids) {
    for (PageId p : ids) {
      if (--rc_[p] == 0) to_zero(p);
    }
  }
  bool can_retain(const Ids& ids) const {
    for (PageId p : ids) {
      if (st_[p] != kAlloc && st_[p] != kCached) return false;
    }
    return true;
  }
  void retain(const Ids& ids) {
    for (PageId p : ids) {
      if (st_[p] == kCached) {
        lru_.remove(p);
        st_[p] = kAlloc;
      }
      ++rc_[p];
    }
  }
  bool publish(std::uint64_t h, PageId p) {
    if (st_[p] != kAlloc || hash_.count(p) || index_.count(h)) return false;
    hash_[p] = h;
    index_[h] = p;
    return true;
  }
  Ids match(const std::vector<std::uint64_t>& chain) {
    Ids out;
    for (auto h : chain) {
      auto it = index_.find(h);
      if (it == index_.end()) break;
      out.push_back(it->second);
      retain(Ids{it->second});
    }
    return out;
  }
  struct Res {
    Ids pages;
    std::size_t from_stack;
    std::vector<std::pair<PageId, std::uint64_t>> ev;
  };
  std::optional<std::uint64_t> reserve(std::size_t k, std::uint64_t id) {
    if (k > available()) return std::nullopt;
    Res r;
    r.from_stack = std::min(k, free_.size());
    for (std::size_t i = r.from_stack; i < k; ++i) {
      auto it = lru_.begin();
      std::advance(it, static_cast<long>(i - r.from_stack));
      r.ev.emplace_back(*it, hash_[*it]);
    }
    r.pages = *alloc(k);
    for (PageId p : r.pages) {
      st_[p] = kReserved;
      rc_[p] = 0;
    }
    res_[id] = r;
    return id;
  }
  Ids commit(std::uint64_t id) {
    Res r = res_.at(id);
    res_.erase(id);
    for (PageId p : r.pages) {
      st_[p] = kAlloc;
      rc_[p] = 1;
    }
    return r.pages;
  }
  void abort(std::uint64_t id) {
    Res r = res_.at(id);
    res_.erase(id);
    for (std::size_t k = r.ev.size(); k-- > 0;) {
      auto [p, h] = r.ev[k];
      rc_[p] = 0;
      if (index_.count(h)) {
        st_[p] = kFree;
        free_.push_back(p);
      } else {
        hash_[p] = h;
        index_[h] = p;
        st_[p] = kCached;
        lru_.push_front(p);
      }
    }
    for (std::size_t k = r.from_stack; k-- > 0;) {
      st_[r.pages[k]] = kFree;
      rc_[r.pages[k]] = 0;
      free_.push_back(r.pages[k]);
    }
  }
  // Deferred, ticketed: items by seq; ready prefix = arrived from drained_upto_ on.
  std::uint64_t issue() {
    tickets_.emplace_back();
    return next_ticket_++;
  }
  void arrive(std::uint64_t seq, Ids ids) { tickets_[seq] = std::move(ids); }
  std::uint64_t pending() const {
    std::uint64_t s = 0;
    for (std::uint64_t t = drained_upto_; t < tickets_.size() && tickets_[t]; ++t) {
      s += tickets_[t]->size();
    }
    return s - offset_;
  }
  std::uint64_t drain(std::uint64_t k, std::uint64_t* bad) {
    k = std::min(k, pending());
    std::uint64_t left = k;
    while (left > 0) {
      auto& item = *tickets_[drained_upto_];
      while (left > 0 && offset_ < item.size()) {
        PageId p = item[offset_++];
        --left;
        if (st_[p] != kAlloc) {
          ++*bad;
        } else if (--rc_[p] == 0) {
          to_zero(p);
        }
      }
      if (offset_ == item.size()) {
        ++drained_upto_;
        offset_ = 0;
      }
    }
    while (drained_upto_ < tickets_.size() && tickets_[drained_upto_] &&
           tickets_[drained_upto_]->empty()) {
      ++drained_upto_;
    }
    return k;
  }
  std::uint32_t rc(PageId p) const { return rc_[p]; }
  std::uint32_t n_;
  std::vector<St> st_;
  std::vector<std::uint32_t> rc_;
  std::vector<PageId> free_;
  std::list<PageId> lru_;
  std::map<PageId, std::uint64_t> hash_;
  std::map<std::uint64_t, PageId> index_;
  std::map<std::uint64_t, Res> res_;
  std::vector<std::optional<Ids>> tickets_;
  std::uint64_t next_ticket_ = 0, drained_upto_ = 0, offset_ = 0;
};

void run_model(std::uint64_t seed, std::uint32_t n, int steps, bool count_ignore = false) {
  std::mt19937_64 rng(seed);
  PagePool::Options options;
  if (count_ignore) options.misuse = PagePool::MisusePolicy::kCountIgnore;
  PagePool pool(n, options);
  std::uint64_t ref_misuse = 0;
  RefPool ref(n);
  std::map<std::uint64_t, ReservationToken> tokens;  // ref id -> pool token
  std::map<std::uint64_t, ReleaseTicket> tickets;    // seq -> not yet arrived
  std::vector<std::pair<std::uint64_t, Ids>> in_flight;
  std::uint64_t next_res = 0, bad = 0;
  auto rnd = [&](std::uint64_t m) { return m == 0 ? 0 : rng() % m; };
  auto some_pages = [&](std::size_t max) {
    Ids ids;
    const std::size_t k = rnd(max + 1);
    for (std::size_t i = 0; i < k; ++i) {
      // mostly allocated pages, sometimes anything
      PageId p = static_cast<PageId>(rnd(n));
      if (rnd(4) != 0) {
        for (std::uint32_t tries = 0; tries < n && ref.st_[p] != RefPool::kAlloc; ++tries) {
          p = (p + 1) % n;
        }
      }
      ids.push_back(p);
    }
    return ids;
  };
  for (int step = 0; step < steps; ++step) {
    const int op = static_cast<int>(rnd(13));
    SCOPED_TRACE("step " + std::to_string(step) + " op " + std::to_string(op));
    switch (op) {
      case 0:
      case 1: {
        const std::size_t k = rnd(n / 4 + 2);
        auto a = pool.alloc(k);
        auto b = ref.alloc(k);
        ASSERT_EQ(a.has_value(), b.has_value());
        if (a) {
          ASSERT_EQ(*a, *b);
        }
        break;
      }
      case 2: {
        Ids ids = some_pages(4);
        if (count_ignore) {
          pool.free(ids);
          ref_misuse += ref.free_ci(ids);
        } else if (ref.can_free(ids)) {
          pool.free(ids);
          ref.free(ids);
        } else {
          ASSERT_THROW(pool.free(ids), UsageError);
        }
        break;
      }
      case 3: {
        Ids ids = some_pages(4);
        if (count_ignore) {
          pool.release(ids);
          ref_misuse += ref.release_ci(ids);
        } else if (ref.can_release(ids)) {
          pool.release(ids);
          ref.release(ids);
        } else {
          ASSERT_THROW(pool.release(ids), UsageError);
        }
        break;
      }
      case 4: {
        Ids ids = some_pages(3);
        if (count_ignore) {
          pool.retain(ids);
          ref_misuse += ref.retain_ci(ids);
        } else if (ref.can_retain(ids)) {
          pool.retain(ids);
          ref.retain(ids);
        } else {
          ASSERT_THROW(pool.retain(ids), UsageError);
        }
        break;
      }
      case 5: {
        const std::uint64_t h = rnd(3 * n);
        PageId p = static_cast<PageId>(rnd(n));
        const bool other_hash = ref.hash_.count(p) && ref.hash_[p] != h;
        if (ref.st_[p] != RefPool::kAlloc || other_hash) {
          if (count_ignore) {
            ASSERT_FALSE(pool.publish(BlockHash::from_u64(h), p));
            ++ref_misuse;
          } else {
            ASSERT_THROW(pool.publish(BlockHash::from_u64(h), p), UsageError);
          }
          break;
        }
        ASSERT_EQ(pool.publish(BlockHash::from_u64(h), p), ref.publish(h, p));
        break;
      }
      case 6: {
        std::vector<std::uint64_t> chain;
        std::vector<BlockHash> hchain;
        for (std::uint64_t i = 0, k = rnd(4); i < k; ++i) {
          chain.push_back(rnd(3 * n));
          hchain.push_back(BlockHash::from_u64(chain.back()));
        }
        std::size_t ref_peek = 0;
        while (ref_peek < chain.size() && ref.index_.count(chain[ref_peek]) != 0) ++ref_peek;
        ASSERT_EQ(pool.peek_prefix(hchain), ref_peek);
        if (rnd(2) == 0) {
          ASSERT_EQ(pool.match_prefix(hchain), ref.match(chain));
        }
        break;
      }
      case 7: {
        const std::size_t k = rnd(n / 3 + 2);
        auto t = pool.reserve(k);
        auto r = ref.reserve(k, next_res);
        ASSERT_EQ(t.has_value(), r.has_value());
        if (t) tokens[next_res++] = *t;
        break;
      }
      case 8: {
        if (tokens.empty()) break;
        auto it = tokens.begin();
        std::advance(it, static_cast<long>(rnd(tokens.size())));
        if (rnd(2) == 0) {
          ASSERT_EQ(pool.commit(it->second), ref.commit(it->first));
        } else {
          pool.abort(it->second);
          ref.abort(it->first);
        }
        tokens.erase(it);
        break;
      }
      case 9: {  // issue a ticket and plan its contents (a later op delivers it)
        auto t = pool.issue_ticket();
        ASSERT_EQ(t.seq, ref.issue());
        Ids ids = some_pages(3);
        in_flight.emplace_back(t.seq, ids);
        tickets[t.seq] = t;
        break;
      }
      case 10: {  // deliver a random in-flight item (arrival order is random)
        if (in_flight.empty()) break;
        const std::size_t i = rnd(in_flight.size());
        auto [seq, ids] = in_flight[i];
        in_flight.erase(in_flight.begin() + static_cast<long>(i));
        pool.release_deferred(tickets.at(seq), ids);
        ref.arrive(seq, ids);
        tickets.erase(seq);
        break;
      }
      case 11: {
        ASSERT_EQ(pool.pending_release().pages, ref.pending());
        const std::uint64_t k = rnd(6);
        std::uint64_t got = 0;
        const std::uint64_t bad_before = bad;
        const std::uint64_t want = ref.drain(k, &bad);
        ref_misuse += bad - bad_before;
        if (bad != bad_before && !count_ignore) {
          ASSERT_THROW(pool.drain(k), UsageError);
        } else {
          got = pool.drain(k);
          ASSERT_EQ(got, want);
        }
        break;
      }
      case 12: {
        if (rnd(40) != 0) break;
        pool.reset();
        ref.reset();
        tokens.clear();
        tickets.clear();
        in_flight.clear();
        break;
      }
    }
    ASSERT_TRUE(pool.validate()) << pool.last_error();
    ASSERT_EQ(pool.available(), ref.available());
    ASSERT_EQ(pool.indexed_hashes(), ref.index_.size());
    for (PageId p = 0; p < n; ++p) ASSERT_EQ(pool.refcount(p), ref.rc(p)) << "page " << p;
    if (count_ignore) {
      ASSERT_EQ(pool.stats().misuse, ref_misuse);
    }
  }
}

TEST(PagePoolModel, RandomOpsSmallPool) {
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    run_model(seed, 16, 3000);
  }
}

TEST(PagePoolModel, RandomOpsLargerPool) { run_model(99, 300, 6000); }

TEST(PagePoolModel, RandomOpsCountIgnorePolicy) {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    run_model(seed, 16, 3000, true);
  }
  run_model(77, 200, 5000, true);
}

}  // namespace
}  // namespace kvmem
