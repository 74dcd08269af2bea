#include "storage/s3/sigv4.h"

#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <cctype>

#include "util/hash.h"

namespace commcare::storage::s3 {
namespace {

std::string Hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &n);
  return std::string(reinterpret_cast<char*>(out), n);
}

}  // namespace

std::string Sha256Hex(std::string_view data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  return util::HexEncode(d, sizeof d);
}

std::string UriEncode(std::string_view s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/'))
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

std::string SigV4Authorization(const SigV4Request& r, std::string_view region,
                               std::string_view access_key, std::string_view secret_key) {
  std::string canonical_headers, signed_headers;
  for (const auto& [name, value] : r.headers) {
    canonical_headers += name + ":" + value + "\n";
    if (!signed_headers.empty()) signed_headers += ';';
    signed_headers += name;
  }
  const std::string canonical =
      fmt::format("{}\n{}\n{}\n{}\n{}\n{}", r.method, r.canonical_path, r.canonical_query,
                  canonical_headers, signed_headers, r.payload_hash);
  const std::string day = r.amz_date.substr(0, 8);
  const std::string scope = fmt::format("{}/{}/s3/aws4_request", day, region);
  const std::string to_sign =
      fmt::format("AWS4-HMAC-SHA256\n{}\n{}\n{}", r.amz_date, scope, Sha256Hex(canonical));
  std::string k = Hmac("AWS4" + std::string(secret_key), day);
  k = Hmac(k, region);
  k = Hmac(k, "s3");
  k = Hmac(k, "aws4_request");
  const std::string sig = Hmac(k, to_sign);
  return fmt::format("AWS4-HMAC-SHA256 Credential={}/{},SignedHeaders={},Signature={}", access_key,
                     scope, signed_headers, util::HexEncode(sig.data(), sig.size()));
}

}  // namespace commcare::storage::s3
