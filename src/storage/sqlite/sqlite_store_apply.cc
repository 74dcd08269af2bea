// The SQLite store's writes: checking a batch's revs and applying its form, case and ledger ops.
#include <fmt/format.h>

#include "storage/sqlite/sqlite_store_impl.h"
#include "util/codec.h"
#include "util/time.h"

namespace commcare::storage::sqlite_internal {
namespace {

using util::Bind;

}  // namespace

void SqlitePrimaryStore::MarkUnsealed(std::string_view kind, std::string_view id) {
  if (log_fd_ < 0) return;
  std::string key(kind);
  key += id;
  std::lock_guard<std::mutex> l(unsealed_mu_);
  unsealed_.insert(std::move(key));
}

Status SqlitePrimaryStore::Step(sqlite3_stmt* s, const char* what) {
  if (!s) return writer_.Err(what);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return writer_.Err(what);
  return Status::Ok();
}

Status SqlitePrimaryStore::CheckRevs(const WriteBatch& b) {
  if (!b.applied_marker.empty()) {
    sqlite3_stmt* q = writer_.Prep("SELECT 1 FROM applied_markers WHERE marker=?");
    Bind(q, 1, b.applied_marker);
    bool seen = sqlite3_step(q) == SQLITE_ROW;
    sqlite3_reset(q);
    if (seen) return Status::Ok();
  }
  std::vector<std::pair<std::string_view, int64_t>> pending;
  for (const auto& op : b.ops) {
    if (const auto* pf = std::get_if<PutForm>(&op); pf && pf->must_be_new) {
      sqlite3_stmt* q = writer_.Prep("SELECT 1 FROM forms WHERE form_id=?");
      Bind(q, 1, pf->form.form_id);
      int rc = sqlite3_step(q);
      sqlite3_reset(q);
      if (rc == SQLITE_ROW)
        return Status::Aborted(fmt::format("form '{}' was stored concurrently", pf->form.form_id));
      if (rc != SQLITE_DONE) return writer_.Err("looking for a form");
    }
    const auto* pc = std::get_if<PutCase>(&op);
    if (!pc) continue;
    const std::string& id = pc->record.case_id;
    int64_t current = -1;
    for (auto it = pending.rbegin(); it != pending.rend(); ++it)
      if (it->first == id) {
        current = it->second;
        break;
      }
    if (current < 0) {
      sqlite3_stmt* q = writer_.Prep("SELECT rev FROM cases WHERE case_id=?");
      Bind(q, 1, id);
      int rc = sqlite3_step(q);
      current = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
      sqlite3_reset(q);
      if (rc != SQLITE_ROW && rc != SQLITE_DONE) return writer_.Err("reading a case rev");
    }
    if (current != pc->expected_rev)
      return Status::Aborted(fmt::format("case '{}' changed concurrently (rev {} != expected {})",
                                         id, current, pc->expected_rev));
    pending.emplace_back(id, pc->record.rev);
  }
  return Status::Ok();
}

Status SqlitePrimaryStore::ApplyBatch(WriteBatch* b) {
  b->outbox_seqs.clear();
  if (!b->applied_marker.empty()) {
    sqlite3_stmt* s = writer_.Prep("INSERT OR IGNORE INTO applied_markers VALUES(?)");
    Bind(s, 1, b->applied_marker);
    CC_RETURN_IF_ERROR(Step(s, "recording an applied marker"));
    if (sqlite3_changes(writer_.db()) == 0) return Status::Ok();  // applied before: skip
  }
  if (b->prepared.size() != b->ops.size()) Prepare(b);
  for (size_t i = 0; i < b->ops.size(); ++i) {
    doc_ = &b->prepared[i];
    Status st = std::visit([&](const auto& o) { return Apply(o, b); }, b->ops[i]);
    CC_RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

Status SqlitePrimaryStore::Apply(const PutForm& op, WriteBatch*) {
  const FormRecord& f = op.form;
  MarkUnsealed("f:", f.form_id);
  const std::string& doc = *doc_;
  sqlite3_stmt* s = writer_.Prep(
      "INSERT INTO forms(form_id, domain, state, doc) VALUES(?1,?2,?3,?4) "
      "ON CONFLICT(form_id) DO UPDATE SET domain=excluded.domain, state=excluded.state, "
      "doc=excluded.doc");
  Bind(s, 1, f.form_id);
  Bind(s, 2, f.domain);
  Bind(s, 3, static_cast<int64_t>(f.state));
  Bind(s, 4, doc);
  return Step(s, "writing a form");
}

Status SqlitePrimaryStore::Apply(const DeleteForm& op, WriteBatch*) {
  MarkUnsealed("f:", op.form_id);
  sqlite3_stmt* s = writer_.Prep("DELETE FROM forms WHERE form_id=?");
  Bind(s, 1, op.form_id);
  return Step(s, "deleting a form");
}

Status SqlitePrimaryStore::Apply(const PutCase& op, WriteBatch*) {
  // CheckRevs has verified the stored rev: 0 means the case does not exist yet.
  const CaseRecord& c = op.record;
  const bool exists = op.expected_rev != 0;
  MarkUnsealed("c:", c.case_id);
  sqlite3_stmt* s = writer_.Prep(
      exists ? "UPDATE cases SET domain=?2, type=?3, owner_id=?4, closed=?5, deleted=?6, rev=?7, "
               "doc=?8, indexed=?9, modified=?10 WHERE case_id=?1"
             : "INSERT INTO cases(case_id, domain, type, owner_id, closed, deleted, rev, doc, "
               "indexed, modified) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)");
  Bind(s, 1, c.case_id);
  Bind(s, 2, c.domain);
  Bind(s, 3, c.type);
  Bind(s, 4, c.owner_id);
  Bind(s, 5, static_cast<int64_t>(c.closed));
  Bind(s, 6, static_cast<int64_t>(c.deleted));
  Bind(s, 7, c.rev);
  Bind(s, 8, *doc_);
  Bind(s, 9, static_cast<int64_t>(!c.indices.empty()));
  Bind(s, 10, util::NowMicros());  // the server's clock, not the (overridable) received_on
  CC_RETURN_IF_ERROR(Step(s, "writing a case"));
  if (exists || !c.indices.empty()) {
    sqlite3_stmt* d = writer_.Prep("DELETE FROM case_indices WHERE case_id=?");
    Bind(d, 1, c.case_id);
    CC_RETURN_IF_ERROR(Step(d, "deleting case indices"));
    for (const auto& i : c.indices) {
      sqlite3_stmt* ins = writer_.Prep(
          "INSERT OR REPLACE INTO case_indices(case_id, identifier, referenced_id, "
          "referenced_type, relationship) VALUES(?,?,?,?,?)");
      Bind(ins, 1, c.case_id);
      Bind(ins, 2, i.identifier);
      Bind(ins, 3, i.referenced_id);
      Bind(ins, 4, i.referenced_type);
      Bind(ins, 5, i.relationship);
      CC_RETURN_IF_ERROR(Step(ins, "writing a case index"));
    }
  }
  return Status::Ok();
}

Status SqlitePrimaryStore::Apply(const PutCaseTransaction& op, WriteBatch*) {
  const CaseTransaction& t = op.tx;
  MarkUnsealed("c:", t.case_id);
  int64_t seq = 0;
  if (!t.form_id.empty() && op.upsert) {
    sqlite3_stmt* q =
        writer_.Prep("SELECT seq FROM case_transactions WHERE case_id=? AND form_id=?");
    Bind(q, 1, t.case_id);
    Bind(q, 2, t.form_id);
    if (sqlite3_step(q) == SQLITE_ROW) seq = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
  }
  const std::string& doc = *doc_;  // its seq field is not read back: the column is
  if (seq != 0) {
    sqlite3_stmt* u = writer_.Prep("UPDATE case_transactions SET doc=? WHERE seq=?");
    Bind(u, 1, doc);
    Bind(u, 2, seq);
    return Step(u, "writing a case transaction");
  }
  // New transactions take the next rowid: seq orders a case's history.
  sqlite3_stmt* s =
      writer_.Prep("INSERT INTO case_transactions(case_id, form_id, doc) VALUES(?,?,?)");
  Bind(s, 1, t.case_id);
  Bind(s, 2, t.form_id);
  Bind(s, 3, doc);
  return Step(s, "writing a case transaction");
}

Status SqlitePrimaryStore::Apply(const PutLedgerValue& op, WriteBatch*) {
  MarkUnsealed("c:", op.value.case_id);
  sqlite3_stmt* s = writer_.Prep(
      "INSERT OR REPLACE INTO ledger_values(case_id, section_id, entry_id, doc) VALUES(?,?,?,?)");
  Bind(s, 1, op.value.case_id);
  Bind(s, 2, op.value.section_id);
  Bind(s, 3, op.value.entry_id);
  Bind(s, 4, *doc_);
  return Step(s, "writing a ledger value");
}

Status SqlitePrimaryStore::Apply(const ReplaceLedgerTransactions& op, WriteBatch*) {
  MarkUnsealed("c:", op.case_id);
  sqlite3_stmt* d = writer_.Prep("DELETE FROM ledger_transactions WHERE case_id=? AND form_id=?");
  Bind(d, 1, op.case_id);
  Bind(d, 2, op.form_id);
  CC_RETURN_IF_ERROR(Step(d, "deleting ledger transactions"));
  for (const auto& t : op.txs) {
    sqlite3_stmt* s = writer_.Prep(
        "INSERT OR REPLACE INTO ledger_transactions(case_id, form_id, seq, report_date, doc) "
        "VALUES(?,?,?,?,?)");
    Bind(s, 1, t.case_id);
    Bind(s, 2, t.form_id);
    Bind(s, 3, t.seq);
    Bind(s, 4, t.report_date);
    Bind(s, 5, json::serialize(codec::EncodeLedgerTx(t)));
    CC_RETURN_IF_ERROR(Step(s, "writing a ledger transaction"));
  }
  return Status::Ok();
}

}  // namespace commcare::storage::sqlite_internal
