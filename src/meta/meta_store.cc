#include "meta/meta_store.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <boost/json.hpp>
#include <unordered_map>

#include "util/hash.h"
#include "util/sqlite_conn.h"

namespace commcare::meta {
namespace {

namespace json = boost::json;
using util::Bind;
using util::Col;

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS domains(name TEXT PRIMARY KEY, doc TEXT NOT NULL, rev INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users(username TEXT PRIMARY KEY, doc TEXT NOT NULL,
  rev INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_domains(domain TEXT NOT NULL, username TEXT NOT NULL,
  PRIMARY KEY(domain, username)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys(key_hash TEXT PRIMARY KEY, username TEXT NOT NULL,
  created INTEGER NOT NULL) WITHOUT ROWID;
)";

std::string Base64(const unsigned char* data, size_t n) {
  std::string out(4 * ((n + 2) / 3) + 1, '\0');
  int len =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

}  // namespace

std::string Sha256Hex(std::string_view s) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : d) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

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

json::object EncodeUser(const User& u) {
  json::object o = UserProfile(u);
  o["password"] = u.password_hash;
  o["digest_md5"] = u.digest_md5;
  o["digest_sha256"] = u.digest_sha256;
  return o;
}

User DecodeUser(std::string_view text, int64_t rev) {
  User u;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return u;
  const auto& o = v.get_object();
  auto str = [&](const char* k) {
    auto* p = o.if_contains(k);
    return p && p->is_string() ? std::string(p->get_string()) : std::string();
  };
  auto flag = [&](const char* k) {
    auto* p = o.if_contains(k);
    return p && p->is_bool() && p->get_bool();
  };
  u.username = str("username");
  u.user_id = str("user_id");
  u.web_user = flag("web_user");
  u.is_superuser = flag("is_superuser");
  u.is_active = flag("is_active");
  u.password_hash = str("password");
  u.digest_md5 = str("digest_md5");
  u.digest_sha256 = str("digest_sha256");
  for (const char* k : {"domains", "permissions"})
    if (auto* a = o.if_contains(k); a && a->is_array())
      for (const auto& x : a->get_array())
        if (x.is_string())
          (std::string_view(k) == "domains" ? u.domains : u.permissions)
              .emplace_back(x.get_string());
  u.rev = rev;
  return u;
}

}  // namespace

json::object UserProfile(const User& u) {
  json::array domains, perms;
  for (const auto& d : u.domains) domains.emplace_back(d);
  for (const auto& p : u.permissions) perms.emplace_back(p);
  return {{"username", u.username}, {"user_id", u.user_id},           {"web_user", u.web_user},
          {"domains", domains},     {"is_superuser", u.is_superuser}, {"is_active", u.is_active},
          {"permissions", perms}};
}

bool User::InDomain(std::string_view domain) const {
  return is_superuser || std::find(domains.begin(), domains.end(), domain) != domains.end();
}

bool User::Can(std::string_view domain, std::string_view permission) const {
  if (!is_active || !InDomain(domain)) return false;
  return is_superuser ||
         std::find(permissions.begin(), permissions.end(), permission) != permissions.end();
}

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
  return got.size() == parts[3].size() &&
         CRYPTO_memcmp(got.data(), parts[3].data(), got.size()) == 0;
}

struct MetaStore::Impl {
  util::Conn db;
  std::mutex mu;
  // username -> (sha256 of the verified password, the user as verified)
  std::unordered_map<std::string, std::pair<std::string, User>> verified;
  // One PBKDF2 verification per user at a time: concurrent first requests of a user wait for
  // it and then hit the cache instead of each spending ~0.1 s of CPU.
  std::unordered_map<std::string, std::shared_ptr<std::mutex>> verifying;
};

MetaStore::MetaStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetaStore::~MetaStore() = default;

Result<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  CC_RETURN_IF_ERROR(impl->db.Open(path, false, false));
  CC_RETURN_IF_ERROR(impl->db.Exec("PRAGMA synchronous=FULL"));
  CC_RETURN_IF_ERROR(impl->db.Exec(kSchema));
  return std::unique_ptr<MetaStore>(new MetaStore(std::move(impl)));
}

Result<Domain> MetaStore::PutDomain(Domain d) {
  if (d.name.empty() || d.name.size() > 63 ||
      d.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos)
    return Status::InvalidArgument(
        fmt::format("domain name '{}' must be 1-63 lower-case letters, digits or '-'", d.name));
  std::lock_guard l(impl_->mu);
  auto& db = impl_->db;
  sqlite3_stmt* q = db.Prep("SELECT rev FROM domains WHERE name=?");
  Bind(q, 1, d.name);
  int64_t stored = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
  sqlite3_reset(q);
  if (stored != d.rev)
    return Status::Aborted(
        fmt::format("domain {} is at revision {}, not {}", d.name, stored, d.rev));
  d.rev = stored + 1;
  sqlite3_stmt* w = db.Prep("INSERT OR REPLACE INTO domains(name, doc, rev) VALUES(?,?,?)");
  Bind(w, 1, d.name);
  Bind(w, 2,
       json::serialize(
           json::object{{"name", d.name}, {"secure_submissions", d.secure_submissions}}));
  Bind(w, 3, d.rev);
  if (sqlite3_step(w) != SQLITE_DONE) return db.Err("writing a domain");
  return d;
}

Result<Domain> MetaStore::GetDomain(std::string_view name) {
  std::lock_guard l(impl_->mu);
  sqlite3_stmt* q = impl_->db.Prep("SELECT doc, rev FROM domains WHERE name=?");
  Bind(q, 1, name);
  if (sqlite3_step(q) != SQLITE_ROW) {
    sqlite3_reset(q);
    return Status::NotFound(fmt::format("no domain '{}'", name));
  }
  Domain d;
  d.name = std::string(name);
  auto v = json::parse(Col(q, 0));
  if (auto* p = v.as_object().if_contains("secure_submissions"); p && p->is_bool())
    d.secure_submissions = p->get_bool();
  d.rev = sqlite3_column_int64(q, 1);
  sqlite3_reset(q);
  return d;
}

Result<std::vector<Domain>> MetaStore::ListDomains() {
  std::vector<std::string> names;
  {
    std::lock_guard l(impl_->mu);
    sqlite3_stmt* q = impl_->db.Prep("SELECT name FROM domains ORDER BY name");
    while (sqlite3_step(q) == SQLITE_ROW) names.emplace_back(Col(q, 0));
    sqlite3_reset(q);
  }
  std::vector<Domain> out;
  for (const auto& n : names) {
    CC_ASSIGN_OR_RETURN(Domain d, GetDomain(n));
    out.push_back(std::move(d));
  }
  return out;
}

Result<User> MetaStore::PutUser(User u, std::string_view password) {
  if (u.username.empty() || u.username.size() > 128 ||
      u.username.find_first_of(" :\t\r\n") != std::string::npos)
    return Status::InvalidArgument(
        fmt::format("username '{}' must be 1-128 characters without spaces or ':'", u.username));
  if (!u.web_user && u.domains.size() != 1 && !u.is_superuser)
    return Status::InvalidArgument("a mobile worker belongs to exactly one domain");
  for (const auto& d : u.domains) CC_RETURN_IF_ERROR(GetDomain(d).status());
  if (!password.empty()) {
    u.password_hash = HashPassword(password);
    const std::string a1 = fmt::format("{}:{}:{}", u.username, kDigestRealm, password);
    u.digest_md5 = util::Md5Hex(a1);
    u.digest_sha256 = Sha256Hex(a1);
  }
  std::lock_guard l(impl_->mu);
  auto& db = impl_->db;
  sqlite3_stmt* q = db.Prep("SELECT doc, rev FROM users WHERE username=?");
  Bind(q, 1, u.username);
  int64_t stored = 0;
  User old;
  if (sqlite3_step(q) == SQLITE_ROW) {
    stored = sqlite3_column_int64(q, 1);
    old = DecodeUser(Col(q, 0), stored);
  }
  sqlite3_reset(q);
  if (stored != u.rev)
    return Status::Aborted(
        fmt::format("user {} is at revision {}, not {}", u.username, stored, u.rev));
  if (u.user_id.empty()) u.user_id = stored ? old.user_id : util::NewUuidHex();
  if (u.password_hash.empty()) {
    u.password_hash = old.password_hash;
    u.digest_md5 = old.digest_md5;
    u.digest_sha256 = old.digest_sha256;
  }
  u.rev = stored + 1;
  CC_RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
  sqlite3_stmt* w = db.Prep("INSERT OR REPLACE INTO users(username, doc, rev) VALUES(?,?,?)");
  Bind(w, 1, u.username);
  Bind(w, 2, json::serialize(EncodeUser(u)));
  Bind(w, 3, u.rev);
  bool ok = sqlite3_step(w) == SQLITE_DONE;
  sqlite3_stmt* d = db.Prep("DELETE FROM user_domains WHERE username=?");
  Bind(d, 1, u.username);
  ok = ok && sqlite3_step(d) == SQLITE_DONE;
  for (const auto& dom : u.domains) {
    sqlite3_stmt* i = db.Prep("INSERT INTO user_domains(domain, username) VALUES(?,?)");
    Bind(i, 1, dom);
    Bind(i, 2, u.username);
    ok = ok && sqlite3_step(i) == SQLITE_DONE;
  }
  if (!ok) {
    Status e = db.Err("writing a user");
    (void)db.Exec("ROLLBACK");
    return e;
  }
  CC_RETURN_IF_ERROR(db.Exec("COMMIT"));
  impl_->verified.erase(u.username);  // a changed password or deactivation counts at once
  return u;
}

Result<User> MetaStore::GetUser(std::string_view username) {
  std::lock_guard l(impl_->mu);
  sqlite3_stmt* q = impl_->db.Prep("SELECT doc, rev FROM users WHERE username=?");
  Bind(q, 1, username);
  if (sqlite3_step(q) != SQLITE_ROW) {
    sqlite3_reset(q);
    return Status::NotFound(fmt::format("no user '{}'", username));
  }
  User u = DecodeUser(Col(q, 0), sqlite3_column_int64(q, 1));
  sqlite3_reset(q);
  return u;
}

Result<std::vector<User>> MetaStore::ListUsers(std::string_view domain) {
  std::vector<std::string> names;
  {
    std::lock_guard l(impl_->mu);
    sqlite3_stmt* q =
        impl_->db.Prep("SELECT username FROM user_domains WHERE domain=? ORDER BY username");
    Bind(q, 1, domain);
    while (sqlite3_step(q) == SQLITE_ROW) names.emplace_back(Col(q, 0));
    sqlite3_reset(q);
  }
  std::vector<User> out;
  for (const auto& n : names) {
    CC_ASSIGN_OR_RETURN(User u, GetUser(n));
    out.push_back(std::move(u));
  }
  return out;
}

Result<User> MetaStore::Authenticate(std::string_view username, std::string_view password) {
  const std::string digest = Sha256Hex(password);
  std::shared_ptr<std::mutex> gate;
  {
    std::lock_guard l(impl_->mu);
    auto it = impl_->verified.find(std::string(username));
    if (it != impl_->verified.end() && it->second.first == digest) return it->second.second;
    auto& g = impl_->verifying[std::string(username)];
    if (!g) g = std::make_shared<std::mutex>();
    gate = g;
  }
  std::lock_guard single(*gate);
  {
    std::lock_guard l(impl_->mu);
    auto it = impl_->verified.find(std::string(username));
    if (it != impl_->verified.end() && it->second.first == digest) return it->second.second;
  }
  auto u = GetUser(username);
  if (!u.ok() || !u->is_active || !VerifyPassword(password, u->password_hash))
    return Status::Unauthenticated("wrong username or password, or the user is inactive");
  std::lock_guard l(impl_->mu);
  impl_->verified[std::string(username)] = {digest, *u};
  return u;
}

Result<std::string> MetaStore::CreateApiKey(std::string_view username) {
  CC_RETURN_IF_ERROR(GetUser(username).status());
  std::string key = RandomToken(40);
  std::lock_guard l(impl_->mu);
  sqlite3_stmt* w = impl_->db.Prep(
      "INSERT INTO api_keys(key_hash, username, created) VALUES(?,?,strftime('%s'))");
  Bind(w, 1, Sha256Hex(key));
  Bind(w, 2, username);
  if (sqlite3_step(w) != SQLITE_DONE) return impl_->db.Err("storing an API key");
  return key;
}

Result<User> MetaStore::AuthenticateApiKey(std::string_view username, std::string_view key) {
  std::string owner;
  {
    std::lock_guard l(impl_->mu);
    sqlite3_stmt* q = impl_->db.Prep("SELECT username FROM api_keys WHERE key_hash=?");
    Bind(q, 1, Sha256Hex(key));
    if (sqlite3_step(q) == SQLITE_ROW) owner = std::string(Col(q, 0));
    sqlite3_reset(q);
  }
  if (owner.empty() || owner != username)
    return Status::Unauthenticated("wrong username or API key");
  auto u = GetUser(username);
  if (!u.ok() || !u->is_active) return Status::Unauthenticated("the user is inactive");
  return u;
}

}  // namespace commcare::meta
