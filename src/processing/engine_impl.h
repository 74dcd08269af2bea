// The Engine implementation: submission processing, storage wiring, recovery.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "commcare/engine.h"
#include "commcare/storage/blob_store.h"
#include "log/streak.h"
#include "processing/case_logic.h"
#include "processing/commit.h"
#include "xform/parser.h"

namespace commcare::processing {

// Logical shards onto physical databases in contiguous ranges (CommCare's shard map).
struct ShardMap {
  int shards = 1024;
  int databases = 1;
  int ShardOf(std::string_view id) const;
  int DatabaseOfShard(int shard) const {
    return static_cast<int>(static_cast<int64_t>(shard) * databases / shards);
  }
  int DatabaseFor(std::string_view id) const { return DatabaseOfShard(ShardOf(id)); }
};

// OpenRosa's success text, "   √   ".
inline constexpr const char* kSuccessText = "   \xe2\x88\x9a   ";
// An OpenRosa response (receive.cc).
SubmitResponse Respond(int code, std::string nature, std::string message, std::string form_id = "",
                       std::optional<FormState> state = std::nullopt);
inline bool IsV3(const SubmitRequest& r) { return r.openrosa_version == "3.0"; }
// A form's attachments by name (plan.cc), and what case logic needs of a form.
std::map<std::string, const Attachment*> AttachmentMap(const FormRecord& f);
FormContext ContextOf(const FormRecord& f);
// Fault injection for the crash tests: SIGKILL at the n-th pass of a point, n from env var.
void MaybeCrashForTest(const char* var);

class EngineImpl final : public Engine {
 public:
  explicit EngineImpl(EngineOptions o) : opts_(std::move(o)) {}
  ~EngineImpl() override;
  Status OpenStores();

  SubmitResponse Submit(const SubmitRequest& request) override;
  Result<FormRecord> GetForm(std::string_view domain, std::string_view form_id) override;
  Result<std::string> GetFormXml(std::string_view domain, std::string_view form_id) override;
  Result<std::string> GetFormAttachment(std::string_view domain, std::string_view form_id,
                                        std::string_view name) override;
  Status ArchiveForm(std::string_view domain, std::string_view form_id) override;
  Status UnarchiveForm(std::string_view domain, std::string_view form_id) override;
  Result<CaseRecord> GetCase(std::string_view domain, std::string_view case_id) override;
  Status ListCases(const storage::CaseFilter& filter,
                   const std::function<bool(const CaseRecord&)>& fn) override;
  Status ListCaseDocuments(const storage::CaseFilter& filter,
                           const std::function<bool(std::string_view)>& fn) override;
  Result<std::vector<CaseTransaction>> CaseHistory(std::string_view domain,
                                                   std::string_view case_id) override;
  Status RebuildCase(std::string_view domain, std::string_view case_id) override;
  Result<std::vector<LedgerValue>> GetLedger(std::string_view domain,
                                             std::string_view case_id) override;
  Result<CheckReport> Check() override;
  int NumDatabases() const override { return static_cast<int>(dbs_.size()); }
  EngineStats Stats() const override {
    EngineStats s;
    for (const auto& c : committers_) {
      s.commit_groups += static_cast<int64_t>(c->commits());
      s.committed_batches += static_cast<int64_t>(c->batches());
    }
    return s;
  }
  storage::PrimaryStore* Database(int i) override { return dbs_[i].get(); }
  int DatabaseFor(std::string_view id) const override { return map_.DatabaseFor(id); }
  storage::ChangeLog* Changes() override { return log_.get(); }
  const EngineOptions& Options() const override { return opts_; }
  Status RelayChanges() override;

 private:
  // The rows one operation writes, per physical database.
  struct Plan {
    std::map<int, storage::WriteBatch> batches;
    storage::WriteBatch& For(int db) { return batches[db]; }
  };
  // Case locks against other processes writing the store (PrimaryStore::LockKeys): when every
  // row a form writes lives in its home database and `optimistic`, the home commit takes them
  // (no extra round trip; a case changed meanwhile aborts the commit); else they are held now,
  // each key in its case's database, databases in order (a retry takes them so: it cannot lose
  // the same race again).
  struct StoreLocks {
    std::vector<std::unique_ptr<storage::PrimaryStore::KeyLocks>> held;
    std::vector<std::string> in_commit;
    int home = 0;
    void Attach(Plan* plan) {
      if (!in_commit.empty()) plan->For(home).lock_keys = std::move(in_commit);
    }
  };
  Result<StoreLocks> LockAcross(const std::vector<std::string>& case_keys, int home,
                                bool optimistic);
  struct Extracted {
    std::string_view xml;
    std::vector<xform::MultipartPart> attachments;
  };

  SubmitResponse SubmitImpl(const SubmitRequest& req);
  // Plans, writes and answers one parsed form (plan.cc): a short list of the steps below.
  Result<SubmitResponse> ProcessForm(const SubmitRequest& req, std::string_view xml,
                                     const xform::ParsedForm& pf,
                                     const std::vector<xform::MultipartPart>& parts,
                                     int64_t received_on, bool retry);

  // ---- ProcessForm's steps (plan.cc; the previous version and the edit rebuild: plan_edit.cc)
  // What a form is against the stored form with its id (SPEC §3).
  enum class Mode { kNew, kDuplicate, kEdit, kReplaceError };
  // A case the form changes: its new state, the rev it was read at, its transaction bits.
  struct Touched {
    CaseRecord record;
    int64_t expected_rev = 0;
    int tx_type = 0;
    bool in_form = false;  // the form has blocks for it (else an edit's previous version had)
  };
  // One form on its way through ProcessForm: what each step reads and leaves for the next.
  struct FormPlan {
    FormPlan(const SubmitRequest& r, const xform::ParsedForm& f, int64_t t)
        : req(r), pf(f), now(t) {}
    FormPlan(const FormPlan&) = delete;
    FormPlan& operator=(const FormPlan&) = delete;

    const SubmitRequest& req;
    const xform::ParsedForm& pf;
    const int64_t now;
    FormRecord form;  // the record written for this submission
    int home = 0;     // the form's database
    Mode mode = Mode::kNew;
    std::optional<FormRecord> existing;  // the stored form with the same id
    std::optional<FormRecord> moved;     // the previous version: deprecated or moved aside
    std::set<std::string> old_case_ids, old_ledger_cases;  // what an edited version touched
    std::map<std::string, const Attachment*> attachments;  // into form.attachments
    FormContext ctx;
    std::vector<CaseBlocks> groups;  // the form's case blocks, by case
    std::vector<LedgerChange> ledger_changes;
    std::optional<CaseError> error;  // the first known error: the form becomes an ERROR form
    std::set<std::string> case_ids, ledger_cases;   // every case locked (both versions)
    std::map<std::string, Touched> touched;         // the new state of each case written
    std::map<std::string, CaseRecord> ledger_only;  // stored rows of cases only ledgers touch
    Plan plan;                                      // the write set
  };
  // New, duplicate, edit, id clash (a new id) or replacement of an ERROR form.
  Status Classify(FormPlan* p);
  // A duplicate is kept under a new id, nothing else written.
  Result<SubmitResponse> SaveDuplicate(FormPlan* p, std::string_view xml,
                                       const std::vector<xform::MultipartPart>& parts);
  // The previous version (edit or ERROR form) under a new id; what an edited version touched.
  void MovePrevious(FormPlan* p);
  // Groups and validates the case blocks and extracts the ledger changes.
  void GroupBlocks(FormPlan* p);
  // Collects the cases either version touches; their lock keys, in lock order.
  std::vector<std::string> CaseLockKeys(FormPlan* p);
  // Reads every case of the form and applies its blocks (an edit only reads: RebuildCases).
  Status ComputeCases(FormPlan* p);
  // An edit re-derives every case either version touched from its transactions.
  Status RebuildCases(FormPlan* p);
  // Every live index must point at an existing case of the domain.
  Status CheckIndices(FormPlan* p);
  // Ledger cases must exist (or be created by this form).
  Status CheckLedgerCases(FormPlan* p);
  // The form rows: the previous version and the form (ERROR state with the error).
  void WriteForms(FormPlan* p);
  // Each touched case: its transactions, the case row and its change record.
  void WriteCases(FormPlan* p);
  // Ledger-only cases' transactions and every ledger case's recomputed values.
  Status WriteLedgers(FormPlan* p);
  // The OpenRosa answer to a form written.
  static SubmitResponse Answer(const FormPlan& p);
  SubmitResponse SaveErrorLog(const SubmitRequest& req, std::string_view xml,
                              const std::string& problem, int64_t received_on);
  // Writes the plan atomically across databases (intent when it spans several).
  Status CommitPlan(Plan* plan, int home_db);
  Status CommitPlanImpl(Plan* plan, int home_db);
  Status RecoverIntents();
  // The other databases' batches an intent carries, each marked with the intent's id.
  Result<std::vector<std::pair<int, storage::WriteBatch>>> DecodeIntent(
      const storage::Intent& in) const;
  // Deletes the applied markers of intents no longer pending (at open and from the relay thread).
  Status PruneSpentMarkers();
  std::string NewIdInDatabase(int db) const;
  // Puts the form's XML (whose md5 the form already has) and attachments in the blob store (not yet
  // durably) and journals a copy of each in the home database's batch, so the rows' commit makes
  // them durable.
  Status PutBlobs(FormRecord* form, std::string_view xml,
                  const std::vector<xform::MultipartPart>& parts, Plan* plan, int home);
  // Syncs the blob store and releases the journal copies it now covers.
  Status FlushBlobs();
  // After a crash: rewrites journaled blobs the blob store lost, then releases them.
  Status RecoverBlobs();
  void FlushLoop();
  // Re-derives a case from its transactions. override_form_id's content comes from override_pf
  // (nullptr: that form is skipped). Sets *live to whether any transaction applied.
  Result<CaseRecord> Replay(const std::string& case_id, const std::string& domain,
                            std::vector<CaseTransaction> txs, const std::string& override_form_id,
                            const xform::ParsedForm* override_pf, const FormContext& override_ctx,
                            const std::map<std::string, const Attachment*>& override_atts,
                            bool* live);
  // Recomputes a case's ledger with form_id's transactions replaced by form_txs.
  Status UpdateLedger(const std::string& case_id, const std::string& domain,
                      const std::string& form_id, std::vector<LedgerTransaction> form_txs,
                      Plan* plan, int64_t now);
  Result<xform::ParsedForm> LoadParsed(const FormRecord& f);
  // Relays database db's durable outbox rows; *moved counts them.
  Status RelayDatabase(int db, int64_t* moved);
  // Whether this process relays now (the store's relay lease); fences the log on taking over.
  Status LeadRelay(bool* leading);
  int64_t RelayRound(log::FailureStreak* failures);
  void RelayLoop();
  void KickRelay();
  Status SetArchived(std::string_view domain, std::string_view form_id, bool archived);
  void AddFormChange(Plan* plan, int db, const FormRecord& f, int64_t now);
  void AddCaseChange(Plan* plan, int db, const CaseRecord& c, const std::string& form_id,
                     int64_t now);

  EngineOptions opts_;
  ShardMap map_;
  std::vector<std::unique_ptr<storage::PrimaryStore>> dbs_;
  std::vector<std::unique_ptr<GroupCommitter>> committers_;
  std::unique_ptr<storage::BlobStore> blobs_;
  LockTable locks_;
  int lock_fd_ = -1;
  bool journal_blobs_ = false;  // durable engines keep blob copies with the rows until synced
  std::thread flusher_;
  std::mutex flush_mu_;
  std::condition_variable flush_cv_;
  bool stop_flusher_ = false;
  std::vector<int64_t> released_;  // per database: journal seqs released so far
  std::unique_ptr<storage::ChangeLog> log_;
  std::mutex relay_mu_;           // one relay round at a time
  std::vector<int64_t> relayed_;  // per database: the last outbox seq in the change log
  bool relay_leader_ = false;     // held the relay lease last round (under relay_mu_)
  std::thread relayer_;
  std::mutex relay_wait_mu_;
  std::condition_variable relay_cv_;
  bool stop_relay_ = false;
  std::atomic<bool> relay_idle_{false};
};

}  // namespace commcare::processing
