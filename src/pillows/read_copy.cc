// The form read copy: form metadata the REST API lists and filters (topic form-sql).
#include <fmt/format.h>
#include <unistd.h>

#include <unordered_set>

#include "pillows/processor.h"
#include "util/read_pool.h"
#include "util/time.h"

namespace commcare::pillows {
namespace {

using util::Bind;
using util::Col;

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS rc_forms(
  id INTEGER PRIMARY KEY, form_id TEXT NOT NULL UNIQUE, domain TEXT NOT NULL,
  xmlns TEXT NOT NULL, user_id TEXT NOT NULL, app_id TEXT NOT NULL, state TEXT NOT NULL,
  received_on INTEGER NOT NULL, server_modified_on INTEGER NOT NULL,
  indexed_on INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rc_forms_page ON rc_forms(domain, indexed_on, id);
CREATE INDEX IF NOT EXISTS rc_forms_received ON rc_forms(domain, received_on);
)";

class FormReadCopy final : public Processor {
 public:
  bool WritesSql() const override { return true; }
  Status Setup(Conn& db) override { return db.Exec(kSchema); }
  Status Reset(Conn& db) override { return db.Exec("DELETE FROM rc_forms"); }

  Status ProcessBatch(Conn& db, Engine& engine, const std::vector<const Change*>& changes,
                      Failures* failed) override {
    for (size_t i = 0; i < changes.size(); ++i) {
      const ChangeMeta& m = changes[i]->meta;
      auto f = engine.GetForm(m.domain, m.document_id);
      if (!f.ok() && !f.status().IsNotFound()) {
        failed->emplace_back(i, f.status().ToString());
        continue;
      }
      if (!f.ok()) {
        sqlite3_stmt* d = db.Prep("DELETE FROM rc_forms WHERE form_id=?");
        Bind(d, 1, m.document_id);
        if (sqlite3_step(d) != SQLITE_DONE) return db.Err("deleting a form copy");
        continue;
      }
      sqlite3_stmt* w = db.Prep(
          "INSERT INTO rc_forms(form_id, domain, xmlns, user_id, app_id, state, received_on, "
          "server_modified_on, indexed_on, doc) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) "
          "ON CONFLICT(form_id) DO UPDATE SET domain=?2, xmlns=?3, user_id=?4, app_id=?5, "
          "state=?6, received_on=?7, server_modified_on=?8, indexed_on=?9, doc=?10");
      Bind(w, 1, f->form_id);
      Bind(w, 2, f->domain);
      Bind(w, 3, f->xmlns);
      Bind(w, 4, f->user_id);
      Bind(w, 5, f->app_id);
      Bind(w, 6, FormStateName(f->state));
      Bind(w, 7, f->received_on);
      Bind(w, 8, f->server_modified_on);
      Bind(w, 9, util::NowMicros());
      Bind(w, 10, FormToJson(*f));
      if (sqlite3_step(w) != SQLITE_DONE) return db.Err("writing a form copy");
    }
    return Status::Ok();
  }

  Result<std::vector<ChangeMeta>> Missing(Conn& db, Engine& engine) override {
    std::vector<ChangeMeta> out;
    std::unordered_set<std::string> live;
    sqlite3_stmt* q = db.Prep("SELECT server_modified_on FROM rc_forms WHERE form_id=?");
    for (int i = 0; i < engine.NumDatabases(); ++i)
      CC_RETURN_IF_ERROR(engine.Database(i)->ScanForms([&](const FormRecord& f) {
        live.insert(f.form_id);
        sqlite3_reset(q);
        Bind(q, 1, f.form_id);
        bool fresh =
            sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) == f.server_modified_on;
        if (!fresh) out.push_back(Meta(f.form_id, f.domain, f.xmlns));
        return true;
      }));
    sqlite3_reset(q);
    sqlite3_stmt* s = db.Prep("SELECT form_id, domain, xmlns FROM rc_forms");
    while (sqlite3_step(s) == SQLITE_ROW)
      if (!live.count(std::string(Col(s, 0))))
        out.push_back(Meta(std::string(Col(s, 0)), std::string(Col(s, 1)), std::string(Col(s, 2))));
    sqlite3_reset(s);
    return out;
  }

 private:
  static ChangeMeta Meta(std::string id, std::string domain, std::string xmlns) {
    ChangeMeta m;
    m.topic = "form-sql";
    m.document_id = std::move(id);
    m.data_source_name = "form-sql";
    m.document_type = "XFormInstance";
    m.document_subtype = std::move(xmlns);
    m.domain = std::move(domain);
    m.publish_timestamp = util::NowMicros();
    return m;
  }
};

}  // namespace

std::unique_ptr<Processor> NewFormReadCopyProcessor() { return std::make_unique<FormReadCopy>(); }

}  // namespace commcare::pillows

namespace commcare {

Result<FormListPage> ListForms(const std::string& pillows_dir, const FormListQuery& q) {
  if (q.domain.empty()) return Status::InvalidArgument("a form list needs a domain");
  if (q.limit < 1 || q.limit > 1000)
    return Status::InvalidArgument(fmt::format("limit must be 1..1000 (got {})", q.limit));
  std::string path = pillows_dir + "/read-copy.sqlite";
  if (::access(path.c_str(), R_OK) != 0)
    return Status::NotFound(fmt::format("no form read copy at {}", path));
  CC_ASSIGN_OR_RETURN(auto lease, util::ReadPool::Acquire(path));
  util::Conn& db = *lease;
  const char* where =
      " FROM rc_forms WHERE domain=?1 AND (?2='' OR xmlns=?2) AND (?3='' OR app_id=?3) AND "
      "(?4='' OR user_id=?4) AND (?5=0 OR received_on>=?5) AND (?6=0 OR received_on<?6) AND "
      "(state='normal' OR (?7=1 AND state='archived'))";
  auto bind = [&](sqlite3_stmt* s) {
    util::Bind(s, 1, q.domain);
    util::Bind(s, 2, q.xmlns);
    util::Bind(s, 3, q.app_id);
    util::Bind(s, 4, q.user_id);
    util::Bind(s, 5, q.received_from);
    util::Bind(s, 6, q.received_to);
    util::Bind(s, 7, static_cast<int64_t>(q.include_archived ? 1 : 0));
  };
  FormListPage page;
  sqlite3_stmt* c = nullptr;
  std::string count_sql = std::string("SELECT COUNT(*)") + where;
  if (sqlite3_prepare_v2(db.db(), count_sql.c_str(), -1, &c, nullptr) != SQLITE_OK)
    return db.Err("counting forms");
  bind(c);
  if (sqlite3_step(c) == SQLITE_ROW) page.total_count = sqlite3_column_int64(c, 0);
  sqlite3_finalize(c);
  sqlite3_stmt* s = nullptr;
  std::string sql =
      std::string("SELECT doc") + where + " ORDER BY received_on, id LIMIT ?8 OFFSET ?9";
  if (sqlite3_prepare_v2(db.db(), sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    return db.Err("listing forms");
  bind(s);
  util::Bind(s, 8, static_cast<int64_t>(q.limit));
  util::Bind(s, 9, static_cast<int64_t>(q.offset));
  while (sqlite3_step(s) == SQLITE_ROW) page.forms.emplace_back(util::Col(s, 0));
  sqlite3_finalize(s);
  return page;
}

}  // namespace commcare
