// Pure case and ledger logic: applying parsed blocks to case state in CommCare's order.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "commcare/records.h"
#include "commcare/status.h"
#include "xform/parser.h"

namespace commcare::processing {

// A known processing error; the form is saved in ERROR state with "<type>: <message>".
struct CaseError {
  std::string type;  // IllegalCaseId, InvalidCaseIndex, CaseValueError, PhoneDateValueError, ...
  std::string message;
  std::string Text() const { return type + ": " + message; }
};

// What the blocks of one form need to know about the form.
struct FormContext {
  std::string form_id;
  std::string domain;
  std::string xmlns;
  std::string meta_user_id;
  int64_t received_on = 0;
};

// The blocks of one form for one case, in CommCare's application order.
struct CaseBlocks {
  std::string case_id;
  std::vector<const xform::CaseBlock*> blocks;
};

// Groups a form's case blocks by case id (first-appearance order) and sorts each group stably
// by lowest action (create < update < index < close < attachment).
std::vector<CaseBlocks> GroupCaseBlocks(const xform::ParsedForm& form);

// Validates the blocks (ids, dates, referrals). Returns false and fills err on a known error.
bool ValidateBlocks(const CaseBlocks& cb, CaseError* err);

// Applies one form's blocks to a case (c.rev == 0 and empty case_id: a new case).
// Fills *tx_type with the OR of transaction bits. False with err on a known error.
bool ApplyBlocks(const CaseBlocks& cb, const FormContext& ctx,
                 const std::map<std::string, const Attachment*>& form_attachments, CaseRecord* c,
                 int* tx_type, CaseError* err);

// Checks name/type/owner/external id lengths (CaseValueError past 255 characters).
bool ValidateCaseValues(const CaseRecord& c, CaseError* err);

// One ledger change derived from a form, before balances are known.
struct LedgerChange {
  std::string case_id, section_id, entry_id;
  int type = 1;  // 1 balance (quantity is the new balance), 2 transfer (quantity is a delta)
  double quantity = 0;
  int64_t report_date = 0;
  std::string user_defined_type;
};

// Extracts ledger changes from a form's ledger blocks. False with err on a known error.
bool ExtractLedgerChanges(const xform::ParsedForm& form, int64_t received_on,
                          std::vector<LedgerChange>* out, CaseError* err);

// The ledger transactions a form's changes make on one case (balance: updated_balance holds the
// stated quantity; transfer: delta holds the signed quantity), numbered in the form's order.
std::vector<LedgerTransaction> LedgerTransactionsFor(const std::vector<LedgerChange>& changes,
                                                     const std::string& case_id,
                                                     const std::string& form_id,
                                                     int64_t server_date);

// Replays ledger transactions (sorted) into values, fixing each delta/updated_balance.
void ReplayLedger(std::vector<LedgerTransaction>* txs, std::map<std::string, LedgerValue>* values,
                  const std::string& domain);

// Key of a ledger value "case/section/entry" (also its change-log document id).
std::string LedgerKey(const std::string& case_id, const std::string& section,
                      const std::string& entry);

}  // namespace commcare::processing
