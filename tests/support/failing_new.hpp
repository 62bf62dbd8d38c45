#pragma once
// A replacement of the global operator new / delete that can make every allocation of the
// calling thread fail, for tests of what happens when memory runs out. Replacement functions
// must be defined once per program: include this header in exactly one source file of a test
// binary (tests/<component>_oom_test.cpp), and nowhere else.
#include <cstdlib>
#include <new>

namespace kvmem::test {

inline thread_local bool g_fail_allocations = false;

// While one lives, every operator new on this thread throws std::bad_alloc.
struct FailAllocations {
  FailAllocations() { g_fail_allocations = true; }
  ~FailAllocations() { g_fail_allocations = false; }
  FailAllocations(const FailAllocations&) = delete;
  FailAllocations& operator=(const FailAllocations&) = delete;
};

inline void* checked_malloc(std::size_t n) {
  if (g_fail_allocations) throw std::bad_alloc();
  void* p = std::malloc(n != 0 ? n : 1);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace kvmem::test

// GCC sees malloc behind these operator new definitions and free behind the deletes, and warns
// that the pairs do not match; they do, by construction of this replacement.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) { return kvmem::test::checked_malloc(n); }
void* operator new[](std::size_t n) { return kvmem::test::checked_malloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop
