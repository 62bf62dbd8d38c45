#pragma once
// kvmem::SegmentedArray<T>: an append-only array with stable element addresses that grows one
// segment at a time, on demand, and can be grown by many threads at once.
//
// WHAT IT MANAGES
//   Elements of T, indexed 0..size()-1. Storage is a fixed directory of kMaxSegments atomic
//   segment pointers (a few hundred bytes, inside the object) plus segments allocated from an
//   upstream std::pmr::memory_resource only when an index first needs them. Segment s holds
//   first_segment * 2^s elements, so the directory never grows and never needs a lock, while
//   the number of allocations stays logarithmic in size(). Nothing is allocated for a maximum
//   size up front: a constructed, empty array owns no segment at all.
//   This is the shape of OceanBase's ObKVMBHandleArray (seekdb PR #838) with the two gaps its
//   review found closed: the directory is not sized from the maximum (it was max/64 pointers
//   there), and both publications use release/acquire, so it is correct on weakly ordered CPUs.
//
// GROWTH PROTOCOL (lock-free)
//   grow(n): read size (acquire); make sure every segment covering [size, size+n) exists: a
//   missing one is allocated, its elements value-initialized, and published with
//   compare_exchange(nullptr -> segment, release); a thread that loses that race destroys and
//   frees its own copy and uses the winner's. Then size is advanced with compare_exchange
//   (release). A reader that loads size with acquire and then a segment pointer with acquire
//   therefore always finds the segment of every index below size non-null and initialized.
//   Segments are published before the size that covers them ("segment, then count"), so a
//   thread that loses the size race leaves only an already published segment that a later
//   grow() uses: at most one extra segment of hold.
//
// COMPLEXITY
//   operator[]: O(1): one bit_width, one shift, one acquire load (a plain load on x86).
//   grow(n): O(1) amortized plus value-initializing the new segment's elements (at most
//   log2(size) segment allocations over the array's life).
//   size(), used_bytes(), held_bytes(): O(1). validate(), for_each(): O(size()).
//
// WORST-CASE WASTE
//   Geometric segments: the last segment may be up to half empty, so held element storage is
//   at most 2 * size() * sizeof(T) + first_segment * sizeof(T), plus the directory
//   (kMaxSegments pointers). No per-element header.
//
// THREAD SAFETY
//   grow(), reserve(), size(), operator[] on indices below size(), for_each() and the byte
//   counters may run concurrently from any number of threads. The elements themselves are
//   the caller's to synchronize (use atomics or a lock inside T). Destruction must not race
//   with anything.
//
// FAILURE POLICY
//   grow() past max_size() or when the upstream resource throws: returns std::nullopt, the
//   array is unchanged (no partially published count). first_segment not a power of two or 0,
//   max_size 0: std::invalid_argument. at() with an index >= size(): std::out_of_range.

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory_resource>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>

namespace kvmem {

template <class T>
class SegmentedArray {
 public:
  // Directory slots: with first_segment >= 1 the array can address 2^kMaxSegments - 1 elements.
  static constexpr std::size_t kMaxSegments = 40;

  explicit SegmentedArray(std::size_t first_segment = 64,
                          std::size_t max_size = std::numeric_limits<std::uint32_t>::max(),
                          std::pmr::memory_resource* upstream = std::pmr::new_delete_resource())
      : upstream_(upstream) {
    if (first_segment == 0 || !std::has_single_bit(first_segment)) {
      throw std::invalid_argument("SegmentedArray: first_segment must be a power of two >= 1, got " +
                                  std::to_string(first_segment));
    }
    if (max_size == 0) throw std::invalid_argument("SegmentedArray: max_size must be >= 1");
    if (upstream == nullptr) throw std::invalid_argument("SegmentedArray: upstream resource is null");
    first_shift_ = static_cast<unsigned>(std::countr_zero(first_segment));
    const std::size_t addressable = capacity_of_segments(kMaxSegments);
    max_size_ = std::min(max_size, addressable);
    for (auto& d : directory_) d.store(nullptr, std::memory_order_relaxed);
  }

  SegmentedArray(const SegmentedArray&) = delete;
  SegmentedArray& operator=(const SegmentedArray&) = delete;

  ~SegmentedArray() {
    for (std::size_t s = 0; s < kMaxSegments; ++s) {
      T* seg = directory_[s].load(std::memory_order_acquire);
      if (seg != nullptr) destroy_segment(seg, segment_length(s));
    }
  }

  // Appends `count` value-initialized elements; returns the index of the first one, or
  // std::nullopt when that would pass max_size() or the upstream resource fails.
  std::optional<std::size_t> grow(std::size_t count = 1) {
    if (count == 0) return size();
    std::size_t old_size = size_.load(std::memory_order_acquire);
    for (;;) {
      if (count > max_size_ - old_size) return std::nullopt;
      const std::size_t new_size = old_size + count;
      if (!reserve(new_size)) return std::nullopt;
      // Segments covering [0, new_size) are published (release) before the count is.
      if (size_.compare_exchange_weak(old_size, new_size, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
        return old_size;
      }
    }
  }

  // Makes the segments that cover indices [0, n) exist without publishing them in size().
  // Returns false when n > max_size() or the upstream resource fails.
  bool reserve(std::size_t n) {
    if (n > max_size_) return false;
    if (n == 0) return true;
    const std::size_t last = segment_of(n - 1);
    for (std::size_t s = 0; s <= last; ++s) {
      if (directory_[s].load(std::memory_order_acquire) != nullptr) continue;
      T* fresh = make_segment(segment_length(s));
      if (fresh == nullptr) return false;
      T* expected = nullptr;
      if (!directory_[s].compare_exchange_strong(expected, fresh, std::memory_order_acq_rel,
                                                 std::memory_order_acquire)) {
        destroy_segment(fresh, segment_length(s));  // lost the race: the winner's segment stays
        lost_races_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    return true;
  }

  // Number of published elements (acquire: every index below it is readable).
  [[nodiscard]] std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }
  [[nodiscard]] std::size_t max_size() const noexcept { return max_size_; }
  [[nodiscard]] std::size_t first_segment() const noexcept { return std::size_t{1} << first_shift_; }

  // REQUIRES: i < size() as observed by this thread (or i below an index grow() returned).
  T& operator[](std::size_t i) noexcept {
    const std::size_t biased = i + (std::size_t{1} << first_shift_);
    const unsigned s = static_cast<unsigned>(std::bit_width(biased)) - 1 - first_shift_;
    T* seg = directory_[s].load(std::memory_order_acquire);
    return seg[biased - (std::size_t{1} << (s + first_shift_))];
  }
  const T& operator[](std::size_t i) const noexcept {
    return const_cast<SegmentedArray*>(this)->operator[](i);
  }

  T& at(std::size_t i) {
    const std::size_t n = size();
    if (i >= n) {
      throw std::out_of_range("SegmentedArray::at: index " + std::to_string(i) + " >= size " + std::to_string(n));
    }
    return (*this)[i];
  }

  // Calls f(index, element) for every index below size() at the time of the call.
  template <class F>
  void for_each(F&& f) {
    const std::size_t n = size();
    for (std::size_t i = 0; i < n; ++i) f(i, (*this)[i]);
  }

  // Bytes of element storage for published elements.
  [[nodiscard]] std::size_t used_bytes() const noexcept { return size() * sizeof(T); }
  // Bytes obtained from upstream (all allocated segments) plus the directory inside the object.
  [[nodiscard]] std::size_t held_bytes() const noexcept {
    return segment_bytes_.load(std::memory_order_relaxed) + sizeof(directory_);
  }
  [[nodiscard]] std::size_t segment_count() const noexcept {
    std::size_t n = 0;
    for (const auto& d : directory_) n += d.load(std::memory_order_acquire) != nullptr ? 1 : 0;
    return n;
  }
  // CAS losses on segment publication (a loser's segment is freed at once); for tests and stats.
  [[nodiscard]] std::size_t lost_races() const noexcept { return lost_races_.load(std::memory_order_relaxed); }

  // Checks: every index below size() lies in a published segment; segment bytes match the
  // published segments; size <= max_size. O(segments). Safe to call concurrently with grow().
  [[nodiscard]] bool validate() const {
    const std::size_t n = size();
    if (n > max_size_) return false;
    std::size_t bytes = 0;
    for (std::size_t s = 0; s < kMaxSegments; ++s) {
      if (directory_[s].load(std::memory_order_acquire) != nullptr) bytes += segment_length(s) * sizeof(T);
    }
    if (n > 0) {
      const std::size_t last = segment_of(n - 1);
      for (std::size_t s = 0; s <= last; ++s) {
        if (directory_[s].load(std::memory_order_acquire) == nullptr) return false;
      }
    }
    // Segment bytes are counted before a segment is published and a CAS loser's copy is
    // uncounted after it is freed, so the count never lags the published segments; it exceeds
    // them only by segments other threads are publishing right now (exact when quiescent).
    return bytes <= segment_bytes_.load(std::memory_order_relaxed);
  }

  // Segment that holds index i, and the number of elements in segment s.
  [[nodiscard]] std::size_t segment_of(std::size_t i) const noexcept {
    const std::size_t biased = i + (std::size_t{1} << first_shift_);
    return static_cast<std::size_t>(std::bit_width(biased)) - 1 - first_shift_;
  }
  [[nodiscard]] std::size_t segment_length(std::size_t s) const noexcept {
    return std::size_t{1} << (s + first_shift_);
  }

 private:
  [[nodiscard]] std::size_t capacity_of_segments(std::size_t segments) const noexcept {
    // first * (2^segments - 1), saturating.
    const unsigned bits = static_cast<unsigned>(segments + first_shift_);
    if (bits >= 64) return std::numeric_limits<std::size_t>::max();
    return (std::size_t{1} << bits) - (std::size_t{1} << first_shift_);
  }
  T* make_segment(std::size_t length) {
    void* raw = nullptr;
    try {
      raw = upstream_->allocate(length * sizeof(T), alignof(T));
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
    T* seg = static_cast<T*>(raw);
    std::size_t built = 0;
    try {
      for (; built < length; ++built) ::new (static_cast<void*>(seg + built)) T();
    } catch (...) {
      for (std::size_t k = 0; k < built; ++k) seg[k].~T();
      upstream_->deallocate(raw, length * sizeof(T), alignof(T));
      return nullptr;
    }
    segment_bytes_.fetch_add(length * sizeof(T), std::memory_order_relaxed);
    return seg;
  }

  void destroy_segment(T* seg, std::size_t length) noexcept {
    for (std::size_t k = 0; k < length; ++k) seg[k].~T();
    upstream_->deallocate(seg, length * sizeof(T), alignof(T));
    segment_bytes_.fetch_sub(length * sizeof(T), std::memory_order_relaxed);
  }

  std::pmr::memory_resource* upstream_;
  unsigned first_shift_ = 0;
  std::size_t max_size_ = 0;
  std::atomic<std::size_t> size_{0};
  std::atomic<std::size_t> segment_bytes_{0};
  std::atomic<std::size_t> lost_races_{0};
  std::atomic<T*> directory_[kMaxSegments];
};

}  // namespace kvmem
