// kvmem::SharedArena when memory runs out: ArenaHandle's destructor and release() are
// noexcept, so freeing a range must not need memory (an OffsetAllocator::free that threw
// std::bad_alloc there would terminate the process). support/failing_new.hpp makes every
// allocation of the test thread fail while a FailAllocations guard lives.
#include <gtest/gtest.h>

#include <cstddef>
#include <optional>
#include <vector>

#include "kvmem/shared_arena.hpp"
#include "support/failing_new.hpp"

namespace {

using kvmem::ArenaHandle;
using kvmem::SharedArena;
using kvmem::test::FailAllocations;

// Many distinct sizes, no stripe cache: dropping the handles pushes free blocks into size
// classes whose heaps were never grown, which is where OffsetAllocator::free used to allocate.
TEST(SharedArenaOom, HandlesDropWithoutMemoryAndNothingIsLost) {
  for (const unsigned cache : {0u, 8u}) {
    SharedArena::Options o;
    o.stripes = 2;
    o.min_stripe_bytes = 4096;
    o.stripe_cache = cache;
    SharedArena arena(o);
    std::vector<std::byte> mem(1 << 20);
    (void)arena.add_segment(mem.size(), mem.data(), "oom");
    std::vector<ArenaHandle> handles;
    for (std::uint64_t size = 1; size < 4000; size = size * 5 / 4 + 1) {
      auto h = arena.allocate(size);
      ASSERT_TRUE(h.has_value());
      handles.push_back(std::move(*h));
    }
    const std::uint64_t live = arena.stats().live_allocations;
    ASSERT_EQ(live, handles.size());
    {
      FailAllocations f;
      for (std::size_t i = 0; i < handles.size(); i += 2) handles[i].release();  // every other one
      std::vector<ArenaHandle> rest = std::move(handles);  // the rest die with `rest`
      handles.clear();
      for (std::size_t i = 1; i < rest.size(); i += 2) {
        ArenaHandle dying = std::move(rest[i]);  // destructor runs at the end of the scope
      }
    }
    const auto stats = arena.stats();
    EXPECT_EQ(stats.live_allocations, 0u) << "stripe_cache " << cache;
    EXPECT_EQ(stats.used, 0u);
    EXPECT_TRUE(arena.validate());
    // With memory back, the whole of each stripe can be handed out again.
    auto big = arena.allocate(mem.size() / 2);
    EXPECT_TRUE(big.has_value()) << "stripe_cache " << cache;
  }
}

}  // namespace
