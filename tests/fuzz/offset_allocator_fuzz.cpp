// libFuzzer target for kvmem::OffsetAllocator.
//
// Byte 0 picks the mode:
//  - even: an operation sequence. Bytes 1..9 choose capacity, policy, placement and threshold;
//    then each op byte (plus argument bytes) is allocate / free / double free / stale free /
//    serialize round trip / reset. After every op: validate(), used bytes equal to the sum of
//    live sizes, live ranges disjoint and inside capacity, and "no false no-space" (a failed
//    alignment-1 request means largest_free() < the normalized size).
//  - odd: the remaining bytes go to deserialize(). It must either throw kvmem::FormatError or
//    produce an allocator that validates, re-serializes to the same bytes and keeps working.
// Any violation traps, which libFuzzer (and the gcc corpus replay) reports as a crash.
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <vector>

#include "kvmem/offset_allocator.hpp"

namespace {

using kvmem::Allocation;
using kvmem::OffsetAllocator;

#define FUZZ_CHECK(cond)     \
  do {                       \
    if (!(cond)) __builtin_trap(); \
  } while (0)

struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  std::uint64_t u64(int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(byte()) << (8 * i);
    return v;
  }
};

void check_live(const OffsetAllocator& a, const std::vector<Allocation>& live) {
  FUZZ_CHECK(a.validate());
  std::map<std::uint64_t, std::uint64_t> ranges;
  std::uint64_t used = 0;
  for (const auto& x : live) {
    FUZZ_CHECK(x.size > 0 && x.offset <= a.capacity() - x.size);
    FUZZ_CHECK(ranges.emplace(x.offset, x.size).second);
    used += x.size;
  }
  std::uint64_t end = 0;
  for (const auto& [o, s] : ranges) {
    FUZZ_CHECK(o >= end);
    end = o + s;
  }
  FUZZ_CHECK(used == a.used_bytes());
  FUZZ_CHECK(live.size() == a.allocation_count());
  FUZZ_CHECK(a.used_bytes() + a.free_bytes() == a.capacity());
}

void run_ops(Reader in) {
  const std::uint8_t shape = in.byte();
  std::uint64_t capacity = in.u64(8);
  const auto reserve_regions = static_cast<std::uint32_t>(capacity >> 53);  // bits the modulo drops
  // Mostly small capacities (dense interactions), sometimes anything up to 2^56.
  if (shape & 0x80) {
    capacity = 1 + capacity % OffsetAllocator::kMaxCapacity;
  } else {
    capacity = 1 + capacity % 4096;
  }
  OffsetAllocator::Options options;
  options.policy = (shape & 1) ? OffsetAllocator::Policy::kRoundUpToBin : OffsetAllocator::Policy::kExact;
  options.placement = static_cast<OffsetAllocator::Placement>((shape >> 1) % 3);
  options.high_end_threshold = (shape >> 3) & 0x0f ? std::uint64_t{1} << ((shape >> 3) & 0x0f) : 0;
  options.reserve_regions = reserve_regions;
  OffsetAllocator a(capacity, options);
  std::vector<Allocation> live;
  std::vector<Allocation> dead;  // freed allocations, for double/stale free checks
  int steps = 0;
  while (in.n > 0 && steps++ < 1000) {
    const std::uint8_t op = in.byte();
    switch (op % 8) {
      case 0:
      case 1:
      case 2:
      case 3: {
        const std::uint8_t shift = in.byte();
        std::uint64_t size = in.u64(2);
        if (shift & 0x40) size <<= (shift % 48);  // large requests on large capacities
        const std::uint64_t alignment = std::uint64_t{1} << (in.byte() % 20);
        if (size == 0 || size > capacity || alignment > capacity) {
          bool threw = false;
          try {
            (void)a.allocate(size, alignment);
          } catch (const std::invalid_argument&) {
            threw = true;
          }
          FUZZ_CHECK(threw);
          break;
        }
        const std::uint64_t need = a.normalized_size(size);
        const std::uint64_t largest = a.largest_free();
        auto x = a.allocate(size, alignment);
        if (x) {
          FUZZ_CHECK(x->size == need && x->offset % alignment == 0 && a.owns(*x));
          live.push_back(*x);
        } else if (need <= capacity) {
          FUZZ_CHECK(largest < need + alignment - 1);  // guaranteed fit never fails
          if (alignment == 1) FUZZ_CHECK(largest < need);
        }
        break;
      }
      case 4:
      case 5: {
        if (live.empty()) break;
        const std::size_t i = in.byte() % live.size();
        a.free(live[i]);
        FUZZ_CHECK(!a.owns(live[i]));
        dead.push_back(live[i]);
        live[i] = live.back();
        live.pop_back();
        break;
      }
      case 6: {
        if (dead.empty()) break;
        const Allocation& x = dead[in.byte() % dead.size()];
        bool threw = false;
        try {
          a.free(x);
        } catch (const kvmem::UsageError&) {
          threw = true;
        }
        FUZZ_CHECK(threw);
        break;
      }
      default: {
        if (in.byte() % 4 == 0) {
          a.reset();
          for (const auto& x : live) dead.push_back(x);
          live.clear();
        } else {
          const auto bytes = a.serialize();
          OffsetAllocator b = OffsetAllocator::deserialize(bytes);
          FUZZ_CHECK(b.serialize() == bytes);
          for (const auto& x : live) dead.push_back(x);
          live.clear();
          b.for_each_allocation([&](const Allocation& x) { live.push_back(x); });
          a = std::move(b);
        }
        break;
      }
    }
    check_live(a, live);
  }
  for (const auto& x : live) a.free(x);
  FUZZ_CHECK(a.validate() && a.largest_free() == capacity);
}

void run_deserialize(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    OffsetAllocator a = OffsetAllocator::deserialize(bytes);
    FUZZ_CHECK(a.validate());
    const auto again = a.serialize();
    FUZZ_CHECK(again.size() == size);
    for (std::size_t i = 0; i < size; ++i) FUZZ_CHECK(again[i] == bytes[i]);
    std::vector<Allocation> live;
    a.for_each_allocation([&](const Allocation& x) { live.push_back(x); });
    if (a.largest_free() > 0) {
      auto x = a.allocate(a.largest_free());
      FUZZ_CHECK(x.has_value() || a.options().policy == OffsetAllocator::Policy::kRoundUpToBin);
      if (x) live.push_back(*x);
    }
    for (const auto& x : live) a.free(x);
    FUZZ_CHECK(a.validate() && a.largest_free() == a.capacity());
  } catch (const kvmem::FormatError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1) {
    run_deserialize(data + 1, size - 1);
  } else {
    run_ops(Reader{data + 1, size - 1});
  }
  return 0;
}
