#pragma once
// Hashing shared by kvmem's components (namespace kvmem::detail; not part of the public API).

#include <cstddef>
#include <cstdint>

namespace kvmem::detail {

// SplitMix64's finalizer: a bijective 64-bit mix. Spreads sequential ids over shards and
// hash buckets, and seeds per-id random streams.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// FNV-1a, 64-bit: the checksum of serialized snapshots (detects corruption, not tampering).
inline std::uint64_t fnv1a64(const std::byte* data, std::size_t n) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<std::uint64_t>(data[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace kvmem::detail
