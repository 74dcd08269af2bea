// The submit path, step 2 (plan): a form's case and ledger changes as a write set, every case
// it touches locked, read, changed (or rebuilt, for an edit: plan_edit.cc) and checked.
// ProcessForm is the list of steps; each step below reads and fills a FormPlan.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "processing/engine_impl.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::processing {

std::map<std::string, const Attachment*> AttachmentMap(const FormRecord& f) {
  std::map<std::string, const Attachment*> m;
  for (const auto& a : f.attachments) m[a.name] = &a;
  return m;
}

FormContext ContextOf(const FormRecord& f) {
  return FormContext{f.form_id, f.domain, f.xmlns, f.user_id, f.received_on};
}

Status EngineImpl::UpdateLedger(const std::string& case_id, const std::string& domain,
                                const std::string& form_id, std::vector<LedgerTransaction> form_txs,
                                Plan* plan, int64_t now) {
  int db = map_.DatabaseFor(case_id);
  CC_ASSIGN_OR_RETURN(auto all, dbs_[db]->GetLedgerTransactions(case_id));
  std::erase_if(all, [&](const LedgerTransaction& t) { return t.form_id == form_id; });
  for (const auto& t : form_txs) all.push_back(t);
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
    return std::tie(a.report_date, a.server_date, a.seq) <
           std::tie(b.report_date, b.server_date, b.seq);
  });
  std::map<std::string, LedgerValue> values;
  CC_ASSIGN_OR_RETURN(auto old_values, dbs_[db]->GetLedgerValues(case_id));
  ReplayLedger(&all, &values, domain);
  std::vector<LedgerTransaction> mine;
  for (const auto& t : all)
    if (t.form_id == form_id) mine.push_back(t);
  auto& batch = plan->For(db);
  batch.ops.emplace_back(storage::ReplaceLedgerTransactions{form_id, case_id, std::move(mine)});
  // Entries that no transaction sets any more go back to zero.
  for (const auto& ov : old_values) {
    std::string key = LedgerKey(ov.case_id, ov.section_id, ov.entry_id);
    if (!values.count(key)) {
      LedgerValue z = ov;
      z.balance = 0;
      values[key] = z;
    }
  }
  for (const auto& [key, v] : values) {
    bool changed = true;
    for (const auto& ov : old_values)
      if (LedgerKey(ov.case_id, ov.section_id, ov.entry_id) == key)
        changed = ov.balance != v.balance || ov.last_modified_form_id != v.last_modified_form_id;
    if (!changed) continue;
    batch.ops.emplace_back(storage::PutLedgerValue{v});
    ChangeMeta m;
    m.topic = "ledger";
    m.document_id = key;
    m.data_source_name = "ledger-v2";
    m.document_type = "ledger";
    m.document_subtype = v.section_id;
    m.domain = domain;
    m.publish_timestamp = now;
    m.associated_document_id = form_id;
    batch.ops.emplace_back(storage::AddOutbox{std::move(m)});
  }
  return Status::Ok();
}

namespace {

// The form record a submission makes, before it is classified.
FormRecord NewFormRecord(const SubmitRequest& req, std::string_view xml,
                         const xform::ParsedForm& pf, int64_t received_on, int64_t now) {
  FormRecord form;
  form.form_id = pf.meta.instance_id.empty() ? util::NewUuidHex() : pf.meta.instance_id;
  form.domain = req.domain;
  form.xmlns = pf.xmlns;
  form.user_id = pf.meta.user_id;
  form.username = pf.meta.username;
  form.device_id = pf.meta.device_id;
  form.app_version = pf.meta.app_version;
  form.app_id = req.app_id;
  form.build_id = req.build_id;
  form.md5 = util::Md5Hex(xml);
  form.last_sync_token = req.last_sync_token;
  form.submit_ip = req.submit_ip;
  form.openrosa_version = req.openrosa_version;
  form.received_on = received_on;
  form.server_modified_on = now;
  form.date_header = req.date_header;
  util::ParseIsoTime(pf.meta.time_start, &form.time_start);
  util::ParseIsoTime(pf.meta.time_end, &form.time_end);
  return form;
}

}  // namespace

// The steps run under the form's lock, then under every touched case's lock. A known error
// found by a step sets p->error: the later steps skip their checks and case changes (but for an
// edit's rebuild, which re-derives its cases with this form left out) and the form is written
// as an ERROR form.
Result<SubmitResponse> EngineImpl::ProcessForm(const SubmitRequest& req, std::string_view xml,
                                               const xform::ParsedForm& pf,
                                               const std::vector<xform::MultipartPart>& parts,
                                               int64_t received_on, bool retry) {
  FormPlan p(req, pf, util::NowMicros());
  p.form = NewFormRecord(req, xml, pf, received_on, p.now);
  LockSet form_lock(&locks_, {"form:" + p.form.form_id});
  CC_RETURN_IF_ERROR(Classify(&p));
  if (p.mode == Mode::kDuplicate) return SaveDuplicate(&p, xml, parts);
  CC_RETURN_IF_ERROR(PutBlobs(&p.form, xml, parts, &p.plan, p.home));
  p.attachments = AttachmentMap(p.form);
  MovePrevious(&p);
  GroupBlocks(&p);

  // Lock every case this form (and its previous version) touches, then in other processes.
  const std::vector<std::string> lock_keys = CaseLockKeys(&p);
  LockSet case_locks(&locks_, lock_keys);
  CC_ASSIGN_OR_RETURN(auto store_locks, LockAcross(lock_keys, p.home, !retry));
  CC_RETURN_IF_ERROR(ComputeCases(&p));
  if (p.mode == Mode::kEdit) CC_RETURN_IF_ERROR(RebuildCases(&p));
  CC_RETURN_IF_ERROR(CheckIndices(&p));
  CC_RETURN_IF_ERROR(CheckLedgerCases(&p));

  WriteForms(&p);
  WriteCases(&p);
  CC_RETURN_IF_ERROR(WriteLedgers(&p));
  store_locks.Attach(&p.plan);
  CC_RETURN_IF_ERROR(CommitPlan(&p.plan, p.home));
  return Answer(p);
}

Status EngineImpl::Classify(FormPlan* p) {
  p->home = map_.DatabaseFor(p->form.form_id);
  CC_ASSIGN_OR_RETURN(p->existing, dbs_[p->home]->GetForm(p->form.form_id));
  const auto& existing = p->existing;
  if (!existing) return Status::Ok();
  if (existing->domain != p->form.domain || existing->xmlns != p->form.xmlns) {
    p->form.form_id = NewIdInDatabase(p->home);  // an id clash: a new form under a new id
  } else if (existing->md5 == p->form.md5) {
    p->mode = existing->state == FormState::kError ? Mode::kReplaceError : Mode::kDuplicate;
  } else {
    p->mode = existing->state == FormState::kError ? Mode::kReplaceError : Mode::kEdit;
  }
  return Status::Ok();
}

Result<SubmitResponse> EngineImpl::SaveDuplicate(FormPlan* p, std::string_view xml,
                                                 const std::vector<xform::MultipartPart>& parts) {
  FormRecord& form = p->form;
  form.orig_id = form.form_id;
  form.form_id = NewIdInDatabase(p->home);
  form.state = FormState::kDuplicate;
  form.problem = fmt::format("Form is a duplicate of another! ({})", form.orig_id);
  CC_RETURN_IF_ERROR(PutBlobs(&form, xml, parts, &p->plan, p->home));
  p->plan.For(p->home).ops.emplace_back(storage::PutForm{form});
  AddFormChange(&p->plan, p->home, form, p->now);
  CC_RETURN_IF_ERROR(CommitPlan(&p->plan, p->home));
  if (IsV3(p->req)) return Respond(201, "submit_success", kSuccessText, form.form_id, form.state);
  return Respond(201, "submit_error", form.problem, form.form_id, form.state);
}

void EngineImpl::GroupBlocks(FormPlan* p) {
  const xform::ParsedForm& pf = p->pf;
  p->ctx = FormContext{p->form.form_id, p->form.domain, p->form.xmlns, p->form.user_id,
                       p->form.received_on};
  if (!pf.device_report) p->groups = GroupCaseBlocks(pf);
  for (const auto& g : p->groups) {
    CaseError e;
    if (!ValidateBlocks(g, &e)) {
      p->error = e;
      break;
    }
  }
  if (!p->error && !pf.device_report) {
    CaseError e;
    if (!ExtractLedgerChanges(pf, p->form.received_on, &p->ledger_changes, &e)) p->error = e;
  }
}

std::vector<std::string> EngineImpl::CaseLockKeys(FormPlan* p) {
  p->case_ids = p->old_case_ids;
  p->ledger_cases = p->old_ledger_cases;
  if (!p->error) {
    for (const auto& g : p->groups) p->case_ids.insert(g.case_id);
    for (const auto& ch : p->ledger_changes) p->ledger_cases.insert(ch.case_id);
  }
  std::vector<std::string> lock_keys;
  for (const auto& id : p->case_ids) lock_keys.push_back("case:" + id);
  for (const auto& id : p->ledger_cases) lock_keys.push_back("case:" + id);
  return lock_keys;
}

Status EngineImpl::ComputeCases(FormPlan* p) {
  if (p->error) return Status::Ok();
  for (const auto& g : p->groups) {
    int db = map_.DatabaseFor(g.case_id);
    CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(g.case_id));
    Touched t;
    t.in_form = true;
    if (cur) {
      if (cur->domain != p->form.domain) {
        p->error = CaseError{"IllegalCaseId", fmt::format("Bad case id '{}'", g.case_id)};
        break;
      }
      if (cur->deleted && p->mode != Mode::kEdit) {
        p->error = CaseError{"IllegalCaseId", fmt::format("Case '{}' is deleted", g.case_id)};
        break;
      }
      t.expected_rev = cur->rev;
      t.record = std::move(*cur);
    } else if (opts_.strict_case_updates && !g.blocks.front()->has_create) {
      p->error = CaseError{
          "IllegalCaseId",
          fmt::format("Case '{}' does not exist and the form does not create it", g.case_id)};
      break;
    }
    if (p->mode == Mode::kEdit) {
      p->touched[g.case_id] = std::move(t);
      continue;  // rebuilt from transactions (RebuildCases)
    }
    CaseError e;
    if (!ApplyBlocks(g, p->ctx, p->attachments, &t.record, &t.tx_type, &e) ||
        !ValidateCaseValues(t.record, &e)) {
      p->error = e;
      break;
    }
    p->touched[g.case_id] = std::move(t);
  }
  return Status::Ok();
}

Status EngineImpl::CheckIndices(FormPlan* p) {
  if (p->error) return Status::Ok();
  for (const auto& [id, t] : p->touched) {
    if (t.record.deleted) continue;
    for (const auto& idx : t.record.indices) {
      auto it = p->touched.find(idx.referenced_id);
      bool ok = false;
      if (it != p->touched.end()) {
        ok = !it->second.record.deleted;
      } else {
        CC_ASSIGN_OR_RETURN(auto target,
                            dbs_[map_.DatabaseFor(idx.referenced_id)]->GetCase(idx.referenced_id));
        ok = target && target->domain == p->form.domain && !target->deleted;
      }
      if (!ok) {
        p->error = CaseError{
            "InvalidCaseIndex",
            fmt::format("Case '{}' references non-existent case '{}'", id, idx.referenced_id)};
        return Status::Ok();
      }
    }
  }
  return Status::Ok();
}

Status EngineImpl::CheckLedgerCases(FormPlan* p) {
  if (p->error) return Status::Ok();
  for (const auto& id : p->ledger_cases) {
    if (p->touched.count(id)) continue;
    CC_ASSIGN_OR_RETURN(auto c, dbs_[map_.DatabaseFor(id)]->GetCase(id));
    if (!c || c->domain != p->form.domain) {
      if (p->old_ledger_cases.count(id)) continue;
      p->error = CaseError{"IllegalCaseId", fmt::format("Ledger case '{}' does not exist", id)};
      break;
    }
    p->ledger_only.emplace(id, std::move(*c));
  }
  return Status::Ok();
}

void EngineImpl::WriteForms(FormPlan* p) {
  FormRecord& form = p->form;
  if (p->error) {
    form.state = FormState::kError;
    form.problem = p->error->Text();
  }
  if (p->moved) {
    p->plan.For(p->home).ops.emplace_back(storage::PutForm{*p->moved});
    AddFormChange(&p->plan, p->home, *p->moved, p->now);
  }
  // A new form must still be new at commit: another process may have received it meanwhile.
  p->plan.For(p->home).ops.emplace_back(storage::PutForm{form, p->mode == Mode::kNew});
  AddFormChange(&p->plan, p->home, form, p->now);
}

void EngineImpl::WriteCases(FormPlan* p) {
  const bool rebuild = p->mode == Mode::kEdit;
  if (p->error && !rebuild) return;  // an ERROR form changes no case (an edit's are rebuilt)
  const FormRecord& form = p->form;
  const int64_t server_date = rebuild ? form.edited_on : form.received_on;
  for (auto& [id, t] : p->touched) {
    int db = map_.DatabaseFor(id);
    auto& batch = p->plan.For(db);
    t.record.rev = t.expected_rev + 1;
    t.record.server_modified_on = server_date;
    if (p->ledger_cases.count(id)) t.tx_type |= kTxLedger;
    if (t.in_form || !rebuild) {
      CaseTransaction tx;
      tx.case_id = id;
      tx.form_id = form.form_id;
      tx.server_date = form.received_on;
      tx.client_date = t.record.modified_on;
      tx.type = t.tx_type ? t.tx_type : kTxForm;
      tx.revoked = p->error.has_value();
      tx.sync_log_id = form.last_sync_token;
      tx.xmlns = form.xmlns;
      // A brand-new form has no transaction on any case yet: insert without looking.
      batch.ops.emplace_back(storage::PutCaseTransaction{tx, p->mode != Mode::kNew});
    }
    if (rebuild) {
      CaseTransaction rtx;
      rtx.case_id = id;
      rtx.server_date = form.edited_on;
      rtx.type = kTxRebuildWithReason | kTxFormEdit;
      rtx.reason = "form edited";
      rtx.xmlns = form.xmlns;
      batch.ops.emplace_back(storage::PutCaseTransaction{rtx});
    }
    batch.ops.emplace_back(storage::PutCase{t.record, t.expected_rev});
    AddCaseChange(&p->plan, db, t.record, form.form_id, p->now);
  }
}

Status EngineImpl::WriteLedgers(FormPlan* p) {
  if (p->error && p->mode != Mode::kEdit) return Status::Ok();  // as WriteCases
  const FormRecord& form = p->form;
  // Ledger-only cases get a FORM|LEDGER transaction and are marked changed, as HQ's
  // mark_cases_changed (corehq/apps/commtrack/processing.py: "touch every case for proper ota
  // restore logic syncing to be preserved"): a phone holding one is sent it and its balances.
  if (!p->error) {
    for (const auto& id : p->ledger_cases) {
      if (p->touched.count(id)) continue;
      const int db = map_.DatabaseFor(id);
      CaseTransaction tx;
      tx.case_id = id;
      tx.form_id = form.form_id;
      tx.server_date = form.received_on;
      tx.type = kTxForm | kTxLedger;
      tx.sync_log_id = form.last_sync_token;
      tx.xmlns = form.xmlns;
      p->plan.For(db).ops.emplace_back(storage::PutCaseTransaction{tx});
      auto row = p->ledger_only.find(id);
      if (row == p->ledger_only.end()) continue;
      CaseRecord& rec = row->second;
      const int64_t expected_rev = rec.rev;
      rec.rev = expected_rev + 1;
      rec.server_modified_on = form.received_on;
      p->plan.For(db).ops.emplace_back(storage::PutCase{rec, expected_rev});
      AddCaseChange(&p->plan, db, rec, form.form_id, p->now);
    }
  }
  for (const auto& id : p->ledger_cases) {
    auto txs = p->error
                   ? std::vector<LedgerTransaction>{}
                   : LedgerTransactionsFor(p->ledger_changes, id, form.form_id, form.received_on);
    CC_RETURN_IF_ERROR(
        UpdateLedger(id, form.domain, form.form_id, std::move(txs), &p->plan, p->now));
  }
  return Status::Ok();
}

SubmitResponse EngineImpl::Answer(const FormPlan& p) {
  const FormRecord& form = p.form;
  if (p.error) {
    if (IsV3(p.req))
      return Respond(422, "processing_failure", form.problem, form.form_id, form.state);
    return Respond(201, "submit_error", form.problem, form.form_id, form.state);
  }
  return Respond(201, "submit_success", kSuccessText, form.form_id, form.state);
}

}  // namespace commcare::processing
