// A SQLite connection with a cache of prepared statements, and binding helpers (internal).
#pragma once

#include <fmt/format.h>
#include <sqlite3.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>

#include "commcare/status.h"
#include "util/durable_file.h"

namespace commcare::util {

// A connection with a cache of prepared statements.
class Conn {
 public:
  ~Conn() {
    for (auto& [k, s] : stmts_) sqlite3_finalize(s);
    if (db_) sqlite3_close(db_);
  }
  // durable: the caller makes commits durable itself (NORMAL, no autocheckpoint); else NORMAL
  // with automatic checkpoints: a commit is not synced, but a power cut leaves the database
  // as of an earlier commit, never corrupt (SyncEachCommit makes every commit durable). A file
  // this creates has its directory synced, so that its name outlives a power cut too.
  Status Open(const std::string& path, bool read_only, bool durable) {
    int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    flags |= SQLITE_OPEN_NOMUTEX;
    std::error_code ec;
    const bool creates =
        !read_only && !path.empty() && path != ":memory:" && !std::filesystem::exists(path, ec);
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK)
      return Status::Unavailable(
          fmt::format("cannot open SQLite database {}: {}", path, db_ ? sqlite3_errmsg(db_) : "?"));
    sqlite3_busy_timeout(db_, 10000);
    if (!read_only) {
      CC_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
      // A durable store is made durable by its redo log; SQLite commits without a sync
      // (NORMAL: a checkpoint still syncs the database before the WAL is reused) and the store
      // checkpoints explicitly before it truncates the log.
      CC_RETURN_IF_ERROR(Exec("PRAGMA synchronous=NORMAL"));
      CC_RETURN_IF_ERROR(
          Exec(durable ? "PRAGMA wal_autocheckpoint=0" : "PRAGMA wal_autocheckpoint=16384"));
      if (creates) CC_RETURN_IF_ERROR(SyncDirectory(ParentDirectory(path)));
    }
    CC_RETURN_IF_ERROR(Exec(read_only ? "PRAGMA cache_size=-16000" : "PRAGMA cache_size=-65536"));
    CC_RETURN_IF_ERROR(Exec("PRAGMA mmap_size=268435456"));
    CC_RETURN_IF_ERROR(Exec("PRAGMA temp_store=MEMORY"));
    return Status::Ok();
  }
  // Every commit synced to the WAL before it returns (synchronous=FULL): for stores whose writes
  // are acknowledged to someone (users, tasks, forwarders).
  Status SyncEachCommit() { return Exec("PRAGMA synchronous=FULL"); }
  Status Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      return Status::Internal(fmt::format("SQLite: {} (in {:.60})", m, sql));
    }
    return Status::Ok();
  }
  sqlite3_stmt* Prep(const char* sql) {
    auto it = stmts_.find(sql);
    if (it != stmts_.end()) {
      sqlite3_reset(it->second);
      sqlite3_clear_bindings(it->second);
      return it->second;
    }
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
      return nullptr;
    stmts_[sql] = s;
    return s;
  }
  // Ends every statement so the connection holds no read snapshot open.
  void ResetAll() {
    for (auto& [k, s] : stmts_) sqlite3_reset(s);
  }
  Status Err(const char* what) {
    return Status::Internal(fmt::format("SQLite {}: {}", what, sqlite3_errmsg(db_)));
  }
  sqlite3* db() { return db_; }

 private:
  sqlite3* db_ = nullptr;
  std::unordered_map<const char*, sqlite3_stmt*> stmts_;
};

inline void Bind(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
inline void Bind(sqlite3_stmt* s, int i, int64_t v) { sqlite3_bind_int64(s, i, v); }
inline void Bind(sqlite3_stmt* s, int i, double v) { sqlite3_bind_double(s, i, v); }
inline void Bind(sqlite3_stmt* s, int i, std::nullptr_t) { sqlite3_bind_null(s, i); }
inline std::string_view Col(sqlite3_stmt* s, int i) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  return p ? std::string_view(p, sqlite3_column_bytes(s, i)) : std::string_view();
}

}  // namespace commcare::util
