// Sync logs in their own database (SQLite, or shared on PostgreSQL), stored as id differences.
#include <fmt/format.h>

#include <algorithm>

#include "sync/sync_internal.h"
#include "util/time.h"

namespace commcare::sync_internal {
namespace {

// A log stores its case ids in full, or as a difference from a full log (base_id) when that
// is small: an incremental sync then writes a few ids, not the whole footprint.
constexpr int kSchemaVersion = 1;
// One schema for both databases (SQLite reads BIGINT as INTEGER; stores made before it keep
// their BLOB columns, which hold the same text).
constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS synclogs(
  sync_id TEXT PRIMARY KEY, domain TEXT NOT NULL, user_id TEXT NOT NULL, previous_id TEXT NOT NULL,
  device_id TEXT NOT NULL, app_id TEXT NOT NULL, date BIGINT NOT NULL, owner_ids TEXT NOT NULL,
  state_hash TEXT NOT NULL, base_id TEXT NOT NULL, case_ids TEXT NOT NULL, removed TEXT NOT NULL,
  indexed_ids TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS synclogs_user ON synclogs(domain, user_id, device_id, app_id, date);
CREATE INDEX IF NOT EXISTS synclogs_date ON synclogs(date);
CREATE INDEX IF NOT EXISTS synclogs_base ON synclogs(base_id) WHERE base_id != '';
CREATE TABLE IF NOT EXISTS restore_invalidations(user_key TEXT PRIMARY KEY, at BIGINT NOT NULL);
)";
// The PostgreSQL advisory lock a prune holds (writes of single logs need none).
constexpr int64_t kPruneLock = 7234618150;

// Ids one a line. An id may hold a newline (a case id sent as case_id="a&#10;b" in a form's XML),
// so a newline in an id is stored as a backslash and 'n', a backslash as two; a backslash before
// anything else is read as itself, which keeps logs stored before the escaping readable.
std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out.push_back('\n');
    for (char c : v[i]) {
      if (c == '\n') {
        out += "\\n";
      } else if (c == '\\') {
        out += "\\\\";
      } else {
        out.push_back(c);
      }
    }
  }
  return out;
}

std::vector<std::string> Split(std::string_view s) {
  std::vector<std::string> out;
  if (s.empty()) return out;
  out.emplace_back();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n') {
      out.emplace_back();
    } else if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'n' || s[i + 1] == '\\')) {
      out.back().push_back(s[++i] == 'n' ? '\n' : '\\');
    } else {
      out.back().push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

// Sorted a minus sorted b.
std::vector<std::string> Minus(const std::vector<std::string>& a,
                               const std::vector<std::string>& b) {
  std::vector<std::string> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

Status SyncLogStore::Open(const std::string& where) {
  // A sync log lost to a power cut costs the phone one recovery restore (412), not data.
  CC_ASSIGN_OR_RETURN(db_, util::SqlDb::Open(where, "commcare_synclogs", /*durable=*/false));
  return db_->Migrate("synclogs", kSchemaVersion, kSchema, kSchema);
}

Status SyncLogStore::Put(const SyncLogInfo& l, const Stored* base) {
  std::string base_id, ids, removed;
  if (base && !base->base_id.empty()) {
    auto add = Minus(l.case_ids, base->base_ids), del = Minus(base->base_ids, l.case_ids);
    if ((add.size() + del.size()) * 4 < base->base_ids.size()) {
      base_id = base->base_id;
      ids = Join(add);
      removed = Join(del);
    }
  }
  if (base_id.empty()) ids = Join(l.case_ids);
  std::lock_guard lock(mu_);
  return db_
      ->Run("storing a sync log",
            "INSERT INTO synclogs(sync_id, domain, user_id, previous_id, device_id, app_id, "
            "date, owner_ids, state_hash, base_id, case_ids, removed, indexed_ids) "
            "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(sync_id) DO UPDATE SET "
            "domain=excluded.domain, user_id=excluded.user_id, "
            "previous_id=excluded.previous_id, device_id=excluded.device_id, "
            "app_id=excluded.app_id, date=excluded.date, owner_ids=excluded.owner_ids, "
            "state_hash=excluded.state_hash, base_id=excluded.base_id, "
            "case_ids=excluded.case_ids, removed=excluded.removed, "
            "indexed_ids=excluded.indexed_ids",
            {l.sync_id, l.domain, l.user_id, l.previous_id, l.device_id, l.app_id, l.date,
             Join(l.owner_ids), l.state_hash, base_id, ids, removed, Join(l.indexed_case_ids)})
      .status();
}

Result<SyncLogStore::Stored> SyncLogStore::Get(std::string_view id) {
  std::lock_guard lock(mu_);
  Stored out;
  std::vector<std::string> add, del;
  CC_RETURN_IF_ERROR(Row(id, &out.info, &out.base_id, &add, &del));
  if (out.base_id.empty()) {
    out.base_id = out.info.sync_id;
    out.base_ids = add;
    out.info.case_ids = std::move(add);
    return out;
  }
  SyncLogInfo base;
  std::string none;
  std::vector<std::string> base_del;
  Status s = Row(out.base_id, &base, &none, &out.base_ids, &base_del);
  if (s.IsNotFound()) return Status::NotFound(fmt::format("sync log '{}' lost its base log", id));
  CC_RETURN_IF_ERROR(s);
  std::vector<std::string> kept = Minus(out.base_ids, del);
  std::merge(kept.begin(), kept.end(), add.begin(), add.end(),
             std::back_inserter(out.info.case_ids));
  return out;
}

bool SyncLogStore::Usable(std::string_view id, std::string_view user_key) {
  std::lock_guard lock(mu_);
  auto r = db_->Run("reading a sync log", "SELECT date FROM synclogs WHERE sync_id=?", {id});
  if (!r.ok() || r->empty()) return false;
  if (!db_->postgres()) return true;  // one server: its own cache files were removed
  auto inv = db_->Run("reading a restore invalidation",
                      "SELECT at FROM restore_invalidations WHERE user_key=?", {user_key});
  return inv.ok() && (inv->empty() || inv->Int(0, 0) < r->Int(0, 0));
}

void SyncLogStore::Invalidate(std::string_view user_key) {
  std::lock_guard lock(mu_);
  if (!db_->postgres()) return;
  (void)db_->Run("recording a restore invalidation",
                 "INSERT INTO restore_invalidations(user_key, at) VALUES(?,?) "
                 "ON CONFLICT(user_key) DO UPDATE SET at=excluded.at",
                 {user_key, util::NowMicros()});
}

Result<int64_t> SyncLogStore::Prune(int64_t max_age_us) {
  std::lock_guard lock(mu_);
  int64_t n = 0;
  CC_RETURN_IF_ERROR(db_->Transaction("pruning sync logs", kPruneLock, [&]() -> Status {
    // Never a log another log's ids are stored against.
    const int64_t cutoff = util::NowMicros() - max_age_us;
    CC_ASSIGN_OR_RETURN(
        auto old, db_->Run("pruning sync logs",
                           "DELETE FROM synclogs WHERE date<? AND sync_id NOT IN (SELECT base_id "
                           "FROM synclogs WHERE base_id != '' AND date>=?)",
                           {cutoff, cutoff}));
    // Per (user, device, app): keep the newest two (and the logs they are stored against).
    CC_ASSIGN_OR_RETURN(
        auto extra,
        db_->Run("pruning sync logs",
                 "WITH ranked AS (SELECT sync_id, base_id, ROW_NUMBER() OVER (PARTITION BY "
                 "domain, user_id, device_id, app_id ORDER BY date DESC) AS k FROM synclogs) "
                 "DELETE FROM synclogs WHERE sync_id IN (SELECT sync_id FROM ranked WHERE k > 2) "
                 "AND sync_id NOT IN (SELECT base_id FROM ranked WHERE k <= 2)"));
    n = old.changed + extra.changed;
    return Status::Ok();
  }));
  return n;
}

Status SyncLogStore::Row(std::string_view id, SyncLogInfo* l, std::string* base_id,
                         std::vector<std::string>* ids, std::vector<std::string>* removed) {
  CC_ASSIGN_OR_RETURN(
      auto r, db_->Run("reading a sync log",
                       "SELECT domain, user_id, previous_id, device_id, app_id, date, owner_ids, "
                       "state_hash, base_id, case_ids, removed, indexed_ids FROM synclogs "
                       "WHERE sync_id=?",
                       {id}));
  if (r.empty()) return Status::NotFound(fmt::format("no sync log '{}'", id));
  l->sync_id = std::string(id);
  l->domain = std::string(r.Str(0, 0));
  l->user_id = std::string(r.Str(0, 1));
  l->previous_id = std::string(r.Str(0, 2));
  l->device_id = std::string(r.Str(0, 3));
  l->app_id = std::string(r.Str(0, 4));
  l->date = r.Int(0, 5);
  l->owner_ids = Split(r.Str(0, 6));
  l->state_hash = std::string(r.Str(0, 7));
  *base_id = std::string(r.Str(0, 8));
  *ids = Split(r.Str(0, 9));
  *removed = Split(r.Str(0, 10));
  l->indexed_case_ids = Split(r.Str(0, 11));
  return Status::Ok();
}

}  // namespace commcare::sync_internal
