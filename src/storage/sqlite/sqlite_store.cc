// PrimaryStore on one SQLite file (WAL). One write connection used by CommitGroup; a pool of
// read connections for concurrent readers. Records are stored as JSON with indexed columns.
#include <fmt/format.h>
#include <sqlite3.h>

#include <mutex>
#include <unordered_map>

#include "commcare/storage/primary_store.h"
#include "util/codec.h"

namespace commcare::storage {
namespace {

namespace json = boost::json;

// Large documents live in rowid tables, appended in commit order, with small unique indexes on
// their ids: an insert touches the table's last page (shared by a whole group commit) and one
// page of a dense index, instead of a random leaf of a table of 2 KB rows.
constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS forms(
  id INTEGER PRIMARY KEY, form_id TEXT NOT NULL, domain TEXT NOT NULL, state INTEGER NOT NULL,
  doc TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS forms_id ON forms(form_id);
CREATE TABLE IF NOT EXISTS cases(
  id INTEGER PRIMARY KEY, case_id TEXT NOT NULL, domain TEXT NOT NULL, type TEXT,
  owner_id TEXT, closed INTEGER, deleted INTEGER, rev INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS cases_id ON cases(case_id);
CREATE INDEX IF NOT EXISTS cases_owner ON cases(domain, owner_id);
CREATE TABLE IF NOT EXISTS case_indices(
  case_id TEXT NOT NULL, identifier TEXT NOT NULL, referenced_id TEXT NOT NULL,
  referenced_type TEXT, relationship TEXT, PRIMARY KEY(case_id, identifier)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS case_indices_ref ON case_indices(referenced_id);
CREATE TABLE IF NOT EXISTS case_transactions(
  seq INTEGER PRIMARY KEY, case_id TEXT NOT NULL, form_id TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS case_transactions_case ON case_transactions(case_id);
CREATE TABLE IF NOT EXISTS ledger_values(
  case_id TEXT NOT NULL, section_id TEXT NOT NULL, entry_id TEXT NOT NULL, doc TEXT NOT NULL,
  PRIMARY KEY(case_id, section_id, entry_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_transactions(
  case_id TEXT NOT NULL, form_id TEXT NOT NULL, seq INTEGER NOT NULL, report_date INTEGER,
  doc TEXT NOT NULL, PRIMARY KEY(case_id, form_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS intents(intent_id TEXT PRIMARY KEY, payload TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied_markers(marker TEXT PRIMARY KEY) WITHOUT ROWID;
)SQL";

// A connection with a cache of prepared statements.
class Conn {
 public:
  ~Conn() {
    for (auto& [k, s] : stmts_) sqlite3_finalize(s);
    if (db_) sqlite3_close(db_);
  }
  Status Open(const std::string& path, bool read_only, bool durable) {
    int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    flags |= SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK)
      return Status::Unavailable(
          fmt::format("cannot open SQLite database {}: {}", path, db_ ? sqlite3_errmsg(db_) : "?"));
    sqlite3_busy_timeout(db_, 10000);
    if (!read_only) {
      CC_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL"));
      CC_RETURN_IF_ERROR(Exec(durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=OFF"));
      CC_RETURN_IF_ERROR(Exec("PRAGMA wal_autocheckpoint=16384"));
    }
    CC_RETURN_IF_ERROR(Exec(read_only ? "PRAGMA cache_size=-16000" : "PRAGMA cache_size=-65536"));
    CC_RETURN_IF_ERROR(Exec("PRAGMA mmap_size=1073741824"));
    return Status::Ok();
  }
  Status Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      return Status::Internal(fmt::format("SQLite: {} (in {:.60})", m, sql));
    }
    return Status::Ok();
  }
  sqlite3_stmt* Prep(const char* sql) {
    auto it = stmts_.find(sql);
    if (it != stmts_.end()) {
      sqlite3_reset(it->second);
      sqlite3_clear_bindings(it->second);
      return it->second;
    }
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
      return nullptr;
    stmts_[sql] = s;
    return s;
  }
  // Ends every statement so the connection holds no read snapshot open.
  void ResetAll() {
    for (auto& [k, s] : stmts_) sqlite3_reset(s);
  }
  Status Err(const char* what) {
    return Status::Internal(fmt::format("SQLite {}: {}", what, sqlite3_errmsg(db_)));
  }
  sqlite3* db() { return db_; }

 private:
  sqlite3* db_ = nullptr;
  std::unordered_map<const char*, sqlite3_stmt*> stmts_;
};

void Bind(sqlite3_stmt* s, int i, std::string_view v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}
void Bind(sqlite3_stmt* s, int i, int64_t v) { sqlite3_bind_int64(s, i, v); }
std::string_view Col(sqlite3_stmt* s, int i) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, i));
  return p ? std::string_view(p, sqlite3_column_bytes(s, i)) : std::string_view();
}

class SqlitePrimaryStore final : public PrimaryStore {
 public:
  SqlitePrimaryStore(std::string path, bool durable, bool read_only)
      : path_(std::move(path)), durable_(durable), read_only_(read_only) {}

  Status Init() {
    if (!read_only_) {
      CC_RETURN_IF_ERROR(writer_.Open(path_, false, durable_));
      CC_RETURN_IF_ERROR(writer_.Exec(kSchema));
    }
    return Status::Ok();
  }

  Status CommitGroup(std::span<WriteBatch* const> batches, std::vector<Status>* results) override {
    if (read_only_) return Status::FailedPrecondition("the store is open read-only");
    std::lock_guard<std::mutex> lock(write_mu_);
    results->assign(batches.size(), Status::Ok());
    CC_RETURN_IF_ERROR(writer_.Exec("BEGIN IMMEDIATE"));
    for (size_t i = 0; i < batches.size(); ++i) {
      CC_RETURN_IF_ERROR(writer_.Exec("SAVEPOINT b"));
      Status s = ApplyBatch(batches[i]);
      if (!s.ok()) {
        (*results)[i] = s;
        batches[i]->outbox_seqs.clear();
        CC_RETURN_IF_ERROR(writer_.Exec("ROLLBACK TO b"));
      }
      CC_RETURN_IF_ERROR(writer_.Exec("RELEASE b"));
    }
    writer_.ResetAll();
    Status c = writer_.Exec("COMMIT");
    if (!c.ok()) {
      (void)writer_.Exec("ROLLBACK");
      return c;
    }
    return Status::Ok();
  }

  Result<std::optional<FormRecord>> GetForm(std::string_view form_id) override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep("SELECT doc FROM forms WHERE form_id=?");
    Bind(s, 1, form_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return std::optional<FormRecord>();
    if (rc != SQLITE_ROW) return r->Err("reading a form");
    FormRecord f;
    CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &f, codec::DecodeForm));
    return std::optional<FormRecord>(std::move(f));
  }

  Result<std::optional<CaseRecord>> GetCase(std::string_view case_id) override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep("SELECT doc FROM cases WHERE case_id=?");
    Bind(s, 1, case_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return std::optional<CaseRecord>();
    if (rc != SQLITE_ROW) return r->Err("reading a case");
    CaseRecord c;
    CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &c, codec::DecodeCase));
    return std::optional<CaseRecord>(std::move(c));
  }

  Result<std::vector<CaseTransaction>> GetCaseTransactions(std::string_view case_id) override {
    auto r = Reader();
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

  Result<std::vector<LedgerValue>> GetLedgerValues(std::string_view case_id) override {
    auto r = Reader();
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

  Result<std::vector<LedgerTransaction>> GetLedgerTransactions(std::string_view case_id) override {
    auto r = Reader();
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

  Status ScanCases(const CaseFilter& f, const std::function<bool(const CaseRecord&)>& fn) override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep(
        "SELECT doc FROM cases WHERE (?1='' OR domain=?1) AND (?2='' OR type=?2) AND "
        "(?3='' OR owner_id=?3) AND (?4<0 OR closed=?4) AND (?5=1 OR deleted=0) ORDER BY case_id");
    sqlite3_stmt* by_owner = r->Prep(
        "SELECT doc FROM cases WHERE domain=?1 AND owner_id=?3 AND (?2='' OR type=?2) AND "
        "(?4<0 OR closed=?4) AND (?5=1 OR deleted=0) ORDER BY case_id");
    if (!f.domain.empty() && !f.owner_id.empty()) s = by_owner;
    Bind(s, 1, f.domain);
    Bind(s, 2, f.type);
    Bind(s, 3, f.owner_id);
    Bind(s, 4, static_cast<int64_t>(f.closed ? (*f.closed ? 1 : 0) : -1));
    Bind(s, 5, static_cast<int64_t>(f.include_deleted ? 1 : 0));
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      CaseRecord c;
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &c, codec::DecodeCase));
      if (!fn(c)) return Status::Ok();
    }
    if (rc != SQLITE_DONE) return r->Err("scanning cases");
    return Status::Ok();
  }

  Status ScanForms(const std::function<bool(const FormRecord&)>& fn) override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep("SELECT doc FROM forms ORDER BY id");
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      FormRecord f;
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 0), &f, codec::DecodeForm));
      if (!fn(f)) return Status::Ok();
    }
    if (rc != SQLITE_DONE) return r->Err("scanning forms");
    return Status::Ok();
  }

  Result<std::vector<OutboxRow>> ReadOutbox(int64_t after_seq, size_t max) override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep("SELECT seq, meta FROM outbox WHERE seq>? ORDER BY seq LIMIT ?");
    Bind(s, 1, after_seq);
    Bind(s, 2, static_cast<int64_t>(max));
    std::vector<OutboxRow> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
      OutboxRow row;
      row.seq = sqlite3_column_int64(s, 0);
      CC_RETURN_IF_ERROR(DecodeDoc(Col(s, 1), &row.meta, codec::DecodeChange));
      out.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) return r->Err("reading the outbox");
    return out;
  }

  Result<std::vector<Intent>> PendingIntents() override {
    auto r = Reader();
    sqlite3_stmt* s = r->Prep("SELECT intent_id, payload FROM intents ORDER BY intent_id");
    std::vector<Intent> out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
      out.push_back({std::string(Col(s, 0)), std::string(Col(s, 1))});
    if (rc != SQLITE_DONE) return r->Err("reading intents");
    return out;
  }

  Status PruneAppliedMarkers(const std::vector<std::string>& keep) override {
    if (read_only_) return Status::FailedPrecondition("the store is open read-only");
    std::lock_guard<std::mutex> lock(write_mu_);
    CC_RETURN_IF_ERROR(writer_.Exec("BEGIN IMMEDIATE"));
    CC_RETURN_IF_ERROR(writer_.Exec("CREATE TEMP TABLE IF NOT EXISTS keep_markers(m TEXT PRIMARY KEY)"));
    CC_RETURN_IF_ERROR(writer_.Exec("DELETE FROM keep_markers"));
    for (const auto& k : keep) {
      sqlite3_stmt* s = writer_.Prep("INSERT OR IGNORE INTO keep_markers VALUES(?)");
      Bind(s, 1, k);
      if (sqlite3_step(s) != SQLITE_DONE) return writer_.Err("pruning markers");
    }
    CC_RETURN_IF_ERROR(
        writer_.Exec("DELETE FROM applied_markers WHERE marker NOT IN (SELECT m FROM keep_markers)"));
    return writer_.Exec("COMMIT");
  }

 private:
  // A pooled read connection, returned to the pool when the handle dies.
  struct ReaderDeleter {
    SqlitePrimaryStore* store;
    void operator()(Conn* c) const {
      c->ResetAll();
      std::lock_guard<std::mutex> l(store->pool_mu_);
      store->pool_.emplace_back(c);
    }
  };
  using ReaderHandle = std::unique_ptr<Conn, ReaderDeleter>;

  ReaderHandle Reader() {
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

  template <typename T, typename F>
  static Status DecodeDoc(std::string_view text, T* out, F decode) {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec) return Status::DataLoss("a stored row is not valid JSON");
    return decode(v, out);
  }

  Status Step(sqlite3_stmt* s, const char* what) {
    if (!s) return writer_.Err(what);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return writer_.Err(what);
    return Status::Ok();
  }

  Status ApplyBatch(WriteBatch* b) {
    b->outbox_seqs.clear();
    if (!b->applied_marker.empty()) {
      sqlite3_stmt* s = writer_.Prep("INSERT OR IGNORE INTO applied_markers VALUES(?)");
      Bind(s, 1, b->applied_marker);
      CC_RETURN_IF_ERROR(Step(s, "recording an applied marker"));
      if (sqlite3_changes(writer_.db()) == 0) return Status::Ok();  // applied before: skip
    }
    for (const auto& op : b->ops) {
      Status st = std::visit([&](const auto& o) { return Apply(o, b); }, op);
      CC_RETURN_IF_ERROR(st);
    }
    return Status::Ok();
  }

  Status Apply(const PutForm& op, WriteBatch*) {
    const FormRecord& f = op.form;
    const std::string doc = json::serialize(codec::EncodeForm(f));
    sqlite3_stmt* u = writer_.Prep("UPDATE forms SET domain=?2, state=?3, doc=?4 WHERE form_id=?1");
    Bind(u, 1, f.form_id);
    Bind(u, 2, f.domain);
    Bind(u, 3, static_cast<int64_t>(f.state));
    Bind(u, 4, doc);
    CC_RETURN_IF_ERROR(Step(u, "writing a form"));
    if (sqlite3_changes(writer_.db()) > 0) return Status::Ok();
    sqlite3_stmt* s =
        writer_.Prep("INSERT INTO forms(form_id, domain, state, doc) VALUES(?1,?2,?3,?4)");
    Bind(s, 1, f.form_id);
    Bind(s, 2, f.domain);
    Bind(s, 3, static_cast<int64_t>(f.state));
    Bind(s, 4, doc);
    return Step(s, "writing a form");
  }
  Status Apply(const DeleteForm& op, WriteBatch*) {
    sqlite3_stmt* s = writer_.Prep("DELETE FROM forms WHERE form_id=?");
    Bind(s, 1, op.form_id);
    return Step(s, "deleting a form");
  }
  Status Apply(const PutCase& op, WriteBatch*) {
    const CaseRecord& c = op.record;
    sqlite3_stmt* q = writer_.Prep("SELECT rev FROM cases WHERE case_id=?");
    Bind(q, 1, c.case_id);
    const int rc = sqlite3_step(q);
    int64_t current = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return writer_.Err("reading a case rev");
    sqlite3_reset(q);
    if (current != op.expected_rev)
      return Status::Aborted(fmt::format("case '{}' changed concurrently (rev {} != expected {})",
                                         c.case_id, current, op.expected_rev));
    sqlite3_stmt* s = writer_.Prep(
        rc == SQLITE_ROW
            ? "UPDATE cases SET domain=?2, type=?3, owner_id=?4, closed=?5, deleted=?6, rev=?7, "
              "doc=?8 WHERE case_id=?1"
            : "INSERT INTO cases(case_id, domain, type, owner_id, closed, deleted, rev, doc) "
              "VALUES(?1,?2,?3,?4,?5,?6,?7,?8)");
    Bind(s, 1, c.case_id);
    Bind(s, 2, c.domain);
    Bind(s, 3, c.type);
    Bind(s, 4, c.owner_id);
    Bind(s, 5, static_cast<int64_t>(c.closed));
    Bind(s, 6, static_cast<int64_t>(c.deleted));
    Bind(s, 7, c.rev);
    Bind(s, 8, json::serialize(codec::EncodeCase(c)));
    CC_RETURN_IF_ERROR(Step(s, "writing a case"));
    if (rc == SQLITE_ROW || !c.indices.empty()) {
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
  Status Apply(const PutCaseTransaction& op, WriteBatch*) {
    const CaseTransaction& t = op.tx;
    int64_t seq = 0;
    if (!t.form_id.empty()) {
      sqlite3_stmt* q =
          writer_.Prep("SELECT seq FROM case_transactions WHERE case_id=? AND form_id=?");
      Bind(q, 1, t.case_id);
      Bind(q, 2, t.form_id);
      if (sqlite3_step(q) == SQLITE_ROW) seq = sqlite3_column_int64(q, 0);
      sqlite3_reset(q);
    }
    CaseTransaction copy = t;
    copy.seq = seq;
    const std::string doc = json::serialize(codec::EncodeCaseTx(copy));
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
  Status Apply(const PutLedgerValue& op, WriteBatch*) {
    sqlite3_stmt* s = writer_.Prep(
        "INSERT OR REPLACE INTO ledger_values(case_id, section_id, entry_id, doc) VALUES(?,?,?,?)");
    Bind(s, 1, op.value.case_id);
    Bind(s, 2, op.value.section_id);
    Bind(s, 3, op.value.entry_id);
    Bind(s, 4, json::serialize(codec::EncodeLedgerValue(op.value)));
    return Step(s, "writing a ledger value");
  }
  Status Apply(const ReplaceLedgerTransactions& op, WriteBatch*) {
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
  Status Apply(const AddOutbox& op, WriteBatch* b) {
    sqlite3_stmt* s = writer_.Prep("INSERT INTO outbox(doc_id, meta) VALUES(?,?)");
    Bind(s, 1, op.meta.document_id);
    Bind(s, 2, json::serialize(codec::EncodeChange(op.meta)));
    CC_RETURN_IF_ERROR(Step(s, "writing an outbox row"));
    b->outbox_seqs.push_back(sqlite3_last_insert_rowid(writer_.db()));
    return Status::Ok();
  }
  Status Apply(const PutIntent& op, WriteBatch*) {
    sqlite3_stmt* s = writer_.Prep("INSERT OR REPLACE INTO intents(intent_id, payload) VALUES(?,?)");
    Bind(s, 1, op.intent_id);
    Bind(s, 2, op.payload);
    return Step(s, "writing an intent");
  }
  Status Apply(const DeleteIntent& op, WriteBatch*) {
    sqlite3_stmt* s = writer_.Prep("DELETE FROM intents WHERE intent_id=?");
    Bind(s, 1, op.intent_id);
    return Step(s, "deleting an intent");
  }

  std::string path_;
  bool durable_;
  bool read_only_;
  std::mutex write_mu_;
  Conn writer_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Conn>> pool_;
};

}  // namespace

Result<std::unique_ptr<PrimaryStore>> OpenSqlitePrimaryStore(const std::string& path, bool durable,
                                                             bool read_only) {
  auto store = std::make_unique<SqlitePrimaryStore>(path, durable, read_only);
  CC_RETURN_IF_ERROR(store->Init());
  return std::unique_ptr<PrimaryStore>(std::move(store));
}

}  // namespace commcare::storage
