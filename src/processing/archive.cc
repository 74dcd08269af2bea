// Archiving and unarchiving a form, and rebuilding a case: cases re-derived from their
// transactions.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "processing/engine_impl.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::processing {

Status EngineImpl::SetArchived(std::string_view domain, std::string_view form_id, bool archived) {
  if (opts_.read_only) return Status::FailedPrecondition("the engine is open read-only");
  const int64_t now = util::NowMicros();
  LockSet form_lock(&locks_, {"form:" + std::string(form_id)});
  int home = map_.DatabaseFor(form_id);
  CC_ASSIGN_OR_RETURN(auto f, dbs_[home]->GetForm(form_id));
  if (!f || f->domain != domain)
    return Status::NotFound(fmt::format("form '{}' not found in domain '{}'", form_id, domain));
  FormState want_from = archived ? FormState::kNormal : FormState::kArchived;
  if (f->state != want_from)
    return Status::FailedPrecondition(fmt::format(
        "form '{}' is {}, not {}", form_id, FormStateName(f->state), FormStateName(want_from)));
  CC_ASSIGN_OR_RETURN(auto pf, LoadParsed(*f));
  std::set<std::string> case_ids;
  for (const auto& b : pf.cases) case_ids.insert(b.case_id);
  std::vector<LedgerChange> changes;
  CaseError e;
  ExtractLedgerChanges(pf, f->received_on, &changes, &e);
  std::set<std::string> ledger_cases;
  for (const auto& ch : changes) ledger_cases.insert(ch.case_id);
  std::vector<std::string> keys;
  for (const auto& id : case_ids) keys.push_back("case:" + id);
  for (const auto& id : ledger_cases) keys.push_back("case:" + id);
  LockSet case_locks(&locks_, keys);
  CC_ASSIGN_OR_RETURN(auto store_locks, LockAcross(keys, home, false));  // other processes

  f->state = archived ? FormState::kArchived : FormState::kNormal;
  f->server_modified_on = now;
  Plan plan;
  plan.For(home).ops.emplace_back(storage::PutForm{*f});
  AddFormChange(&plan, home, *f, now);
  const FormContext ctx = ContextOf(*f);
  const auto atts = AttachmentMap(*f);
  for (const auto& id : case_ids) {
    int db = map_.DatabaseFor(id);
    CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(id));
    if (!cur || cur->domain != domain) continue;
    CC_ASSIGN_OR_RETURN(auto txs, dbs_[db]->GetCaseTransactions(id));
    auto& batch = plan.For(db);
    for (auto& t : txs)
      if (t.form_id == f->form_id) {
        t.revoked = archived;
        batch.ops.emplace_back(storage::PutCaseTransaction{t});
      }
    bool live;
    CC_ASSIGN_OR_RETURN(CaseRecord rec, Replay(id, std::string(domain), txs, f->form_id,
                                               archived ? nullptr : &pf, ctx, atts, &live));
    rec.deleted = !live;
    rec.rev = cur->rev + 1;
    rec.server_modified_on = now;
    CaseTransaction rtx;
    rtx.case_id = id;
    rtx.server_date = now;
    rtx.type = kTxRebuildWithReason | (archived ? kTxFormArchived : kTxFormReprocess);
    rtx.reason = archived ? "form archived" : "form unarchived";
    batch.ops.emplace_back(storage::PutCaseTransaction{rtx});
    batch.ops.emplace_back(storage::PutCase{rec, cur->rev});
    AddCaseChange(&plan, db, rec, f->form_id, now);
  }
  for (const auto& id : ledger_cases) {
    if (!case_ids.count(id)) {  // marked changed, as a submission's ledger-only cases are
      const int db = map_.DatabaseFor(id);
      CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(id));
      if (cur && cur->domain == domain) {
        CaseRecord rec = std::move(*cur);
        const int64_t expected_rev = rec.rev;
        rec.rev = expected_rev + 1;
        rec.server_modified_on = now;
        plan.For(db).ops.emplace_back(storage::PutCase{rec, expected_rev});
        AddCaseChange(&plan, db, rec, f->form_id, now);
      }
    }
    auto txs = archived ? std::vector<LedgerTransaction>{}
                        : LedgerTransactionsFor(changes, id, f->form_id, f->received_on);
    CC_RETURN_IF_ERROR(
        UpdateLedger(id, std::string(domain), f->form_id, std::move(txs), &plan, now));
  }
  store_locks.Attach(&plan);
  return CommitPlan(&plan, home);
}

Status EngineImpl::ArchiveForm(std::string_view domain, std::string_view form_id) {
  return SetArchived(domain, form_id, true);
}
Status EngineImpl::UnarchiveForm(std::string_view domain, std::string_view form_id) {
  return SetArchived(domain, form_id, false);
}

Status EngineImpl::RebuildCase(std::string_view domain, std::string_view case_id) {
  if (opts_.read_only) return Status::FailedPrecondition("the engine is open read-only");
  const int64_t now = util::NowMicros();
  const std::vector<std::string> keys = {"case:" + std::string(case_id)};
  LockSet lock(&locks_, keys);
  int db = map_.DatabaseFor(case_id);
  CC_ASSIGN_OR_RETURN(auto store_locks, LockAcross(keys, db, false));  // other processes
  CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(case_id));
  if (!cur || cur->domain != domain)
    return Status::NotFound(fmt::format("case '{}' not found in domain '{}'", case_id, domain));
  CC_ASSIGN_OR_RETURN(auto txs, dbs_[db]->GetCaseTransactions(case_id));
  bool live;
  CC_ASSIGN_OR_RETURN(CaseRecord rec, Replay(std::string(case_id), std::string(domain), txs, "",
                                             nullptr, FormContext{}, {}, &live));
  rec.deleted = !live;
  rec.rev = cur->rev + 1;
  rec.server_modified_on = now;
  Plan plan;
  CaseTransaction rtx;
  rtx.case_id = std::string(case_id);
  rtx.server_date = now;
  rtx.type = kTxRebuildWithReason | kTxUserRequested;
  rtx.reason = "user requested rebuild";
  plan.For(db).ops.emplace_back(storage::PutCaseTransaction{rtx});
  plan.For(db).ops.emplace_back(storage::PutCase{rec, cur->rev});
  AddCaseChange(&plan, db, rec, "", now);
  store_locks.Attach(&plan);
  return CommitPlan(&plan, db);
}

}  // namespace commcare::processing
