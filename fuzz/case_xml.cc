// Fuzz target: case XML as the engine applies it. A form is parsed, its case blocks grouped,
// validated and applied to new cases and then again onto the cases they made (an update of an
// existing case), and its ledger blocks turned into transactions and replayed.
#include <cstdint>
#include <map>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "processing/case_logic.h"
#include "xform/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace commcare;
  namespace p = commcare::processing;
  xform::ParsedForm form;
  xform::ParseLimits limits;
  limits.max_depth = 64;
  if (!xform::ParseForm(fuzz::AsText(data, size), limits, &form).ok()) return 0;
  p::FormContext ctx;
  ctx.form_id = form.meta.instance_id.empty() ? "form-1" : form.meta.instance_id;
  ctx.domain = "fuzz";
  ctx.xmlns = form.xmlns;
  ctx.meta_user_id = form.meta.user_id;
  ctx.received_on = 1'700'000'000'000'000;
  const std::map<std::string, const Attachment*> attachments;
  for (const p::CaseBlocks& cb : p::GroupCaseBlocks(form)) {
    p::CaseError err;
    if (!p::ValidateBlocks(cb, &err)) {
      FUZZ_CHECK(!err.type.empty());
      continue;
    }
    CaseRecord c;
    int tx = 0;
    if (!p::ApplyBlocks(cb, ctx, attachments, &c, &tx, &err)) continue;
    (void)p::ValidateCaseValues(c, &err);
    c.rev = 1;
    (void)p::ApplyBlocks(cb, ctx, attachments, &c, &tx, &err);
  }
  std::vector<p::LedgerChange> changes;
  p::CaseError err;
  if (p::ExtractLedgerChanges(form, ctx.received_on, &changes, &err)) {
    std::map<std::string, bool> case_ids;
    for (const auto& ch : changes) case_ids[ch.case_id] = true;
    std::map<std::string, LedgerValue> values;
    for (const auto& [id, unused] : case_ids) {
      auto txs = p::LedgerTransactionsFor(changes, id, ctx.form_id, ctx.received_on);
      p::ReplayLedger(&txs, &values, ctx.domain);
    }
  }
  return 0;
}
