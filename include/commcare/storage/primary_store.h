// PrimaryStore: one physical database of the sharded primary SQL store.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/records.h"
#include "commcare/status.h"
#include "commcare/storage/write_batch.h"

namespace commcare::storage {

// Filters for scanning cases; empty strings and unset optionals match everything.
struct CaseFilter {
  std::string domain;
  std::string type;
  std::string owner_id;
  std::optional<bool> closed;
  bool include_deleted = false;
};

// A pending cross-database intent (see WriteBatch, PutIntent).
struct Intent {
  std::string intent_id;
  std::string payload;
};

// A blob copy kept in the blob journal (see StageBlob).
struct StagedBlob {
  int64_t seq = 0;
  std::string key;
  std::string data;
};

// A case's place in the case graph, as mobile sync reads it.
struct CaseNode {
  std::string case_id;
  bool closed = false;
  bool deleted = false;
  bool has_indices = false;  // the case indexes other cases
};

// One index of a case: case_id --index.identifier--> index.referenced_id.
struct CaseIndexEdge {
  std::string case_id;
  CaseIndex index;
};

// One physical database: forms, cases, case transactions, ledgers, outbox and intents.
// Thread safety: every method may be called from any thread; CommitGroup calls are serialized
// by the caller (the engine's group committer), reads run beside them.
// NotFound rule: getters return an empty optional for a missing row, never NotFound.
class PrimaryStore {
 public:
  virtual ~PrimaryStore() = default;
  PrimaryStore() = default;
  PrimaryStore(const PrimaryStore&) = delete;
  PrimaryStore& operator=(const PrimaryStore&) = delete;

  // Does the batch's encoding work ahead of CommitGroup, on the caller's thread, so that the
  // group commit's critical section is short. Optional; thread-safe.
  virtual void Prepare(WriteBatch* /*batch*/) {}

  // Applies each batch atomically and all of them in one commit, durable once a Sync() that
  // started after it returns. (*results)[i] is the outcome of batches[i]: Ok, or Aborted (a
  // PutCase rev check failed; nothing of that batch is written). A non-ok return means nothing
  // was committed.
  virtual Status CommitGroup(std::span<WriteBatch* const> batches,
                             std::vector<Status>* results) = 0;
  // Makes every commit that returned before this call durable. Thread-safe; may run beside the
  // next CommitGroup, which is what lets group commits overlap their disk flushes.
  virtual Status Sync() = 0;
  // Makes every applied commit durable and visible to readers in other processes (a store
  // that applies commits in a longer transaction commits it now).
  virtual Status Flush() { return Sync(); }

  // The form row with this id, if any.
  virtual Result<std::optional<FormRecord>> GetForm(std::string_view form_id) = 0;
  // The case row (with indices and attachments), if any.
  virtual Result<std::optional<CaseRecord>> GetCase(std::string_view case_id) = 0;
  // The case's transactions in insertion order.
  virtual Result<std::vector<CaseTransaction>> GetCaseTransactions(std::string_view case_id) = 0;
  // The case's ledger values, ordered by section and entry.
  virtual Result<std::vector<LedgerValue>> GetLedgerValues(std::string_view case_id) = 0;
  // The case's ledger transactions in (report_date, form, seq) order.
  virtual Result<std::vector<LedgerTransaction>> GetLedgerTransactions(
      std::string_view case_id) = 0;

  // Calls fn for each matching case (ordered by case_id) until it returns false. The default
  // decodes what ScanCaseDocs passes.
  virtual Status ScanCases(const CaseFilter& filter,
                           const std::function<bool(const CaseRecord&)>& fn);
  // Like ScanCases, with each case's stored JSON document (the codec's case encoding), valid
  // while fn runs (exports read their columns straight from it). The default encodes ScanCases'.
  virtual Status ScanCaseDocs(const CaseFilter& filter,
                              const std::function<bool(std::string_view doc)>& fn);
  // Many cases, or their ledger values, at once (one read snapshot where the store can; ids
  // absent here are skipped). The defaults call GetCase / GetLedgerValues per id.
  virtual Result<std::vector<CaseRecord>> GetCases(std::span<const std::string> case_ids);
  virtual Result<std::vector<LedgerValue>> GetLedgerValuesOf(std::span<const std::string> case_ids);
  // The stored JSON document of each of these cases (the codec's case encoding), in order,
  // absent ids skipped, each passed to fn while the read lasts (mobile sync formats straight
  // from it). The default encodes what GetCases returns.
  virtual Status ReadCaseDocs(std::span<const std::string> case_ids,
                              const std::function<Status(std::string_view doc)>& fn);

  // Locks on keys (the engine's "case:<id>") held across processes until the returned object
  // is destroyed: where several processes write the store (PostgreSQL: advisory locks on a
  // connection of their own), a form's reads, plan and commit across databases then meet no
  // concurrent change. Stores one process owns return null (the engine's own locks suffice).
  class KeyLocks {
   public:
    virtual ~KeyLocks() = default;
  };
  virtual Result<std::unique_ptr<KeyLocks>> LockKeys(std::span<const std::string> keys) {
    (void)keys;
    return std::unique_ptr<KeyLocks>();
  }

  // Whether this process may relay the outbox now. Where several processes write the store
  // (PostgreSQL), one holds the lease at a time until it exits or loses its connection; a
  // store only one process can write answers true.
  virtual Result<bool> HoldRelayLease() { return true; }

  // Mobile sync's reads (cheap, from indexes; ids absent here are skipped):
  // the domain's open, undeleted cases owned by owner_id;
  virtual Result<std::vector<CaseNode>> OpenCasesByOwner(std::string_view domain,
                                                         std::string_view owner_id) = 0;
  // the graph state of these cases;
  virtual Result<std::vector<CaseNode>> CaseNodes(std::span<const std::string> case_ids) = 0;
  // the indices these cases hold;
  virtual Result<std::vector<CaseIndexEdge>> IndicesOf(std::span<const std::string> case_ids) = 0;
  // the extension indices that point at these cases;
  virtual Result<std::vector<CaseIndexEdge>> ExtensionsOf(
      std::span<const std::string> case_ids) = 0;
  // every index (child or extension) held in this database that points at these cases, ordered
  // by the pointing case's id (UCR's get_subcases: HQ's get_reverse_indexed_cases);
  virtual Result<std::vector<CaseIndexEdge>> IndicesPointingAt(
      std::span<const std::string> case_ids) = 0;
  // the ids of the domain's cases the server changed at or after `since` (µs).
  virtual Result<std::vector<std::string>> CasesModifiedSince(std::string_view domain,
                                                              int64_t since) = 0;

  // Calls fn for each form row (ordered by form_id) until it returns false.
  virtual Status ScanForms(const std::function<bool(const FormRecord&)>& fn) = 0;
  // Up to max outbox rows with seq > after_seq, in seq order; only rows that are durable and
  // visible to other processes (what the relay may publish).
  virtual Result<std::vector<OutboxRow>> ReadOutbox(int64_t after_seq, size_t max) = 0;
  // Up to max journaled blobs with seq > after_seq, in seq order.
  virtual Result<std::vector<StagedBlob>> ReadStagedBlobs(int64_t after_seq, size_t max) = 0;
  // The highest journaled blob seq (0 if the journal is empty).
  virtual Result<int64_t> MaxStagedBlobSeq() = 0;
  // Intents written and not yet deleted.
  virtual Result<std::vector<Intent>> PendingIntents() = 0;
  // Every applied marker this database holds (cross-database batches already applied here).
  virtual Result<std::vector<std::string>> AppliedMarkers() = 0;
  // Removes these applied markers (those of intents since deleted; absent ones are ignored).
  virtual Status DeleteAppliedMarkers(std::span<const std::string> markers) = 0;

 protected:
  // GetCases for a store that overrides ReadCaseDocs: its documents, decoded.
  Result<std::vector<CaseRecord>> DecodeCaseDocs(std::span<const std::string> case_ids);
};

// An in-memory PrimaryStore (tests, embedding without persistence).
std::unique_ptr<PrimaryStore> NewMemoryPrimaryStore();

// A PrimaryStore on one SQLite file in WAL mode. durable=true: every commit is fsynced.
Result<std::unique_ptr<PrimaryStore>> OpenSqlitePrimaryStore(const std::string& path, bool durable,
                                                             bool read_only);
// A PrimaryStore on one PostgreSQL database (libpq connection string, e.g. "host=127.0.0.1
// port=5432 dbname=shard0 user=commcare"). Applies its versioned schema on open (safe to run
// twice, and from several processes). Commits are durable when they return. Case revision
// checks lock the case's row, so processes sharing the database never lose an update (the later
// writer gets Aborted and retries). Unavailable when the server cannot be reached.
Result<std::unique_ptr<PrimaryStore>> OpenPostgresPrimaryStore(const std::string& dsn);

}  // namespace commcare::storage
