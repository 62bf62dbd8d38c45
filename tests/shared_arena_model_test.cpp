// Randomized model test for kvmem::SharedArena: thousands of operations checked against a
// reference that keeps, per segment and per stripe, the set of live ranges and derives
// everything else from it (free gaps, whether a request must succeed, stats). validate()
// runs after every step.
#include "kvmem/shared_arena.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <vector>

namespace {

using kvmem::ArenaHandle;
using kvmem::ArenaRange;
using kvmem::Placement;
using kvmem::PlacementPolicy;
using kvmem::RemovePolicy;
using kvmem::SegmentId;
using kvmem::SharedArena;

struct StripeModel {
  std::uint64_t begin = 0;
  std::uint64_t cap = 0;
  std::map<std::uint64_t, std::uint64_t> live;  // segment offset -> size

  // Largest free gap; with `alignment`, only gaps that can hold an aligned `size` count.
  [[nodiscard]] std::uint64_t largest_gap() const {
    std::uint64_t best = 0, pos = begin;
    for (const auto& [off, size] : live) {
      best = std::max(best, off - pos);
      pos = off + size;
    }
    return std::max(best, begin + cap - pos);
  }
  [[nodiscard]] std::uint64_t used() const {
    std::uint64_t u = 0;
    for (const auto& [off, size] : live) u += size;
    return u;
  }
};

struct SegModel {
  SegmentId id;
  std::uint64_t size = 0;
  std::vector<StripeModel> stripes;
  std::set<std::uint64_t> disowned;  // offsets of unclaimed ranges

  StripeModel* stripe_of(std::uint64_t off) {
    for (auto& s : stripes) {
      if (off >= s.begin && off < s.begin + s.cap) return &s;
    }
    return nullptr;
  }
  [[nodiscard]] bool fits(std::uint64_t request, std::uint64_t alignment) const {
    for (const auto& s : stripes) {
      if (s.begin % alignment != 0) continue;
      if (s.largest_gap() >= request + alignment - 1) return true;
    }
    return false;
  }
  [[nodiscard]] std::uint64_t live_count() const {
    std::uint64_t n = 0;
    for (const auto& s : stripes) n += s.live.size();
    return n;
  }
};

struct Held {
  ArenaHandle h;
  ArenaRange r;
};

class Model {
 public:
  Model(std::uint64_t seed, unsigned cache) : rng_(seed), cache_(cache), arena_(std::make_unique<SharedArena>(opts())) {}

  SharedArena::Options opts() const {
    SharedArena::Options o;
    o.stripes = 4;
    o.min_stripe_bytes = 4096;
    o.stripe_cache = cache_;
    return o;
  }

  void add_segment() {
    const std::uint64_t size = 1 + rng_() % 90000;
    const unsigned stripes = static_cast<unsigned>(rng_() % 5);  // 0 = arena default (4)
    const SegmentId id = arena_->add_segment(size, nullptr, "s", stripes);
    SegModel m;
    m.id = id;
    m.size = size;
    const auto st = arena_->segment_stats(id);
    ASSERT_EQ(st.capacity, size);
    std::uint64_t begin = 0;
    for (const auto& s : st.stripes) {
      ASSERT_EQ(s.begin, begin);
      m.stripes.push_back(StripeModel{s.begin, s.capacity, {}});
      begin += s.capacity;
    }
    ASSERT_EQ(begin, size);
    const unsigned want = stripes == 0 ? 4u : stripes;
    const std::uint64_t by_size = std::max<std::uint64_t>(1, size / 4096);
    ASSERT_EQ(st.stripes.size(), std::min<std::uint64_t>(want, by_size));
    segs_.push_back(std::move(m));
  }

  SegModel* seg(SegmentId id) {
    for (auto& s : segs_) {
      if (s.id == id) return &s;
    }
    return nullptr;
  }

  void allocate() {
    const std::uint64_t size = rng_() % 4 == 0 ? 1 + rng_() % 30000 : 1 + rng_() % 2000;
    const std::uint64_t alignment = rng_() % 3 == 0 ? std::uint64_t{1} << (rng_() % 13) : 1;
    std::vector<SegModel*> candidates;
    std::optional<Placement> placement;
    if (!segs_.empty() && rng_() % 3 == 0) {
      SegModel& s = segs_[rng_() % segs_.size()];
      placement = Placement(s.id);
      candidates.push_back(&s);
    } else {
      placement = Placement(static_cast<PlacementPolicy>(rng_() % 5));
      for (auto& s : segs_) candidates.push_back(&s);
    }
    bool must = false, may = false;
    for (SegModel* s : candidates) {
      must = must || s->fits(size, alignment);
      for (const auto& st : s->stripes) may = may || (st.begin % alignment == 0 && st.largest_gap() >= size);
    }
    auto h = arena_->allocate(size, *placement, alignment);
    if (!h) {
      ASSERT_FALSE(must) << "size " << size << " alignment " << alignment << " must fit";
      return;
    }
    ASSERT_TRUE(may) << "size " << size << " fit nowhere but was placed";
    SegModel* s = seg(h->segment());
    ASSERT_NE(s, nullptr);
    ASSERT_NE(std::find(candidates.begin(), candidates.end(), s), candidates.end());
    ASSERT_EQ(h->size(), size);
    ASSERT_EQ(h->offset() % alignment, 0u);
    StripeModel* st = s->stripe_of(h->offset());
    ASSERT_NE(st, nullptr);
    ASSERT_LE(h->offset() + size, st->begin + st->cap) << "range crosses its stripe";
    auto next = st->live.lower_bound(h->offset());
    if (next != st->live.end()) {
      ASSERT_LE(h->offset() + size, next->first) << "overlap";
    }
    if (next != st->live.begin()) {
      auto prev = std::prev(next);
      ASSERT_LE(prev->first + prev->second, h->offset()) << "overlap";
    }
    st->live.emplace(h->offset(), size);
    held_.push_back(Held{std::move(*h), ArenaRange{s->id, h->offset(), size}});
  }

  void forget(const ArenaRange& r) {
    SegModel* s = seg(r.segment);
    ASSERT_NE(s, nullptr);
    StripeModel* st = s->stripe_of(r.offset);
    ASSERT_NE(st, nullptr);
    ASSERT_EQ(st->live.erase(r.offset), 1u);
  }

  void free_one() {
    if (held_.empty()) return;
    const std::size_t i = rng_() % held_.size();
    Held x = std::move(held_[i]);
    held_[i] = std::move(held_.back());
    held_.pop_back();
    if (rng_() % 2) {
      ASSERT_TRUE(x.h.release());
    } else {
      x.h = ArenaHandle{};
    }
    forget(x.r);
  }

  void disown_one() {
    if (held_.empty()) return;
    const std::size_t i = rng_() % held_.size();
    const ArenaRange r = held_[i].h.disown();
    ASSERT_EQ(r, held_[i].r);
    held_[i] = std::move(held_.back());
    held_.pop_back();
    seg(r.segment)->disowned.insert(r.offset);
    disowned_.push_back(r);
  }

  void adopt_one() {
    if (disowned_.empty()) return;
    const std::size_t i = rng_() % disowned_.size();
    const ArenaRange r = disowned_[i];
    disowned_[i] = disowned_.back();
    disowned_.pop_back();
    ArenaHandle h = arena_->adopt(r);
    ASSERT_EQ(h.range(), r);
    EXPECT_THROW((void)arena_->adopt(r), kvmem::UsageError);
    seg(r.segment)->disowned.erase(r.offset);
    held_.push_back(Held{std::move(h), r});
  }

  void remove_segment() {
    if (segs_.empty()) return;
    const std::size_t i = rng_() % segs_.size();
    const SegmentId id = segs_[i].id;
    const bool detach = rng_() % 2 == 0;
    const bool live = segs_[i].live_count() != 0;
    const bool removed = arena_->remove_segment(id, detach ? RemovePolicy::kDetach : RemovePolicy::kRefuseIfLive);
    ASSERT_EQ(removed, detach || !live);
    if (!removed) return;
    segs_.erase(segs_.begin() + static_cast<std::ptrdiff_t>(i));
    // Handles of the segment are inert now: release() does nothing.
    for (std::size_t k = 0; k < held_.size();) {
      if (held_[k].r.segment == id) {
        ASSERT_FALSE(held_[k].h.release());
        held_[k] = std::move(held_.back());
        held_.pop_back();
      } else {
        ++k;
      }
    }
    std::erase_if(disowned_, [&](const ArenaRange& r) { return r.segment == id; });
    EXPECT_THROW((void)arena_->segment_stats(id), kvmem::UsageError);
  }

  void snapshot_restore() {
    const auto image = arena_->snapshot();
    auto restored = std::make_unique<SharedArena>(SharedArena::restore(image, opts()));
    ASSERT_TRUE(restored->validate());
    std::set<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>> want, got;
    for (const auto& s : segs_) {
      for (const auto& st : s.stripes) {
        for (const auto& [off, size] : st.live) want.insert({s.id.value, off, size});
      }
    }
    restored->for_each_unclaimed([&](const ArenaRange& r) { got.insert({r.segment.value, r.offset, r.size}); });
    ASSERT_EQ(got, want);
    // Old arena dies first; its handles become inert; the restored arena adopts their ranges.
    arena_ = std::move(restored);
    for (auto& x : held_) {
      ASSERT_FALSE(x.h.release());
      x.h = arena_->adopt(x.r);
    }
  }

  void check() {
    ASSERT_TRUE(arena_->validate());
    std::uint64_t total_used = 0, total_live = 0, total_cap = 0;
    for (const auto& s : segs_) {
      const auto st = arena_->segment_stats(s.id);
      ASSERT_EQ(st.stripes.size(), s.stripes.size());
      std::uint64_t used = 0, live = 0;
      for (std::size_t j = 0; j < s.stripes.size(); ++j) {
        const auto& ms = s.stripes[j];
        const auto& as = st.stripes[j];
        ASSERT_EQ(as.used, ms.used());
        ASSERT_EQ(as.live_allocations, ms.live.size());
        if (cache_ == 0) {
          ASSERT_EQ(as.largest_free, ms.largest_gap());
        } else {
          ASSERT_GE(as.largest_free, ms.largest_gap());
          ASSERT_LE(as.largest_free, ms.cap);
        }
        used += ms.used();
        live += ms.live.size();
      }
      ASSERT_EQ(st.used, used);
      ASSERT_EQ(st.free, s.size - used);
      ASSERT_EQ(st.live_allocations, live);
      ASSERT_EQ(st.unclaimed, s.disowned.size());
      total_used += used;
      total_live += live;
      total_cap += s.size;
    }
    const auto t = arena_->stats();
    ASSERT_EQ(t.segments, segs_.size());
    ASSERT_EQ(t.capacity, total_cap);
    ASSERT_EQ(t.used, total_used);
    ASSERT_EQ(t.live_allocations, total_live);
  }

  void run(int ops) {
    for (int i = 0; i < 3; ++i) add_segment();
    for (int op = 0; op < ops; ++op) {
      const unsigned r = static_cast<unsigned>(rng_() % 1000);
      if (r < 450) {
        allocate();
      } else if (r < 850) {
        free_one();
      } else if (r < 900) {
        disown_one();
      } else if (r < 950) {
        adopt_one();
      } else if (r < 970) {
        if (segs_.size() < 6) add_segment();
      } else if (r < 990) {
        remove_segment();
      } else {
        snapshot_restore();
      }
      if (::testing::Test::HasFatalFailure()) return;
      check();
      if (::testing::Test::HasFatalFailure()) {
        ADD_FAILURE() << "after op " << op;
        return;
      }
    }
  }

 private:
  std::mt19937_64 rng_;
  unsigned cache_;
  std::unique_ptr<SharedArena> arena_;
  std::vector<SegModel> segs_;
  std::vector<Held> held_;
  std::vector<ArenaRange> disowned_;
};

TEST(SharedArenaModel, RandomOpsWithoutStripeCache) {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    Model m(seed, 0);
    m.run(3000);
    if (HasFatalFailure()) {
      ADD_FAILURE() << "seed " << seed;
      return;
    }
  }
}

TEST(SharedArenaModel, RandomOpsWithStripeCache) {
  for (std::uint64_t seed = 11; seed <= 14; ++seed) {
    Model m(seed, 8);
    m.run(3000);
    if (HasFatalFailure()) {
      ADD_FAILURE() << "seed " << seed;
      return;
    }
  }
}

}  // namespace
