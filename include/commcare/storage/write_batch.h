// WriteBatch: the rows one form (or one maintenance step) writes to one physical database.
#pragma once

#include <string>
#include <variant>
#include <vector>

#include "commcare/records.h"

namespace commcare::storage {

// Insert or replace a form row (keyed by form_id). must_be_new: a form of that id must not
// exist, else the batch is Aborted (two processes receiving one new form: one wins, the other
// redoes its submission and finds the form there).
struct PutForm {
  FormRecord form;
  bool must_be_new = false;
};
// Delete a form row (a form moved to a new id deletes its old key).
struct DeleteForm {
  std::string form_id;
};
// Write a case if its stored rev equals expected_rev (0 = the case must not exist); else Aborted.
struct PutCase {
  CaseRecord record;
  int64_t expected_rev = 0;
};
// Insert or replace a case transaction: keyed by (case_id, form_id) when form_id is set.
// upsert=false promises the (case, form) pair has no transaction yet (a plain insert).
struct PutCaseTransaction {
  CaseTransaction tx;
  bool upsert = true;
};
// Insert or replace a ledger value, keyed by (case_id, section_id, entry_id).
struct PutLedgerValue {
  LedgerValue value;
};
// Replace all of one form's ledger transactions on one case.
struct ReplaceLedgerTransactions {
  std::string form_id;
  std::string case_id;
  std::vector<LedgerTransaction> txs;
};
// Append a change record to the outbox.
struct AddOutbox {
  ChangeMeta meta;
};
// Keep a copy of a blob with the rows until the blob store has it durably (the blob journal).
struct StageBlob {
  std::string key;
  std::string data;
};
// Drop journaled blob copies up to a sequence number (their blobs are durable now).
struct ReleaseBlobs {
  int64_t up_to_seq = 0;
};
// Remove outbox rows up to a sequence number (the relay has appended them to the change log).
struct DeleteOutbox {
  int64_t up_to_seq = 0;
};
// Record a cross-database intent (payload: the serialized batches for the other databases).
struct PutIntent {
  std::string intent_id;
  std::string payload;
};
// Remove an intent once every database has applied its part.
struct DeleteIntent {
  std::string intent_id;
};

using WriteOp = std::variant<PutForm, DeleteForm, PutCase, PutCaseTransaction, PutLedgerValue,
                             ReplaceLedgerTransactions, AddOutbox, DeleteOutbox, StageBlob,
                             ReleaseBlobs, PutIntent, DeleteIntent>;

// Ops applied atomically, in order. If applied_marker is set, the batch is applied at most once:
// the store records the marker with the rows and skips a batch whose marker it already holds.
struct WriteBatch {
  std::vector<WriteOp> ops;
  std::string applied_marker;
  // Keys (the engine's "case:<id>") this batch's commit holds against other processes, taken
  // before any write of the group (PostgreSQL: transaction advisory locks, the same lock
  // space as PrimaryStore::LockKeys on this database). Ignored by stores one process owns.
  std::vector<std::string> lock_keys;
  // Filled in by the store: the outbox sequence numbers assigned to this batch's AddOutbox ops.
  std::vector<int64_t> outbox_seqs;
  // Filled in by PrimaryStore::Prepare (outside the commit's critical section): the store's
  // encoding of each op, e.g. serialized documents. Empty if the store prepares nothing.
  std::vector<std::string> prepared;
  std::string prepared_record;  // likewise: the batch as the store logs it
};

}  // namespace commcare::storage
