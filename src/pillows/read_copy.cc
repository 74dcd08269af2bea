// The form read copy: form metadata the REST API lists and filters (topic form-sql).
#include <fmt/format.h>

#include <unordered_set>

#include "pillows/processor.h"
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
