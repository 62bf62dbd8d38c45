// libFuzzer target for kvmem::SharedArena: the input is an operation sequence (allocate with
// a placement, free, disown/adopt, add/remove segment, snapshot + restore) run against a
// small arena, with validate() and an overlap check after every operation. Inputs whose first
// byte is 0xFF are fed to SharedArena::restore() instead, which must either load (and then
// validate) or throw kvmem::FormatError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <vector>

#include "kvmem/shared_arena.hpp"

namespace {

class Input {
 public:
  Input(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  [[nodiscard]] bool empty() const { return i_ >= n_; }
  std::uint8_t u8() { return i_ < n_ ? d_[i_++] : 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }

 private:
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

void check(bool ok) {
  if (!ok) std::abort();
}

kvmem::SharedArena::Options opts(unsigned cache) {
  kvmem::SharedArena::Options o;
  o.stripes = 4;
  o.min_stripe_bytes = 4096;
  o.max_segments = 4;
  o.stripe_cache = cache;
  return o;
}

struct Held {
  kvmem::ArenaHandle h;
  kvmem::ArenaRange r;
};

// Live ranges per segment: [offset, offset + size) must never overlap.
using Live = std::map<std::uint64_t, std::map<std::uint64_t, std::uint64_t>>;

void insert_checked(Live& live, const kvmem::ArenaRange& r) {
  auto& m = live[r.segment.value];
  auto next = m.lower_bound(r.offset);
  if (next != m.end()) check(r.offset + r.size <= next->first);
  if (next != m.begin()) {
    auto prev = std::prev(next);
    check(prev->first + prev->second <= r.offset);
  }
  m.emplace(r.offset, r.size);
}

void run_ops(Input& in) {
  const unsigned cache = in.u8() % 9;
  auto arena = std::make_unique<kvmem::SharedArena>(opts(cache));
  std::vector<kvmem::SegmentId> segs;
  std::vector<Held> held;
  std::vector<kvmem::ArenaRange> disowned;
  Live live;
  int steps = 0;
  while (!in.empty() && steps++ < 400) {
    const std::uint8_t op = in.u8() % 8;
    switch (op) {
      case 0: {  // add segment
        if (segs.size() >= 4) break;
        const std::uint64_t size = 1 + std::uint64_t{in.u16()} * 4;
        segs.push_back(arena->add_segment(size, nullptr, {}, in.u8() % 5));
        break;
      }
      case 1:
      case 2: {  // allocate
        const std::uint64_t size = 1 + in.u16() % 20000;
        const std::uint64_t alignment = std::uint64_t{1} << (in.u8() % 14);
        const std::uint8_t how = in.u8();
        std::optional<kvmem::ArenaHandle> h;
        if (how % 6 == 5 && !segs.empty()) {
          h = arena->allocate(size, segs[(how / 6) % segs.size()], alignment);
        } else {
          h = arena->allocate(size, static_cast<kvmem::PlacementPolicy>(how % 5), alignment);
        }
        if (h) {
          check(h->size() == size && h->offset() % alignment == 0);
          insert_checked(live, h->range());
          held.push_back(Held{std::move(*h), h->range()});
        }
        break;
      }
      case 3: {  // free
        if (held.empty()) break;
        const std::size_t i = in.u8() % held.size();
        live[held[i].r.segment.value].erase(held[i].r.offset);
        held[i] = std::move(held.back());
        held.pop_back();
        break;
      }
      case 4: {  // disown / adopt
        if (!held.empty() && in.u8() % 2 == 0) {
          const std::size_t i = in.u8() % held.size();
          disowned.push_back(held[i].h.disown());
          held[i] = std::move(held.back());
          held.pop_back();
        } else if (!disowned.empty()) {
          const std::size_t i = in.u8() % disowned.size();
          const kvmem::ArenaRange r = disowned[i];
          disowned[i] = disowned.back();
          disowned.pop_back();
          held.push_back(Held{arena->adopt(r), r});
          try {
            (void)arena->adopt(r);
            check(false);  // a second adopt must be refused
          } catch (const kvmem::UsageError&) {
          }
        }
        break;
      }
      case 5: {  // remove segment
        if (segs.empty()) break;
        const std::size_t i = in.u8() % segs.size();
        const kvmem::SegmentId id = segs[i];
        const bool detach = in.u8() % 2 == 0;
        const bool has_live = !live[id.value].empty();
        const bool removed =
            arena->remove_segment(id, detach ? kvmem::RemovePolicy::kDetach : kvmem::RemovePolicy::kRefuseIfLive);
        check(removed == (detach || !has_live));
        if (removed) {
          segs.erase(segs.begin() + static_cast<std::ptrdiff_t>(i));
          live.erase(id.value);
          for (auto& x : held) {
            if (x.r.segment == id) check(!x.h.release());
          }
          std::erase_if(held, [&](const Held& x) { return x.r.segment == id; });
          std::erase_if(disowned, [&](const kvmem::ArenaRange& r) { return r.segment == id; });
        }
        break;
      }
      case 6: {  // snapshot + restore, the old arena dies first
        const auto image = arena->snapshot();
        auto next = std::make_unique<kvmem::SharedArena>(kvmem::SharedArena::restore(image, opts(cache)));
        arena = std::move(next);
        for (auto& x : held) {
          check(!x.h.release());
          x.h = arena->adopt(x.r);
        }
        break;
      }
      default: {  // stats
        const auto st = arena->stats();
        check(st.used <= st.capacity && st.segments == segs.size());
        break;
      }
    }
    check(arena->validate());
  }
}

void run_restore(const std::uint8_t* data, std::size_t size) {
  try {
    auto arena = kvmem::SharedArena::restore(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size), opts(8));
    check(arena.validate());
    std::vector<kvmem::ArenaHandle> hs;
    arena.for_each_unclaimed([&](const kvmem::ArenaRange& r) { hs.push_back(arena.adopt(r)); });
    hs.clear();
    check(arena.stats().used == 0);
  } catch (const kvmem::FormatError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 0 && data[0] == 0xFF) {
    run_restore(data + 1, size - 1);
    return 0;
  }
  Input in(data, size);
  run_ops(in);
  return 0;
}
