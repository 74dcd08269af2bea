// The PrimaryStore on one PostgreSQL database (libpq): the production primary store, one per
// database of the shard map.
//
// - CommitGroup is one transaction; each batch runs under a savepoint, so a batch whose case
//   revision check fails (Aborted) is rolled back alone. Revisions are read with FOR UPDATE,
//   so two processes writing the same case serialize on its row and the later one aborts and
//   retries: no update is lost across processes.
// - A commit is durable when COMMIT returns (synchronous_commit on): Sync and Flush do nothing.
// - Documents are stored as the same JSON text the SQLite store keeps (exact round trips);
//   the columns the reads filter on are real columns with indexes.
// - The schema is versioned (schema_version) and applied on open; applying it twice is a no-op.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <libpq-fe.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>

#include "commcare/storage/primary_store.h"
#include "storage/backends.h"
#include "storage/postgres/pg_conn.h"
#include "util/codec.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::storage {
namespace {

namespace json = boost::json;
using pg::Conn;
using pg::Res;
using pg::StatementName;

constexpr int kSchemaVersion = 1;
constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS forms(
  form_id TEXT PRIMARY KEY, domain TEXT NOT NULL, state INTEGER NOT NULL, doc TEXT NOT NULL,
  id BIGSERIAL);
CREATE TABLE IF NOT EXISTS cases(
  case_id TEXT PRIMARY KEY, domain TEXT NOT NULL, type TEXT, owner_id TEXT, closed BOOLEAN,
  deleted BOOLEAN, rev BIGINT NOT NULL, doc TEXT NOT NULL, indexed BOOLEAN NOT NULL DEFAULT false,
  modified BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS cases_owner ON cases(domain, owner_id);
CREATE INDEX IF NOT EXISTS cases_owner_open ON cases(domain, owner_id, case_id, indexed)
  WHERE NOT closed AND NOT deleted;
CREATE INDEX IF NOT EXISTS cases_modified ON cases(domain, modified);
CREATE TABLE IF NOT EXISTS case_indices(
  case_id TEXT NOT NULL, identifier TEXT NOT NULL, referenced_id TEXT NOT NULL,
  referenced_type TEXT, relationship TEXT, PRIMARY KEY(case_id, identifier));
CREATE INDEX IF NOT EXISTS case_indices_ref ON case_indices(referenced_id);
CREATE INDEX IF NOT EXISTS case_indices_ext ON case_indices(referenced_id)
  WHERE relationship = 'extension';
CREATE TABLE IF NOT EXISTS case_transactions(
  seq BIGSERIAL PRIMARY KEY, case_id TEXT NOT NULL, form_id TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS case_transactions_case ON case_transactions(case_id, form_id);
CREATE TABLE IF NOT EXISTS ledger_values(
  case_id TEXT NOT NULL, section_id TEXT NOT NULL, entry_id TEXT NOT NULL, doc TEXT NOT NULL,
  PRIMARY KEY(case_id, section_id, entry_id));
CREATE TABLE IF NOT EXISTS ledger_transactions(
  case_id TEXT NOT NULL, form_id TEXT NOT NULL, seq BIGINT NOT NULL, report_date BIGINT,
  doc TEXT NOT NULL, PRIMARY KEY(case_id, form_id, seq));
CREATE TABLE IF NOT EXISTS outbox(seq BIGSERIAL PRIMARY KEY, doc_id TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blob_journal(seq BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS intents(intent_id TEXT PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applied_markers(marker TEXT PRIMARY KEY);
-- Documents over 2 KB are compressed: lz4, where the server has it, costs a fraction of pglz's
-- CPU (pglz was the database's busiest function under load). Altered once, when not yet.
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'forms'::regclass AND
             attname = 'doc' AND attcompression <> 'l') THEN
    ALTER TABLE forms ALTER COLUMN doc SET COMPRESSION lz4;
    ALTER TABLE cases ALTER COLUMN doc SET COMPRESSION lz4;
    ALTER TABLE case_transactions ALTER COLUMN doc SET COMPRESSION lz4;
    ALTER TABLE blob_journal ALTER COLUMN data SET COMPRESSION lz4;
  END IF;
EXCEPTION WHEN feature_not_supported THEN NULL;
END $$;
)SQL";

// Advisory lock keys: one held by a transaction while it writes outbox rows (so their seqs
// follow commit order), one held by the process that relays the outbox.
constexpr const char* kOutboxLock = "7234618130";
constexpr const char* kRelayLock = "7234618131";

// The docs of the cases in $1 (a text array), in its order.
constexpr const char* kCasesByIds =
    "SELECT c.doc FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n) "
    "JOIN cases c ON c.case_id = i.id ORDER BY i.n";

// Advisory lock ids of keys (64-bit SipHash), sorted and distinct, as a bigint[] literal: every
// holder takes its locks in this order, so lock waits never form a cycle.
template <typename Keys>
std::string LockHashes(const Keys& keys) {
  static constexpr uint8_t kKey[16] = {'c', 'o', 'm', 'm', 'c', 'a', 'r', 'e', 'l', 'o', 'c', 'k'};
  std::vector<int64_t> h;
  for (const auto& k : keys) h.push_back(static_cast<int64_t>(util::SipHash24(kKey, k)));
  std::sort(h.begin(), h.end());
  h.erase(std::unique(h.begin(), h.end()), h.end());
  return fmt::format("{{{}}}", fmt::join(h, ","));
}

// A text[] literal of the ids.
std::string ArrayLiteral(std::span<const std::string> ids) {
  std::string s = "{";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += '"';
    for (char c : ids[i]) {
      if (c == '"' || c == '\\') s += '\\';
      s += c;
    }
    s += '"';
  }
  s += '}';
  return s;
}

class PostgresStore final : public PrimaryStore {
 public:
  explicit PostgresStore(std::string dsn) : dsn_(std::move(dsn)) {}

  Status Open() {
    CC_ASSIGN_OR_RETURN(auto c, Connect());
    // One process applies the schema at a time (an advisory lock), then records its version.
    CC_RETURN_IF_ERROR(c->Exec("locking the schema", "SELECT pg_advisory_lock(727274)"));
    Status s = c->Exec("applying the schema", kSchema);
    if (s.ok()) {
      auto v = c->Q("reading the schema version", "SELECT max(version) FROM schema_version");
      if (!v.ok()) {
        s = v.status();
      } else if ((*v)->At(0, 0).empty()) {
        s = c->Exec("recording the schema version", "INSERT INTO schema_version VALUES($1)",
                    {std::to_string(kSchemaVersion)});
      } else if ((*v)->Int(0, 0) > kSchemaVersion) {
        s = Status::FailedPrecondition(fmt::format(
            "postgres: the database has schema version {}, newer than this library's {}",
            (*v)->Int(0, 0), kSchemaVersion));
      }
    }
    (void)c->Exec("unlocking the schema", "SELECT pg_advisory_unlock(727274)");
    if (!s.ok()) return s;
    Give(std::move(c));
    return Status::Ok();
  }

  // One round trip sends every statement of the group (libpq pipeline mode); a second commits.
  // Revision checks are conditions of the writes themselves (UPDATE ... WHERE rev=expected,
  // INSERT ... ON CONFLICT DO NOTHING): a write that touches no row fails its batch, and the
  // group is then rolled back and sent again without it (conflicts are rare: another process
  // wrote the case).
  Status CommitGroup(std::span<WriteBatch* const> batches, std::vector<Status>* results) override {
    results->assign(batches.size(), Status::Ok());
    std::vector<bool> skip(batches.size(), false);  // aborted, or applied before (marker)
    CC_ASSIGN_OR_RETURN(auto c, Take());
    for (int round = 0;; ++round) {
      if (round > static_cast<int>(batches.size()))
        return Status::Internal("postgres: a group commit did not settle");
      bool retry = false;
      Status s = SendGroup(c.get(), batches, skip, results, &retry);
      if (s.ok() && !retry) s = c->Exec("committing", "COMMIT");
      if (!s.ok() || retry) {
        (void)c->Exec("rolling back", "ROLLBACK");
        if (!s.ok()) return s;  // the connection is dropped: its prepared set may be wrong
        continue;               // without the batches that failed their checks
      }
      NoteDeleted(batches, skip, *results);
      Give(std::move(c));
      return Status::Ok();
    }
  }

  Status Sync() override { return Status::Ok(); }

  Result<std::optional<FormRecord>> GetForm(std::string_view form_id) override {
    return OneDoc<FormRecord>("reading a form", "SELECT doc FROM forms WHERE form_id=$1", form_id,
                              codec::DecodeForm);
  }

  Result<std::optional<CaseRecord>> GetCase(std::string_view case_id) override {
    return OneDoc<CaseRecord>("reading a case", "SELECT doc FROM cases WHERE case_id=$1", case_id,
                              codec::DecodeCase);
  }

  Result<std::vector<CaseTransaction>> GetCaseTransactions(std::string_view case_id) override {
    CC_ASSIGN_OR_RETURN(auto rows, Read("reading case transactions",
                                        "SELECT doc, seq FROM case_transactions WHERE case_id=$1 "
                                        "ORDER BY seq",
                                        {case_id}));
    std::vector<CaseTransaction> out(static_cast<size_t>(rows->rows()));
    for (int i = 0; i < rows->rows(); ++i) {
      CC_RETURN_IF_ERROR(Decode(rows->At(i, 0), &out[i], codec::DecodeCaseTx));
      out[i].seq = rows->Int(i, 1);
    }
    return out;
  }

  Result<std::vector<LedgerValue>> GetLedgerValues(std::string_view case_id) override {
    return Docs<LedgerValue>("reading ledger values",
                             "SELECT doc FROM ledger_values WHERE case_id=$1 "
                             "ORDER BY section_id, entry_id",
                             {case_id}, codec::DecodeLedgerValue);
  }

  Result<std::vector<LedgerTransaction>> GetLedgerTransactions(std::string_view case_id) override {
    return Docs<LedgerTransaction>("reading ledger transactions",
                                   "SELECT doc FROM ledger_transactions WHERE case_id=$1 "
                                   "ORDER BY report_date, form_id, seq",
                                   {case_id}, codec::DecodeLedgerTx);
  }

  Status ScanCaseDocs(const CaseFilter& f,
                      const std::function<bool(std::string_view)>& fn) override {
    // Pages of 1,000 by case_id, so a long scan holds no transaction open.
    std::string after;
    while (true) {
      CC_ASSIGN_OR_RETURN(
          auto rows,
          Read("scanning cases",
               "SELECT doc, case_id FROM cases WHERE ($1='' OR domain=$1) AND ($2='' OR type=$2) "
               "AND ($3='' OR owner_id=$3) AND ($4::int<0 OR closed=($4::int=1)) AND "
               "($5::int=1 OR NOT deleted) AND case_id>$6 ORDER BY case_id LIMIT 1000",
               {f.domain, f.type, f.owner_id, f.closed ? (*f.closed ? "1" : "0") : "-1",
                f.include_deleted ? "1" : "0", after}));
      if (rows->rows() == 0) return Status::Ok();
      for (int i = 0; i < rows->rows(); ++i)
        if (!fn(rows->At(i, 0))) return Status::Ok();
      after = std::string(rows->At(rows->rows() - 1, 1));
    }
  }

  Result<std::vector<CaseRecord>> GetCases(std::span<const std::string> ids) override {
    return DecodeCaseDocs(ids);
  }
  Status ReadCaseDocs(std::span<const std::string> ids,
                      const std::function<Status(std::string_view)>& fn) override {
    CC_ASSIGN_OR_RETURN(auto rows, Read("reading cases", kCasesByIds, {ArrayLiteral(ids)}));
    for (int i = 0; i < rows->rows(); ++i) CC_RETURN_IF_ERROR(fn(rows->At(i, 0)));
    return Status::Ok();
  }
  Result<std::vector<LedgerValue>> GetLedgerValuesOf(std::span<const std::string> ids) override {
    return Docs<LedgerValue>("reading ledger values",
                             "SELECT v.doc FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n) "
                             "JOIN ledger_values v ON v.case_id = i.id "
                             "ORDER BY i.n, v.section_id, v.entry_id",
                             {ArrayLiteral(ids)}, codec::DecodeLedgerValue);
  }

  Result<std::vector<CaseNode>> OpenCasesByOwner(std::string_view domain,
                                                 std::string_view owner_id) override {
    CC_ASSIGN_OR_RETURN(auto rows, Read("listing cases by owner",
                                        "SELECT case_id, indexed FROM cases WHERE domain=$1 AND "
                                        "owner_id=$2 AND NOT closed AND NOT deleted",
                                        {domain, owner_id}));
    std::vector<CaseNode> out;
    for (int i = 0; i < rows->rows(); ++i)
      out.push_back({std::string(rows->At(i, 0)), false, false, rows->Bool(i, 1)});
    return out;
  }
  Result<std::vector<CaseNode>> CaseNodes(std::span<const std::string> ids) override {
    CC_ASSIGN_OR_RETURN(auto rows, Read("reading case states",
                                        "SELECT c.case_id, c.closed, c.deleted, c.indexed FROM "
                                        "unnest($1::text[]) WITH ORDINALITY AS i(id, n) JOIN "
                                        "cases c ON c.case_id = i.id ORDER BY i.n",
                                        {ArrayLiteral(ids)}));
    std::vector<CaseNode> out;
    for (int i = 0; i < rows->rows(); ++i)
      out.push_back(
          {std::string(rows->At(i, 0)), rows->Bool(i, 1), rows->Bool(i, 2), rows->Bool(i, 3)});
    return out;
  }
  Result<std::vector<CaseIndexEdge>> IndicesOf(std::span<const std::string> ids) override {
    return Edges(
        "SELECT x.case_id, x.identifier, x.referenced_id, x.referenced_type, x.relationship "
        "FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n) JOIN case_indices x ON "
        "x.case_id = i.id ORDER BY i.n, x.identifier",
        ids);
  }
  Result<std::vector<CaseIndexEdge>> ExtensionsOf(std::span<const std::string> ids) override {
    return Edges(
        "SELECT x.case_id, x.identifier, x.referenced_id, x.referenced_type, x.relationship "
        "FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n) JOIN case_indices x ON "
        "x.referenced_id = i.id AND x.relationship = 'extension' "
        "ORDER BY i.n, x.case_id, x.identifier",
        ids);
  }
  Result<std::vector<CaseIndexEdge>> IndicesPointingAt(std::span<const std::string> ids) override {
    return Edges(
        "SELECT x.case_id, x.identifier, x.referenced_id, x.referenced_type, x.relationship "
        "FROM case_indices x WHERE x.referenced_id = ANY($1::text[]) "
        "ORDER BY x.case_id, x.identifier",
        ids);
  }
  Result<std::vector<std::string>> CasesModifiedSince(std::string_view domain,
                                                      int64_t since) override {
    CC_ASSIGN_OR_RETURN(auto rows, Read("listing modified cases",
                                        "SELECT case_id FROM cases WHERE domain=$1 AND "
                                        "modified>=$2",
                                        {domain, std::to_string(since)}));
    std::vector<std::string> out;
    for (int i = 0; i < rows->rows(); ++i) out.emplace_back(rows->At(i, 0));
    return out;
  }

  Status ScanForms(const std::function<bool(const FormRecord&)>& fn) override {
    std::string after = "0";
    while (true) {
      CC_ASSIGN_OR_RETURN(auto rows, Read("scanning forms",
                                          "SELECT doc, id FROM forms WHERE id>$1 ORDER BY id "
                                          "LIMIT 1000",
                                          {after}));
      if (rows->rows() == 0) return Status::Ok();
      for (int i = 0; i < rows->rows(); ++i) {
        FormRecord f;
        CC_RETURN_IF_ERROR(Decode(rows->At(i, 0), &f, codec::DecodeForm));
        if (!fn(f)) return Status::Ok();
      }
      after = std::string(rows->At(rows->rows() - 1, 1));
    }
  }

  Result<std::vector<OutboxRow>> ReadOutbox(int64_t after_seq, size_t max) override {
    CC_ASSIGN_OR_RETURN(auto rows, Read("reading the outbox",
                                        "SELECT seq, meta FROM outbox WHERE seq>$1 ORDER BY seq "
                                        "LIMIT $2",
                                        {std::to_string(after_seq), std::to_string(max)}));
    std::vector<OutboxRow> out(static_cast<size_t>(rows->rows()));
    for (int i = 0; i < rows->rows(); ++i) {
      out[i].seq = rows->Int(i, 0);
      CC_RETURN_IF_ERROR(Decode(rows->At(i, 1), &out[i].meta, codec::DecodeChange));
    }
    return out;
  }

  Result<std::vector<StagedBlob>> ReadStagedBlobs(int64_t after_seq, size_t max) override {
    CC_ASSIGN_OR_RETURN(auto c, Take());
    const char* sql = "SELECT seq, key, data FROM blob_journal WHERE seq>$1 ORDER BY seq LIMIT $2";
    std::string a = std::to_string(after_seq), m = std::to_string(max);
    const char* vals[] = {a.c_str(), m.c_str()};
    // The data column comes back binary (no hex decoding).
    int fmts[] = {0, 0};
    Res r(PQexecParams(c->get(), sql, 2, nullptr, vals, nullptr, fmts, 1));
    if (PQresultStatus(r.r) != PGRES_TUPLES_OK)
      return Status::Internal(
          fmt::format("postgres: reading the blob journal: {}", PQerrorMessage(c->get())));
    std::vector<StagedBlob> out;
    for (int i = 0; i < r.rows(); ++i) {
      int64_t seq = 0;
      const char* p = PQgetvalue(r.r, i, 0);  // int8, network order
      for (int k = 0; k < 8; ++k) seq = (seq << 8) | static_cast<unsigned char>(p[k]);
      out.push_back({seq, std::string(r.At(i, 1)), std::string(r.At(i, 2))});
    }
    Give(std::move(c));
    return out;
  }

  Result<int64_t> MaxStagedBlobSeq() override {
    CC_ASSIGN_OR_RETURN(auto rows, Read("reading the blob journal",
                                        "SELECT COALESCE(MAX(seq), 0) FROM blob_journal", {}));
    return rows->Int(0, 0);
  }

  Result<std::vector<Intent>> PendingIntents() override {
    CC_ASSIGN_OR_RETURN(
        auto rows,
        Read("reading intents", "SELECT intent_id, payload FROM intents ORDER BY intent_id", {}));
    std::vector<Intent> out;
    for (int i = 0; i < rows->rows(); ++i)
      out.push_back({std::string(rows->At(i, 0)), std::string(rows->At(i, 1))});
    return out;
  }

  // Session advisory locks on a pooled connection, taken in one statement in the order of
  // their 64-bit key hashes (every process takes them in that order: no cycle), released
  // when the holder is destroyed.
  class PgKeyLocks final : public KeyLocks {
   public:
    PgKeyLocks(PostgresStore* s, std::unique_ptr<Conn> c) : s_(s), c_(std::move(c)) {}
    ~PgKeyLocks() override {
      if (c_->Exec("releasing case locks", "SELECT pg_advisory_unlock_all()").ok())
        s_->Give(std::move(c_));
    }

    Conn* conn() { return c_.get(); }

   private:
    PostgresStore* s_;
    std::unique_ptr<Conn> c_;
  };
  Result<std::unique_ptr<KeyLocks>> LockKeys(std::span<const std::string> keys) override {
    if (keys.empty()) return std::unique_ptr<KeyLocks>();
    CC_ASSIGN_OR_RETURN(auto c, Take());
    auto locks = std::make_unique<PgKeyLocks>(this, std::move(c));
    // On a deadlock or a broken connection, locks' destructor drops what was taken.
    CC_RETURN_IF_ERROR(locks->conn()->Exec(
        "locking cases across processes",
        "SELECT count(pg_advisory_lock(x)) FROM unnest($1::bigint[]) WITH ORDINALITY AS t(x, n)",
        {LockHashes(keys)}));
    return std::unique_ptr<KeyLocks>(std::move(locks));
  }

  // A session lock on a connection of its own: held while that connection lives. Checked
  // (one round trip) at most once a second while held; a broken connection has lost it.
  Result<bool> HoldRelayLease() override {
    std::lock_guard l(lease_mu_);
    const auto now = std::chrono::steady_clock::now();
    if (lease_held_ && lease_ && lease_->ok() && now - lease_checked_ < std::chrono::seconds(1))
      return true;
    lease_checked_ = now;
    if (lease_held_ && lease_ && lease_->Exec("checking the relay lease", "SELECT 1").ok())
      return true;
    if (!lease_ || !lease_->ok()) {
      lease_held_ = false;
      lease_.reset();
      CC_ASSIGN_OR_RETURN(lease_, Connect());
    }
    CC_ASSIGN_OR_RETURN(auto r, lease_->Q("taking the relay lease",
                                          "SELECT pg_try_advisory_lock($1)", {kRelayLock}));
    lease_held_ = r->At(0, 0) == "t";
    return lease_held_;
  }

  Result<std::vector<std::string>> AppliedMarkers() override {
    CC_ASSIGN_OR_RETURN(auto rows, Read("reading applied markers",
                                        "SELECT marker FROM applied_markers ORDER BY marker", {}));
    std::vector<std::string> out;
    for (int i = 0; i < rows->rows(); ++i) out.emplace_back(rows->At(i, 0));
    return out;
  }

  Status DeleteAppliedMarkers(std::span<const std::string> markers) override {
    if (markers.empty()) return Status::Ok();
    CC_ASSIGN_OR_RETURN(auto c, Take());
    CC_RETURN_IF_ERROR(c->Exec("deleting applied markers",
                               "DELETE FROM applied_markers WHERE marker = ANY($1::text[])",
                               {ArrayLiteral(markers)}));
    Give(std::move(c));
    return Status::Ok();
  }

 private:
  Result<std::unique_ptr<Conn>> Connect() { return pg::Connect(dsn_); }
  Result<std::unique_ptr<Conn>> Take() {
    {
      std::lock_guard l(mu_);
      while (!pool_.empty()) {
        auto c = std::move(pool_.back());
        pool_.pop_back();
        if (c->ok()) return c;
      }
    }
    return Connect();
  }
  void Give(std::unique_ptr<Conn> c) {
    std::lock_guard l(mu_);
    if (pool_.size() < 16) pool_.push_back(std::move(c));
  }

  Result<std::unique_ptr<Res>> Read(const char* what, const char* sql,
                                    std::initializer_list<std::string_view> params) {
    CC_ASSIGN_OR_RETURN(auto c, Take());
    auto r = c->Q(what, sql, params);
    if (r.ok() || c->ok()) Give(std::move(c));
    return r;
  }

  template <typename T, typename F>
  static Status Decode(std::string_view text, T* out, F decode) {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec) return Status::DataLoss("postgres: a stored row is not valid JSON");
    return decode(v, out);
  }

  template <typename T, typename F>
  Result<std::vector<T>> Docs(const char* what, const char* sql,
                              std::initializer_list<std::string_view> params, F decode) {
    CC_ASSIGN_OR_RETURN(auto rows, Read(what, sql, params));
    std::vector<T> out(static_cast<size_t>(rows->rows()));
    for (int i = 0; i < rows->rows(); ++i)
      CC_RETURN_IF_ERROR(Decode(rows->At(i, 0), &out[i], decode));
    return out;
  }

  // The one row's document, if any.
  template <typename T, typename F>
  Result<std::optional<T>> OneDoc(const char* what, const char* sql, std::string_view id,
                                  F decode) {
    CC_ASSIGN_OR_RETURN(auto found, Docs<T>(what, sql, {id}, decode));
    if (found.empty()) return std::optional<T>();
    return std::optional<T>(std::move(found.front()));
  }

  Result<std::vector<CaseIndexEdge>> Edges(const char* sql, std::span<const std::string> ids) {
    CC_ASSIGN_OR_RETURN(auto rows, Read("reading case indices", sql, {ArrayLiteral(ids)}));
    std::vector<CaseIndexEdge> out;
    for (int i = 0; i < rows->rows(); ++i)
      out.push_back({std::string(rows->At(i, 0)),
                     {std::string(rows->At(i, 1)), std::string(rows->At(i, 3)),
                      std::string(rows->At(i, 2)), std::string(rows->At(i, 4))}});
    return out;
  }

  // What a statement's result says about its batch.
  enum class Check { kNone, kOneRow, kMarker, kSeq };
  struct Sent {
    size_t batch;
    Check check;
    const char* what;
  };

  // Sends BEGIN and every statement of the batches not skipped in one pipeline, then reads the
  // results: a failed revision check marks its batch Aborted, a marker already recorded marks
  // it applied; either sets *retry (the transaction must be rolled back and sent again).
  Status SendGroup(Conn* c, std::span<WriteBatch* const> batches, std::vector<bool>& skip,
                   std::vector<Status>* results, bool* retry) {
    PGconn* pg = c->get();
    if (PQenterPipelineMode(pg) != 1)
      return Status::Unavailable(fmt::format("postgres: pipeline mode: {}", PQerrorMessage(pg)));
    std::vector<Sent> sent;
    Status s = Send(c, &sent, "BEGIN", {});
    sent.push_back({SIZE_MAX, Check::kNone, "beginning"});
    // The case locks the batches ask for, all before any write (a waiting transaction then
    // holds no row lock another lock holder could need).
    std::vector<std::string_view> lock_keys;
    for (size_t i = 0; i < batches.size(); ++i)
      if (!skip[i])
        for (const auto& k : batches[i]->lock_keys) lock_keys.push_back(k);
    if (s.ok() && !lock_keys.empty()) {
      sent.push_back({SIZE_MAX, Check::kNone, "locking cases"});
      s = Send(c, &sent,
               "SELECT count(pg_advisory_xact_lock(x)) FROM unnest($1::bigint[]) WITH "
               "ORDINALITY AS t(x, n)",
               {LockHashes(lock_keys)});
    }
    bool outbox = false;
    for (size_t i = 0; s.ok() && i < batches.size(); ++i) {
      if (skip[i]) continue;
      WriteBatch* b = batches[i];
      b->outbox_seqs.clear();
      if (!b->applied_marker.empty()) {
        sent.push_back({i, Check::kMarker, "recording an applied marker"});
        s = Send(c, &sent,
                 "INSERT INTO applied_markers VALUES($1) ON CONFLICT DO NOTHING RETURNING marker",
                 {b->applied_marker});
      }
      for (const auto& op : b->ops) {
        if (!s.ok()) break;
        if (std::holds_alternative<AddOutbox>(op)) {
          outbox = true;  // written last, below
          continue;
        }
        s = std::visit([&](const auto& o) { return Add(c, o, i, &sent); }, op);
      }
    }
    // Outbox rows last, under a lock held to COMMIT: their seqs then follow commit order
    // across every process writing this database, so a relay that has read up to seq n has
    // seen every row below it (with bare sequences a transaction could commit seq 9 after
    // another's seq 10 was relayed, and 9 would be skipped). Taken after the row writes, the
    // lock never waits inside a row-lock cycle.
    if (s.ok() && outbox) {
      sent.push_back({SIZE_MAX, Check::kNone, "ordering the outbox"});
      s = Send(c, &sent, "SELECT pg_advisory_xact_lock($1)", {kOutboxLock});
      for (size_t i = 0; s.ok() && i < batches.size(); ++i) {
        if (skip[i]) continue;
        for (const auto& op : batches[i]->ops) {
          if (!s.ok()) break;
          if (const auto* a = std::get_if<AddOutbox>(&op)) s = Add(c, *a, i, &sent);
        }
      }
    }
    if (s.ok() && PQpipelineSync(pg) != 1)
      s = Status::Unavailable(fmt::format("postgres: {}", PQerrorMessage(pg)));
    // Read every result up to the sync, even after an error, to leave the pipeline.
    Status first_error = s;
    size_t k = 0;
    while (true) {
      PGresult* r = PQgetResult(pg);
      if (!r) {
        if (PQstatus(pg) != CONNECTION_OK) {
          if (first_error.ok())
            first_error = Status::Unavailable(
                fmt::format("postgres: the connection broke: {}", PQerrorMessage(pg)));
          break;
        }
        continue;  // the end of one statement's results
      }
      Res res(r);
      ExecStatusType st = PQresultStatus(r);
      if (st == PGRES_PIPELINE_SYNC) break;
      if (k >= sent.size()) continue;
      const Sent& q = sent[k++];
      if (st == PGRES_PIPELINE_ABORTED) continue;
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        if (first_error.ok())
          first_error =
              Status::Internal(fmt::format("postgres: {}: {}", q.what, PQresultErrorMessage(r)));
        continue;
      }
      if (q.batch == SIZE_MAX || skip[q.batch]) continue;
      const bool touched = std::string_view(PQcmdTuples(r)) != "0";
      if (q.check == Check::kOneRow && !touched) {
        (*results)[q.batch] =
            Status::Aborted(fmt::format("{}: changed concurrently (revision check)", q.what));
        skip[q.batch] = true;
        *retry = true;
      } else if (q.check == Check::kMarker && !touched) {
        skip[q.batch] = true;  // applied before: Ok, nothing to write
        *retry = true;
      } else if (q.check == Check::kSeq && res.rows() == 1) {
        batches[q.batch]->outbox_seqs.push_back(res.Int(0, 0));
      }
    }
    PQexitPipelineMode(pg);
    if (!first_error.ok()) {
      while (!first_error.message().empty() && first_error.message().back() == '\n')
        first_error = Status(first_error.code(),
                             first_error.message().substr(0, first_error.message().size() - 1));
    }
    return first_error;
  }

  // Queues a statement (preparing it first on a connection that has not: the preparation's
  // result is one more in the pipeline, counted in *sent).
  static Status Send(Conn* c, std::vector<Sent>* sent, const char* sql,
                     std::initializer_list<std::string_view> params, int binary_param = -1) {
    PGconn* pg = c->get();
    const std::vector<std::string> hold(params.begin(), params.end());
    const pg::Params p(hold, binary_param);
    const auto& [vals, lens, fmts] = p;
    if (vals.empty()) {
      if (PQsendQueryParams(pg, sql, 0, nullptr, nullptr, nullptr, nullptr, 0) != 1)
        return Status::Unavailable(fmt::format("postgres: sending: {}", PQerrorMessage(pg)));
      return Status::Ok();
    }
    const std::string name = StatementName(sql);
    if (!c->Prepared(sql)) {
      // Inserted before the statement's own entry, which the caller pushed already.
      sent->insert(sent->end() - 1, Sent{SIZE_MAX, Check::kNone, "preparing a statement"});
      if (PQsendPrepare(pg, name.c_str(), sql, static_cast<int>(vals.size()), nullptr) != 1) {
        c->Forget(sql);
        return Status::Unavailable(fmt::format("postgres: sending: {}", PQerrorMessage(pg)));
      }
    }
    if (PQsendQueryPrepared(pg, name.c_str(), static_cast<int>(vals.size()), vals.data(),
                            lens.data(), fmts.data(), 0) != 1)
      return Status::Unavailable(fmt::format("postgres: sending: {}", PQerrorMessage(pg)));
    return Status::Ok();
  }

  Status Add(Conn* c, const PutForm& op, size_t b, std::vector<Sent>* sent) {
    const FormRecord& f = op.form;
    if (op.must_be_new) {
      sent->push_back({b, Check::kOneRow, "writing a new form"});
      return Send(c, sent,
                  "INSERT INTO forms(form_id, domain, state, doc) VALUES($1,$2,$3,$4) "
                  "ON CONFLICT(form_id) DO NOTHING",
                  {f.form_id, f.domain, std::to_string(static_cast<int>(f.state)),
                   json::serialize(codec::EncodeForm(f))});
    }
    sent->push_back({b, Check::kNone, "writing a form"});
    return Send(c, sent,
                "INSERT INTO forms(form_id, domain, state, doc) VALUES($1,$2,$3,$4) "
                "ON CONFLICT(form_id) DO UPDATE SET domain=excluded.domain, "
                "state=excluded.state, doc=excluded.doc",
                {f.form_id, f.domain, std::to_string(static_cast<int>(f.state)),
                 json::serialize(codec::EncodeForm(f))});
  }
  Status Add(Conn* c, const DeleteForm& op, size_t b, std::vector<Sent>* sent) {
    sent->push_back({b, Check::kNone, "deleting a form"});
    return Send(c, sent, "DELETE FROM forms WHERE form_id=$1", {op.form_id});
  }
  Status Add(Conn* c, const PutCase& op, size_t b, std::vector<Sent>* sent) {
    const CaseRecord& x = op.record;
    std::string doc = json::serialize(codec::EncodeCase(x));
    std::string now = std::to_string(util::NowMicros());
    sent->push_back({b, Check::kOneRow, "writing a case"});
    Status s =
        op.expected_rev == 0
            ? Send(c, sent,
                   "INSERT INTO cases(case_id, domain, type, owner_id, closed, deleted, rev, doc, "
                   "indexed, modified) VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) "
                   "ON CONFLICT(case_id) DO NOTHING",
                   {x.case_id, x.domain, x.type, x.owner_id, x.closed ? "t" : "f",
                    x.deleted ? "t" : "f", std::to_string(x.rev), doc,
                    x.indices.empty() ? "f" : "t", now})
            : Send(c, sent,
                   "UPDATE cases SET domain=$2, type=$3, owner_id=$4, closed=$5, deleted=$6, "
                   "rev=$7, doc=$8, indexed=$9, modified=$10 WHERE case_id=$1 AND rev=$11",
                   {x.case_id, x.domain, x.type, x.owner_id, x.closed ? "t" : "f",
                    x.deleted ? "t" : "f", std::to_string(x.rev), doc,
                    x.indices.empty() ? "f" : "t", now, std::to_string(op.expected_rev)});
    if (!s.ok()) return s;
    if (op.expected_rev == 0 && x.indices.empty()) return Status::Ok();  // a new case, no index
    sent->push_back({b, Check::kNone, "deleting case indices"});
    CC_RETURN_IF_ERROR(Send(c, sent, "DELETE FROM case_indices WHERE case_id=$1", {x.case_id}));
    for (const auto& i : x.indices) {
      sent->push_back({b, Check::kNone, "writing a case index"});
      CC_RETURN_IF_ERROR(
          Send(c, sent,
               "INSERT INTO case_indices(case_id, identifier, referenced_id, "
               "referenced_type, relationship) VALUES($1,$2,$3,$4,$5) "
               "ON CONFLICT(case_id, identifier) DO UPDATE SET "
               "referenced_id=excluded.referenced_id, "
               "referenced_type=excluded.referenced_type, "
               "relationship=excluded.relationship",
               {x.case_id, i.identifier, i.referenced_id, i.referenced_type, i.relationship}));
    }
    return Status::Ok();
  }
  Status Add(Conn* c, const PutCaseTransaction& op, size_t b, std::vector<Sent>* sent) {
    const CaseTransaction& t = op.tx;
    sent->push_back({b, Check::kNone, "writing a case transaction"});
    const std::string doc = json::serialize(codec::EncodeCaseTx(t));
    if (t.form_id.empty() || !op.upsert)
      return Send(c, sent, "INSERT INTO case_transactions(case_id, form_id, doc) VALUES($1,$2,$3)",
                  {t.case_id, t.form_id, doc});
    return Send(c, sent,
                "WITH u AS (UPDATE case_transactions SET doc=$3 WHERE case_id=$1 AND form_id=$2 "
                "RETURNING 1) INSERT INTO case_transactions(case_id, form_id, doc) "
                "SELECT $1,$2,$3 WHERE NOT EXISTS (SELECT 1 FROM u)",
                {t.case_id, t.form_id, doc});
  }
  Status Add(Conn* c, const PutLedgerValue& op, size_t b, std::vector<Sent>* sent) {
    const LedgerValue& v = op.value;
    sent->push_back({b, Check::kNone, "writing a ledger value"});
    return Send(
        c, sent,
        "INSERT INTO ledger_values(case_id, section_id, entry_id, doc) "
        "VALUES($1,$2,$3,$4) ON CONFLICT(case_id, section_id, entry_id) DO UPDATE SET "
        "doc=excluded.doc",
        {v.case_id, v.section_id, v.entry_id, json::serialize(codec::EncodeLedgerValue(v))});
  }
  Status Add(Conn* c, const ReplaceLedgerTransactions& op, size_t b, std::vector<Sent>* sent) {
    sent->push_back({b, Check::kNone, "deleting ledger transactions"});
    CC_RETURN_IF_ERROR(Send(c, sent,
                            "DELETE FROM ledger_transactions WHERE case_id=$1 AND form_id=$2",
                            {op.case_id, op.form_id}));
    for (const auto& t : op.txs) {
      sent->push_back({b, Check::kNone, "writing a ledger transaction"});
      CC_RETURN_IF_ERROR(
          Send(c, sent,
               "INSERT INTO ledger_transactions(case_id, form_id, seq, "
               "report_date, doc) VALUES($1,$2,$3,$4,$5) ON CONFLICT(case_id, "
               "form_id, seq) DO UPDATE SET report_date=excluded.report_date, "
               "doc=excluded.doc",
               {t.case_id, t.form_id, std::to_string(t.seq), std::to_string(t.report_date),
                json::serialize(codec::EncodeLedgerTx(t))}));
    }
    return Status::Ok();
  }
  Status Add(Conn* c, const AddOutbox& op, size_t b, std::vector<Sent>* sent) {
    sent->push_back({b, Check::kSeq, "writing an outbox row"});
    return Send(c, sent, "INSERT INTO outbox(doc_id, meta) VALUES($1,$2) RETURNING seq",
                {op.meta.document_id, json::serialize(codec::EncodeChange(op.meta))});
  }
  // Raises the marks below which committed deletes emptied the outbox and the blob journal.
  // Deletes then name a range above them: "seq <= N" alone made every delete walk the dead
  // rows of the ones before until a vacuum (a bitmap scan over them; 10% of the database's
  // CPU under load).
  void NoteDeleted(std::span<WriteBatch* const> batches, const std::vector<bool>& skip,
                   const std::vector<Status>& results) {
    auto raise = [](std::atomic<int64_t>& mark, int64_t v) {
      int64_t cur = mark.load();
      while (cur < v && !mark.compare_exchange_weak(cur, v)) {
      }
    };
    for (size_t i = 0; i < batches.size(); ++i) {
      if (skip[i] || !results[i].ok()) continue;
      for (const auto& op : batches[i]->ops) {
        if (const auto* d = std::get_if<DeleteOutbox>(&op)) raise(outbox_gone_, d->up_to_seq);
        if (const auto* r = std::get_if<ReleaseBlobs>(&op)) raise(blobs_gone_, r->up_to_seq);
      }
    }
  }
  Status Add(Conn* c, const DeleteOutbox& op, size_t b, std::vector<Sent>* sent) {
    sent->push_back({b, Check::kNone, "deleting outbox rows"});
    return Send(c, sent, "DELETE FROM outbox WHERE seq>$1 AND seq<=$2",
                {std::to_string(outbox_gone_.load()), std::to_string(op.up_to_seq)});
  }
  Status Add(Conn* c, const StageBlob& op, size_t b, std::vector<Sent>* sent) {
    sent->push_back({b, Check::kNone, "journaling a blob"});
    return Send(c, sent, "INSERT INTO blob_journal(key, data) VALUES($1,$2)", {op.key, op.data},
                /*binary_param=*/1);
  }
  Status Add(Conn* c, const ReleaseBlobs& op, size_t b, std::vector<Sent>* sent) {
    sent->push_back({b, Check::kNone, "releasing blobs"});
    return Send(c, sent, "DELETE FROM blob_journal WHERE seq>$1 AND seq<=$2",
                {std::to_string(blobs_gone_.load()), std::to_string(op.up_to_seq)});
  }
  Status Add(Conn* c, const PutIntent& op, size_t b, std::vector<Sent>* sent) {
    sent->push_back({b, Check::kNone, "writing an intent"});
    return Send(c, sent,
                "INSERT INTO intents VALUES($1,$2) ON CONFLICT(intent_id) DO UPDATE SET "
                "payload=excluded.payload",
                {op.intent_id, op.payload});
  }
  Status Add(Conn* c, const DeleteIntent& op, size_t b, std::vector<Sent>* sent) {
    sent->push_back({b, Check::kNone, "deleting an intent"});
    return Send(c, sent, "DELETE FROM intents WHERE intent_id=$1", {op.intent_id});
  }

  std::string dsn_;
  // Outbox and blob journal rows at or below these are gone (deleted by a committed group).
  std::atomic<int64_t> outbox_gone_{0}, blobs_gone_{0};
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> pool_;
  std::mutex lease_mu_;  // the relay lease's connection
  std::unique_ptr<Conn> lease_;
  bool lease_held_ = false;
  std::chrono::steady_clock::time_point lease_checked_;
};

}  // namespace

Status PostgresBuilt() { return Status::Ok(); }

Result<std::unique_ptr<PrimaryStore>> OpenPostgresPrimaryStore(const std::string& dsn) {
  auto s = std::make_unique<PostgresStore>(dsn);
  CC_RETURN_IF_ERROR(s->Open());
  return std::unique_ptr<PrimaryStore>(std::move(s));
}

}  // namespace commcare::storage
