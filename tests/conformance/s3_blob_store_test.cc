// The S3 blob store beyond the conformance suite: signatures, multipart uploads, retries and
// timeouts (built with COMMCARE_WITH_S3).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "../flaky_http.h"
#include "../test_util.h"
#include "commcare/storage/blob_store.h"
#include "conformance_helpers.h"

using namespace commcare;
using namespace commcare::storage;
using cctest::S3ForTests;

TEST_CASE("S3BlobStore: signatures are checked, multipart uploads, errors name the problem") {
  auto o = S3ForTests();
  if (!o) return;  // no server outside CI (S3ForTests fails under CI=true)
  {  // an unknown access key is refused (s3rver 3.7 checks keys, not V4 signatures: those are
     // checked against AWS's published example in unit/sigv4_test.cc)
    auto bad = *o;
    bad.access_key = "NOT-A-KEY";
    auto s = OpenS3BlobStore(bad);
    CHECK(s.status().code() == StatusCode::kPermissionDenied);
  }
  {
    auto nobucket = *o;
    nobucket.bucket = "no-such-bucket";
    CHECK(OpenS3BlobStore(nobucket).status().code() == StatusCode::kNotFound);
  }
  {
    auto badurl = *o;
    badurl.endpoint = "ftp://x";
    CHECK(OpenS3BlobStore(badurl).status().code() == StatusCode::kInvalidArgument);
  }
  auto small_parts = *o;
  small_parts.multipart_threshold = 6u << 20;
  small_parts.part_size = 5u << 20;
  auto b = OpenS3BlobStore(small_parts);
  REQUIRE_MESSAGE(b.ok(), b.status().ToString());
  std::string big(13u << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) >> 7);
  auto k = (*b)->Put("att/big.bin", big, true);
  REQUIRE_MESSAGE(k.ok(), k.status().ToString());
  auto got = (*b)->Get(*k);
  REQUIRE(got.ok());
  CHECK(got->size() == big.size());
  CHECK(*got == big);
  // A file goes up as a multipart upload read a part at a time; ranged GETs read it back.
  const std::string dir = cctest::FreshTempDir("cc-s3", "file");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/big.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << big;
  }
  auto fk = (*b)->PutFile("exports/demo/7.csv", path);
  REQUIRE_MESSAGE(fk.ok(), fk.status().ToString());
  CHECK(*(*b)->ReadRange(*fk, (5u << 20) - 3, 6) == big.substr((5u << 20) - 3, 6));
  CHECK(*(*b)->ReadRange(*fk, big.size() - 2, 100) == big.substr(big.size() - 2));
  CHECK((*b)->ReadRange(*fk, big.size(), 100)->empty());
  CHECK(*(*b)->Get(*fk) == big);
  // Keys with characters SigV4 encodes.
  auto odd = (*b)->Put("form/a b+c=d&é/photo (1).jpg", "x", true);
  REQUIRE_MESSAGE(odd.ok(), odd.status().ToString());
  CHECK(*(*b)->Get(*odd) == "x");
}

TEST_CASE("S3BlobStore: 500s are retried then reported, a server that hangs times out") {
  for (bool hang : {false, true}) {
    CAPTURE(hang);
    cctest::FlakyHttp server(hang);
    S3Options o;
    o.endpoint = fmt::format("http://127.0.0.1:{}", server.port);
    o.bucket = "blobs";
    o.access_key = o.secret_key = "k";
    o.max_attempts = 3;
    o.timeout_ms = 300;
    auto b = OpenS3BlobStore(o);
    REQUIRE_MESSAGE(b.ok(), b.status().ToString());
    int before = server.requests;
    auto t0 = std::chrono::steady_clock::now();
    auto k = (*b)->Put("form/x/form.xml", "<x/>", true);
    CHECK(k.status().code() == StatusCode::kUnavailable);
    CHECK(server.requests - before == 3);  // every attempt reached the server
    if (!hang) CHECK(k.status().message().find("InternalError") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  }
}
