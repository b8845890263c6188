// A fast 64-bit checksum for index files (not cryptographic: it catches corruption and edits
// such as reordered ids or a changed manifest field, not a deliberate forgery). Words of 8
// bytes are mixed in order, so any permutation of rows or ids changes the result; bytes that
// do not fill a word are carried over to the next Update, so the value depends only on the
// byte stream, not on how it was split into calls. Runs at several GB/s on one core.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace gainrag {

class Checksum {
 public:
  void Update(const void* data, size_t size) {
    auto* p = static_cast<const uint8_t*>(data);
    total_ += size;
    while (size > 0 && carry_len_ > 0) {
      carry_[carry_len_++] = *p++;
      --size;
      if (carry_len_ == 8) {
        uint64_t w;
        std::memcpy(&w, carry_, 8);
        Mix(w);
        carry_len_ = 0;
      }
    }
    for (; size >= 8; size -= 8, p += 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      Mix(w);
    }
    while (size-- > 0) carry_[carry_len_++] = *p++;
  }

  uint64_t Final() const {
    Checksum c = *this;
    uint64_t w = 0;
    std::memcpy(&w, c.carry_, c.carry_len_);
    c.Mix(w ^ (uint64_t{c.carry_len_} << 56));
    c.Mix(c.total_);
    uint64_t h = c.h_;
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    return h;
  }

  std::string Hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(Final()));
    return buf;
  }

 private:
  void Mix(uint64_t w) {
    w *= 0x87C37B91114253D5ULL;
    w = (w << 31) | (w >> 33);
    w *= 0x4CF5AD432745937FULL;
    h_ ^= w;
    h_ = ((h_ << 27) | (h_ >> 37)) * 5 + 0x52DCE729;
  }

  uint64_t h_ = 0x9E3779B97F4A7C15ULL;
  uint64_t total_ = 0;
  uint8_t carry_[8] = {};
  size_t carry_len_ = 0;
};

}  // namespace gainrag
