// The submit path, step 2 (plan), for a form's previous version: moving it aside, and
// re-deriving cases from their transactions (an edit here; archive.cc and RebuildCase too).
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <string>

#include "processing/engine_impl.h"

namespace commcare::processing {

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

void EngineImpl::MovePrevious(FormPlan* p) {
  if (p->mode != Mode::kEdit && p->mode != Mode::kReplaceError) return;
  const FormRecord& existing = *p->existing;
  FormRecord& form = p->form;
  auto& moved = p->moved;
  moved = existing;
  moved->form_id = NewIdInDatabase(p->home);
  moved->orig_id = existing.form_id;
  moved->server_modified_on = p->now;
  if (p->mode != Mode::kEdit) return;
  moved->state = FormState::kDeprecated;
  form.received_on = existing.received_on;
  form.deprecated_form_id = moved->form_id;
  form.edited_on = p->now;
  auto old_pf = LoadParsed(existing);
  if (old_pf.ok()) {
    for (const auto& b : old_pf->cases) p->old_case_ids.insert(b.case_id);
    std::vector<LedgerChange> lc;
    CaseError e;
    if (ExtractLedgerChanges(*old_pf, existing.received_on, &lc, &e))
      for (const auto& ch : lc) p->old_ledger_cases.insert(ch.case_id);
  }
}

Status EngineImpl::RebuildCases(FormPlan* p) {
  const FormRecord& form = p->form;
  for (const auto& id : p->case_ids) {
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
    CC_ASSIGN_OR_RETURN(CaseRecord rec,
                        Replay(id, form.domain, txs, form.form_id, p->error ? nullptr : &p->pf,
                               p->ctx, p->attachments, &live));
    Touched& t = p->touched[id];
    t.expected_rev = cur ? cur->rev : 0;
    if (cur && cur->domain != form.domain) {
      p->error = CaseError{"IllegalCaseId", fmt::format("Bad case id '{}'", id)};
      break;
    }
    t.record = std::move(rec);
    t.record.deleted = !live;
    t.in_form = false;
    for (const auto& g : p->groups)
      if (g.case_id == id && !p->error) {
        t.in_form = true;
        CaseRecord scratch;
        CaseError e;
        ApplyBlocks(g, p->ctx, p->attachments, &scratch, &t.tx_type, &e);
      }
    CaseError e;
    if (!p->error && !ValidateCaseValues(t.record, &e)) p->error = e;
  }
  return Status::Ok();
}

}  // namespace commcare::processing
