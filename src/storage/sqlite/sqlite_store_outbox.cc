// The SQLite store's outbox, intents, journaled blobs (staged, spilled, released) and markers.
#include "storage/sqlite/sqlite_store_impl.h"
#include "util/codec.h"

namespace commcare::storage::sqlite_internal {
namespace {

using util::Bind;
using util::Col;

}  // namespace

Status SqlitePrimaryStore::SpillStagedBlobs() {
  if (staged_.empty()) return Status::Ok();
  CC_RETURN_IF_ERROR(BeginLocked());
  for (const auto& [seq, sb] : staged_) {
    sqlite3_stmt* s =
        writer_.Prep("INSERT OR REPLACE INTO blob_journal(seq, key, data) VALUES(?,?,?)");
    Bind(s, 1, seq);
    Bind(s, 2, sb.key);
    sqlite3_bind_blob(s, 3, sb.data.data(), static_cast<int>(sb.data.size()), SQLITE_STATIC);
    CC_RETURN_IF_ERROR(Step(s, "spilling journaled blobs"));
  }
  staged_.clear();
  return Status::Ok();
}

Result<std::vector<OutboxRow>> SqlitePrimaryStore::ReadOutbox(int64_t after_seq, size_t max) {
  // A pooled reader sees sealed groups only: durable, and visible to every process, so a
  // change is never published before its document can be read back.
  auto r = PooledReader();
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

Result<std::vector<StagedBlob>> SqlitePrimaryStore::ReadStagedBlobs(int64_t after_seq, size_t max) {
  auto r = Reader();
  std::vector<StagedBlob> mem;
  for (auto it = staged_.upper_bound(after_seq); it != staged_.end() && mem.size() < max; ++it)
    mem.push_back(it->second);
  sqlite3_stmt* s =
      r->Prep("SELECT seq, key, data FROM blob_journal WHERE seq>? ORDER BY seq LIMIT ?");
  Bind(s, 1, after_seq);
  Bind(s, 2, static_cast<int64_t>(max));
  std::vector<StagedBlob> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(s, 2));
    out.push_back({sqlite3_column_int64(s, 0), std::string(Col(s, 1)),
                   std::string(p ? p : "", static_cast<size_t>(sqlite3_column_bytes(s, 2)))});
  }
  if (rc != SQLITE_DONE) return r->Err("reading the blob journal");
  // Table rows have lower seqs than the in-memory ones (see StageBlob).
  for (auto& m : mem)
    if (out.size() < max) out.push_back(std::move(m));
  return out;
}

Result<int64_t> SqlitePrimaryStore::MaxStagedBlobSeq() {
  auto r = Reader();
  if (!staged_.empty()) return staged_.rbegin()->first;
  sqlite3_stmt* s = r->Prep("SELECT COALESCE(MAX(seq), 0) FROM blob_journal");
  if (sqlite3_step(s) != SQLITE_ROW) return r->Err("reading the blob journal");
  return static_cast<int64_t>(sqlite3_column_int64(s, 0));
}

Result<std::vector<Intent>> SqlitePrimaryStore::PendingIntents() {
  auto r = Reader();
  sqlite3_stmt* s = r->Prep("SELECT intent_id, payload FROM intents ORDER BY intent_id");
  std::vector<Intent> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW)
    out.push_back({std::string(Col(s, 0)), std::string(Col(s, 1))});
  if (rc != SQLITE_DONE) return r->Err("reading intents");
  return out;
}

Result<std::vector<std::string>> SqlitePrimaryStore::AppliedMarkers() {
  auto r = Reader();
  sqlite3_stmt* s = r->Prep("SELECT marker FROM applied_markers ORDER BY marker");
  std::vector<std::string> out;
  int rc;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) out.emplace_back(Col(s, 0));
  if (rc != SQLITE_DONE) return r->Err("reading applied markers");
  return out;
}

Status SqlitePrimaryStore::DeleteAppliedMarkers(std::span<const std::string> markers) {
  if (markers.empty()) return Status::Ok();
  if (read_only_) return Status::FailedPrecondition("the store is open read-only");
  std::lock_guard<std::recursive_mutex> lock(write_mu_);
  CC_RETURN_IF_ERROR(SealLocked());
  CC_RETURN_IF_ERROR(writer_.Exec("BEGIN IMMEDIATE"));
  for (const auto& m : markers) {
    sqlite3_stmt* s = writer_.Prep("DELETE FROM applied_markers WHERE marker=?");
    Bind(s, 1, m);
    if (sqlite3_step(s) != SQLITE_DONE) {
      Status e = writer_.Err("deleting applied markers");
      (void)writer_.Exec("ROLLBACK");
      return e;
    }
  }
  return writer_.Exec("COMMIT");
}

Status SqlitePrimaryStore::Apply(const AddOutbox& op, WriteBatch* b) {
  sqlite3_stmt* s = writer_.Prep("INSERT INTO outbox(doc_id, meta) VALUES(?,?)");
  Bind(s, 1, op.meta.document_id);
  Bind(s, 2, *doc_);
  CC_RETURN_IF_ERROR(Step(s, "writing an outbox row"));
  b->outbox_seqs.push_back(sqlite3_last_insert_rowid(writer_.db()));
  return Status::Ok();
}

Status SqlitePrimaryStore::Apply(const StageBlob& op, WriteBatch*) {
  if (log_fd_ >= 0) {
    if (next_staged_ == 0) {
      sqlite3_stmt* q = writer_.Prep("SELECT COALESCE(MAX(seq), 0) FROM blob_journal");
      next_staged_ = sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) + 1 : 1;
      sqlite3_reset(q);
    }
    int64_t seq = next_staged_++;
    staged_[seq] = StagedBlob{seq, op.key, op.data};
    return Status::Ok();
  }
  sqlite3_stmt* s = writer_.Prep("INSERT INTO blob_journal(key, data) VALUES(?,?)");
  Bind(s, 1, op.key);
  sqlite3_bind_blob(s, 2, op.data.data(), static_cast<int>(op.data.size()), SQLITE_STATIC);
  return Step(s, "journaling a blob");
}

Status SqlitePrimaryStore::Apply(const DeleteOutbox& op, WriteBatch*) {
  sqlite3_stmt* s = writer_.Prep("DELETE FROM outbox WHERE seq<=?");
  Bind(s, 1, op.up_to_seq);
  return Step(s, "deleting relayed outbox rows");
}

Status SqlitePrimaryStore::Apply(const ReleaseBlobs& op, WriteBatch*) {
  // A replayed release names seqs of the crashed process; the copies staged again during
  // replay have new seqs and stay until the engine has verified and synced their blobs.
  if (!replaying_) staged_.erase(staged_.begin(), staged_.upper_bound(op.up_to_seq));
  sqlite3_stmt* s = writer_.Prep("DELETE FROM blob_journal WHERE seq<=?");
  Bind(s, 1, op.up_to_seq);
  return Step(s, "releasing journaled blobs");
}

Status SqlitePrimaryStore::Apply(const PutIntent& op, WriteBatch*) {
  sqlite3_stmt* s = writer_.Prep("INSERT OR REPLACE INTO intents(intent_id, payload) VALUES(?,?)");
  Bind(s, 1, op.intent_id);
  Bind(s, 2, op.payload);
  return Step(s, "writing an intent");
}

Status SqlitePrimaryStore::Apply(const DeleteIntent& op, WriteBatch*) {
  sqlite3_stmt* s = writer_.Prep("DELETE FROM intents WHERE intent_id=?");
  Bind(s, 1, op.intent_id);
  return Step(s, "deleting an intent");
}

}  // namespace commcare::storage::sqlite_internal
