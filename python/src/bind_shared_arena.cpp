// Python binding of kvmem::SharedArena and kvmem::ArenaHandle (a context manager).
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "kvmem/shared_arena.hpp"

namespace kvmem::python {

namespace {

PlacementPolicy parse_policy(const std::string& name) {
  if (name == "local") return PlacementPolicy::kLocal;
  if (name == "largest_free") return PlacementPolicy::kLargestFree;
  if (name == "round_robin") return PlacementPolicy::kRoundRobin;
  if (name == "random") return PlacementPolicy::kRandom;
  if (name == "least_utilized") return PlacementPolicy::kLeastUtilized;
  throw std::invalid_argument("SharedArena.allocate: policy must be one of 'local', 'largest_free', "
                              "'round_robin', 'random', 'least_utilized', got '" + name + "'");
}

py::dict segment_dict(const SegmentStats& s) {
  py::dict d;
  d["id"] = s.id.value;
  d["name"] = s.name;
  d["capacity"] = s.capacity;
  d["used"] = s.used;
  d["free"] = s.free;
  d["largest_free"] = s.largest_free;
  d["live_allocations"] = s.live_allocations;
  d["total_allocations"] = s.total_allocations;
  d["failed_allocations"] = s.failed_allocations;
  d["unclaimed"] = s.unclaimed;
  d["stripes"] = s.stripes.size();
  return d;
}

}  // namespace

void bind_shared_arena(py::module_& m) {
  py::class_<ArenaHandle>(m, "ArenaHandle",
                          "A range of a SharedArena segment; freed by release(), by leaving its `with` "
                          "block, or when garbage-collected. Safe after its arena or segment is gone.")
      .def_property_readonly("segment", [](const ArenaHandle& h) { return h.segment().value; })
      .def_property_readonly("offset", &ArenaHandle::offset)
      .def_property_readonly("size", &ArenaHandle::size)
      .def_property_readonly("address",
                             [](const ArenaHandle& h) { return reinterpret_cast<std::uintptr_t>(h.data()); },
                             "base + offset when the segment was added with a base, else 0")
      .def_property_readonly("empty", &ArenaHandle::empty)
      .def("release", &ArenaHandle::release,
           "Frees the range now; False when it was already released or its arena/segment is gone.")
      .def("__enter__", [](ArenaHandle& h) -> ArenaHandle& { return h; }, py::return_value_policy::reference)
      .def("__exit__", [](ArenaHandle& h, const py::args&) { h.release(); })
      .def("__repr__", [](const ArenaHandle& h) {
        return "ArenaHandle(segment=" + std::to_string(h.segment().value) + ", offset=" +
               std::to_string(h.offset()) + ", size=" + std::to_string(h.size()) + ")";
      });

  py::class_<SharedArena>(m, "SharedArena",
                          "Thread-safe OffsetAllocator over many segments. All methods may be called "
                          "from any thread; allocate/release drop the GIL.")
      .def(py::init([](unsigned stripes) {
             SharedArena::Options o;
             o.stripes = stripes;
             return std::make_unique<SharedArena>(o);
           }),
           py::arg("stripes") = 0)
      .def(
          "add_segment",
          [](SharedArena& a, std::uint64_t size, std::uintptr_t base, std::string name) {
            return a.add_segment(size, reinterpret_cast<void*>(base), std::move(name)).value;
          },
          py::arg("size"), py::arg("base") = 0, py::arg("name") = "",
          "Registers a segment of `size` bytes (optional base address as an int); returns its id.")
      .def(
          "remove_segment",
          [](SharedArena& a, std::uint64_t id, bool detach) {
            return a.remove_segment(SegmentId{id}, detach ? RemovePolicy::kDetach : RemovePolicy::kRefuseIfLive);
          },
          py::arg("segment"), py::arg("detach") = false,
          "Removes a segment. With live handles: False unless detach=True (then the handles become inert).")
      .def(
          "allocate",
          [](SharedArena& a, std::uint64_t size, std::uint64_t alignment, std::optional<std::uint64_t> segment,
             std::optional<std::string> policy) -> std::optional<ArenaHandle> {
            if (segment && policy)
              throw std::invalid_argument("SharedArena.allocate: give segment or policy, not both");
            Placement placement = PlacementPolicy::kLocal;
            if (segment) placement = Placement(SegmentId{*segment});
            if (policy) placement = Placement(parse_policy(*policy));
            py::gil_scoped_release nogil;
            return a.allocate(size, placement, alignment);
          },
          py::arg("size"), py::arg("alignment") = 1, py::arg("segment") = py::none(),
          py::arg("policy") = py::none(), "Returns an ArenaHandle, or None when nothing fits.")
      .def("segments",
           [](const SharedArena& a) {
             std::vector<std::uint64_t> out;
             for (auto s : a.segments()) out.push_back(s.value);
             return out;
           })
      .def("segment_stats", [](const SharedArena& a, std::uint64_t id) { return segment_dict(a.segment_stats(SegmentId{id})); })
      .def("stats",
           [](const SharedArena& a) {
             const auto s = a.stats();
             py::dict d;
             d["segments"] = s.segments;
             d["capacity"] = s.capacity;
             d["used"] = s.used;
             d["free"] = s.free;
             d["largest_free"] = s.largest_free;
             d["live_allocations"] = s.live_allocations;
             d["total_allocations"] = s.total_allocations;
             d["failed_allocations"] = s.failed_allocations;
             d["fast_rejections"] = s.fast_rejections;
             return d;
           })
      .def("validate", &SharedArena::validate);
}

}  // namespace kvmem::python
