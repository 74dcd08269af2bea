// The MetaStore's credentials (meta_store.h): PBKDF2 passwords in Django's format, logins
// with their cache of verified credentials, and API keys.
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "meta/meta_store.h"
#include "meta/meta_store_internal.h"
#include "util/hash.h"
#include "util/secret.h"
#include "util/sql_db.h"
#include "util/time.h"

namespace commcare::meta {
namespace {

std::string Base64(const unsigned char* data, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

}  // namespace

std::string Sha256Hex(std::string_view s) { return util::Sha256Hex(s); }

namespace {

std::string RandomToken(size_t n) {
  static const char kAlnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::vector<unsigned char> raw(n);
  RAND_bytes(raw.data(), static_cast<int>(n));
  std::string out;
  for (unsigned char c : raw) out.push_back(kAlnum[c % 62]);
  return out;
}

std::string Derive(std::string_view password, std::string_view salt, int iterations) {
  unsigned char dk[32];
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()),
                    static_cast<int>(salt.size()), iterations, EVP_sha256(), sizeof dk, dk);
  return Base64(dk, sizeof dk);
}

}  // namespace

std::string HashPassword(std::string_view password, int iterations) {
  std::string salt = RandomToken(22);
  return fmt::format("pbkdf2_sha256${}${}${}", iterations, salt,
                     Derive(password, salt, iterations));
}

bool VerifyPassword(std::string_view password, std::string_view hash) {
  // pbkdf2_sha256$<iterations>$<salt>$<b64>
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= hash.size(); ++i)
    if (i == hash.size() || hash[i] == '$') {
      parts.push_back(hash.substr(start, i - start));
      start = i + 1;
    }
  if (parts.size() != 4 || parts[0] != "pbkdf2_sha256") return false;
  int iterations = std::atoi(std::string(parts[1]).c_str());
  if (iterations <= 0 || iterations > 10'000'000) return false;
  std::string got = Derive(password, parts[2], iterations);
  return util::SameSecret(got, parts[3]);
}

Result<User> MetaStore::Authenticate(std::string_view username, std::string_view password) {
  const std::string digest = Sha256Hex(password);
  {
    std::lock_guard l(impl_->mu);
    impl_->ForgetIfChangedElsewhere();
    auto it = impl_->verified.find(std::string(username));
    if (it != impl_->verified.end() && util::SameSecret(it->second.first, digest))
      return it->second.second;
  }
  std::lock_guard single(
      impl_->verifying[std::hash<std::string_view>{}(username) % impl_->verifying.size()]);
  uint64_t generation;
  {
    std::lock_guard l(impl_->mu);
    auto it = impl_->verified.find(std::string(username));
    if (it != impl_->verified.end() && util::SameSecret(it->second.first, digest))
      return it->second.second;
    generation = impl_->generation;
  }
  auto u = GetUser(username);
  if (!u.ok() && !u.status().IsNotFound()) return u.status();  // the store failed, not the user
  // An unknown or inactive user costs the same PBKDF2 as a known one: the answer's time does
  // not tell which usernames exist.
  static const std::string kDummy = HashPassword("not a password");
  const bool known = u.ok() && u->is_active && !u->password_hash.empty();
  const bool match = VerifyPassword(password, known ? u->password_hash : kDummy);
  if (!known || !match)
    return Status::Unauthenticated("wrong username or password, or the user is inactive");
  std::lock_guard l(impl_->mu);
  if (impl_->generation == generation) impl_->verified[std::string(username)] = {digest, *u};
  return u;
}

Result<std::string> MetaStore::CreateApiKey(std::string_view username, int64_t expires,
                                            std::string* id) {
  CC_RETURN_IF_ERROR(GetUser(username).status());
  std::string key = RandomToken(40);
  const std::string hash = Sha256Hex(key);
  std::lock_guard l(impl_->mu);
  CC_RETURN_IF_ERROR(impl_->db
                         ->Run("storing an API key",
                               "INSERT INTO user_api_keys(key_hash, username, created, expires) "
                               "VALUES(?,?,?,?)",
                               {hash, username, util::NowMicros() / 1'000'000, expires})
                         .status());
  if (id) *id = hash.substr(0, 16);
  return key;
}

Result<std::vector<ApiKeyInfo>> MetaStore::ListApiKeys(std::string_view username) {
  std::lock_guard l(impl_->mu);
  CC_ASSIGN_OR_RETURN(auto r, impl_->db->Run("listing API keys",
                                             "SELECT key_hash, created, expires FROM "
                                             "user_api_keys WHERE username=? ORDER BY created",
                                             {username}));
  std::vector<ApiKeyInfo> out;
  for (size_t i = 0; i < r.size(); ++i)
    out.push_back({std::string(r.Str(i, 0).substr(0, 16)), r.Int(i, 1), r.Int(i, 2)});
  return out;
}

Status MetaStore::RevokeApiKey(std::string_view username, std::string_view id) {
  std::lock_guard l(impl_->mu);
  if (id.empty())
    return impl_->db
        ->Run("revoking API keys", "DELETE FROM user_api_keys WHERE username=?", {username})
        .status();
  if (id.size() != 16 || id.find_first_not_of("0123456789abcdef") != std::string_view::npos)
    return Status::NotFound(fmt::format("no API key {} for user {}", id, username));
  CC_ASSIGN_OR_RETURN(auto r, impl_->db->Run("revoking an API key",
                                             "DELETE FROM user_api_keys WHERE username=? AND "
                                             "substr(key_hash, 1, 16)=? RETURNING key_hash",
                                             {username, id}));
  if (r.empty()) return Status::NotFound(fmt::format("no API key {} for user {}", id, username));
  return Status::Ok();
}

Result<User> MetaStore::AuthenticateApiKey(std::string_view username, std::string_view key) {
  std::string owner;
  int64_t expires = 0;
  {
    std::lock_guard l(impl_->mu);
    CC_ASSIGN_OR_RETURN(auto r, impl_->db->Run("reading an API key",
                                               "SELECT username, expires FROM user_api_keys "
                                               "WHERE key_hash=?",
                                               {Sha256Hex(key)}));
    if (!r.empty()) {
      owner = std::string(r.Str(0, 0));
      expires = r.Int(0, 1);
    }
  }
  if (owner.empty() || owner != username)
    return Status::Unauthenticated("wrong username or API key");
  if (expires > 0 && util::NowMicros() / 1'000'000 >= expires)
    return Status::Unauthenticated("this API key has expired");
  auto u = GetUser(username);
  if (!u.ok() && !u.status().IsNotFound()) return u.status();
  if (!u.ok() || !u->is_active) return Status::Unauthenticated("the user is inactive");
  return u;
}

}  // namespace commcare::meta
