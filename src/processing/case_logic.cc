#include "processing/case_logic.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <unordered_map>

#include "util/time.h"

namespace commcare::processing {

std::vector<CaseBlocks> GroupCaseBlocks(const xform::ParsedForm& form) {
  std::vector<CaseBlocks> out;
  std::unordered_map<std::string, size_t> pos;
  for (const auto& b : form.cases) {
    auto [it, fresh] = pos.try_emplace(b.case_id, out.size());
    if (fresh) out.push_back({b.case_id, {}});
    out[it->second].blocks.push_back(&b);
  }
  for (auto& g : out)
    std::stable_sort(g.blocks.begin(), g.blocks.end(), [](const auto* a, const auto* b) {
      return a->LowestAction() < b->LowestAction();
    });
  return out;
}

bool ValidateBlocks(const CaseBlocks& cb, CaseError* err) {
  if (cb.case_id.empty()) {
    *err = {"IllegalCaseId", "case_id must not be empty"};
    return false;
  }
  for (const auto* b : cb.blocks) {
    if (b->uses_referrals) {
      *err = {"UsesReferrals", "Sorry, referrals are no longer supported!"};
      return false;
    }
    int64_t t;
    if (!b->date_modified_raw.empty() && !util::ParseIsoTime(b->date_modified_raw, &t)) {
      *err = {"PhoneDateValueError",
              fmt::format("Date value '{}' for date_modified of case '{}' is not a valid date",
                          b->date_modified_raw, cb.case_id)};
      return false;
    }
  }
  return true;
}

namespace {

bool SetDate(const std::string& v, int64_t* out) {
  int64_t t;
  if (v.empty() || !util::ParseIsoTime(v, &t)) return false;
  *out = t;
  return true;
}

void ApplyKnown(const std::string& k, const std::string& v, CaseRecord* c, bool* handled) {
  *handled = true;
  if (k == "case_type")
    c->type = v;
  else if (k == "case_name")
    c->name = v;
  else if (k == "owner_id")
    c->owner_id = v;
  else if (k == "external_id")
    c->external_id = v;
  else if (k == "date_opened")
    SetDate(v, &c->opened_on);
  else if (k == "user_id") {
  } else
    *handled = false;
}

}  // namespace

bool ApplyBlocks(const CaseBlocks& cb, const FormContext& ctx,
                 const std::map<std::string, const Attachment*>& form_attachments, CaseRecord* c,
                 int* tx_type, CaseError* err) {
  *tx_type = kTxForm;
  const bool is_new = c->case_id.empty();
  if (is_new) {
    c->case_id = cb.case_id;
    c->domain = ctx.domain;
  }
  for (const auto* b : cb.blocks) {
    const std::string& user = b->user_id.empty() ? ctx.meta_user_id : b->user_id;
    int64_t date = ctx.received_on;
    if (!b->date_modified_raw.empty()) util::ParseIsoTime(b->date_modified_raw, &date);
    if (c->opened_on == 0 && c->opened_by.empty() && c->modified_on == 0) {
      // First block seen for this case: it opens the case (lenient implicit create too).
      c->opened_on = date;
      c->opened_by = user;
    }
    if (date > c->modified_on) c->modified_on = date;
    c->modified_by = user;
    if (b->has_create) {
      *tx_type |= kTxCaseCreate;
      for (const auto& [k, v] : b->create) {
        bool handled;
        ApplyKnown(k, v, c, &handled);
      }
    }
    if (b->has_update) {
      for (const auto& [k, v] : b->update) {
        bool handled;
        ApplyKnown(k, v, c, &handled);
        if (handled) continue;
        if (k == "date_modified" || k == "case_id" || k == "xmlns") continue;
        if (k == "location_id") {
          c->location_id = v;
        } else if (k == "name") {
          c->name = v;
          continue;
        } else if (k == "hq_user_id") {
          c->external_id = v;
        }
        c->properties[k] = v;
      }
    }
    if (b->has_index) {
      *tx_type |= kTxCaseIndex;
      for (const auto& ia : b->indices) {
        auto it = std::find_if(c->indices.begin(), c->indices.end(),
                               [&](const CaseIndex& x) { return x.identifier == ia.identifier; });
        if (ia.target.empty()) {
          if (it != c->indices.end()) c->indices.erase(it);
          continue;
        }
        if (!ia.has_case_type || ia.case_type.empty()) {
          *err = {"InvalidCaseIndex", fmt::format("Index '{}' of case '{}' has no case_type",
                                                  ia.identifier, cb.case_id)};
          return false;
        }
        if (ia.relationship != "child" && ia.relationship != "extension") {
          *err = {"CaseValueError",
                  fmt::format("Index '{}' of case '{}' has invalid relationship '{}'",
                              ia.identifier, cb.case_id, ia.relationship)};
          return false;
        }
        if (ia.target == cb.case_id) {
          *err = {"InvalidCaseIndex", fmt::format("Case '{}' cannot index itself", cb.case_id)};
          return false;
        }
        CaseIndex ci{ia.identifier, ia.case_type, ia.target, ia.relationship};
        if (it != c->indices.end())
          *it = ci;
        else
          c->indices.push_back(ci);
      }
      std::sort(c->indices.begin(), c->indices.end(),
                [](const CaseIndex& a, const CaseIndex& b) { return a.identifier < b.identifier; });
    }
    if (b->has_close) {
      *tx_type |= kTxCaseClose;
      c->closed = true;
      c->closed_on = date;
      c->closed_by = user;
    }
    if (b->has_attachment) {
      *tx_type |= kTxCaseAttachment;
      for (const auto& aa : b->attachments) {
        auto it = std::find_if(c->attachments.begin(), c->attachments.end(),
                               [&](const CaseAttachment& x) { return x.name == aa.name; });
        if (aa.is_delete) {
          if (it != c->attachments.end()) c->attachments.erase(it);
          continue;
        }
        CaseAttachment ca{aa.name, aa.src, aa.from, "", ""};
        if (auto f = form_attachments.find(aa.src); f != form_attachments.end()) {
          ca.blob_key = f->second->blob_key;
          ca.content_type = f->second->content_type;
        }
        if (it != c->attachments.end())
          *it = ca;
        else
          c->attachments.push_back(ca);
      }
    }
  }
  if (c->owner_id.empty()) {
    // CommCare: a case without an owner is owned by the user who touched it.
    for (const auto* b : cb.blocks) {
      c->owner_id = b->user_id.empty() ? ctx.meta_user_id : b->user_id;
      break;
    }
  }
  return true;
}

bool ValidateCaseValues(const CaseRecord& c, CaseError* err) {
  auto check = [&](const std::string& v, const char* field) {
    if (v.size() <= 255) return true;
    *err = {"CaseValueError",
            fmt::format("Value for '{}' of case '{}' is longer than 255 characters ({})", field,
                        c.case_id, v.size())};
    return false;
  };
  return check(c.name, "case_name") && check(c.type, "case_type") &&
         check(c.owner_id, "owner_id") && check(c.external_id, "external_id");
}

namespace {
bool ParseNumber(const std::string& s, double* out) {
  if (s.empty()) return false;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  auto r = std::from_chars(b, e, *out);
  return r.ec == std::errc() && r.ptr == e;
}
}  // namespace

bool ExtractLedgerChanges(const xform::ParsedForm& form, int64_t received_on,
                          std::vector<LedgerChange>* out, CaseError* err) {
  for (const auto& lb : form.ledgers) {
    int64_t date = received_on;
    if (!lb.date.empty() && !util::ParseIsoTime(lb.date, &date)) {
      *err = {"PhoneDateValueError", fmt::format("Ledger date '{}' is not a valid date", lb.date)};
      return false;
    }
    if (!lb.is_transfer && lb.entity_id.empty()) {
      *err = {"IllegalCaseId", "Ledger balance block has no entity-id"};
      return false;
    }
    if (lb.is_transfer && lb.src.empty() && lb.dest.empty()) {
      *err = {"IllegalCaseId", "Ledger transfer has neither src nor dest"};
      return false;
    }
    for (const auto& e : lb.entries) {
      if (e.entry_id.empty()) {
        *err = {"MissingProductId", "Ledger entry has no product (entry) id"};
        return false;
      }
      double q;
      if (!ParseNumber(e.quantity, &q)) continue;  // non-numeric quantities are dropped
      // HQ keeps whole numbers: LedgerValue.balance is an IntegerField and the deltas
      // BigIntegerFields (form_processor/models/ledgers.py), so a quantity is truncated as
      // int(Decimal) does; commcare-core's ledger parsers read nothing else.
      q = std::trunc(q);
      if (!lb.is_transfer) {
        out->push_back({lb.entity_id, e.section_id, e.entry_id, 1, q, date, lb.type});
      } else {
        if (!lb.src.empty())
          out->push_back({lb.src, e.section_id, e.entry_id, 2, -q, date, lb.type});
        if (!lb.dest.empty())
          out->push_back({lb.dest, e.section_id, e.entry_id, 2, q, date, lb.type});
      }
    }
  }
  return true;
}

std::string LedgerKey(const std::string& case_id, const std::string& section,
                      const std::string& entry) {
  return case_id + "/" + section + "/" + entry;
}

void ReplayLedger(std::vector<LedgerTransaction>* txs, std::map<std::string, LedgerValue>* values,
                  const std::string& domain) {
  for (auto& t : *txs) {
    std::string key = LedgerKey(t.case_id, t.section_id, t.entry_id);
    auto [it, fresh] = values->try_emplace(key);
    LedgerValue& v = it->second;
    if (fresh) {
      v.case_id = t.case_id;
      v.section_id = t.section_id;
      v.entry_id = t.entry_id;
      v.domain = domain;
    }
    double before = v.balance;
    if (t.type == 1) {
      v.balance = t.updated_balance;  // a balance report states the new value
    } else {
      v.balance = before + t.delta;
      t.updated_balance = v.balance;
    }
    if (t.type == 1) t.delta = v.balance - before;
    v.last_modified = t.server_date;
    v.last_modified_form_id = t.form_id;
  }
}

std::vector<LedgerTransaction> LedgerTransactionsFor(const std::vector<LedgerChange>& changes,
                                                     const std::string& case_id,
                                                     const std::string& form_id,
                                                     int64_t server_date) {
  std::vector<LedgerTransaction> out;
  int64_t seq = 0;
  for (const auto& ch : changes) {
    ++seq;
    if (ch.case_id != case_id) continue;
    LedgerTransaction t;
    t.form_id = form_id;
    t.case_id = ch.case_id;
    t.section_id = ch.section_id;
    t.entry_id = ch.entry_id;
    t.server_date = server_date;
    t.report_date = ch.report_date;
    t.type = ch.type;
    t.user_defined_type = ch.user_defined_type;
    if (ch.type == 1)
      t.updated_balance = ch.quantity;
    else
      t.delta = ch.quantity;
    t.seq = seq;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace commcare::processing
