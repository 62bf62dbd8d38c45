// Uses kvmem through its installed headers and package config only.
#include <cstdio>

#include <kvmem/offset_allocator.hpp>

int main() {
  kvmem::OffsetAllocator allocator(1 << 20);
  auto a = allocator.allocate(4096, 64);
  if (!a || a->offset % 64 != 0 || allocator.used_bytes() != 4096) return 1;
  allocator.free(*a);
  if (allocator.used_bytes() != 0 || !allocator.validate()) return 1;
  std::printf("kvmem consumer: ok\n");
  return 0;
}
