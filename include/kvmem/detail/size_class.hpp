#pragma once
// kvmem::detail size classes shared by the range allocators.
//
// Two tables live here:
//  - kvmem's own floating-point classes with 5 mantissa bits: sizes below 64 have one class per
//    value; from 64 on, each power of two [2^h, 2^(h+1)) is cut into 32 classes of width
//    2^(h-5). A class therefore spans at most 1/32 of its lower bound. A size maps to the class
//    containing it (round DOWN): a free block of size B sits in class_of(B), and every block of a
//    class above class_of(S) is larger than S.
//  - Mooncake's 3-mantissa-bit "SmallFloat" values (bin i = (8 + (i & 7)) << ((i >> 3) - 1),
//    sizes 0-15 exact), used only for the round-up-to-bin policy that reproduces Mooncake.

#include <bit>
#include <cstdint>

namespace kvmem::detail {

inline constexpr unsigned kClassMantissaBits = 5;
inline constexpr unsigned kClassesPerOctave = 1u << kClassMantissaBits;       // 32
inline constexpr std::uint64_t kExactClassLimit = std::uint64_t{2} << kClassMantissaBits;  // 64
// Classes 0..63 exact; then 32 per octave for highest bit 6..63.
inline constexpr unsigned kNumSizeClasses =
    static_cast<unsigned>(kExactClassLimit) + (64 - 6) * kClassesPerOctave;  // 1920

// The class containing `size` (round down). size_class(0) == 0.
// With e = max(0, floor(log2 size) - 5), the 6 leading bits of size are size >> e (in
// [32, 64) once size >= 32), and class = 32 e + (size >> e): classes 0..63 are the sizes
// 0..63, then 32 per octave. Branch-free, six instructions: it sits on every allocate and
// free. OR-ing in bit 5 makes the bit scan return at least 5, which is the max() for free.
constexpr unsigned size_class(std::uint64_t size) noexcept {
  const unsigned h = 63u ^ static_cast<unsigned>(std::countl_zero(size | kClassesPerOctave));  // one bsr
  const unsigned e = h - kClassMantissaBits;
  return (e << kClassMantissaBits) + static_cast<unsigned>(size >> e);
}

// The smallest size of class c (its lower bound): size_class(class_floor(c)) == c.
constexpr std::uint64_t class_floor(unsigned c) noexcept {
  const unsigned e = c < 2 * kClassesPerOctave ? 0u : (c >> kClassMantissaBits) - 1;
  return static_cast<std::uint64_t>(c - (e << kClassMantissaBits)) << e;
}

// The lowest class all of whose members are >= size.
constexpr unsigned class_at_least(std::uint64_t size) noexcept {
  const unsigned c = size_class(size);
  return class_floor(c) == size ? c : c + 1;
}

// Mooncake's round-up: the smallest 3-mantissa-bit bin value >= size. Sizes 0-15 are exact;
// above, the step in [2^h, 2^(h+1)) is 2^(h-3), so the result may carry into 2^(h+1).
// Defined for size <= 2^62.
constexpr std::uint64_t mooncake_bin_round_up(std::uint64_t size) noexcept {
  if (size < 16) return size;
  const unsigned h = 63u - static_cast<unsigned>(std::countl_zero(size));
  const std::uint64_t step = std::uint64_t{1} << (h - 3);
  return (size + step - 1) & ~(step - 1);
}

static_assert(size_class(63) == 63 && size_class(64) == 64 && size_class(65) == 64 && size_class(66) == 65);
static_assert(class_floor(size_class(1000)) <= 1000 && class_floor(size_class(1000) + 1) > 1000);
static_assert(size_class(~std::uint64_t{0}) == kNumSizeClasses - 1);
static_assert(mooncake_bin_round_up(145) == 160 && mooncake_bin_round_up(2065) == 2304);
static_assert(mooncake_bin_round_up(33554449) == 37748736 && mooncake_bin_round_up(111) == 112);

}  // namespace kvmem::detail
