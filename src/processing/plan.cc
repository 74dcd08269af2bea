// The submit path, step 2 (plan): a form's case and ledger changes as a write set, every case
// it touches locked, read, changed (or rebuilt, for an edit) and checked.
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

Result<xform::ParsedForm> EngineImpl::LoadParsed(const FormRecord& f) {
  for (const auto& a : f.attachments) {
    if (a.name != "form.xml") continue;
    CC_ASSIGN_OR_RETURN(std::string xml, blobs_->Get(a.blob_key));
    xform::ParsedForm pf;
    CC_RETURN_IF_ERROR(xform::ParseForm(xml, xform::ParseLimits{}, &pf));
    return pf;
  }
  return Status::NotFound(fmt::format("form '{}' has no form.xml", f.form_id));
}

Result<CaseRecord> EngineImpl::Replay(const std::string& case_id, const std::string& domain,
                                      std::vector<CaseTransaction> txs,
                                      const std::string& override_form_id,
                                      const xform::ParsedForm* override_pf,
                                      const FormContext& override_ctx,
                                      const std::map<std::string, const Attachment*>& override_atts,
                                      bool* live) {
  std::stable_sort(txs.begin(), txs.end(),
                   [](const auto& a, const auto& b) { return a.server_date < b.server_date; });
  CaseRecord c;
  *live = false;
  for (const auto& t : txs) {
    if (t.form_id.empty() || t.revoked) continue;
    const xform::ParsedForm* pf = nullptr;
    xform::ParsedForm loaded;
    FormContext ctx;
    std::map<std::string, const Attachment*> atts;
    FormRecord form;
    if (t.form_id == override_form_id) {
      if (!override_pf) continue;
      pf = override_pf;
      ctx = override_ctx;
      atts = override_atts;
    } else {
      CC_ASSIGN_OR_RETURN(auto f, dbs_[map_.DatabaseFor(t.form_id)]->GetForm(t.form_id));
      if (!f || f->state != FormState::kNormal) continue;
      form = std::move(*f);
      auto p = LoadParsed(form);
      if (!p.ok()) continue;
      loaded = std::move(p).value();
      pf = &loaded;
      ctx = ContextOf(form);
      atts = AttachmentMap(form);
    }
    for (const auto& g : GroupCaseBlocks(*pf)) {
      if (g.case_id != case_id) continue;
      CaseRecord next = c;
      int type;
      CaseError err;
      if (ApplyBlocks(g, ctx, atts, &next, &type, &err)) {
        c = std::move(next);
        *live = true;
      }
    }
  }
  if (c.case_id.empty()) {
    c.case_id = case_id;
    c.domain = domain;
  }
  return c;
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

Result<SubmitResponse> EngineImpl::ProcessForm(const SubmitRequest& req, std::string_view xml,
                                               const xform::ParsedForm& pf,
                                               const std::vector<xform::MultipartPart>& parts,
                                               int64_t received_on, bool retry) {
  const int64_t now = util::NowMicros();
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

  LockSet form_lock(&locks_, {"form:" + form.form_id});
  int home = map_.DatabaseFor(form.form_id);
  CC_ASSIGN_OR_RETURN(auto existing, dbs_[home]->GetForm(form.form_id));

  enum class Mode { kNew, kDuplicate, kEdit, kReplaceError } mode = Mode::kNew;
  if (existing) {
    if (existing->domain != form.domain || existing->xmlns != form.xmlns) {
      form.form_id = NewIdInDatabase(home);  // an id clash: a new form under a new id
    } else if (existing->md5 == form.md5) {
      mode = existing->state == FormState::kError ? Mode::kReplaceError : Mode::kDuplicate;
    } else {
      mode = existing->state == FormState::kError ? Mode::kReplaceError : Mode::kEdit;
    }
  }

  Plan plan;
  if (mode == Mode::kDuplicate) {
    form.orig_id = form.form_id;
    form.form_id = NewIdInDatabase(home);
    form.state = FormState::kDuplicate;
    form.problem = fmt::format("Form is a duplicate of another! ({})", form.orig_id);
    CC_RETURN_IF_ERROR(PutBlobs(&form, xml, parts, &plan, home));
    plan.For(home).ops.emplace_back(storage::PutForm{form});
    AddFormChange(&plan, home, form, now);
    CC_RETURN_IF_ERROR(CommitPlan(&plan, home));
    if (IsV3(req)) return Respond(201, "submit_success", kSuccessText, form.form_id, form.state);
    return Respond(201, "submit_error", form.problem, form.form_id, form.state);
  }

  CC_RETURN_IF_ERROR(PutBlobs(&form, xml, parts, &plan, home));
  const auto attachments = AttachmentMap(form);

  // The previous version: deprecated (edit) or moved aside (replacing an error).
  std::optional<FormRecord> moved;
  std::set<std::string> old_case_ids, old_ledger_cases;
  if (mode == Mode::kEdit || mode == Mode::kReplaceError) {
    moved = *existing;
    moved->form_id = NewIdInDatabase(home);
    moved->orig_id = existing->form_id;
    moved->server_modified_on = now;
    if (mode == Mode::kEdit) {
      moved->state = FormState::kDeprecated;
      form.received_on = existing->received_on;
      form.deprecated_form_id = moved->form_id;
      form.edited_on = now;
      auto old_pf = LoadParsed(*existing);
      if (old_pf.ok()) {
        for (const auto& b : old_pf->cases) old_case_ids.insert(b.case_id);
        std::vector<LedgerChange> lc;
        CaseError e;
        if (ExtractLedgerChanges(*old_pf, existing->received_on, &lc, &e))
          for (const auto& ch : lc) old_ledger_cases.insert(ch.case_id);
      }
    }
  }

  FormContext ctx{form.form_id, form.domain, form.xmlns, form.user_id, form.received_on};
  std::vector<CaseBlocks> groups;
  if (!pf.device_report) groups = GroupCaseBlocks(pf);
  std::vector<LedgerChange> ledger_changes;
  std::optional<CaseError> error;
  for (const auto& g : groups) {
    CaseError e;
    if (!ValidateBlocks(g, &e)) {
      error = e;
      break;
    }
  }
  if (!error && !pf.device_report) {
    CaseError e;
    if (!ExtractLedgerChanges(pf, form.received_on, &ledger_changes, &e)) error = e;
  }

  // Lock every case this form (and its previous version) touches.
  std::set<std::string> case_ids = old_case_ids;
  std::set<std::string> ledger_cases = old_ledger_cases;
  if (!error) {
    for (const auto& g : groups) case_ids.insert(g.case_id);
    for (const auto& ch : ledger_changes) ledger_cases.insert(ch.case_id);
  }
  std::vector<std::string> lock_keys;
  for (const auto& id : case_ids) lock_keys.push_back("case:" + id);
  for (const auto& id : ledger_cases) lock_keys.push_back("case:" + id);
  LockSet case_locks(&locks_, lock_keys);
  CC_ASSIGN_OR_RETURN(auto store_locks, LockAcross(lock_keys, home, !retry));  // other processes

  // Compute the new state of every touched case.
  struct Touched {
    CaseRecord record;
    int64_t expected_rev = 0;
    int tx_type = 0;
    bool in_form = false;
  };
  std::map<std::string, Touched> touched;
  if (!error) {
    for (const auto& g : groups) {
      int db = map_.DatabaseFor(g.case_id);
      CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(g.case_id));
      Touched t;
      t.in_form = true;
      if (cur) {
        if (cur->domain != form.domain) {
          error = CaseError{"IllegalCaseId", fmt::format("Bad case id '{}'", g.case_id)};
          break;
        }
        if (cur->deleted && mode != Mode::kEdit) {
          error = CaseError{"IllegalCaseId", fmt::format("Case '{}' is deleted", g.case_id)};
          break;
        }
        t.expected_rev = cur->rev;
        t.record = std::move(*cur);
      } else if (opts_.strict_case_updates && !g.blocks.front()->has_create) {
        error = CaseError{
            "IllegalCaseId",
            fmt::format("Case '{}' does not exist and the form does not create it", g.case_id)};
        break;
      }
      if (mode == Mode::kEdit) {
        touched[g.case_id] = std::move(t);
        continue;  // rebuilt from transactions below
      }
      CaseError e;
      if (!ApplyBlocks(g, ctx, attachments, &t.record, &t.tx_type, &e) ||
          !ValidateCaseValues(t.record, &e)) {
        error = e;
        break;
      }
      touched[g.case_id] = std::move(t);
    }
  }

  // An edit re-derives every case either version touched from its transactions.
  const bool rebuild = mode == Mode::kEdit;
  if (rebuild) {
    for (const auto& id : case_ids) {
      int db = map_.DatabaseFor(id);
      CC_ASSIGN_OR_RETURN(auto cur, dbs_[db]->GetCase(id));
      CC_ASSIGN_OR_RETURN(auto txs, dbs_[db]->GetCaseTransactions(id));
      bool has_tx = std::any_of(txs.begin(), txs.end(),
                                [&](const auto& t) { return t.form_id == form.form_id; });
      if (!has_tx) {
        CaseTransaction nt;
        nt.case_id = id;
        nt.form_id = form.form_id;
        nt.server_date = form.received_on;
        txs.push_back(nt);
      }
      bool live = false;
      CC_ASSIGN_OR_RETURN(CaseRecord rec, Replay(id, form.domain, txs, form.form_id,
                                                 error ? nullptr : &pf, ctx, attachments, &live));
      Touched& t = touched[id];
      t.expected_rev = cur ? cur->rev : 0;
      if (cur && cur->domain != form.domain) {
        error = CaseError{"IllegalCaseId", fmt::format("Bad case id '{}'", id)};
        break;
      }
      t.record = std::move(rec);
      t.record.deleted = !live;
      t.in_form = false;
      for (const auto& g : groups)
        if (g.case_id == id && !error) {
          t.in_form = true;
          CaseRecord scratch;
          CaseError e;
          ApplyBlocks(g, ctx, attachments, &scratch, &t.tx_type, &e);
        }
      CaseError e;
      if (!error && !ValidateCaseValues(t.record, &e)) error = e;
    }
  }

  // Every live index must point at an existing case of the domain.
  if (!error) {
    for (const auto& [id, t] : touched) {
      if (t.record.deleted) continue;
      for (const auto& idx : t.record.indices) {
        auto it = touched.find(idx.referenced_id);
        bool ok = false;
        if (it != touched.end()) {
          ok = !it->second.record.deleted;
        } else {
          CC_ASSIGN_OR_RETURN(
              auto target, dbs_[map_.DatabaseFor(idx.referenced_id)]->GetCase(idx.referenced_id));
          ok = target && target->domain == form.domain && !target->deleted;
        }
        if (!ok) {
          error = CaseError{
              "InvalidCaseIndex",
              fmt::format("Case '{}' references non-existent case '{}'", id, idx.referenced_id)};
          break;
        }
      }
      if (error) break;
    }
  }
  // Ledger cases must exist (or be created by this form).
  if (!error) {
    for (const auto& id : ledger_cases) {
      if (touched.count(id)) continue;
      CC_ASSIGN_OR_RETURN(auto c, dbs_[map_.DatabaseFor(id)]->GetCase(id));
      if (!c || c->domain != form.domain) {
        if (old_ledger_cases.count(id)) continue;
        error = CaseError{"IllegalCaseId", fmt::format("Ledger case '{}' does not exist", id)};
        break;
      }
    }
  }

  // ---- write ----
  if (error) {
    form.state = FormState::kError;
    form.problem = error->Text();
  }
  if (moved) {
    plan.For(home).ops.emplace_back(storage::PutForm{*moved});
    AddFormChange(&plan, home, *moved, now);
  }
  // A new form must still be new at commit: another process may have received it meanwhile.
  plan.For(home).ops.emplace_back(storage::PutForm{form, mode == Mode::kNew});
  AddFormChange(&plan, home, form, now);

  const bool apply_cases = !error || rebuild;
  if (apply_cases) {
    const int64_t server_date = rebuild ? form.edited_on : form.received_on;
    for (auto& [id, t] : touched) {
      if (error && !rebuild) break;
      int db = map_.DatabaseFor(id);
      auto& batch = plan.For(db);
      t.record.rev = t.expected_rev + 1;
      t.record.server_modified_on = server_date;
      if (ledger_cases.count(id)) t.tx_type |= kTxLedger;
      if (t.in_form || !rebuild) {
        CaseTransaction tx;
        tx.case_id = id;
        tx.form_id = form.form_id;
        tx.server_date = form.received_on;
        tx.client_date = t.record.modified_on;
        tx.type = t.tx_type ? t.tx_type : kTxForm;
        tx.revoked = error.has_value();
        tx.sync_log_id = form.last_sync_token;
        tx.xmlns = form.xmlns;
        // A brand-new form has no transaction on any case yet: insert without looking.
        batch.ops.emplace_back(storage::PutCaseTransaction{tx, mode != Mode::kNew});
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
      AddCaseChange(&plan, db, t.record, form.form_id, now);
    }
    // Ledger-only cases get a FORM|LEDGER transaction.
    if (!error) {
      for (const auto& id : ledger_cases) {
        if (touched.count(id)) continue;
        CaseTransaction tx;
        tx.case_id = id;
        tx.form_id = form.form_id;
        tx.server_date = form.received_on;
        tx.type = kTxForm | kTxLedger;
        tx.sync_log_id = form.last_sync_token;
        tx.xmlns = form.xmlns;
        plan.For(map_.DatabaseFor(id)).ops.emplace_back(storage::PutCaseTransaction{tx});
      }
    }
    for (const auto& id : ledger_cases) {
      auto txs = error ? std::vector<LedgerTransaction>{}
                       : LedgerTransactionsFor(ledger_changes, id, form.form_id, form.received_on);
      CC_RETURN_IF_ERROR(UpdateLedger(id, form.domain, form.form_id, std::move(txs), &plan, now));
    }
  }

  store_locks.Attach(&plan);
  CC_RETURN_IF_ERROR(CommitPlan(&plan, home));

  if (error) {
    if (IsV3(req))
      return Respond(422, "processing_failure", form.problem, form.form_id, form.state);
    return Respond(201, "submit_error", form.problem, form.form_id, form.state);
  }
  return Respond(201, "submit_success", kSuccessText, form.form_id, form.state);
}

}  // namespace commcare::processing
