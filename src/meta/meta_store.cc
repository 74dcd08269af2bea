#include "meta/meta_store.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

#include "changes/relay.h"
#include "commcare/deployment.h"
#include "commcare/engine.h"
#include "commcare/log.h"
#include "commcare/storage/change_log.h"
#include "util/codec.h"
#include "util/hash.h"
#include "util/sql_db.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare::meta {
namespace {

namespace json = boost::json;
using codec::GetBool;
using codec::GetStr;

constexpr int kSchemaVersion = 1;
constexpr const char* kSqliteSchema = R"(
CREATE TABLE IF NOT EXISTS domains(name TEXT PRIMARY KEY, doc TEXT NOT NULL, rev INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users(username TEXT PRIMARY KEY, doc TEXT NOT NULL,
  rev INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_domains(domain TEXT NOT NULL, username TEXT NOT NULL,
  PRIMARY KEY(domain, username)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys(key_hash TEXT PRIMARY KEY, username TEXT NOT NULL,
  created INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_api_keys(key_hash TEXT PRIMARY KEY, username TEXT NOT NULL,
  created INTEGER NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_api_keys_by_user ON user_api_keys(username, created);
CREATE TABLE IF NOT EXISTS docs(kind TEXT NOT NULL, id TEXT NOT NULL, domain TEXT NOT NULL,
  doc TEXT NOT NULL, rev INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(kind, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS docs_by_domain ON docs(kind, domain, id);
CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
  key TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta_info(k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;
)";
// The same tables on PostgreSQL, documents as jsonb, listed in byte order as on SQLite.
constexpr const char* kPostgresSchema = R"(
CREATE TABLE IF NOT EXISTS domains(name TEXT COLLATE "C" PRIMARY KEY, doc JSONB NOT NULL, rev BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS users(username TEXT COLLATE "C" PRIMARY KEY, doc JSONB NOT NULL, rev BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS user_domains(domain TEXT NOT NULL, username TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY(domain, username));
CREATE TABLE IF NOT EXISTS api_keys(key_hash TEXT PRIMARY KEY, username TEXT NOT NULL,
  created BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS user_api_keys(key_hash TEXT PRIMARY KEY, username TEXT NOT NULL,
  created BIGINT NOT NULL, expires BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS user_api_keys_by_user ON user_api_keys(username, created);
CREATE TABLE IF NOT EXISTS docs(kind TEXT NOT NULL, id TEXT COLLATE "C" NOT NULL, domain TEXT NOT NULL,
  doc JSONB NOT NULL, rev BIGINT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(kind, id));
CREATE INDEX IF NOT EXISTS docs_by_domain ON docs(kind, domain, id);
CREATE TABLE IF NOT EXISTS outbox(seq BIGSERIAL PRIMARY KEY, topic TEXT NOT NULL,
  key TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta_info(k TEXT PRIMARY KEY, v TEXT NOT NULL);
)";

// PostgreSQL advisory locks: every write holds the first (so outbox seqs follow commit order
// and revision checks see the latest commit), a relay the second.
constexpr int64_t kWriteLock = 7234618140;
constexpr int64_t kRelayLock = 7234618141;

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
  u.username = GetStr(o, "username");
  u.user_id = GetStr(o, "user_id");
  u.web_user = GetBool(o, "web_user");
  u.is_superuser = GetBool(o, "is_superuser");
  u.is_active = GetBool(o, "is_active");
  u.password_hash = GetStr(o, "password");
  if (auto* r = o.if_contains("role_ids"); r && r->is_object())
    for (const auto& kv : r->get_object())
      if (kv.value().is_string()) u.role_ids[std::string(kv.key())] = kv.value().get_string();
  if (auto* l = o.if_contains("location_ids"); l && l->is_array())
    for (const auto& x : l->get_array())
      if (x.is_string()) u.location_ids.emplace_back(x.get_string());
  if (auto* d = o.if_contains("user_data"); d && d->is_object()) u.user_data = d->get_object();
  u.digest_md5 = GetStr(o, "digest_md5");
  u.digest_sha256 = GetStr(o, "digest_sha256");
  if (auto* a = o.if_contains("domains"); a && a->is_array())
    for (const auto& x : a->get_array())
      if (x.is_string()) u.domains.emplace_back(x.get_string());
  // Permissions by domain; a list (stored before they were per domain) holds in each domain.
  auto list = [](const json::value& a, std::vector<std::string>* out) {
    if (a.is_array())
      for (const auto& x : a.get_array())
        if (x.is_string()) out->emplace_back(x.get_string());
  };
  if (auto* p = o.if_contains("permissions"); p && p->is_object())
    for (const auto& kv : p->get_object()) list(kv.value(), &u.permissions[kv.key()]);
  else if (p)
    for (const auto& d : u.domains) list(*p, &u.permissions[d]);
  u.rev = rev;
  return u;
}

const std::set<std::string_view> kPermissions = {kEditData, kAccessApi, kMobileEndpoints,
                                                 kManageUsers};
}  // namespace

json::object UserJson(const User& u, std::string_view domain) {
  json::object o = UserProfile(u);
  if (!domain.empty()) {
    json::array perms;
    if (auto it = u.permissions.find(std::string(domain)); it != u.permissions.end())
      for (const auto& p : it->second) perms.emplace_back(p);
    o["permissions"] = std::move(perms);
  }
  o["_rev"] = u.rev;
  return o;
}

Status ApplyUserFields(const json::object& o, std::string_view domain, User* u,
                       std::string* password) {
  for (const auto& kv : o) {
    std::string_view k = kv.key();
    const json::value& x = kv.value();
    if (k == "username" || k == "_rev" || k == "revoke_api_keys") continue;
    if (k == "password") {
      if (!x.is_string() || x.get_string().size() < 4)
        return Status::InvalidArgument("password: must be a string of at least 4 characters");
      *password = std::string(x.get_string());
    } else if (k == "is_active") {
      if (!x.is_bool()) return Status::InvalidArgument("is_active: must be true or false");
      u->is_active = x.get_bool();
    } else if (k == "web_user") {
      if (!x.is_bool()) return Status::InvalidArgument("web_user: must be true or false");
      u->web_user = x.get_bool();
    } else if (k == "role_id") {
      if (x.is_null()) {
        u->role_ids.erase(std::string(domain));
      } else {
        if (!x.is_string()) return Status::InvalidArgument("role_id: must be a role's id or null");
        u->role_ids[std::string(domain)] = std::string(x.get_string());
      }
    } else if (k == "location_ids") {
      if (!x.is_array())
        return Status::InvalidArgument("location_ids: must be a list of location ids");
      u->location_ids.clear();
      for (const auto& l : x.get_array()) {
        if (!l.is_string()) return Status::InvalidArgument("location_ids: each must be a string");
        u->location_ids.emplace_back(l.get_string());
      }
    } else if (k == "user_data") {
      if (!x.is_object()) return Status::InvalidArgument("user_data: must be an object");
      u->user_data = x.get_object();
    } else if (k == "permissions") {
      if (!x.is_array()) return Status::InvalidArgument("permissions: must be a list");
      auto& granted = u->permissions[std::string(domain)];
      granted.clear();
      for (const auto& p : x.get_array()) {
        if (!p.is_string() || !kPermissions.count(p.get_string()))
          return Status::InvalidArgument(
              "permissions: each must be edit_data, access_api, "
              "access_mobile_endpoints or manage_users");
        granted.emplace_back(p.get_string());
      }
    } else if (k == "domains") {
      if (!x.is_array() || x.get_array().empty())
        return Status::InvalidArgument("domains: must be a non-empty list of domain names");
      u->domains.clear();
      for (const auto& d : x.get_array()) {
        if (!d.is_string()) return Status::InvalidArgument("domains: each must be a string");
        u->domains.emplace_back(d.get_string());
      }
    } else {
      return Status::InvalidArgument(fmt::format("{}: unknown field", k));
    }
  }
  return Status::Ok();
}

std::string StoreAt(const std::string& data_dir, std::string_view file) {
  // A directory not set up yet keeps its files in itself (opening the engine names the problem).
  auto d = Deployment::Load(data_dir);
  return d.ok() ? d->StoreAt(data_dir, "meta", file) : data_dir + "/" + std::string(file);
}

Result<RestoreRequest> MakeRestoreRequest(MetaStore* meta, const User& user,
                                          const std::string& domain) {
  RestoreRequest q;
  q.domain = domain;
  q.user.username = user.username;
  q.user.user_id = user.user_id;
  // Only a mobile worker's restore carries its password hash (for offline login, as HQ's);
  // a web user's or superuser's never does.
  if (!user.web_user && !user.is_superuser) q.user.password_hash = user.password_hash;
  for (const auto& kv : user.user_data)
    q.user.user_data.emplace_back(std::string(kv.key()), kv.value().is_string()
                                                             ? std::string(kv.value().get_string())
                                                             : json::serialize(kv.value()));
  CC_ASSIGN_OR_RETURN(q.user.owner_ids, meta->OwnerIds(user, domain));
  CC_ASSIGN_OR_RETURN(q.fixtures, meta->Fixtures(user, domain));
  return q;
}

json::object UserProfile(const User& u) {
  json::array domains, locations;
  json::object roles, perms;
  for (const auto& d : u.domains) domains.emplace_back(d);
  for (const auto& [d, list] : u.permissions) {
    json::array a;
    for (const auto& p : list) a.emplace_back(p);
    perms[d] = std::move(a);
  }
  for (const auto& l : u.location_ids) locations.emplace_back(l);
  for (const auto& [d, r] : u.role_ids) roles[d] = r;
  return {{"username", u.username},         {"user_id", u.user_id},
          {"web_user", u.web_user},         {"domains", domains},
          {"is_superuser", u.is_superuser}, {"is_active", u.is_active},
          {"permissions", perms},           {"role_ids", roles},
          {"location_ids", locations},      {"user_data", u.user_data}};
}

bool User::InDomain(std::string_view domain) const {
  return is_superuser || std::find(domains.begin(), domains.end(), domain) != domains.end();
}

bool User::Can(std::string_view domain, std::string_view permission) const {
  if (!is_active || !InDomain(domain)) return false;
  if (is_superuser) return true;
  if (auto g = permissions.find(std::string(domain));
      g != permissions.end() &&
      std::find(g->second.begin(), g->second.end(), permission) != g->second.end())
    return true;
  auto r = role_permissions.find(std::string(domain));
  return r != role_permissions.end() &&
         std::find(r->second.begin(), r->second.end(), permission) != r->second.end();
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
  std::unique_ptr<util::SqlDb> db;
  std::mutex mu;
  std::string producer;  // the relay's producer mark name (see RelayProducer)
  // username -> (sha256 of the verified password, the user as verified)
  std::unordered_map<std::string, std::pair<std::string, User>> verified;
  // One PBKDF2 verification per user at a time: concurrent first requests of a user wait for
  // it and then hit the cache instead of each spending ~0.1 s of CPU. Striped by a hash of
  // the username, so names tried leave nothing behind.
  std::array<std::mutex, 64> verifying;
  // Bumped by every write through this store and when another process committed (the stored
  // generation changed): a verification that started before a bump is not cached.
  uint64_t generation = 0;
  std::string stored_generation;
  std::mutex relay_mu;  // one relay at a time; guards the two below
  storage::ChangeLog* log = nullptr;
  // The relay's own connection (none for an in-memory store: it then uses db under mu), so a
  // slow or unreachable change log never holds up logins and reads.
  std::unique_ptr<util::SqlDb> relay_db;
  std::string where;

  // Forgets every verified credential if any process wrote since the last look (mu held; a
  // CLI or another server deactivating a user counts at once for this one).
  void ForgetIfChangedElsewhere() {
    auto r = db->Run("reading the generation", "SELECT v FROM meta_info WHERE k='generation'");
    std::string v = r.ok() && !r->empty() ? std::string(r->Str(0, 0)) : "?";
    if (v != stored_generation || v == "?") {
      stored_generation = v;
      verified.clear();
      ++generation;
    }
  }
  // Forgets every verified credential after a write of this process (mu held).
  void Forget() {
    verified.clear();
    ++generation;
  }
  // Runs write in one transaction that excludes every other writer, in any process, and bumps
  // the stored generation with it (mu held).
  Status Write(const char* what, const std::function<Status()>& write) {
    return db->Transaction(what, kWriteLock, [&] {
      CC_RETURN_IF_ERROR(write());
      return db
          ->Run(what,
                "UPDATE meta_info SET v=CAST(CAST(v AS BIGINT) + 1 AS TEXT) WHERE k='generation'")
          .status();
    });
  }
  // Queues the change record of a write (inside the write's transaction; mu held).
  Status Queue(std::string_view topic, std::string_view document_type, std::string_view id,
               std::string_view domain, bool deletion) {
    ChangeMeta m;
    m.topic = std::string(topic);
    m.document_id = std::string(id);
    m.data_source_type = "meta";
    m.data_source_name = "meta";
    m.document_type = std::string(document_type);
    m.domain = std::string(domain);
    m.is_deletion = deletion;
    m.publish_timestamp = util::NowMicros();
    return db
        ->Run("queueing a change", "INSERT INTO outbox(topic, key, value) VALUES(?,?,?)",
              {topic, id, ChangeMetaToJson(m)})
        .status();
  }
  // A stored document (live or deleted) and its revision (mu held).
  Result<std::optional<Doc>> LoadDoc(std::string_view kind, std::string_view id, bool* deleted) {
    CC_ASSIGN_OR_RETURN(
        auto r,
        db->Run("reading a document",
                "SELECT domain, doc, rev, deleted FROM docs WHERE kind=? AND id=?", {kind, id}));
    std::optional<Doc> d;
    if (r.empty()) return d;
    d.emplace();
    d->kind = std::string(kind);
    d->id = std::string(id);
    d->domain = std::string(r.Str(0, 0));
    boost::system::error_code ec;
    json::value v = json::parse(r.Str(0, 1), ec);
    if (!ec && v.is_object()) d->body = std::move(v.get_object());
    d->rev = r.Int(0, 2);
    *deleted = r.Int(0, 3) != 0;
    return d;
  }
  // The user with each role's permissions filled in (mu held).
  Result<std::optional<User>> LoadUser(std::string_view username) {
    CC_ASSIGN_OR_RETURN(auto r, db->Run("reading a user",
                                        "SELECT doc, rev FROM users WHERE username=?", {username}));
    std::optional<User> u;
    if (r.empty()) return u;
    u = DecodeUser(r.Str(0, 0), r.Int(0, 1));
    for (const auto& [domain, role] : u->role_ids) {
      bool deleted = false;
      CC_ASSIGN_OR_RETURN(auto d, LoadDoc("role", role, &deleted));
      auto& perms = u->role_permissions[domain];
      if (!d || deleted || d->domain != domain) continue;
      if (auto* p = d->body.if_contains("permissions"); p && p->is_array())
        for (const auto& x : p->get_array())
          if (x.is_string()) perms.emplace_back(x.get_string());
    }
    return u;
  }
};

MetaStore::MetaStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetaStore::~MetaStore() = default;

Result<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& where) {
  auto impl = std::make_unique<Impl>();
  impl->where = where;
  CC_ASSIGN_OR_RETURN(impl->db, util::SqlDb::Open(where, "commcare_meta"));
  util::SqlDb& db = *impl->db;
  if (!db.postgres()) CC_RETURN_IF_ERROR(db.Run("setting up", "PRAGMA synchronous=FULL").status());
  CC_RETURN_IF_ERROR(db.Migrate("meta", kSchemaVersion, kSqliteSchema, kPostgresSchema));
  // The relay's mark is per store: several servers' stores relay into one change log, each
  // numbering its own outbox (servers sharing one PostgreSQL store share its mark). A store
  // from before this keeps the old shared name.
  CC_RETURN_IF_ERROR(db.Transaction("recording the relay's producer name", kWriteLock, [&] {
    CC_RETURN_IF_ERROR(db.Run("setting up",
                              "INSERT INTO meta_info(k, v) VALUES('generation', '0') "
                              "ON CONFLICT(k) DO NOTHING")
                           .status());
    // Keys made before keys could expire move to the table that says when (never).
    CC_RETURN_IF_ERROR(db.Run("moving API keys",
                              "INSERT INTO user_api_keys(key_hash, username, created, expires) "
                              "SELECT key_hash, username, created, 0 FROM api_keys WHERE true "
                              "ON CONFLICT(key_hash) DO NOTHING")
                           .status());
    CC_RETURN_IF_ERROR(db.Run("moving API keys", "DELETE FROM api_keys").status());
    CC_ASSIGN_OR_RETURN(auto r, db.Run("reading the relay's producer name",
                                       "SELECT v FROM meta_info WHERE k='relay_producer'"));
    if (!r.empty()) {
      impl->producer = std::string(r.Str(0, 0));
      return Status::Ok();
    }
    CC_ASSIGN_OR_RETURN(auto old, db.Run("setting up", "SELECT 1 FROM domains LIMIT 1"));
    impl->producer = !old.empty() ? "relay-meta" : "relay-meta-" + util::NewUuidHex();
    return db
        .Run("recording the relay's producer name",
             "INSERT INTO meta_info(k, v) VALUES('relay_producer', ?)", {impl->producer})
        .status();
  }));
  return std::unique_ptr<MetaStore>(new MetaStore(std::move(impl)));
}

Status MetaStore::SetChangeLog(storage::ChangeLog* log) {
  {
    std::lock_guard l(impl_->relay_mu);
    impl_->log = log;
    if (log && !impl_->relay_db && !impl_->where.empty() && impl_->where != ":memory:") {
      CC_ASSIGN_OR_RETURN(impl_->relay_db, util::SqlDb::Open(impl_->where, "commcare_meta"));
    }
  }
  return Relay();
}

const std::string& MetaStore::RelayProducer() const { return impl_->producer; }

namespace {

// The meta store's outbox table, as the relay reads it (inside the relay's transaction).
class MetaOutbox final : public changes::Outbox {
 public:
  explicit MetaOutbox(util::SqlDb* db) : db_(db) {}
  Result<std::vector<Row>> Read(int64_t after, size_t limit) override {
    CC_ASSIGN_OR_RETURN(auto rows, db_->Run("reading the outbox",
                                            "SELECT seq, topic, key, value FROM outbox "
                                            "WHERE seq>? ORDER BY seq LIMIT ?",
                                            {after, static_cast<int64_t>(limit)}));
    std::vector<Row> out;
    for (size_t i = 0; i < rows.size(); ++i)
      out.push_back({rows.Int(i, 0),
                     {std::string(rows.Str(i, 1)), std::string(rows.Str(i, 2)),
                      std::string(rows.Str(i, 3))}});
    return out;
  }
  Status Dequeue(int64_t through) override {
    return db_->Run("dequeuing relayed changes", "DELETE FROM outbox WHERE seq<=?", {through})
        .status();
  }

 private:
  util::SqlDb* db_;
};

}  // namespace

Status MetaStore::Relay() {
  std::lock_guard rl(impl_->relay_mu);
  storage::ChangeLog* log = impl_->log;
  if (!log) return Status::Ok();
  std::unique_lock<std::mutex> shared;  // the store's connection, when the relay has none
  if (!impl_->relay_db) shared = std::unique_lock(impl_->mu);
  util::SqlDb& db = impl_->relay_db ? *impl_->relay_db : *impl_->db;
  MetaOutbox outbox(&db);
  for (int64_t moved = 1; moved > 0;) {
    // One relay at a time across processes (they share the outbox and its mark on PostgreSQL):
    // the mark is read, the records appended and dequeued under the relay's lock.
    CC_RETURN_IF_ERROR(db.Transaction("relaying changes", kRelayLock, [&]() -> Status {
      int64_t mark = -1;
      return changes::RelayBatch(&outbox, log, impl_->producer, 1000, &mark, &moved);
    }));
  }
  return Status::Ok();
}

// After a write: relays now; what fails stays queued for the next write's relay (or the next
// start's), and is logged.
void MetaStore::RelayAfterWrite() {
  if (Status s = Relay(); !s.ok())
    Log(LogLevel::kWarning, "relaying user and domain changes failed: " + s.ToString(),
        {{"component", "meta-relay"},
         {"next", "the changes stay queued; retried after the next write"}});
}

Result<Domain> MetaStore::PutDomain(Domain d) {
  if (d.name.empty() || d.name.size() > 63 ||
      d.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos)
    return Status::InvalidArgument(
        fmt::format("domain name '{}' must be 1-63 lower-case letters, digits or '-'", d.name));
  {
    std::lock_guard l(impl_->mu);
    util::SqlDb& db = *impl_->db;
    CC_RETURN_IF_ERROR(impl_->Write("writing a domain", [&]() -> Status {
      CC_ASSIGN_OR_RETURN(
          auto r, db.Run("reading a domain", "SELECT rev FROM domains WHERE name=?", {d.name}));
      const int64_t stored = r.empty() ? 0 : r.Int(0, 0);
      if (stored != d.rev)
        return Status::Aborted(
            fmt::format("domain {} is at revision {}, not {}", d.name, stored, d.rev));
      d.rev = stored + 1;
      CC_RETURN_IF_ERROR(
          db.Run("writing a domain",
                 "INSERT INTO domains(name, doc, rev) VALUES(?,?,?) "
                 "ON CONFLICT(name) DO UPDATE SET doc=excluded.doc, rev=excluded.rev",
                 {d.name,
                  json::serialize(
                      json::object{{"name", d.name}, {"secure_submissions", d.secure_submissions}}),
                  d.rev})
              .status());
      return impl_->Queue("domain", "Domain", d.name, d.name, false);
    }));
  }
  RelayAfterWrite();
  return d;
}

Result<Domain> MetaStore::GetDomain(std::string_view name) {
  std::lock_guard l(impl_->mu);
  CC_ASSIGN_OR_RETURN(auto r, impl_->db->Run("reading a domain",
                                             "SELECT doc, rev FROM domains WHERE name=?", {name}));
  if (r.empty()) return Status::NotFound(fmt::format("no domain '{}'", name));
  Domain d;
  d.name = std::string(name);
  boost::system::error_code ec;
  auto v = json::parse(r.Str(0, 0), ec);
  if (ec || !v.is_object()) return Status::DataLoss(fmt::format("domain {} is not JSON", name));
  if (auto* p = v.as_object().if_contains("secure_submissions"); p && p->is_bool())
    d.secure_submissions = p->get_bool();
  d.rev = r.Int(0, 1);
  return d;
}

Result<std::vector<Domain>> MetaStore::ListDomains() {
  std::vector<std::string> names;
  {
    std::lock_guard l(impl_->mu);
    CC_ASSIGN_OR_RETURN(
        auto r, impl_->db->Run("listing domains", "SELECT name FROM domains ORDER BY name"));
    for (size_t i = 0; i < r.size(); ++i) names.emplace_back(r.Str(i, 0));
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
  for (const auto& [domain, role] : u.role_ids) {
    if (!u.InDomain(domain))
      return Status::InvalidArgument(
          fmt::format("role_ids: {} is not one of the user's domains", domain));
    if (!GetDoc("role", domain, role).ok())
      return Status::InvalidArgument(fmt::format("role_ids: no role {} in {}", role, domain));
  }
  for (const auto& loc : u.location_ids) {
    bool found = false;
    for (const auto& d : u.domains) found = found || GetDoc("location", d, loc).ok();
    if (!found)
      return Status::InvalidArgument(
          fmt::format("location_ids: no location {} in the user's domains", loc));
  }
  for (const auto& kv : u.user_data)
    if (!kv.value().is_string() && !kv.value().is_number() && !kv.value().is_bool())
      return Status::InvalidArgument(
          fmt::format("user_data.{}: must be a string, number or boolean", kv.key()));
  if (!password.empty()) {
    u.password_hash = HashPassword(password);
    const std::string a1 = fmt::format("{}:{}:{}", u.username, kDigestRealm, password);
    u.digest_md5 = util::Md5Hex(a1);
    u.digest_sha256 = Sha256Hex(a1);
  }
  {
    std::lock_guard l(impl_->mu);
    util::SqlDb& db = *impl_->db;
    CC_RETURN_IF_ERROR(impl_->Write("writing a user", [&]() -> Status {
      CC_ASSIGN_OR_RETURN(auto old, impl_->LoadUser(u.username));
      const int64_t stored = old ? old->rev : 0;
      if (stored != u.rev)
        return Status::Aborted(
            fmt::format("user {} is at revision {}, not {}", u.username, stored, u.rev));
      if (u.user_id.empty()) u.user_id = old ? old->user_id : util::NewUuidHex();
      if (u.password_hash.empty() && old) {
        u.password_hash = old->password_hash;
        u.digest_md5 = old->digest_md5;
        u.digest_sha256 = old->digest_sha256;
      }
      u.rev = stored + 1;
      CC_RETURN_IF_ERROR(db.Run("writing a user",
                                "INSERT INTO users(username, doc, rev) VALUES(?,?,?) "
                                "ON CONFLICT(username) DO UPDATE SET doc=excluded.doc, "
                                "rev=excluded.rev",
                                {u.username, json::serialize(EncodeUser(u)), u.rev})
                             .status());
      CC_RETURN_IF_ERROR(
          db.Run("writing a user", "DELETE FROM user_domains WHERE username=?", {u.username})
              .status());
      for (const auto& dom : u.domains)
        CC_RETURN_IF_ERROR(db.Run("writing a user",
                                  "INSERT INTO user_domains(domain, username) VALUES(?,?)",
                                  {dom, u.username})
                               .status());
      return impl_->Queue(u.web_user ? "web-user" : "commcare-user",
                          u.web_user ? "WebUser" : "CommCareUser", u.user_id,
                          u.web_user || u.domains.empty() ? "" : u.domains[0], false);
    }));
    impl_->Forget();  // a changed password or deactivation counts at once
    CC_ASSIGN_OR_RETURN(auto fresh, impl_->LoadUser(u.username));
    if (fresh) u = *fresh;
  }
  RelayAfterWrite();
  return u;
}

Result<User> MetaStore::GetUser(std::string_view username) {
  std::lock_guard l(impl_->mu);
  CC_ASSIGN_OR_RETURN(auto u, impl_->LoadUser(username));
  if (!u) return Status::NotFound(fmt::format("no user '{}'", username));
  return *std::move(u);
}

Result<std::vector<User>> MetaStore::ListUsers(std::string_view domain) {
  std::vector<std::string> names;
  {
    std::lock_guard l(impl_->mu);
    CC_ASSIGN_OR_RETURN(
        auto r, impl_->db->Run("listing users",
                               "SELECT username FROM user_domains WHERE domain=? ORDER BY username",
                               {domain}));
    for (size_t i = 0; i < r.size(); ++i) names.emplace_back(r.Str(i, 0));
  }
  std::vector<User> out;
  for (const auto& n : names) {
    CC_ASSIGN_OR_RETURN(User u, GetUser(n));
    out.push_back(std::move(u));
  }
  return out;
}

namespace {

const std::map<std::string_view, std::pair<std::string_view, std::string_view>> kDocTopics = {
    {"role", {"role", "UserRole"}},
    {"group", {"group", "Group"}},
    {"location", {"location", "Location"}},
    {"app", {"app", "Application"}}};

Status CheckString(const json::object& b, const char* k, bool required) {
  const json::value* v = b.if_contains(k);
  if ((!v && required) || (v && !v->is_string()) || (required && v->get_string().empty()))
    return Status::InvalidArgument(
        fmt::format("{}: {} a string", k, required ? "is required," : "must be"));
  return Status::Ok();
}
Status CheckBool(const json::object& b, const char* k) {
  if (const json::value* v = b.if_contains(k); v && !v->is_bool())
    return Status::InvalidArgument(fmt::format("{}: must be true or false", k));
  return Status::Ok();
}
Status CheckStringMap(const json::object& b, const char* k) {
  if (const json::value* v = b.if_contains(k)) {
    if (!v->is_object()) return Status::InvalidArgument(fmt::format("{}: must be an object", k));
    for (const auto& kv : v->get_object())
      if (!kv.value().is_string())
        return Status::InvalidArgument(fmt::format("{}.{}: must be a string", k, kv.key()));
  }
  return Status::Ok();
}
Status CheckOnly(const json::object& b, std::initializer_list<std::string_view> keys) {
  for (const auto& kv : b)
    if (std::find(keys.begin(), keys.end(), kv.key()) == keys.end())
      return Status::InvalidArgument(fmt::format("{}: unknown field", kv.key()));
  return Status::Ok();
}

}  // namespace

Result<Doc> MetaStore::PutDoc(Doc d) {
  if (!kDocTopics.count(d.kind))
    return Status::InvalidArgument(fmt::format("no document kind '{}'", d.kind));
  CC_RETURN_IF_ERROR(GetDomain(d.domain).status());
  if (d.id.empty()) d.id = util::NewUuidHex();
  if (d.id.size() > 64 ||
      d.id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789-_.") != std::string::npos)
    return Status::InvalidArgument(
        fmt::format("id: '{}' must be 1-64 letters, digits, '-', '_' or '.'", d.id));
  const json::object& b = d.body;
  CC_RETURN_IF_ERROR(CheckString(b, "name", true));
  if (d.kind == "role") {
    CC_RETURN_IF_ERROR(CheckOnly(b, {"name", "permissions"}));
    if (const json::value* p = b.if_contains("permissions")) {
      if (!p->is_array()) return Status::InvalidArgument("permissions: must be a list");
      for (const auto& x : p->get_array())
        if (!x.is_string() ||
            (x.get_string() != kEditData && x.get_string() != kAccessApi &&
             x.get_string() != kMobileEndpoints && x.get_string() != kManageUsers))
          return Status::InvalidArgument(
              "permissions: each must be edit_data, access_api, access_mobile_endpoints or "
              "manage_users");
    }
  } else if (d.kind == "group") {
    CC_RETURN_IF_ERROR(CheckOnly(b, {"name", "users", "case_sharing", "reporting", "metadata"}));
    CC_RETURN_IF_ERROR(CheckBool(b, "case_sharing"));
    CC_RETURN_IF_ERROR(CheckBool(b, "reporting"));
    CC_RETURN_IF_ERROR(CheckStringMap(b, "metadata"));
    if (const json::value* p = b.if_contains("users")) {
      if (!p->is_array()) return Status::InvalidArgument("users: must be a list of user ids");
      CC_ASSIGN_OR_RETURN(auto members, ListUsers(d.domain));
      for (const auto& x : p->get_array()) {
        bool known = x.is_string() && std::any_of(members.begin(), members.end(), [&](auto& u) {
                       return u.user_id == x.get_string();
                     });
        if (!known)
          return Status::InvalidArgument(
              fmt::format("users: {} is not the id of a user of {}", json::serialize(x), d.domain));
      }
    }
  } else if (d.kind == "location") {
    CC_RETURN_IF_ERROR(CheckOnly(b, {"name", "site_code", "location_type", "parent_id",
                                     "shares_cases", "view_descendants", "metadata"}));
    CC_RETURN_IF_ERROR(CheckString(b, "location_type", true));
    CC_RETURN_IF_ERROR(CheckString(b, "site_code", false));
    CC_RETURN_IF_ERROR(CheckBool(b, "shares_cases"));
    CC_RETURN_IF_ERROR(CheckBool(b, "view_descendants"));
    CC_RETURN_IF_ERROR(CheckStringMap(b, "metadata"));
    if (const json::value* p = b.if_contains("parent_id"); p && !p->is_null()) {
      if (!p->is_string()) return Status::InvalidArgument("parent_id: must be a string or null");
      // The parent must exist, and d must not be among its ancestors.
      std::string at(p->get_string());
      for (int depth = 0; !at.empty(); ++depth) {
        if (at == d.id || depth > 64)
          return Status::InvalidArgument(
              fmt::format("parent_id: {} would make a cycle", p->get_string()));
        auto parent = GetDoc("location", d.domain, at);
        if (!parent.ok())
          return Status::InvalidArgument(
              fmt::format("parent_id: no location {} in {}", at, d.domain));
        at = GetStr(parent->body, "parent_id");
      }
    }
  }
  {
    std::lock_guard l(impl_->mu);
    const auto& [topic, type] = kDocTopics.at(d.kind);
    CC_RETURN_IF_ERROR(impl_->Write("writing a document", [&]() -> Status {
      bool deleted = false;
      CC_ASSIGN_OR_RETURN(auto old, impl_->LoadDoc(d.kind, d.id, &deleted));
      if (old && old->domain != d.domain)
        return Status::AlreadyExists(fmt::format("{} {} belongs to another domain", d.kind, d.id));
      const int64_t stored = old ? old->rev : 0;
      if (stored != d.rev)
        return Status::Aborted(
            fmt::format("{} {} is at revision {}, not {}", d.kind, d.id, stored, d.rev));
      d.rev = stored + 1;
      CC_RETURN_IF_ERROR(impl_->db
                             ->Run("writing a document",
                                   "INSERT INTO docs(kind, id, domain, doc, rev, deleted) "
                                   "VALUES(?,?,?,?,?,0) ON CONFLICT(kind, id) DO UPDATE SET "
                                   "domain=excluded.domain, doc=excluded.doc, rev=excluded.rev, "
                                   "deleted=0",
                                   {d.kind, d.id, d.domain, json::serialize(d.body), d.rev})
                             .status());
      return impl_->Queue(topic, type, d.id, d.domain, false);
    }));
    if (d.kind == "role") impl_->Forget();  // permissions changed for its users
  }
  RelayAfterWrite();
  return d;
}

Result<Doc> MetaStore::GetDoc(std::string_view kind, std::string_view domain, std::string_view id) {
  std::lock_guard l(impl_->mu);
  bool deleted = false;
  CC_ASSIGN_OR_RETURN(auto d, impl_->LoadDoc(kind, id, &deleted));
  if (!d || deleted || d->domain != domain)
    return Status::NotFound(fmt::format("no {} {} in {}", kind, id, domain));
  return *std::move(d);
}

Result<std::vector<Doc>> MetaStore::ListDocs(std::string_view kind, std::string_view domain) {
  std::lock_guard l(impl_->mu);
  CC_ASSIGN_OR_RETURN(
      auto r,
      impl_->db->Run(
          "listing documents",
          "SELECT id, doc, rev FROM docs WHERE kind=? AND domain=? AND deleted=0 ORDER BY id",
          {kind, domain}));
  std::vector<Doc> out;
  for (size_t i = 0; i < r.size(); ++i) {
    Doc d;
    d.kind = std::string(kind);
    d.domain = std::string(domain);
    d.id = std::string(r.Str(i, 0));
    boost::system::error_code ec;
    json::value v = json::parse(r.Str(i, 1), ec);
    if (!ec && v.is_object()) d.body = std::move(v.get_object());
    d.rev = r.Int(i, 2);
    out.push_back(std::move(d));
  }
  return out;
}

Status MetaStore::DeleteDoc(std::string_view kind, std::string_view domain, std::string_view id,
                            int64_t rev) {
  CC_ASSIGN_OR_RETURN(Doc d, GetDoc(kind, domain, id));
  if (kind == "location") {
    CC_ASSIGN_OR_RETURN(auto all, ListDocs("location", domain));
    for (const auto& c : all)
      if (GetStr(c.body, "parent_id") == id)
        return Status::FailedPrecondition(
            fmt::format("location {} has child locations (first: {})", id, c.id));
  }
  if (kind == "role") {
    CC_ASSIGN_OR_RETURN(auto users, ListUsers(domain));
    for (const auto& u : users)
      if (auto r = u.role_ids.find(std::string(domain)); r != u.role_ids.end() && r->second == id)
        return Status::FailedPrecondition(
            fmt::format("role {} is assigned to user {}", id, u.username));
  }
  {
    std::lock_guard l(impl_->mu);
    const auto& [topic, type] = kDocTopics.at(kind);
    CC_RETURN_IF_ERROR(impl_->Write("deleting a document", [&]() -> Status {
      bool deleted = false;
      CC_ASSIGN_OR_RETURN(auto old, impl_->LoadDoc(kind, id, &deleted));
      if (!old || deleted) return Status::NotFound(fmt::format("no {} {} in {}", kind, id, domain));
      if (old->rev != rev)
        return Status::Aborted(
            fmt::format("{} {} is at revision {}, not {}", kind, id, old->rev, rev));
      CC_RETURN_IF_ERROR(impl_->db
                             ->Run("deleting a document",
                                   "UPDATE docs SET deleted=1, rev=rev+1 WHERE kind=? AND id=?",
                                   {kind, id})
                             .status());
      return impl_->Queue(topic, type, id, domain, true);
    }));
    if (kind == "role") impl_->Forget();
  }
  return Relay();
}

Result<std::string> MetaStore::Fixtures(const User& user, std::string_view domain) {
  using util::AppendXmlEscaped;
  std::string o = "<fixture id=\"user-groups\" user_id=\"";
  AppendXmlEscaped(&o, user.user_id);
  o += "\"><groups>";
  CC_ASSIGN_OR_RETURN(auto groups, ListDocs("group", domain));
  for (const auto& g : groups) {
    const json::value* us = g.body.if_contains("users");
    bool member = us && us->is_array() &&
                  std::any_of(us->get_array().begin(), us->get_array().end(), [&](auto& x) {
                    return x.is_string() && x.get_string() == user.user_id;
                  });
    if (!member) continue;
    o += "<group id=\"";
    AppendXmlEscaped(&o, g.id);
    o += "\"><name>";
    AppendXmlEscaped(&o, GetStr(g.body, "name"));
    o += "</name></group>";
  }
  o += "</groups></fixture><fixture id=\"locations\" user_id=\"";
  AppendXmlEscaped(&o, user.user_id);
  o += "\"><locations>";
  CC_ASSIGN_OR_RETURN(auto locations, ListDocs("location", domain));
  for (const auto& l : locations) {
    o += "<location id=\"";
    AppendXmlEscaped(&o, l.id);
    o += "\" type=\"";
    AppendXmlEscaped(&o, GetStr(l.body, "location_type"));
    o += "\" parent_id=\"";
    AppendXmlEscaped(&o, GetStr(l.body, "parent_id"));
    o += "\"><name>";
    AppendXmlEscaped(&o, GetStr(l.body, "name"));
    o += "</name><site_code>";
    AppendXmlEscaped(&o, GetStr(l.body, "site_code"));
    o += "</site_code></location>";
  }
  o += "</locations></fixture>";
  return o;
}

Result<std::vector<std::string>> MetaStore::OwnerIds(const User& user, std::string_view domain) {
  std::vector<std::string> out = {user.user_id};
  CC_ASSIGN_OR_RETURN(auto groups, ListDocs("group", domain));
  for (const auto& g : groups) {
    if (!GetBool(g.body, "case_sharing")) continue;
    if (const json::value* us = g.body.if_contains("users"); us && us->is_array())
      for (const auto& x : us->get_array())
        if (x.is_string() && x.get_string() == user.user_id) out.push_back(g.id);
  }
  if (!user.location_ids.empty()) {
    CC_ASSIGN_OR_RETURN(auto locations, ListDocs("location", domain));
    std::map<std::string, const Doc*> by_id;
    std::multimap<std::string, const Doc*> children;
    for (const auto& l : locations) {
      by_id[l.id] = &l;
      children.emplace(GetStr(l.body, "parent_id"), &l);
    }
    std::set<std::string> seen;
    // (location, whether an assigned ancestor lets the user see its descendants)
    std::vector<std::pair<const Doc*, bool>> todo;
    for (const auto& id : user.location_ids)
      if (auto it = by_id.find(id); it != by_id.end()) todo.emplace_back(it->second, false);
    while (!todo.empty()) {
      auto [l, inherited] = todo.back();
      todo.pop_back();
      if (!seen.insert(l->id).second) continue;
      if (GetBool(l->body, "shares_cases")) out.push_back(l->id);
      if (inherited || GetBool(l->body, "view_descendants")) {
        auto [b, e] = children.equal_range(l->id);
        for (auto it = b; it != e; ++it) todo.emplace_back(it->second, true);
      }
    }
  }
  std::sort(out.begin() + 1, out.end());
  out.erase(std::unique(out.begin() + 1, out.end()), out.end());
  return out;
}

Result<User> MetaStore::Authenticate(std::string_view username, std::string_view password) {
  const std::string digest = Sha256Hex(password);
  {
    std::lock_guard l(impl_->mu);
    impl_->ForgetIfChangedElsewhere();
    auto it = impl_->verified.find(std::string(username));
    if (it != impl_->verified.end() && it->second.first == digest) return it->second.second;
  }
  std::lock_guard single(
      impl_->verifying[std::hash<std::string_view>{}(username) % impl_->verifying.size()]);
  uint64_t generation;
  {
    std::lock_guard l(impl_->mu);
    auto it = impl_->verified.find(std::string(username));
    if (it != impl_->verified.end() && it->second.first == digest) return it->second.second;
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
