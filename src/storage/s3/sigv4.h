// AWS Signature Version 4 for S3 requests (internal; tested against AWS's published examples).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace commcare::storage::s3 {

// A request as SigV4 canonicalises it.
struct SigV4Request {
  std::string method;           // "GET"
  std::string canonical_path;   // URI-encoded, e.g. "/bucket/key"
  std::string canonical_query;  // "a=1&b=2", names sorted, URI-encoded ("" = none)
  // The signed headers: lower-case names, trimmed values, sorted by name.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_hash;  // hex SHA-256 of the body (also sent as x-amz-content-sha256)
  std::string amz_date;      // "20130524T000000Z"
};

// The Authorization header's value for the request.
std::string SigV4Authorization(const SigV4Request& r, std::string_view region,
                               std::string_view access_key, std::string_view secret_key);

// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, '/' kept when keep_slash.
std::string UriEncode(std::string_view s, bool keep_slash);

// Lower-case hex SHA-256 of data.
std::string Sha256Hex(std::string_view data);

}  // namespace commcare::storage::s3
