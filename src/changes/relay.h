// The relay: moves a store's outbox of change records to the change log, exactly once and in
// order. Shared by the engine (one outbox per primary database) and the MetaStore.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "commcare/status.h"
#include "commcare/storage/change_log.h"

namespace commcare::changes {

// A store's queue of change records waiting for the change log (a transactional outbox: rows
// are written in the same transaction as the documents they describe).
class Outbox {
 public:
  struct Row {
    int64_t seq = 0;  // increasing in commit order
    storage::ChangeMessage message;
  };
  virtual ~Outbox() = default;
  // Rows with seq > after in seq order, at most limit.
  virtual Result<std::vector<Row>> Read(int64_t after, size_t limit) = 0;
  // Makes every row read so far durable before it is appended (SQLite without per-commit
  // sync; a no-op where commits are durable).
  virtual Status Sync() { return Status::Ok(); }
  // Deletes the rows with seq <= through.
  virtual Status Dequeue(int64_t through) = 0;
};

// Moves one batch (at most limit rows) from outbox to log under the producer mark `producer`.
// *mark is the last seq known to be in the log; -1 reads it from the log first and dequeues
// what a relay that crashed between its append and its dequeue left behind, so no row is
// appended twice and a document's changes keep their order. *moved gets the rows appended.
Status RelayBatch(Outbox* outbox, storage::ChangeLog* log, const std::string& producer,
                  size_t limit, int64_t* mark, int64_t* moved);

}  // namespace commcare::changes
