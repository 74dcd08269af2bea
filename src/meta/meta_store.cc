// The MetaStore (meta_store.h): opening and migrating the store, its write transactions and
// change records, the relay of those into the change log, and domains. Users: meta_users.cc;
// documents: meta_docs.cc; passwords and API keys: meta_auth.cc.
#include "meta/meta_store.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "changes/relay.h"
#include "commcare/deployment.h"
#include "commcare/engine.h"
#include "commcare/log.h"
#include "commcare/storage/change_log.h"
#include "meta/meta_store_internal.h"
#include "util/hash.h"
#include "util/sql_db.h"
#include "util/time.h"

namespace commcare::meta {
namespace {

namespace json = boost::json;

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
CREATE TABLE IF NOT EXISTS console_sessions(id_hash TEXT PRIMARY KEY, username TEXT NOT NULL,
  csrf TEXT NOT NULL, created INTEGER NOT NULL, expires INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS console_sessions_by_expiry ON console_sessions(expires);
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
CREATE TABLE IF NOT EXISTS console_sessions(id_hash TEXT PRIMARY KEY, username TEXT NOT NULL,
  csrf TEXT NOT NULL, created BIGINT NOT NULL, expires BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS console_sessions_by_expiry ON console_sessions(expires);
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

}  // namespace

void MetaStore::Impl::ForgetIfChangedElsewhere() {
  auto r = db->Run("reading the generation", "SELECT v FROM meta_info WHERE k='generation'");
  std::string v = r.ok() && !r->empty() ? std::string(r->Str(0, 0)) : "?";
  if (v != stored_generation || v == "?") {
    stored_generation = v;
    verified.clear();
    ++generation;
  }
}

void MetaStore::Impl::Forget() {
  verified.clear();
  ++generation;
}

Status MetaStore::Impl::Write(const char* what, const std::function<Status()>& write) {
  return db->Transaction(what, kWriteLock, [&] {
    CC_RETURN_IF_ERROR(write());
    return db
        ->Run(what,
              "UPDATE meta_info SET v=CAST(CAST(v AS BIGINT) + 1 AS TEXT) WHERE k='generation'")
        .status();
  });
}

Status MetaStore::Impl::Queue(std::string_view topic, std::string_view document_type,
                              std::string_view id, std::string_view domain, bool deletion) {
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

std::string StoreAt(const std::string& data_dir, std::string_view file) {
  // A directory not set up yet keeps its files in itself (opening the engine names the problem).
  auto d = Deployment::Load(data_dir);
  return d.ok() ? d->StoreAt(data_dir, "meta", file) : data_dir + "/" + std::string(file);
}

MetaStore::MetaStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetaStore::~MetaStore() = default;

Result<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& where) {
  auto impl = std::make_unique<Impl>();
  impl->where = where;
  CC_ASSIGN_OR_RETURN(impl->db, util::SqlDb::Open(where, "commcare_meta"));
  util::SqlDb& db = *impl->db;
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
    // Users stored before users kept date_joined joined, as far as the store can tell, when a
    // libcommcare that keeps it first opened the store: a stable date for their restores'
    // <Registration><date>. A no-op once every user has one.
    const std::string now = util::FormatIsoTime(util::NowMicros());
    CC_RETURN_IF_ERROR(
        db.Run("dating users",
               db.postgres()
                   ? "UPDATE users SET doc=jsonb_set(doc, '{date_joined}', to_jsonb(CAST(? AS "
                     "TEXT))) WHERE COALESCE(doc->>'date_joined', '')=''"
                   : "UPDATE users SET doc=json_set(doc, '$.date_joined', ?) "
                     "WHERE COALESCE(json_extract(doc, '$.date_joined'), '')=''",
               {now})
            .status());
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
                      json::object{{"name", d.name},
                                   {"secure_submissions", d.secure_submissions},
                                   {"async_restore", d.async_restore},
                                   {"case_attachments_in_restore", d.case_attachments_in_restore}}),
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
  if (auto* p = v.as_object().if_contains("async_restore"); p && p->is_bool())
    d.async_restore = p->get_bool();
  if (auto* p = v.as_object().if_contains("case_attachments_in_restore"); p && p->is_bool())
    d.case_attachments_in_restore = p->get_bool();
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

}  // namespace commcare::meta
