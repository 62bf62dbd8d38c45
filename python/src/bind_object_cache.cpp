// Python binding of kvmem::ObjectCache. get() returns a Value that exposes the cached bytes
// through the buffer protocol (memoryview(value) is zero-copy and read-only) and keeps them
// readable and unchanged while it lives, even if the key is overwritten or evicted.
#include <pybind11/stl.h>

#include <limits>

#include "bindings.hpp"
#include "kvmem/object_cache.hpp"

namespace kvmem::python {

namespace {

py::dict usage(const MemoryUsage& u) {
  py::dict d;
  d["used"] = u.used;
  d["held"] = u.held;
  return d;
}

std::string_view bytes_of(const py::buffer& b, py::buffer_info& info) {
  info = b.request();
  if (info.ndim != 1 || info.itemsize != 1 || (info.ndim == 1 && info.strides[0] != 1))
    throw std::invalid_argument("ObjectCache: keys and values must be bytes-like and contiguous");
  return {static_cast<const char*>(info.ptr), static_cast<std::size_t>(info.size)};
}

}  // namespace

void bind_object_cache(py::module_& m) {
  py::class_<ValueHandle>(m, "Value", py::buffer_protocol(),
                          "A cached value pinned while this object lives; bytes(v) copies it, "
                          "memoryview(v) does not.")
      .def_buffer([](ValueHandle& v) {
        return py::buffer_info(const_cast<char*>(v.data()), 1, py::format_descriptor<std::uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(v.size())}, {1}, /*readonly=*/true);
      })
      .def("__len__", &ValueHandle::size)
      .def("__bytes__", [](const ValueHandle& v) { return py::bytes(v.data(), v.size()); })
      .def("release", &ValueHandle::reset, "Unpins the value now (further reads see b'').");

  py::enum_<PutStatus>(m, "PutStatus")
      .value("STORED", PutStatus::kStored)
      .value("NO_MEMORY", PutStatus::kNoMemory)
      .value("OVER_CACHE_MAX", PutStatus::kOverCacheMax);

  py::class_<ObjectCache>(m, "ObjectCache",
                          "Many named caches of variable-size byte values in one memory budget, with\n"
                          "background eviction. Thread-safe; put/get release the GIL.")
      .def(py::init([](std::size_t memory_limit, std::size_t block_size, bool background_wash) {
             ObjectCache::Options o;
             o.memory_limit = memory_limit;
             if (block_size) o.block_size = block_size;
             o.background_wash = background_wash;
             return std::make_unique<ObjectCache>(o);
           }),
           py::arg("memory_limit") = std::size_t{1} << 30, py::arg("block_size") = 0,
           py::arg("background_wash") = true)
      .def(
          "register_cache",
          [](ObjectCache& c, const std::string& name, double priority, std::size_t min_bytes,
             std::optional<std::size_t> max_bytes) {
            return c.register_cache(name, priority, min_bytes, max_bytes.value_or(ObjectCache::kUnlimited));
          },
          py::arg("name"), py::arg("priority") = 1.0, py::arg("min_bytes") = 0, py::arg("max_bytes") = py::none())
      .def(
          "put",
          [](ObjectCache& c, CacheId cache, const py::buffer& key, const py::buffer& value) {
            py::buffer_info ki, vi;
            const auto k = bytes_of(key, ki);
            const auto v = bytes_of(value, vi);
            py::gil_scoped_release nogil;
            return c.put(cache, k, v);
          },
          py::arg("cache"), py::arg("key"), py::arg("value"), "Stores a copy of value; returns a PutStatus.")
      .def(
          "get",
          [](ObjectCache& c, CacheId cache, const py::buffer& key) {
            py::buffer_info ki;
            const auto k = bytes_of(key, ki);
            py::gil_scoped_release nogil;
            return c.get(cache, k);
          },
          py::arg("cache"), py::arg("key"),
          // A Value pins memory the cache owns: it keeps the cache alive (the C++ cache must
          // not be destroyed while a ValueHandle lives).
          py::keep_alive<0, 1>(), "A Value, or None on a miss.")
      .def(
          "erase",
          [](ObjectCache& c, CacheId cache, const py::buffer& key) {
            py::buffer_info ki;
            return c.erase(cache, bytes_of(key, ki));
          },
          py::arg("cache"), py::arg("key"))
      .def("wash_now", &ObjectCache::wash_now, py::call_guard<py::gil_scoped_release>())
      .def("__len__", &ObjectCache::entry_count)
      .def_property_readonly("held_bytes", &ObjectCache::held_bytes)
      .def("memory_report",
           [](const ObjectCache& c) {
             const auto r = c.memory_report();
             py::dict d;
             d["map_buckets"] = usage(r.map_buckets);
             d["map_nodes"] = usage(r.map_nodes);
             d["block_handles"] = usage(r.block_handles);
             d["value_blocks"] = usage(r.value_blocks);
             d["wash_scratch"] = usage(r.wash_scratch);
             d["fixed"] = usage(r.fixed);
             d["metadata"] = usage(r.metadata());
             d["total"] = usage(r.total());
             py::list caches;
             for (const auto& cr : r.caches) {
               py::dict e;
               e["id"] = cr.id;
               e["name"] = cr.name;
               e["values"] = usage(cr.values);
               e["nodes"] = usage(cr.nodes);
               e["entries"] = cr.entries;
               e["blocks"] = cr.blocks;
               e["hits"] = cr.hits;
               e["misses"] = cr.misses;
               e["evicted_blocks"] = cr.evicted_blocks;
               caches.append(e);
             }
             d["caches"] = caches;
             return d;
           })
      .def("validate", &ObjectCache::validate);
}

}  // namespace kvmem::python
