// libFuzzer target for kvmem::PagePool: each input is a sequence of operations (alloc, free,
// retain, release, publish, match_prefix, reserve/commit/abort, tickets and deferred
// releases delivered out of order, drain, reset) with arbitrary, often invalid, page ids.
// validate() must hold after every operation; misuse may throw only kvmem::UsageError
// (kThrow) or be counted (kCountIgnore), and a kThrow batch must leave the pool unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kvmem/error.hpp"
#include "kvmem/page_pool.hpp"

namespace {

struct Reader {
  const std::uint8_t* p;
  std::size_t n;
  bool empty() const { return n == 0; }
  std::uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
};

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using kvmem::PageId;
  Reader in{data, size};
  kvmem::PagePool::Options opt;
  const std::uint8_t mode = in.byte();
  opt.misuse = (mode & 1) != 0 ? kvmem::PagePool::MisusePolicy::kCountIgnore
                               : kvmem::PagePool::MisusePolicy::kThrow;
  // Deferred-release items: heap only, a cache that cannot grow past 64, or the default.
  const std::size_t caches[] = {0, 64, kvmem::PagePool::Options{}.release_item_cache, 64};
  opt.release_item_cache = caches[(mode >> 1) & 3];
  std::uint64_t events = 0;
  opt.on_event = [&](const kvmem::PrefixEvent&) { ++events; };
  const std::uint32_t cap = 1 + in.byte() % 64;
  kvmem::PagePool pool(cap, opt);
  std::vector<PageId> held;  // ids recently returned, to make valid ops likely
  std::vector<kvmem::ReservationToken> tokens;
  std::vector<kvmem::ReleaseTicket> tickets;
  auto pick = [&]() -> PageId {
    const std::uint8_t b = in.byte();
    if ((b & 0x80) != 0 || held.empty()) return b % (cap + 2);  // maybe out of range
    return held[b % held.size()];
  };
  auto some = [&]() {
    std::vector<PageId> ids;
    const std::uint8_t b = in.byte();
    // Mostly 0-4 ids; sometimes more than a cached item holds (a heap item).
    const int k = b >= 248 ? static_cast<int>(kvmem::PagePool::kCachedItemIds) + 1 + b % 8 : b % 5;
    for (int i = 0; i < k; ++i) ids.push_back(pick());
    return ids;
  };
  while (!in.empty()) {
    const int op = in.byte() % 14;
    try {
      switch (op) {
        case 0: {
          const std::size_t before = pool.available();
          auto a = pool.alloc(in.byte() % 16);
          if (a) {
            check(pool.available() == before - a->size());
            held.insert(held.end(), a->begin(), a->end());
          } else {
            check(pool.available() == before);
          }
          break;
        }
        case 1: pool.free(some()); break;
        case 2: pool.retain(some()); break;
        case 3: pool.release(some()); break;
        case 4: pool.publish(kvmem::BlockHash::from_u64(in.byte() % 16), pick()); break;
        case 5: {
          std::vector<kvmem::BlockHash> chain;
          for (int i = 0, k = in.byte() % 4; i < k; ++i) {
            chain.push_back(kvmem::BlockHash::from_u64(in.byte() % 16));
          }
          const std::size_t peek = pool.peek_prefix(chain);
          auto got = pool.match_prefix(chain);
          check(got.size() == peek);
          held.insert(held.end(), got.begin(), got.end());
          break;
        }
        case 6: {
          auto t = pool.reserve(in.byte() % 16);
          if (t) tokens.push_back(*t);
          break;
        }
        case 7: {
          if (tokens.empty()) {
            pool.commit(kvmem::ReservationToken{in.byte()});
            break;
          }
          const std::size_t i = in.byte() % tokens.size();
          const auto t = tokens[i];
          if ((in.byte() & 1) == 0) tokens.erase(tokens.begin() + static_cast<long>(i));
          if ((in.byte() & 1) == 0) {
            auto ids = pool.commit(t);
            held.insert(held.end(), ids.begin(), ids.end());
          } else {
            pool.abort(t);
          }
          break;
        }
        case 8: tickets.push_back(pool.issue_ticket()); break;
        case 9: {
          if (tickets.empty()) break;
          const std::size_t i = in.byte() % tickets.size();
          const auto t = tickets[i];
          if ((in.byte() & 3) != 0) tickets.erase(tickets.begin() + static_cast<long>(i));
          pool.release_deferred(t, some());  // sometimes the same ticket twice
          break;
        }
        case 10: pool.release_deferred(pool.epoch() - (in.byte() & 1), some()); break;
        case 11: {
          const auto p = pool.pending_release();
          const std::uint64_t got = pool.drain(in.byte() % 8);
          check(got <= p.pages);
          break;
        }
        case 12:
          if ((in.byte() & 7) == 0) {
            pool.reset();
            check(pool.available() == cap);
          }
          break;
        case 13: (void)pool.stats(); break;
        default: break;
      }
    } catch (const kvmem::UsageError&) {
      check(opt.misuse == kvmem::PagePool::MisusePolicy::kThrow);
    } catch (const std::invalid_argument&) {
      // out-of-range ids are bad arguments under either policy
    }
    if (held.size() > 256) held.erase(held.begin(), held.begin() + 128);
    if (!pool.validate()) {
      std::fprintf(stderr, "page_pool_fuzz: validate failed after op %d: %s\n", op,
                   pool.last_error().c_str());
      std::abort();
    }
  }
  return 0;
}
