// The kvmem Python module. Error mapping, the same for every component:
//   std::invalid_argument -> ValueError      (bad arguments)
//   std::bad_alloc        -> MemoryError     (exhaustion where the C++ API throws)
//   kvmem::UsageError     -> kvmem.UsageError (misuse: double free, stale or foreign handle)
//   kvmem::FormatError    -> kvmem.FormatError (damaged snapshot bytes; a ValueError)
// Messages are the C++ messages, unchanged.
#include "bindings.hpp"

#include "kvmem/error.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_kvmem, m) {
  m.doc() = "kvmem: allocators, pools and caches for the memory under key-value caches";

  static py::exception<kvmem::UsageError> usage_error(m, "UsageError", PyExc_RuntimeError);
  static py::exception<kvmem::FormatError> format_error(m, "FormatError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const kvmem::UsageError& e) {
      usage_error(e.what());
    } catch (const kvmem::FormatError& e) {
      format_error(e.what());
    }
  });

  kvmem::python::bind_offset_allocator(m);
  kvmem::python::bind_shared_arena(m);
  kvmem::python::bind_page_pool(m);
  kvmem::python::bind_embedding_cache(m);
  kvmem::python::bind_object_cache(m);
}
