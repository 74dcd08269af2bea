#include "util/hash.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "util/secret.h"

using namespace commcare::util;

TEST_CASE("SipHash24 matches the reference vectors of the SipHash paper") {
  uint8_t key[16];
  for (int i = 0; i < 16; ++i) key[i] = static_cast<uint8_t>(i);
  std::string msg;
  CHECK(SipHash24(key, msg) == 0x726fdb47dd0e0e31ULL);
  for (int i = 0; i < 15; ++i) msg.push_back(static_cast<char>(i));
  CHECK(SipHash24(key, msg) == 0xa129ca6149be45e5ULL);
  msg.push_back(15);
  CHECK(SipHash24(key, msg) == 0x3f2acc7f57c29bdbULL);
}

TEST_CASE("ShardHash is the low 32 bits of zero-key SipHash24") {
  uint8_t zero[16] = {};
  std::string id = "fbb69a88-1eca-463a-883e-1148b96fb03b";
  CHECK(ShardHash(id) == static_cast<uint32_t>(SipHash24(zero, id)));
  CHECK(ShardHash(id) != ShardHash("fbb69a88-1eca-463a-883e-1148b96fb03c"));
}

TEST_CASE("Crc32c matches the standard check value and continues across pieces") {
  CHECK(Crc32c("123456789") == 0xE3069283U);
  CHECK(Crc32c("") == 0U);
  std::string long_text(1000, 'q');
  CHECK(Crc32c(long_text.substr(500), Crc32c(long_text.substr(0, 500))) == Crc32c(long_text));
}

TEST_CASE("Md5Hex gives the lower-case hex digest") {
  CHECK(Md5Hex("") == "d41d8cd98f00b204e9800998ecf8427e");
  CHECK(Md5Hex("abc") == "900150983cd24fb0d6963f7d28e17f72");
}

TEST_CASE("NewUuidHex gives distinct 32-hex-digit version-4 ids") {
  std::string a = NewUuidHex(), b = NewUuidHex();
  CHECK(a.size() == 32);
  CHECK(a != b);
  CHECK(a[12] == '4');
  CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
}

TEST_CASE("SameSecret compares contents and lengths") {
  CHECK(SameSecret("", ""));
  CHECK(SameSecret("s3cret-token", "s3cret-token"));
  CHECK_FALSE(SameSecret("s3cret-token", "s3cret-tokeN"));
  CHECK_FALSE(SameSecret("s3cret-token", "s3cret-toke"));
  CHECK_FALSE(SameSecret("", "x"));
  CHECK_FALSE(SameSecret(std::string("a\0b", 3), std::string("a\0c", 3)));
}

TEST_CASE("SameSecret takes as long when the first byte differs as when the last does") {
  // An early-exit compare (memcmp, ==) returns after one byte in the first case and after
  // 4 MiB in the second: a ratio near 0, where a constant-time one is near 1.
  const std::string secret(4 << 20, 'k');
  std::string first = secret, last = secret;
  first.front() = 'x';
  last.back() = 'x';
  auto time = [&](const std::string& guess) {
    std::vector<double> runs;
    for (int i = 0; i < 15; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      CHECK_FALSE(SameSecret(secret, guess));
      runs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(runs.begin(), runs.end());
    return runs[runs.size() / 2];
  };
  const double early = time(first), late = time(last);
  INFO("first byte differs: " << early << " s; last byte differs: " << late << " s");
  CHECK(early / late > 0.3);
}
