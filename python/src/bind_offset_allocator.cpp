// Python binding of kvmem::OffsetAllocator and kvmem::Allocation.
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "kvmem/offset_allocator.hpp"

namespace kvmem::python {

void bind_offset_allocator(py::module_& m) {
  py::class_<Allocation>(m, "Allocation", "One allocated range; pass it back to free() unchanged.")
      .def_readonly("offset", &Allocation::offset)
      .def_readonly("size", &Allocation::size)
      .def("__eq__", [](const Allocation& a, const Allocation& b) { return a == b; })
      .def("__repr__", [](const Allocation& a) {
        return "Allocation(offset=" + std::to_string(a.offset) + ", size=" + std::to_string(a.size) + ")";
      });

  py::class_<OffsetAllocator> cls(m, "OffsetAllocator",
                                  "O(1) byte-exact range allocator over a region it does not own.\n"
                                  "Not thread-safe: use one per thread, or SharedArena.");
  py::enum_<OffsetAllocator::Policy>(cls, "Policy")
      .value("EXACT", OffsetAllocator::Policy::kExact)
      .value("ROUND_UP_TO_BIN", OffsetAllocator::Policy::kRoundUpToBin);

  cls.def(py::init([](std::uint64_t capacity, OffsetAllocator::Policy policy, std::uint32_t reserve_regions) {
            OffsetAllocator::Options options;
            options.policy = policy;
            options.reserve_regions = reserve_regions;
            return OffsetAllocator(capacity, options);
          }),
          py::arg("capacity"), py::arg("policy") = OffsetAllocator::Policy::kExact, py::arg("reserve_regions") = 0,
          "reserve_regions: metadata for this many regions (allocations + free blocks) is set aside\n"
          "and written at construction, so calls within it do not grow metadata (a hint, not a limit).")
      .def("allocate", &OffsetAllocator::allocate, py::arg("size"), py::arg("alignment") = 1,
           "Returns an Allocation, or None when no free block fits. ValueError on bad arguments.")
      .def("free", &OffsetAllocator::free, py::arg("allocation"),
           "Frees an Allocation. kvmem.UsageError on a double free or a foreign Allocation.")
      .def("owns", &OffsetAllocator::owns)
      .def("reset", &OffsetAllocator::reset)
      .def("validate", &OffsetAllocator::validate)
      .def_property_readonly("capacity", &OffsetAllocator::capacity)
      .def_property_readonly("free_bytes", &OffsetAllocator::free_bytes)
      .def_property_readonly("used_bytes", &OffsetAllocator::used_bytes)
      .def_property_readonly("largest_free", &OffsetAllocator::largest_free)
      .def_property_readonly("allocation_count", &OffsetAllocator::allocation_count)
      .def("allocations",
           [](const OffsetAllocator& a) {
             std::vector<Allocation> out;
             a.for_each_allocation([&](const Allocation& x) { out.push_back(x); });
             return out;
           })
      .def("stats",
           [](const OffsetAllocator& a) {
             const auto r = a.storage_report();
             py::dict d;
             d["capacity"] = r.capacity;
             d["used_bytes"] = r.used_bytes;
             d["free_bytes"] = r.free_bytes;
             d["largest_free"] = r.largest_free;
             d["allocations"] = r.allocations;
             d["free_blocks"] = r.free_blocks;
             d["failed_allocations"] = r.failed_allocations;
             d["unindexed_blocks"] = r.unindexed_blocks;
             d["metadata_bytes_used"] = r.metadata_bytes_used;
             d["metadata_bytes_held"] = r.metadata_bytes_held;
             return d;
           })
      .def("serialize",
           [](const OffsetAllocator& a) {
             const auto bytes = a.serialize();
             return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
           })
      .def_static(
          "deserialize",
          [](const py::bytes& data) {
            const std::string_view view(data);
            return OffsetAllocator::deserialize(
                std::span(reinterpret_cast<const std::byte*>(view.data()), view.size()));
          },
          "Rebuilds an allocator from serialize() bytes; kvmem.FormatError when damaged.");
}

}  // namespace kvmem::python
