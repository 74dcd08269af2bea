// The S3 client's request signing (built with COMMCARE_WITH_S3).
#include "storage/s3/sigv4.h"

#include <doctest/doctest.h>

#include <string>

TEST_CASE("SigV4: AWS's published S3 GET example signs to its signature") {
  // docs.aws.amazon.com, "Signature Calculations for the Authorization Header: Transferring
  // Payload in a Single Chunk", Example: GET Object.
  const std::string empty = commcare::storage::s3::Sha256Hex("");
  CHECK(empty == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  commcare::storage::s3::SigV4Request r{"GET",
                                        "/test.txt",
                                        "",
                                        {{"host", "examplebucket.s3.amazonaws.com"},
                                         {"range", "bytes=0-9"},
                                         {"x-amz-content-sha256", empty},
                                         {"x-amz-date", "20130524T000000Z"}},
                                        empty,
                                        "20130524T000000Z"};
  CHECK(commcare::storage::s3::SigV4Authorization(r, "us-east-1", "AKIAIOSFODNN7EXAMPLE",
                                                  "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") ==
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  CHECK(commcare::storage::s3::UriEncode("a b+c/é~", true) == "a%20b%2Bc/%C3%A9~");
  CHECK(commcare::storage::s3::UriEncode("a/b", false) == "a%2Fb");
}
