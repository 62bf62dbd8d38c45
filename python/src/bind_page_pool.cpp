// Python binding of kvmem::PagePool. Page ids cross the boundary as numpy arrays: alloc
// returns an int32 array the caller owns (the pool writes straight into it); every call that
// takes ids accepts any integer array or list and converts it in C, never in a Python loop.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>

#include "bindings.hpp"
#include "kvmem/page_pool.hpp"

namespace kvmem::python {

namespace {

static_assert(sizeof(PageId) == sizeof(std::int32_t));

// Ids as a contiguous int32 array (the dtype alloc returns, so its arrays pass without a
// copy); other dtypes and lists are converted by numpy in C. A negative id reads as a huge
// PageId, which the pool rejects as out of range like any other bad id.
using IdArray = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>;

std::span<const PageId> ids_of(const IdArray& ids) {
  if (ids.ndim() > 1) throw std::invalid_argument("PagePool: page ids must be a 1-D sequence");
  return {reinterpret_cast<const PageId*>(ids.data()), static_cast<std::size_t>(ids.size())};
}

py::array_t<std::int32_t> to_array(const std::vector<PageId>& ids) {
  py::array_t<std::int32_t> out(static_cast<py::ssize_t>(ids.size()));
  if (!ids.empty()) std::memcpy(out.mutable_data(), ids.data(), ids.size() * sizeof(PageId));
  return out;
}

BlockHash to_hash(const py::handle& h) {
  if (py::isinstance<py::bytes>(h)) return BlockHash::from_bytes(std::string_view(h.cast<py::bytes>()));
  if (py::isinstance<py::int_>(h)) return BlockHash::from_u64(h.cast<std::uint64_t>());
  throw std::invalid_argument("PagePool: a block hash is an int (64-bit) or 32 bytes (a SHA-256 digest)");
}

}  // namespace

void bind_page_pool(py::module_& m) {
  py::class_<PagePool>(m, "PagePool",
                       "Paged KV pool with deterministic deferred frees, reference counts, LRU eviction\n"
                       "of cached pages and a prefix index. One owner thread makes every call except\n"
                       "release_deferred(), which any thread may call (it drops the GIL).")
      .def(py::init([](std::uint32_t num_pages, const std::string& misuse) {
             PagePool::Options o;
             if (misuse == "throw")
               o.misuse = PagePoolMisuse::kThrow;
             else if (misuse == "ignore")
               o.misuse = PagePoolMisuse::kCountIgnore;
             else
               throw std::invalid_argument("PagePool: misuse must be 'throw' or 'ignore', got '" + misuse + "'");
             if (num_pages > static_cast<std::uint32_t>(INT32_MAX))
               throw std::invalid_argument("PagePool: the Python module supports up to 2^31-1 pages");
             return std::make_unique<PagePool>(num_pages, std::move(o));
           }),
           py::arg("num_pages"), py::arg("misuse") = "throw")
      .def_property_readonly("capacity", &PagePool::capacity)
      .def_property_readonly("available", &PagePool::available)
      .def("alloc",
           [](PagePool& p, std::size_t n) -> py::object {
             py::array_t<std::int32_t> out(static_cast<py::ssize_t>(n));
             auto* data = reinterpret_cast<PageId*>(out.mutable_data());
             if (!p.alloc_into(std::span<PageId>(data, n))) return py::none();
             return out;
           },
           py::arg("n"), "n page ids as a new int32 array, all or nothing: None when fewer are available.")
      .def("free", [](PagePool& p, const IdArray& ids) { p.free(ids_of(ids)); }, py::arg("ids"))
      .def("retain", [](PagePool& p, const IdArray& ids) { p.retain(ids_of(ids)); }, py::arg("ids"))
      .def("release", [](PagePool& p, const IdArray& ids) { p.release(ids_of(ids)); }, py::arg("ids"))
      .def("refcount", &PagePool::refcount, py::arg("page"))
      .def(
          "release_deferred",
          [](PagePool& p, const IdArray& ids, std::optional<std::uint32_t> epoch) {
            const auto span = ids_of(ids);
            py::gil_scoped_release nogil;
            if (epoch)
              p.release_deferred(*epoch, span);
            else
              p.release_deferred(span);
          },
          py::arg("ids"), py::arg("epoch") = py::none(),
          "Any thread: queue ids for drain() (lock-free; the GIL is released).")
      .def(
          "issue_ticket",
          [](PagePool& p) {
            const auto t = p.issue_ticket();
            return py::make_tuple(t.epoch, t.seq);
          },
          "Owner: the next ticket (epoch, seq) for an ordered deferred release.")
      .def(
          "release_ticketed",
          [](PagePool& p, const py::tuple& ticket, const IdArray& ids) {
            const ReleaseTicket t{ticket[0].cast<std::uint32_t>(), ticket[1].cast<std::uint64_t>()};
            const auto span = ids_of(ids);
            py::gil_scoped_release nogil;
            p.release_deferred(t, span);
          },
          py::arg("ticket"), py::arg("ids"), "Any thread: the release of a ticket from issue_ticket().")
      .def(
          "pending_release",
          [](PagePool& p) {
            const auto pending = p.pending_release();
            return py::make_tuple(pending.pages, pending.items);
          },
          "Owner: (pages, items) drainable now.")
      .def("drain", &PagePool::drain, py::arg("max_pages"), "Owner: applies exactly min(max_pages, pending) pages.")
      .def_property_readonly("epoch", &PagePool::epoch)
      .def(
          "reserve",
          [](PagePool& p, std::size_t n) -> std::optional<std::uint64_t> {
            const auto token = p.reserve(n);
            if (!token) return std::nullopt;
            return token->id;
          },
          py::arg("n"), "A token for n pages, or None.")
      .def("commit", [](PagePool& p, std::uint64_t token) { return to_array(p.commit(ReservationToken{token})); })
      .def("abort", [](PagePool& p, std::uint64_t token) { p.abort(ReservationToken{token}); })
      .def(
          "publish", [](PagePool& p, const py::handle& hash, PageId page) { return p.publish(to_hash(hash), page); },
          py::arg("hash"), py::arg("page"))
      .def(
          "match_prefix",
          [](PagePool& p, const py::sequence& hashes) {
            std::vector<BlockHash> chain;
            chain.reserve(py::len(hashes));
            for (const auto& h : hashes) chain.push_back(to_hash(h));
            return to_array(p.match_prefix(chain));
          },
          py::arg("hashes"), "Pages of the longest cached prefix of the hash chain (each retained once).")
      .def("reset", &PagePool::reset)
      .def("validate", &PagePool::validate)
      .def_property_readonly("last_error", &PagePool::last_error)
      .def("stats", [](PagePool& p) {
        const auto s = p.stats();
        py::dict d;
        d["free_pages"] = s.free_pages;
        d["cached_pages"] = s.cached_pages;
        d["allocated_pages"] = s.allocated_pages;
        d["reserved_pages"] = s.reserved_pages;
        d["waiting_pages"] = s.waiting_pages;
        d["failed_allocs"] = s.failed_allocs;
        d["evictions"] = s.evictions;
        d["misuse"] = s.misuse;
        d["stale_items"] = s.stale_items;
        d["drained_pages"] = s.drained_pages;
        d["release_cache_items"] = s.release_cache_items;
        return d;
      });
}

}  // namespace kvmem::python
