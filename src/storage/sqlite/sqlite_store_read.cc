// The SQLite store's reads (forms, cases, ledgers, mobile sync's) and its read connections.
#include <algorithm>

#include "storage/sqlite/sqlite_store_impl.h"
#include "util/codec.h"

namespace commcare::storage::sqlite_internal {
namespace {

using util::Bind;
using util::Col;

}  // namespace

Result<std::optional<FormRecord>> SqlitePrimaryStore::GetForm(std::string_view form_id) {
  auto r = ReaderFor("f:", form_id);
  sqlite3_stmt* s = r->Prep("SELECT doc FROM forms WHERE form_id=?");
  Bind(s, 1, form_id);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return std::optional<FormRecord>();
  if (rc != SQLITE_ROW) return r->Err("reading a form");
  FormRecord f;
  CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &f, codec::DecodeForm));
  return std::optional<FormRecord>(std::move(f));
}

Result<std::optional<CaseRecord>> SqlitePrimaryStore::GetCase(std::string_view case_id) {
  auto r = ReaderFor("c:", case_id);
  sqlite3_stmt* s = r->Prep("SELECT doc FROM cases WHERE case_id=?");
  Bind(s, 1, case_id);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return std::optional<CaseRecord>();
  if (rc != SQLITE_ROW) return r->Err("reading a case");
  CaseRecord c;
  CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &c, codec::DecodeCase));
  return std::optional<CaseRecord>(std::move(c));
}

Result<std::vector<CaseTransaction>> SqlitePrimaryStore::GetCaseTransactions(
    std::string_view case_id) {
  auto r = ReaderFor("c:", case_id);
  sqlite3_stmt* s = r->Prep("SELECT doc, seq FROM case_transactions WHERE case_id=? ORDER BY seq");
  Bind(s, 1, case_id);
  std::vector<CaseTransaction> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    CaseTransaction t;
    CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &t, codec::DecodeCaseTx));
    t.seq = sqlite3_column_int64(s, 1);
    out.push_back(std::move(t));
  }
  if (rc != SQLITE_DONE) return r->Err("reading case transactions");
  return out;
}

Result<std::vector<LedgerValue>> SqlitePrimaryStore::GetLedgerValues(std::string_view case_id) {
  auto r = ReaderFor("c:", case_id);
  sqlite3_stmt* s =
      r->Prep("SELECT doc FROM ledger_values WHERE case_id=? ORDER BY section_id, entry_id");
  Bind(s, 1, case_id);
  std::vector<LedgerValue> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    LedgerValue v;
    CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &v, codec::DecodeLedgerValue));
    out.push_back(std::move(v));
  }
  if (rc != SQLITE_DONE) return r->Err("reading ledger values");
  return out;
}

Result<std::vector<LedgerTransaction>> SqlitePrimaryStore::GetLedgerTransactions(
    std::string_view case_id) {
  auto r = ReaderFor("c:", case_id);
  sqlite3_stmt* s = r->Prep(
      "SELECT doc FROM ledger_transactions WHERE case_id=? ORDER BY report_date, form_id, seq");
  Bind(s, 1, case_id);
  std::vector<LedgerTransaction> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    LedgerTransaction t;
    CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &t, codec::DecodeLedgerTx));
    out.push_back(std::move(t));
  }
  if (rc != SQLITE_DONE) return r->Err("reading ledger transactions");
  return out;
}

// Pages of kScanPage documents by case_id, copied out so that the reader (the writer's
// connection while the redo log is on) is held only while a page is read, never while fn runs:
// a long export does not stall submissions.
Status SqlitePrimaryStore::ScanCaseDocs(const CaseFilter& f,
                                        const std::function<bool(std::string_view)>& fn) {
  constexpr int kScanPage = 1000;
  std::string after, page;
  std::vector<size_t> ends;
  while (true) {
    page.clear();
    ends.clear();
    {
      auto r = Reader();
      sqlite3_stmt* s = r->Prep(
          "SELECT doc, case_id FROM cases WHERE (?1='' OR domain=?1) AND (?2='' OR type=?2) AND "
          "(?3='' OR owner_id=?3) AND (?4<0 OR closed=?4) AND (?5=1 OR deleted=0) AND "
          "case_id>?6 ORDER BY case_id LIMIT 1000");
      sqlite3_stmt* by_owner = r->Prep(
          "SELECT doc, case_id FROM cases WHERE domain=?1 AND owner_id=?3 AND (?2='' OR type=?2) "
          "AND (?4<0 OR closed=?4) AND (?5=1 OR deleted=0) AND case_id>?6 ORDER BY case_id "
          "LIMIT 1000");
      if (!f.domain.empty() && !f.owner_id.empty()) s = by_owner;
      Bind(s, 1, f.domain);
      Bind(s, 2, f.type);
      Bind(s, 3, f.owner_id);
      Bind(s, 4, static_cast<int64_t>(f.closed ? (*f.closed ? 1 : 0) : -1));
      Bind(s, 5, static_cast<int64_t>(f.include_deleted ? 1 : 0));
      Bind(s, 6, after);
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        page.append(Col(s, 0));
        ends.push_back(page.size());
        if (static_cast<int>(ends.size()) == kScanPage) after = std::string(Col(s, 1));
      }
      if (rc != SQLITE_DONE) return r->Err("scanning cases");
    }
    for (size_t i = 0, b = 0; i < ends.size(); b = ends[i++])
      if (!fn(std::string_view(page).substr(b, ends[i] - b))) return Status::Ok();
    if (static_cast<int>(ends.size()) < kScanPage) return Status::Ok();
  }
}

Result<std::vector<CaseNode>> SqlitePrimaryStore::OpenCasesByOwner(std::string_view domain,
                                                                   std::string_view owner_id) {
  auto r = PooledReader();
  sqlite3_stmt* s = r->Prep(
      "SELECT case_id, indexed FROM cases INDEXED BY cases_owner_open WHERE domain=? AND "
      "owner_id=? AND closed=0 AND deleted=0");
  Bind(s, 1, domain);
  Bind(s, 2, owner_id);
  std::vector<CaseNode> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW)
    out.push_back({std::string(Col(s, 0)), false, false, sqlite3_column_int(s, 1) != 0});
  if (rc != SQLITE_DONE) return r->Err("listing cases by owner");
  return out;
}

Result<std::vector<CaseRecord>> SqlitePrimaryStore::GetCases(std::span<const std::string> ids) {
  return DecodeCaseDocs(ids);
}

Status SqlitePrimaryStore::ReadCaseDocs(std::span<const std::string> ids,
                                        const std::function<Status(std::string_view)>& fn) {
  auto r = PooledReader();
  ReadSnapshot snap(r.get());
  sqlite3_stmt* s = r->Prep("SELECT doc FROM cases WHERE case_id=?");
  for (const auto& id : ids) {
    Bind(s, 1, id);
    int rc = sqlite3_step(s);
    Status st = rc == SQLITE_ROW ? fn(Col(s, 0)) : Status::Ok();
    sqlite3_reset(s);
    CC_RETURN_IF_ERROR(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return r->Err("reading cases");
  }
  return Status::Ok();
}

Result<std::vector<LedgerValue>> SqlitePrimaryStore::GetLedgerValuesOf(
    std::span<const std::string> ids) {
  auto r = PooledReader();
  ReadSnapshot snap(r.get());
  sqlite3_stmt* s =
      r->Prep("SELECT doc FROM ledger_values WHERE case_id=? ORDER BY section_id, entry_id");
  std::vector<LedgerValue> out;
  for (const auto& id : ids) {
    Bind(s, 1, id);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      out.emplace_back();
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &out.back(), codec::DecodeLedgerValue));
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return r->Err("reading ledger values");
  }
  return out;
}

Result<std::vector<CaseNode>> SqlitePrimaryStore::CaseNodes(std::span<const std::string> ids) {
  auto r = PooledReader();
  ReadSnapshot snap(r.get());
  sqlite3_stmt* s = r->Prep("SELECT closed, deleted, indexed FROM cases WHERE case_id=?");
  std::vector<CaseNode> out;
  for (const auto& id : ids) {
    Bind(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
      out.push_back({id, sqlite3_column_int(s, 0) != 0, sqlite3_column_int(s, 1) != 0,
                     sqlite3_column_int(s, 2) != 0});
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return r->Err("reading case states");
  }
  return out;
}

Result<std::vector<CaseIndexEdge>> SqlitePrimaryStore::IndicesOf(std::span<const std::string> ids) {
  return Edges(ids,
               "SELECT case_id, identifier, referenced_id, referenced_type, relationship FROM "
               "case_indices WHERE case_id=?");
}

Result<std::vector<CaseIndexEdge>> SqlitePrimaryStore::ExtensionsOf(
    std::span<const std::string> ids) {
  return Edges(ids,
               "SELECT case_id, identifier, referenced_id, referenced_type, relationship FROM "
               "case_indices INDEXED BY case_indices_ext WHERE referenced_id=? AND "
               "relationship='extension'");
}

Result<std::vector<CaseIndexEdge>> SqlitePrimaryStore::IndicesPointingAt(
    std::span<const std::string> ids) {
  CC_ASSIGN_OR_RETURN(auto edges, Edges(ids,
                                        "SELECT case_id, identifier, referenced_id, "
                                        "referenced_type, relationship FROM case_indices INDEXED "
                                        "BY case_indices_ref WHERE referenced_id=?"));
  std::stable_sort(edges.begin(), edges.end(),
                   [](const auto& a, const auto& b) { return a.case_id < b.case_id; });
  return edges;
}

Result<std::vector<std::string>> SqlitePrimaryStore::CasesModifiedSince(std::string_view domain,
                                                                        int64_t since) {
  auto r = PooledReader();
  sqlite3_stmt* s =
      r->Prep("SELECT case_id FROM cases INDEXED BY cases_modified WHERE domain=? AND modified>=?");
  Bind(s, 1, domain);
  Bind(s, 2, since);
  std::vector<std::string> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) out.emplace_back(Col(s, 0));
  if (rc != SQLITE_DONE) return r->Err("listing modified cases");
  return out;
}

// In pages of 1,000 rows by id, the reader let go between pages (as ScanCaseDocs): fn may take
// long (an export reads each form's XML), and holding the writer's connection for the whole
// scan stalled every submission for as long (the soak's finding, docs/reliability.md). A form
// keeps its id when it changes (an upsert), so each is seen once.
Status SqlitePrimaryStore::ScanForms(const std::function<bool(const FormRecord&)>& fn) {
  constexpr int kScanPage = 1000;
  int64_t after = 0;
  std::vector<FormRecord> page;
  while (true) {
    page.clear();
    {
      auto r = Reader();
      sqlite3_stmt* s = r->Prep("SELECT id, doc FROM forms WHERE id>?1 ORDER BY id LIMIT 1000");
      Bind(s, 1, after);
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        after = sqlite3_column_int64(s, 0);
        CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 1), &page.emplace_back(), codec::DecodeForm));
      }
      if (rc != SQLITE_DONE) return r->Err("scanning forms");
    }
    for (const auto& f : page)
      if (!fn(f)) return Status::Ok();
    if (static_cast<int>(page.size()) < kScanPage) return Status::Ok();
  }
}

Result<std::vector<CaseIndexEdge>> SqlitePrimaryStore::Edges(std::span<const std::string> ids,
                                                             const char* sql) {
  auto r = PooledReader();
  ReadSnapshot snap(r.get());
  sqlite3_stmt* s = r->Prep(sql);
  std::vector<CaseIndexEdge> out;
  for (const auto& id : ids) {
    Bind(s, 1, id);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      out.push_back({std::string(Col(s, 0)),
                     {std::string(Col(s, 1)), std::string(Col(s, 3)), std::string(Col(s, 2)),
                      std::string(Col(s, 4))}});
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) return r->Err("reading case indices");
  }
  return out;
}

SqlitePrimaryStore::ReaderHandle SqlitePrimaryStore::Reader() {
  if (log_fd_ >= 0) {
    write_mu_.lock();
    return ReaderHandle(&writer_, ReaderDeleter{this, true});
  }
  return PooledReader();
}

SqlitePrimaryStore::ReaderHandle SqlitePrimaryStore::ReaderFor(std::string_view kind,
                                                               std::string_view id) {
  if (log_fd_ >= 0) {
    std::string key(kind);
    key += id;
    bool unsealed;
    {
      std::lock_guard<std::mutex> l(unsealed_mu_);  // never held while taking write_mu_
      unsealed = unsealed_.count(key) > 0;
    }
    if (unsealed) {
      write_mu_.lock();
      return ReaderHandle(&writer_, ReaderDeleter{this, true});
    }
  }
  return PooledReader();
}

SqlitePrimaryStore::ReaderHandle SqlitePrimaryStore::PooledReader() {
  {
    std::lock_guard<std::mutex> l(pool_mu_);
    if (!pool_.empty()) {
      Conn* c = pool_.back().release();
      pool_.pop_back();
      return ReaderHandle(c, ReaderDeleter{this});
    }
  }
  auto* c = new Conn();
  Status s = c->Open(path_, true, durable_);
  (void)s;  // a failed open surfaces as errors on the first statement
  return ReaderHandle(c, ReaderDeleter{this});
}

}  // namespace commcare::storage::sqlite_internal
