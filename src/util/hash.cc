#include "util/hash.h"

#include <openssl/evp.h>

#include <array>
#include <cstring>
#include <random>

namespace commcare::util {
namespace {

inline uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);  // little-endian machine (x86_64, aarch64)
  return v;
}

inline void Round(uint64_t& v0, uint64_t& v1, uint64_t& v2, uint64_t& v3) {
  v0 += v1;
  v1 = Rotl(v1, 13);
  v1 ^= v0;
  v0 = Rotl(v0, 32);
  v2 += v3;
  v3 = Rotl(v3, 16);
  v3 ^= v2;
  v0 += v3;
  v3 = Rotl(v3, 21);
  v3 ^= v0;
  v2 += v1;
  v1 = Rotl(v1, 17);
  v1 ^= v2;
  v2 = Rotl(v2, 32);
}

}  // namespace

uint64_t SipHash24(const uint8_t key[16], std::string_view data) {
  const uint64_t k0 = Load64(key), k1 = Load64(key + 8);
  uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
  const auto* in = reinterpret_cast<const uint8_t*>(data.data());
  const size_t len = data.size();
  const size_t end = len - (len % 8);
  for (size_t i = 0; i < end; i += 8) {
    uint64_t m = Load64(in + i);
    v3 ^= m;
    Round(v0, v1, v2, v3);
    Round(v0, v1, v2, v3);
    v0 ^= m;
  }
  uint64_t b = static_cast<uint64_t>(len) << 56;
  for (size_t i = 0; i < len % 8; ++i) b |= static_cast<uint64_t>(in[end + i]) << (8 * i);
  v3 ^= b;
  Round(v0, v1, v2, v3);
  Round(v0, v1, v2, v3);
  v0 ^= b;
  v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) Round(v0, v1, v2, v3);
  return v0 ^ v1 ^ v2 ^ v3;
}

uint32_t ShardHash(std::string_view id) {
  static const uint8_t kZero[16] = {};
  return static_cast<uint32_t>(SipHash24(kZero, id) & 0xffffffffULL);
}

void Md5Raw(std::string_view data, uint8_t out[16]) {
  unsigned int n = 16;
  EVP_Digest(data.data(), data.size(), out, &n, EVP_md5(), nullptr);
}

std::string HexEncode(const void* data, size_t n) {
  static const char* kHex = "0123456789abcdef";
  const auto* p = static_cast<const uint8_t*>(data);
  std::string s(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kHex[p[i] >> 4];
    s[2 * i + 1] = kHex[p[i] & 15];
  }
  return s;
}

std::string Md5Hex(std::string_view data) {
  uint8_t d[16];
  Md5Raw(data, d);
  return HexEncode(d, sizeof d);
}

std::string Sha256Hex(std::string_view data) {
  uint8_t d[32];
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), d, &n, EVP_sha256(), nullptr);
  return HexEncode(d, n);
}

namespace {

uint32_t Crc32cSoftware(const uint8_t* p, size_t n, uint32_t crc) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78U & (0U - (c & 1U)));
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t Crc32cHardware(const uint8_t* p, size_t n,
                                                          uint32_t crc) {
  uint64_t c = ~crc & 0xffffffffULL;
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = __builtin_ia32_crc32di(c, v);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
  return ~c32;
}
#endif

}  // namespace

uint32_t Crc32c(std::string_view data, uint32_t crc) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) return Crc32cHardware(p, data.size(), crc);
#endif
  return Crc32cSoftware(p, data.size(), crc);
}

std::string NewUuidHex() {
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    return std::mt19937_64(seq);
  }());
  uint64_t a = rng(), b = rng();
  a = (a & ~0xf000ULL) | 0x4000ULL;                         // version 4
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant
  static const char* kHex = "0123456789abcdef";
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) s[i] = kHex[(a >> (60 - 4 * i)) & 15];
  for (int i = 0; i < 16; ++i) s[16 + i] = kHex[(b >> (60 - 4 * i)) & 15];
  return s;
}

}  // namespace commcare::util
