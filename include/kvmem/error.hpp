#pragma once
// Errors shared by every kvmem component.
//
// The failure policy, the same everywhere:
//  - Exhaustion on a hot path is not an error: it returns an empty std::optional, an invalid
//    handle or `false`, and is counted in the component's stats.
//  - A bad argument (size 0, alignment not a power of two, a size above capacity, an unknown
//    id) throws std::invalid_argument whose message names the argument and what is allowed.
//  - Misuse that would corrupt state (double free, a range from another allocator, a stale
//    id, a release below zero) throws kvmem::UsageError, derived from std::logic_error, unless
//    a component's options select "count and ignore"; it is never silently accepted.
//  - Bytes that fail to load (bad magic, version, bounds, checksum) throw kvmem::FormatError.
//  - The std::pmr interface throws std::bad_alloc, as the standard requires.

#include <stdexcept>
#include <string>

namespace kvmem {

// Misuse of an API that would corrupt the allocator's state if accepted.
class UsageError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// Serialized state that does not load: truncated, out of bounds, wrong checksum or version.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace kvmem
