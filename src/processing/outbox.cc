// The submit path, step 4 (change outbox): a change record per changed document, written with
// the rows; the relay moves them to the change log (changes/relay.h) in the background.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "changes/relay.h"
#include "log/streak.h"
#include "processing/engine_impl.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::processing {
namespace {

std::string FormDocType(FormState s) {
  switch (s) {
    case FormState::kNormal:
      return "XFormInstance";
    case FormState::kArchived:
      return "XFormArchived";
    case FormState::kDeprecated:
      return "XFormDeprecated";
    case FormState::kDuplicate:
      return "XFormDuplicate";
    case FormState::kError:
      return "XFormError";
    case FormState::kSubmissionErrorLog:
      return "SubmissionErrorLog";
  }
  return "XFormInstance";
}

}  // namespace

void EngineImpl::AddFormChange(Plan* plan, int db, const FormRecord& f, int64_t now) {
  ChangeMeta m;
  m.topic = "form-sql";
  m.document_id = f.form_id;
  m.data_source_name = "form-sql";
  m.document_type = FormDocType(f.state);
  m.document_subtype = f.xmlns;
  m.domain = f.domain;
  m.publish_timestamp = now;
  plan->For(db).ops.emplace_back(storage::AddOutbox{std::move(m)});
}

void EngineImpl::AddCaseChange(Plan* plan, int db, const CaseRecord& c, const std::string& form_id,
                               int64_t now) {
  ChangeMeta m;
  m.topic = "case-sql";
  m.document_id = c.case_id;
  m.data_source_name = "case-sql";
  m.document_type = c.deleted ? "CommCareCase-Deleted" : "CommCareCase";
  m.document_subtype = c.type;
  m.domain = c.domain;
  m.is_deletion = c.deleted;
  m.publish_timestamp = now;
  m.associated_document_id = form_id;
  plan->For(db).ops.emplace_back(storage::AddOutbox{std::move(m)});
}

// ---- the relay ----
// Outbox rows are read, made durable (a Sync after the read covers every row it saw), appended
// to the change log together with the relay's mark (the last seq appended) and then deleted.
// After a crash between the append and the delete, the mark says which rows are in the log
// already, so none is appended twice and a document's changes keep their order.
// Several processes may write one store (PostgreSQL): one of them relays, the holder of the
// store's relay lease; a process taking the lease over fences the previous holder out of the
// change log before it reads the marks.

Status EngineImpl::LeadRelay(bool* leading) {
  auto held = dbs_[0]->HoldRelayLease();
  if (!held.ok()) {  // the lease may be lost: fence and read the marks again when it is back
    relay_leader_ = *leading = false;
    return held.status();
  }
  *leading = *held;
  if (*leading && !relay_leader_) {
    CC_RETURN_IF_ERROR(log_->FenceOtherWriters());
    relayed_.assign(dbs_.size(), -1);  // the marks are read again
  }
  relay_leader_ = *leading;
  return Status::Ok();
}

Status EngineImpl::RelayChanges() {
  if (!log_ || opts_.read_only) return Status::Ok();
  std::lock_guard l(relay_mu_);
  bool leading = false;
  CC_RETURN_IF_ERROR(LeadRelay(&leading));
  if (!leading)
    return Status::FailedPrecondition("another process holds the relay lease of this store");
  for (int i = 0; i < static_cast<int>(dbs_.size()); ++i) {
    CC_RETURN_IF_ERROR(dbs_[i]->Flush());  // everything committed so far becomes relayable
    int64_t moved = 0;
    do {
      CC_RETURN_IF_ERROR(RelayDatabase(i, &moved));
    } while (moved > 0);
  }
  return Status::Ok();
}

// One primary database's outbox (PrimaryStore::ReadOutbox), as the relay reads it.
class DatabaseOutbox final : public changes::Outbox {
 public:
  DatabaseOutbox(storage::PrimaryStore* db, GroupCommitter* committer)
      : db_(db), committer_(committer) {}
  Result<std::vector<Row>> Read(int64_t after, size_t limit) override {
    CC_ASSIGN_OR_RETURN(auto rows, db_->ReadOutbox(after, limit));
    std::vector<Row> out;
    out.reserve(rows.size());
    for (const auto& r : rows)
      out.push_back({r.seq, {r.meta.topic, r.meta.document_id, ChangeMetaToJson(r.meta)}});
    return out;
  }
  Status Sync() override { return db_->Sync(); }
  Status Dequeue(int64_t through) override {
    storage::WriteBatch b;
    b.ops.emplace_back(storage::DeleteOutbox{through});
    return committer_->Commit(&b);
  }

 private:
  storage::PrimaryStore* db_;
  GroupCommitter* committer_;
};

Status EngineImpl::RelayDatabase(int db, int64_t* moved) {
  // Up to 20,000 rows per append: a Kafka transaction costs ~50 ms however small it is
  // (5,000-row batches relayed 41k rows/s to the mock cluster, 20,000-row ones 65k/s).
  constexpr size_t kRelayBatch = 20000;
  DatabaseOutbox outbox(dbs_[db].get(), committers_[db].get());
  return changes::RelayBatch(&outbox, log_.get(),
                             fmt::format("{}{}", storage::kRelayMarkPrefix, db), kRelayBatch,
                             &relayed_[db], moved);
}

// Relays one round; the number of changes moved (0 when another process relays or it failed:
// the failure is logged once per streak and the round retried).
int64_t EngineImpl::RelayRound(log::FailureStreak* failures) {
  std::lock_guard rl(relay_mu_);
  bool leading = false;
  if (Status s = LeadRelay(&leading); !s.ok()) {
    failures->Failed(s, "taking the relay lease", "retrying every 200 ms");
    return 0;
  }
  if (!leading) return 0;  // another process relays this store
  int64_t total = 0;
  for (int i = 0; i < static_cast<int>(dbs_.size()); ++i) {
    int64_t moved = 0;
    if (Status s = RelayDatabase(i, &moved); !s.ok()) {
      failures->Failed(s, fmt::format("relaying database {}'s changes to the change log", i),
                       "changes stay in the outbox; retrying every 200 ms");
      return total;
    }
    total += moved;
  }
  failures->Succeeded();
  return total;
}

namespace {
constexpr auto kMarkerPruneEvery = std::chrono::minutes(10);
}  // namespace

void EngineImpl::RelayLoop() {
  const auto window = std::chrono::milliseconds(std::max(1, opts_.relay_batch_window_ms));
  log::FailureStreak relay_failures("relay"), retention_failures("change-retention"),
      prune_failures("marker-prune");
  bool busy = false;
  auto next_retention = std::chrono::steady_clock::now();
  auto next_prune = next_retention + kMarkerPruneEvery;
  std::unique_lock l(relay_wait_mu_);
  while (!stop_relay_) {
    if (busy) {
      relay_cv_.wait_for(l, window, [&] { return stop_relay_; });
    } else {
      relay_idle_.store(true);
      relay_cv_.wait_for(l, std::chrono::milliseconds(200), [&] { return stop_relay_; });
      relay_idle_.store(false);
    }
    if (stop_relay_) break;
    l.unlock();
    busy = RelayRound(&relay_failures) > 0;
    if (opts_.change_retention_hours > 0 && std::chrono::steady_clock::now() >= next_retention) {
      storage::RetentionPolicy keep;
      keep.max_age_us = int64_t{opts_.change_retention_hours} * 3'600'000'000;
      if (Status s = log_->ApplyRetention(keep).status(); !s.ok())
        retention_failures.Failed(s, "dropping old change records", "retrying in an hour");
      else
        retention_failures.Succeeded();
      next_retention = std::chrono::steady_clock::now() + std::chrono::hours(1);
    }
    // Each cross-database batch leaves a marker; those of finished intents go now and then.
    if (dbs_.size() > 1 && std::chrono::steady_clock::now() >= next_prune) {
      if (Status s = PruneSpentMarkers(); !s.ok())
        prune_failures.Failed(s, "deleting spent applied markers", "retrying in ten minutes");
      else
        prune_failures.Succeeded();
      next_prune = std::chrono::steady_clock::now() + kMarkerPruneEvery;
    }
    l.lock();
  }
}

// Wakes an idle relay after a commit (a busy one is already on its way round).
void EngineImpl::KickRelay() {
  if (relay_idle_.load(std::memory_order_relaxed)) relay_cv_.notify_one();
}

}  // namespace commcare::processing
