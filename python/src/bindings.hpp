#pragma once
// Shared declarations of the kvmem Python module: one bind_<component>() per component,
// each in python/src/bind_<component>.cpp, called from module.cpp.
#include <pybind11/pybind11.h>

namespace kvmem::python {

namespace py = pybind11;

void bind_offset_allocator(py::module_& m);
void bind_shared_arena(py::module_& m);
void bind_page_pool(py::module_& m);
void bind_embedding_cache(py::module_& m);
void bind_object_cache(py::module_& m);

}  // namespace kvmem::python
