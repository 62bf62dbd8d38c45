// Python binding of kvmem::EmbeddingCache: ids and rows are numpy arrays; get() writes into the
// caller's float32 array in place (zero-copy) and releases the GIL while it works.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "kvmem/embedding_cache.hpp"

namespace kvmem::python {

namespace {

using Ids = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
using Rows = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::span<const std::int64_t> ids_of(const Ids& ids) {
  if (ids.ndim() != 1) throw std::invalid_argument("EmbeddingCache: ids must be a 1-D integer array");
  return {ids.data(), static_cast<std::size_t>(ids.size())};
}

void check_rows(const py::array& rows, std::size_t n, std::size_t dim, const char* what) {
  if (rows.ndim() != 2 || static_cast<std::size_t>(rows.shape(0)) != n ||
      static_cast<std::size_t>(rows.shape(1)) != dim)
    throw std::invalid_argument(std::string("EmbeddingCache: ") + what + " must have shape (" +
                                std::to_string(n) + ", " + std::to_string(dim) + ")");
}

template <class E>
E parse(const std::string& name, std::initializer_list<std::pair<const char*, E>> table, const char* what) {
  std::string allowed;
  for (const auto& [key, value] : table) {
    if (name == key) return value;
    allowed += std::string(allowed.empty() ? "" : ", ") + "'" + key + "'";
  }
  throw std::invalid_argument(std::string("EmbeddingCache: ") + what + " must be one of " + allowed + ", got '" +
                              name + "'");
}

}  // namespace

void bind_embedding_cache(py::module_& m) {
  py::class_<EmbeddingCache>(m, "EmbeddingCache",
                             "Sharded int64 id -> embedding row table with eviction. Thread-safe: every\n"
                             "method may be called from any thread; batch calls release the GIL.")
      .def(py::init([](std::size_t dim, std::size_t shards, const std::string& storage,
                       const std::string& initializer, std::uint64_t seed, std::size_t max_rows,
                       std::size_t max_bytes, const std::string& policy, std::uint32_t ttl_seconds,
                       float l2_threshold, bool background) {
             EmbeddingCache::Options o;
             o.dim = dim;
             o.shards = shards;
             o.storage = parse<RowStorage>(storage,
                                           {{"float32", RowStorage::kFloat32},
                                            {"float16", RowStorage::kFloat16},
                                            {"bfloat16", RowStorage::kBFloat16}},
                                           "storage");
             o.initializer = parse<RowInitializer>(
                 initializer, {{"zeros", RowInitializer::kZeros}, {"uniform", RowInitializer::kUniform}}, "initializer");
             o.seed = seed;
             o.eviction.policy = parse<EvictionPolicy>(policy,
                                                       {{"none", EvictionPolicy::kNone},
                                                        {"ttl", EvictionPolicy::kTtl},
                                                        {"count", EvictionPolicy::kCount},
                                                        {"ttl_and_count", EvictionPolicy::kTtlAndCount},
                                                        {"l2_norm", EvictionPolicy::kL2Norm}},
                                                       "policy");
             o.eviction.max_rows = max_rows;
             o.eviction.max_bytes = max_bytes;
             o.eviction.ttl_seconds = ttl_seconds;
             o.eviction.l2_threshold = l2_threshold;
             o.eviction.background = background;
             return std::make_unique<EmbeddingCache>(std::move(o));
           }),
           py::arg("dim"), py::arg("shards") = 16, py::arg("storage") = "float32",
           py::arg("initializer") = "zeros", py::arg("seed") = 0, py::arg("max_rows") = 0,
           py::arg("max_bytes") = 0, py::arg("policy") = "none", py::arg("ttl_seconds") = 0,
           py::arg("l2_threshold") = 0.0f, py::arg("background") = false)
      .def_property_readonly("dim", &EmbeddingCache::dim)
      .def("__len__", &EmbeddingCache::size)
      .def("__contains__", &EmbeddingCache::contains)
      .def(
          "set",
          [](EmbeddingCache& c, const Ids& ids, const Rows& rows) {
            const auto span = ids_of(ids);
            check_rows(rows, span.size(), c.dim(), "rows");
            py::gil_scoped_release nogil;
            c.set(span, std::span<const float>(rows.data(), static_cast<std::size_t>(rows.size())));
          },
          py::arg("ids"), py::arg("rows"), "Upserts rows (shape (len(ids), dim)).")
      .def(
          "get",
          [](EmbeddingCache& c, const Ids& ids, std::optional<py::array_t<float>> out) {
            const auto span = ids_of(ids);
            py::array_t<float> target = out ? *out : py::array_t<float>({static_cast<py::ssize_t>(span.size()),
                                                                         static_cast<py::ssize_t>(c.dim())});
            check_rows(target, span.size(), c.dim(), "out");
            if (!(target.flags() & py::array::c_style) || !target.writeable())
              throw std::invalid_argument("EmbeddingCache: out must be a writable C-contiguous float32 array");
            py::array_t<std::uint8_t> hits(static_cast<py::ssize_t>(span.size()));
            float* dst = target.mutable_data();
            std::uint8_t* hit = hits.mutable_data();
            {
              py::gil_scoped_release nogil;
              c.get(span, std::span<float>(dst, span.size() * c.dim()), std::span<std::uint8_t>(hit, span.size()));
            }
            return py::make_tuple(target, hits.attr("astype")("bool"));
          },
          py::arg("ids"), py::arg("out") = py::none(),
          "Rows of ids into `out` (float32, shape (len(ids), dim), written in place) or a new array;\n"
          "misses are filled by the initializer. Returns (rows, hits: bool array).")
      .def(
          "erase",
          [](EmbeddingCache& c, const Ids& ids) {
            const auto span = ids_of(ids);
            py::gil_scoped_release nogil;
            return c.erase(span);
          },
          py::arg("ids"))
      .def("evict_now", &EmbeddingCache::evict_now, py::call_guard<py::gil_scoped_release>())
      .def("export",
           [](const EmbeddingCache& c) {
             std::vector<RowHeader> headers;
             std::vector<float> values;
             c.export_rows(headers, values);
             const auto n = static_cast<py::ssize_t>(headers.size());
             py::array_t<std::int64_t> keys(n);
             py::array_t<std::uint32_t> last_access(n);
             py::array_t<std::uint16_t> count(n), flags(n);
             for (py::ssize_t i = 0; i < n; ++i) {
               keys.mutable_at(i) = headers[static_cast<std::size_t>(i)].key;
               last_access.mutable_at(i) = headers[static_cast<std::size_t>(i)].last_access;
               count.mutable_at(i) = headers[static_cast<std::size_t>(i)].count;
               flags.mutable_at(i) = headers[static_cast<std::size_t>(i)].flags;
             }
             py::array_t<float> rows({n, static_cast<py::ssize_t>(c.dim())});
             if (!values.empty()) std::memcpy(rows.mutable_data(), values.data(), values.size() * sizeof(float));
             py::dict d;
             d["keys"] = keys;
             d["last_access"] = last_access;
             d["count"] = count;
             d["flags"] = flags;
             d["rows"] = rows;
             return d;
           },
           "Every row with its header, for checkpoints: a dict of numpy arrays.")
      .def(
          "import_rows",
          [](EmbeddingCache& c, const py::dict& d) {
            const Ids keys = d["keys"].cast<Ids>();
            const auto span = ids_of(keys);
            const Rows rows = d["rows"].cast<Rows>();
            check_rows(rows, span.size(), c.dim(), "rows");
            auto column = [&](const char* name) -> py::array_t<std::int64_t, py::array::forcecast> {
              if (!d.contains(name)) return py::array_t<std::int64_t>(static_cast<py::ssize_t>(span.size()));
              return d[name].cast<py::array_t<std::int64_t, py::array::forcecast>>();
            };
            const auto last = column("last_access"), count = column("count"), flags = column("flags");
            std::vector<RowHeader> headers(span.size());
            for (std::size_t i = 0; i < span.size(); ++i) {
              headers[i].key = span[i];
              headers[i].last_access = d.contains("last_access") ? static_cast<std::uint32_t>(last.at(static_cast<py::ssize_t>(i))) : 0;
              headers[i].count = d.contains("count") ? static_cast<std::uint16_t>(count.at(static_cast<py::ssize_t>(i))) : 0;
              headers[i].flags = d.contains("flags") ? static_cast<std::uint16_t>(flags.at(static_cast<py::ssize_t>(i))) : 0;
            }
            c.import_rows(headers, std::span<const float>(rows.data(), static_cast<std::size_t>(rows.size())));
          },
          py::arg("exported"), "Loads rows from a dict as export() returns.")
      .def("metrics",
           [](const EmbeddingCache& c) {
             const auto x = c.metrics();
             py::dict d;
             d["rows"] = x.rows;
             d["bytes_used"] = x.bytes_used;
             d["bytes_held"] = x.bytes_held;
             d["hits"] = x.hits;
             d["misses"] = x.misses;
             d["inserts"] = x.inserts;
             d["updates"] = x.updates;
             d["erased"] = x.erased;
             d["evictions"] = x.evictions;
             return d;
           })
      .def("validate", &EmbeddingCache::validate);
}

}  // namespace kvmem::python
