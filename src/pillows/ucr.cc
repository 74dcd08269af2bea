// The ucr pillow: the data-source table, each source's SQL table and rows, and UcrRows.
#include "pillows/ucr.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_map>

#include "pillows/ucr_internal.h"
#include "util/hash.h"
#include "util/read_pool.h"
#include "util/sqlite_conn.h"
#include "util/time.h"

namespace commcare::pillows::ucr {

namespace {

using util::Bind;
using util::Col;

using internal::AsString;
using internal::Quote;

std::string SqlType(const std::string& datatype, bool postgres) {
  if (datatype == "integer" || datatype == "small_integer" || datatype == "boolean")
    return postgres ? "BIGINT" : "INTEGER";
  if (datatype == "decimal") return postgres ? "DOUBLE PRECISION" : "REAL";
  return "TEXT";
}

// The name tables had before TableName: "ucr_<domain>_<table_id>", '_' for anything else
// than a letter or digit (not one source's alone).
std::string LegacyTableName(std::string_view domain, std::string_view table_id) {
  std::string name = "ucr_" + std::string(domain) + "_" + std::string(table_id);
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') ch = '_';
  return name;
}

Result<bool> TableExists(SqlDb& db, const std::string& name) {
  const util::SqlParam p[] = {name};
  CC_ASSIGN_OR_RETURN(
      auto r, db.Query("looking for a UCR table",
                       db.postgres() ? "SELECT 1 FROM pg_tables WHERE schemaname=current_schema() "
                                       "AND tablename=?"
                                     : "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                       p));
  return !r.empty();
}

}  // namespace

// ---- the pillow ----

namespace {

constexpr const char* kSqliteSchema = R"(
CREATE TABLE IF NOT EXISTS ucr_sources(
  domain TEXT NOT NULL, table_id TEXT NOT NULL, config TEXT NOT NULL, version INTEGER NOT NULL,
  PRIMARY KEY(domain, table_id)) WITHOUT ROWID;
)";
constexpr const char* kPostgresSchema = R"(
CREATE TABLE IF NOT EXISTS ucr_sources(
  domain TEXT COLLATE "C" NOT NULL, table_id TEXT COLLATE "C" NOT NULL, config TEXT NOT NULL,
  version BIGINT NOT NULL, PRIMARY KEY(domain, table_id));
)";

class Ucr final : public UcrProcessor {
 public:
  bool WritesSql() const override { return true; }
  Status Setup(SqlDb& db) override {
    CC_RETURN_IF_ERROR(
        db.Exec("creating the data source table", db.postgres() ? kPostgresSchema : kSqliteSchema));
    return Reload(db, true);
  }
  Status Reset(SqlDb& db) override {
    CC_RETURN_IF_ERROR(Reload(db, false));
    for (const auto& [key, ds] : sources_)
      CC_RETURN_IF_ERROR(db.Exec("emptying a UCR table", "DELETE FROM " + Quote(ds->TableName())));
    return Status::Ok();
  }

  bool Wants(SqlDb& db, const std::string& topic) override {
    if (!Reload(db, false).ok()) return true;  // unsure: read it
    const char* kind = topic == "case-sql"        ? "CommCareCase"
                       : topic == "commcare-user" ? "CommCareUser"
                       : topic == "location"      ? "Location"
                                                  : "XFormInstance";
    for (const auto& [key, ds] : sources_)
      if (ds->referenced_doc_type == kind) return true;
    return false;
  }

  Status ProcessBatch(SqlDb& db, Engine& engine, const std::vector<const Change*>& changes,
                      Failures* failed) override {
    CC_RETURN_IF_ERROR(Reload(db, false));
    if (sources_.empty()) return Status::Ok();
    // Cases some data source wants, read ahead in parallel.
    std::vector<const Change*> wanted;
    std::vector<size_t> where(changes.size(), SIZE_MAX);
    for (size_t i = 0; i < changes.size(); ++i)
      if (IsCase(changes[i]->meta) && HasSources(changes[i]->meta.domain, "CommCareCase")) {
        where[i] = wanted.size();
        wanted.push_back(changes[i]);
      }
    auto fetched = FetchCases(engine, wanted);
    for (size_t i = 0; i < changes.size(); ++i) {
      Status s = ProcessOne(db, engine, changes[i]->meta,
                            where[i] == SIZE_MAX ? nullptr : &fetched[where[i]]);
      if (s.code() == StatusCode::kInternal || s.code() == StatusCode::kUnavailable)
        return s;  // a store error fails the batch
      if (!s.ok()) failed->emplace_back(i, s.ToString());
    }
    return Status::Ok();
  }

  Result<int64_t> Load(SqlDb& db, Engine& engine, std::string_view config_json) override {
    CC_ASSIGN_OR_RETURN(auto ds, Compile(config_json));
    CC_RETURN_IF_ERROR(Reload(db, false));
    CC_RETURN_IF_ERROR(
        db.Run("storing a data source",
               "INSERT INTO ucr_sources(domain, table_id, config, version) VALUES(?, ?, ?, "
               "(SELECT COALESCE(MAX(version), 0) + 1 FROM ucr_sources)) ON CONFLICT(domain, "
               "table_id) DO UPDATE SET config=excluded.config, version=excluded.version",
               {ds->domain, ds->table_id, ds->config})
            .status());
    CC_RETURN_IF_ERROR(CreateTable(db, *ds, /*drop=*/true));
    std::string domain = ds->domain, table = ds->table_id;
    sources_[{domain, table}] = std::move(ds);
    return Rebuild(db, engine, domain, table);
  }

  Result<int64_t> Rebuild(SqlDb& db, Engine& engine, std::string_view domain,
                          std::string_view table_id) override {
    CC_RETURN_IF_ERROR(Reload(db, false));
    auto it = sources_.find({std::string(domain), std::string(table_id)});
    if (it == sources_.end())
      return Status::NotFound(fmt::format("no UCR data source {} in domain {}", table_id, domain));
    const DataSource& ds = *it->second;
    CC_RETURN_IF_ERROR(db.Exec("emptying a UCR table", "DELETE FROM " + Quote(ds.TableName())));
    int64_t rows = 0;
    Status inner;
    auto write = [&](const json::value& doc) {
      auto r = ds.Rows(doc, &engine, directory_.get());
      if (!r.ok()) return true;  // a document that fails evaluation gets no rows
      auto st = Insert(db, ds, *r);
      if (!st.ok()) {
        inner = st;
        return false;
      }
      rows += static_cast<int64_t>(r->size());
      return true;
    };
    if (ds.referenced_doc_type == "CommCareUser" || ds.referenced_doc_type == "Location") {
      if (!directory_) return rows;   // no users or locations here
      directory_->Forget(ds.domain);  // a user added since the last look is found
      CC_ASSIGN_OR_RETURN(auto ids, directory_->Ids(ds.domain, ds.referenced_doc_type));
      for (const auto& id : ids) {
        auto doc = directory_->Get(ds.domain, ds.referenced_doc_type, id);
        if (doc.status().IsNotFound()) continue;  // gone since it was listed
        CC_RETURN_IF_ERROR(doc.status());
        if (!write(json::value(std::move(*doc)))) break;
      }
    } else if (ds.referenced_doc_type == "CommCareCase") {
      storage::CaseFilter f;
      f.domain = ds.domain;
      CC_RETURN_IF_ERROR(engine.ListCases(
          f, [&](const CaseRecord& c) { return write(json::value(CaseDocument(c))); }));
    } else {
      for (int d = 0; d < engine.NumDatabases() && inner.ok(); ++d)
        CC_RETURN_IF_ERROR(engine.Database(d)->ScanForms([&](const FormRecord& f) {
          if (f.domain != ds.domain) return true;
          auto xml = engine.GetFormXml(f.domain, f.form_id);
          if (!xml.ok()) return true;
          auto doc = FormDocument(f, *xml);
          if (!doc.ok()) return true;
          return write(json::value(std::move(*doc)));
        }));
    }
    CC_RETURN_IF_ERROR(inner);
    return rows;
  }

 private:
  using Key = std::pair<std::string, std::string>;

  // Re-reads the data sources when another process (or Load) changed them.
  Status Reload(SqlDb& db, bool force) {
    CC_ASSIGN_OR_RETURN(auto v, db.Run("reading data source versions",
                                       "SELECT COALESCE(MAX(version), 0), COUNT(*) FROM "
                                       "ucr_sources"));
    const int64_t version = v.Int(0, 0), count = v.Int(0, 1);
    if (!force && version == version_ && count == count_) return Status::Ok();
    std::map<Key, std::unique_ptr<DataSource>> fresh;
    CC_ASSIGN_OR_RETURN(auto all, db.Run("reading data sources",
                                         "SELECT domain, table_id, config FROM ucr_sources"));
    std::map<std::string, int> legacy_users;  // legacy table name -> sources it stood for
    if (force)
      for (size_t r = 0; r < all.size(); ++r)
        ++legacy_users[LegacyTableName(all.Str(r, 0), all.Str(r, 1))];
    for (size_t r = 0; r < all.size(); ++r) {
      auto ds = Compile(all.Str(r, 2));
      if (!ds.ok())
        return Status::DataLoss(fmt::format("stored data source {}/{} no longer compiles: {}",
                                            all.Str(r, 0), all.Str(r, 1), ds.status().message()));
      // At set-up, a table made under the old name (before names were one source's alone) is
      // renamed, unless two sources shared it: its rows are mixed, so the new table starts
      // empty and the rebuild command is logged.
      if (force) CC_RETURN_IF_ERROR(AdoptLegacyTable(db, **ds, legacy_users));
      CC_RETURN_IF_ERROR(CreateTable(db, **ds, false));
      fresh[{std::string(all.Str(r, 0)), std::string(all.Str(r, 1))}] = std::move(*ds);
    }
    sources_ = std::move(fresh);
    version_ = version;
    count_ = count;
    return Status::Ok();
  }

  Status AdoptLegacyTable(SqlDb& db, const DataSource& ds,
                          const std::map<std::string, int>& legacy_users) {
    const std::string legacy = LegacyTableName(ds.domain, ds.table_id);
    CC_ASSIGN_OR_RETURN(bool has_new, TableExists(db, ds.TableName()));
    CC_ASSIGN_OR_RETURN(bool has_old, TableExists(db, legacy));
    if (has_new || !has_old) return Status::Ok();
    if (legacy_users.at(legacy) > 1) {
      fmt::print(stderr,
                 "ucr: data source {}/{} shared its old table {} with another source; its new "
                 "table starts empty: run `commcare ucr rebuild --domain {} --table {}`\n",
                 ds.domain, ds.table_id, legacy, ds.domain, ds.table_id);
      return Status::Ok();
    }
    CC_RETURN_IF_ERROR(db.Exec("renaming a UCR table", "ALTER TABLE " + Quote(legacy) +
                                                           " RENAME TO " + Quote(ds.TableName())));
    return db.Exec("dropping an old UCR index", "DROP INDEX IF EXISTS " + Quote(legacy + "_doc"));
  }

  // On PostgreSQL a last column, ucr_row, numbers the rows (SQLite's rowid) for UcrRows.
  Status CreateTable(SqlDb& db, const DataSource& ds, bool drop) {
    const std::string t = Quote(ds.TableName());
    if (drop) CC_RETURN_IF_ERROR(db.Exec("dropping a UCR table", "DROP TABLE IF EXISTS " + t));
    std::string sql =
        "CREATE TABLE IF NOT EXISTS " + t + "(doc_id TEXT NOT NULL, inserted_at TEXT NOT NULL";
    if (ds.base_item) sql += ", repeat_iteration INTEGER NOT NULL";
    for (const auto& c : ds.columns)
      sql += ", " + Quote(c.id) + " " + SqlType(c.datatype, db.postgres()) +
             (c.nullable ? "" : " NOT NULL");
    if (db.postgres()) sql += ", ucr_row BIGSERIAL";
    sql += ")";
    CC_RETURN_IF_ERROR(db.Exec("creating a UCR table", sql));
    return db.Exec(
        "creating a UCR index",
        "CREATE INDEX IF NOT EXISTS " + Quote(ds.TableName() + "_doc") + " ON " + t + "(doc_id)");
  }

  Status DeleteRows(SqlDb& db, const DataSource& ds, std::string_view doc_id) {
    const util::SqlParam id[] = {doc_id};
    return db.Query("deleting UCR rows", ds.delete_sql, id).status();
  }

  Status Insert(SqlDb& db, const DataSource& ds,
                const std::vector<std::vector<json::value>>& rows) {
    std::vector<std::string> hold;
    std::vector<util::SqlParam> params;
    for (const auto& row : rows) {
      hold.clear();
      hold.reserve(row.size());
      params.clear();
      for (const json::value& v : row) {
        if (v.is_null())
          params.emplace_back(nullptr);
        else if (v.is_int64())
          params.emplace_back(v.get_int64());
        else if (v.is_uint64())
          params.emplace_back(static_cast<int64_t>(v.get_uint64()));
        else if (v.is_double())
          params.emplace_back(v.get_double());
        else if (v.is_bool())
          params.emplace_back(int64_t{v.get_bool() ? 1 : 0});
        else
          params.emplace_back(hold.emplace_back(AsString(v)));
      }
      auto r = db.Query("inserting UCR rows", ds.insert_sql, params);
      if (!r.ok()) {
        if (r.status().code() == StatusCode::kUnavailable) return r.status();
        return Status::InvalidArgument(
            fmt::format("a row of data source {} does not fit its table: {}", ds.table_id,
                        r.status().message()));
      }
    }
    return Status::Ok();
  }

  static bool IsCase(const ChangeMeta& m) {
    return m.topic == "case-sql" || m.data_source_name == "case-sql";
  }
  // The document type a change is about: the meta store's users and locations, or a case or
  // form of the primary store.
  static const char* KindOf(const ChangeMeta& m) {
    if (IsCase(m)) return "CommCareCase";
    if (m.topic == "commcare-user") return "CommCareUser";
    if (m.topic == "location") return "Location";
    return "XFormInstance";
  }
  bool HasSources(const std::string& domain, const char* kind) const {
    for (auto it = sources_.lower_bound({domain, ""});
         it != sources_.end() && it->first.first == domain; ++it)
      if (it->second->referenced_doc_type == kind) return true;
    return false;
  }

  // fetched: the case read ahead (case changes only), or nullptr to read it here.
  Status ProcessOne(SqlDb& db, Engine& engine, const ChangeMeta& m, Result<CaseRecord>* fetched) {
    const bool is_case = IsCase(m);
    const char* kind = KindOf(m);
    const std::string_view k = kind;
    const bool is_meta = k == "CommCareUser" || k == "Location";
    std::vector<const DataSource*> targets;
    for (const auto& [key, ds] : sources_)
      if (key.first == m.domain && ds->referenced_doc_type == kind && !ds->deactivated)
        targets.push_back(ds.get());  // a deactivated data source keeps its rows as they are
    if (targets.empty()) return Status::Ok();
    json::value doc;
    bool found = false;
    if (is_meta) {
      if (!directory_) return Status::Ok();  // no users or locations here: no rows either
      if (k == "CommCareUser") directory_->Forget(m.domain);  // a new user is found at once
      auto d = directory_->Get(m.domain, kind, m.document_id);
      if (!d.ok() && !d.status().IsNotFound()) return d.status();
      if (d.ok()) {
        doc = std::move(*d);
        found = true;
      }
    } else if (is_case) {
      Result<CaseRecord> c =
          fetched ? std::move(*fetched) : engine.GetCase(m.domain, m.document_id);
      if (!c.ok() && !c.status().IsNotFound()) return c.status();
      if (c.ok()) {
        doc = CaseDocument(*c);
        found = true;
      }
    } else {
      auto f = engine.GetForm(m.domain, m.document_id);
      if (!f.ok() && !f.status().IsNotFound()) return f.status();
      if (f.ok()) {
        CC_ASSIGN_OR_RETURN(std::string xml, engine.GetFormXml(m.domain, m.document_id));
        auto fd = FormDocument(*f, xml);
        if (!fd.ok()) return fd.status();
        doc = std::move(*fd);
        found = true;
      }
    }
    Status first_error;
    for (const DataSource* ds : targets) {
      CC_RETURN_IF_ERROR(DeleteRows(db, *ds, m.document_id));  // delete-and-reinsert
      if (!found) continue;
      auto rows = ds->Rows(doc, &engine, directory_.get());
      if (!rows.ok()) {  // its rows stay deleted; the change is retried
        if (first_error.ok())
          first_error = Status::InvalidArgument(
              fmt::format("data source {}: {}", ds->table_id, rows.status().message()));
        continue;
      }
      Status st = Insert(db, *ds, *rows);
      if (!st.ok() && first_error.ok()) first_error = st;
    }
    return first_error;
  }

  void SetDirectory(std::shared_ptr<Directory> directory) override {
    directory_ = std::move(directory);
  }

  std::map<Key, std::unique_ptr<DataSource>> sources_;
  int64_t version_ = -1, count_ = -1;
  std::shared_ptr<Directory> directory_;
};

}  // namespace

std::unique_ptr<UcrProcessor> NewUcrProcessor() { return std::make_unique<Ucr>(); }

}  // namespace commcare::pillows::ucr

namespace commcare {

Result<std::vector<std::string>> UcrRows(const std::string& pillows_dir, std::string_view domain,
                                         std::string_view table_id, size_t limit, size_t offset) {
  namespace json = boost::json;
  CC_ASSIGN_OR_RETURN(auto db, pillows::OpenStore(pillows_dir, "ucr", {}, "ucr_sources"));
  const util::SqlParam key[] = {domain, table_id};
  CC_ASSIGN_OR_RETURN(auto known,
                      db.Query("reading data sources",
                               "SELECT 1 FROM ucr_sources WHERE domain=? AND table_id=?", key));
  if (known.empty())
    return Status::NotFound(fmt::format("no UCR data source {} in domain {}", table_id, domain));
  pillows::ucr::DataSource ds;
  ds.domain = std::string(domain);
  ds.table_id = std::string(table_id);
  std::vector<std::string> out;
  if (db.pg) {  // the row as JSON, in column order, without the row number
    CC_ASSIGN_OR_RETURN(
        auto rows,
        db.Query("reading UCR rows",
                 fmt::format("SELECT CAST(row_to_json(t) AS TEXT) FROM \"{}\" t ORDER BY ucr_row "
                             "LIMIT {} OFFSET {}",
                             ds.TableName(), limit, offset),
                 {}));
    for (size_t r = 0; r < rows.size(); ++r) {
      json::value v = json::parse(rows.Str(r, 0));
      v.as_object().erase("ucr_row");
      out.push_back(json::serialize(v));
    }
    return out;
  }
  util::Conn& conn = **db.sqlite;
  std::string sql = fmt::format("SELECT * FROM \"{}\" ORDER BY rowid LIMIT {} OFFSET {}",
                                ds.TableName(), limit, offset);
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(conn.db(), sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    return conn.Err("reading UCR rows");
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    json::object o;
    for (int i = 0; i < sqlite3_column_count(s); ++i) {
      const char* name = sqlite3_column_name(s, i);
      switch (sqlite3_column_type(s, i)) {
        case SQLITE_INTEGER:
          o[name] = sqlite3_column_int64(s, i);
          break;
        case SQLITE_FLOAT:
          o[name] = sqlite3_column_double(s, i);
          break;
        case SQLITE_NULL:
          o[name] = nullptr;
          break;
        default:
          o[name] = util::Col(s, i);
      }
    }
    out.push_back(json::serialize(o));
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_DONE) return Status::Internal("reading UCR rows failed");
  return out;
}

}  // namespace commcare
