// The form read copy: form metadata the REST API lists and filters (topic form-sql), each
// form stored as CommCare HQ's Form API v0.5 object (FormToApiJson, src/processing/render.cc).
#include <fmt/format.h>
#include <unistd.h>

#include <tuple>
#include <unordered_set>

#include "pillows/processor.h"
#include "util/time.h"

namespace commcare::pillows {
namespace {

constexpr const char* kSqliteSchema = R"(
CREATE TABLE IF NOT EXISTS rc_forms(
  id INTEGER PRIMARY KEY, form_id TEXT NOT NULL UNIQUE, domain TEXT NOT NULL,
  xmlns TEXT NOT NULL, user_id TEXT NOT NULL, app_id TEXT NOT NULL, state TEXT NOT NULL,
  received_on INTEGER NOT NULL, server_modified_on INTEGER NOT NULL,
  indexed_on INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rc_forms_page ON rc_forms(domain, indexed_on, id);
-- The list's count and its newest-first page read only this index (state is in it).
DROP INDEX IF EXISTS rc_forms_received;
CREATE INDEX IF NOT EXISTS rc_forms_state_received ON rc_forms(domain, state, received_on);
)";
constexpr const char* kPostgresSchema = R"(
CREATE TABLE IF NOT EXISTS rc_forms(
  id BIGSERIAL PRIMARY KEY, form_id TEXT COLLATE "C" NOT NULL UNIQUE,
  domain TEXT COLLATE "C" NOT NULL, xmlns TEXT COLLATE "C" NOT NULL,
  user_id TEXT COLLATE "C" NOT NULL, app_id TEXT COLLATE "C" NOT NULL, state TEXT NOT NULL,
  received_on BIGINT NOT NULL, server_modified_on BIGINT NOT NULL, indexed_on BIGINT NOT NULL,
  doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS rc_forms_page ON rc_forms(domain, indexed_on, id);
-- The list's count and its newest-first page read only this index (state is in it).
DROP INDEX IF EXISTS rc_forms_received;
CREATE INDEX IF NOT EXISTS rc_forms_state_received ON rc_forms(domain, state, received_on);
)";

class FormReadCopy final : public Processor {
 public:
  bool WritesSql() const override { return true; }
  Status Setup(SqlDb& db) override {
    return db.Exec("creating the read copy", db.postgres() ? kPostgresSchema : kSqliteSchema);
  }
  Status Reset(SqlDb& db) override {
    return db.Exec("emptying the read copy", "DELETE FROM rc_forms");
  }

  Status ProcessBatch(SqlDb& db, Engine& engine, const std::vector<const Change*>& changes,
                      Failures* failed) override {
    for (size_t i = 0; i < changes.size(); ++i) {
      const ChangeMeta& m = changes[i]->meta;
      auto f = engine.GetForm(m.domain, m.document_id);
      if (!f.ok() && !f.status().IsNotFound()) {
        failed->emplace_back(i, f.status().ToString());
        continue;
      }
      if (!f.ok()) {
        CC_RETURN_IF_ERROR(
            db.Run("deleting a form copy", "DELETE FROM rc_forms WHERE form_id=?", {m.document_id})
                .status());
        continue;
      }
      const int64_t now = util::NowMicros();
      auto xml = engine.GetFormXml(m.domain, m.document_id);
      // A form without its XML (an error record) is listed with an empty form.
      Result<std::string> doc = xml.ok() || xml.status().IsNotFound()
                                    ? FormToApiJson(*f, xml.ok() ? *xml : std::string(), now)
                                    : Result<std::string>(xml.status());
      if (!doc.ok()) {
        failed->emplace_back(i, doc.status().ToString());
        continue;
      }
      CC_RETURN_IF_ERROR(
          db.Run("writing a form copy",
                 "INSERT INTO rc_forms(form_id, domain, xmlns, user_id, app_id, state, "
                 "received_on, server_modified_on, indexed_on, doc) VALUES(?,?,?,?,?,?,?,?,?,?) "
                 "ON CONFLICT(form_id) DO UPDATE SET domain=excluded.domain, "
                 "xmlns=excluded.xmlns, user_id=excluded.user_id, app_id=excluded.app_id, "
                 "state=excluded.state, received_on=excluded.received_on, "
                 "server_modified_on=excluded.server_modified_on, "
                 "indexed_on=excluded.indexed_on, doc=excluded.doc",
                 {f->form_id, f->domain, f->xmlns, f->user_id, f->app_id, FormStateName(f->state),
                  f->received_on, f->server_modified_on, now, *doc})
              .status());
    }
    return Status::Ok();
  }

  Result<std::vector<ChangeMeta>> Missing(SqlDb& db, Engine& engine) override {
    std::vector<ChangeMeta> out;
    std::unordered_set<std::string> live;
    Status inner;
    for (int i = 0; i < engine.NumDatabases() && inner.ok(); ++i)
      CC_RETURN_IF_ERROR(engine.Database(i)->ScanForms([&](const FormRecord& f) {
        live.insert(f.form_id);
        auto q = db.Run("reading a form copy",
                        "SELECT server_modified_on FROM rc_forms WHERE form_id=?", {f.form_id});
        if (!q.ok()) {
          inner = q.status();
          return false;
        }
        if (q->empty() || q->Int(0, 0) != f.server_modified_on)
          out.push_back(Meta(f.form_id, f.domain, f.xmlns));
        return true;
      }));
    CC_RETURN_IF_ERROR(inner);
    CC_ASSIGN_OR_RETURN(
        auto all, db.Run("listing form copies", "SELECT form_id, domain, xmlns FROM rc_forms"));
    for (size_t r = 0; r < all.size(); ++r)
      if (!live.count(std::string(all.Str(r, 0))))
        out.push_back(Meta(std::string(all.Str(r, 0)), std::string(all.Str(r, 1)),
                           std::string(all.Str(r, 2))));
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
  std::string order = q.order_by.empty() ? "-received_on" : q.order_by;
  const bool desc = order[0] == '-';
  if (desc) order.erase(0, 1);
  if (order != "received_on" && order != "server_modified_on" && order != "indexed_on")
    return Status::InvalidArgument(fmt::format(
        "order_by '{}' must be received_on, server_modified_on or indexed_on (- first for "
        "descending)",
        q.order_by));
  CC_ASSIGN_OR_RETURN(auto db, pillows::OpenStore(pillows_dir, "read-copy", {}, "rc_forms"));
  // The states are literals, not a parameter, so the planner can use the (domain, state,
  // received_on) index: counting 100,000 forms reads the index, not every row.
  std::string where = q.include_archived
                          ? " FROM rc_forms WHERE domain=? AND state IN ('normal','archived')"
                          : " FROM rc_forms WHERE domain=? AND state='normal'";
  std::vector<util::SqlParam> params = {q.domain};
  for (auto [col, value] : {std::pair{"xmlns", &q.xmlns}, std::pair{"app_id", &q.app_id},
                            std::pair{"user_id", &q.user_id}})
    if (!value->empty()) {
      where += fmt::format(" AND {}=?", col);
      params.emplace_back(*value);
    }
  if (!q.app_version.empty()) {
    where += db.pg ? " AND CAST(doc AS JSONB)->'metadata'->>'appVersion'=?"
                   : " AND json_extract(doc, '$.metadata.appVersion')=?";
    params.emplace_back(q.app_version);
  }
  if (q.form_ids) {
    where += " AND form_id IN (''";
    for (const auto& id : *q.form_ids) where += ",?", params.emplace_back(id);
    where += ")";
  }
  for (auto [col, from, to] :
       {std::tuple{"received_on", q.received_from, q.received_to},
        std::tuple{"server_modified_on", q.server_modified_from, q.server_modified_to},
        std::tuple{"indexed_on", q.indexed_from, q.indexed_to}}) {
    if (from) where += fmt::format(" AND {}>=?", col), params.emplace_back(from);
    if (to) where += fmt::format(" AND {}<=?", col), params.emplace_back(to);
  }
  FormListPage page;
  CC_ASSIGN_OR_RETURN(auto n, db.Query("counting forms", "SELECT COUNT(*)" + where, params));
  page.total_count = n.Int(0, 0);
  params.push_back(static_cast<int64_t>(q.limit));
  params.push_back(static_cast<int64_t>(q.offset));
  CC_ASSIGN_OR_RETURN(
      auto rows, db.Query("listing forms",
                          fmt::format("SELECT doc{} ORDER BY {} {}, id {} LIMIT ? OFFSET ?", where,
                                      order, desc ? "DESC" : "ASC", desc ? "DESC" : "ASC"),
                          params));
  for (size_t r = 0; r < rows.size(); ++r) page.forms.emplace_back(rows.Str(r, 0));
  return page;
}

}  // namespace commcare
