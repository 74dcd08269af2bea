// In-memory PrimaryStore and BlobStore: the same contracts as the durable ones, nothing on disk.
#include <fmt/format.h>

#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <tuple>

#include "commcare/storage/blob_store.h"
#include "commcare/storage/primary_store.h"
#include "util/time.h"

namespace commcare::storage {
namespace {

struct Tables {
  std::map<std::string, FormRecord, std::less<>> forms;
  std::map<std::string, CaseRecord, std::less<>> cases;
  std::map<std::string, int64_t, std::less<>> case_written;  // server clock of the last write
  std::map<std::string, std::vector<CaseTransaction>, std::less<>> case_txs;
  std::map<std::tuple<std::string, std::string, std::string>, LedgerValue> ledger_values;
  std::map<std::tuple<std::string, std::string, int64_t>, LedgerTransaction> ledger_txs;
  std::map<int64_t, OutboxRow> outbox;
  int64_t next_outbox = 1;
  std::map<std::string, std::string> intents;
  std::map<int64_t, StagedBlob> staged;
  int64_t next_staged = 1;
  std::set<std::string> markers;
};

class MemoryPrimaryStore final : public PrimaryStore {
  static CaseNode Node(const CaseRecord& c) {
    return {c.case_id, c.closed, c.deleted, !c.indices.empty()};
  }

 public:
  Status CommitGroup(std::span<WriteBatch* const> batches, std::vector<Status>* results) override {
    std::unique_lock lock(mu_);
    results->assign(batches.size(), Status::Ok());
    for (size_t i = 0; i < batches.size(); ++i) {
      // The only op that can fail is a PutCase rev check: check them all before applying any.
      Status s = CheckRevs(*batches[i]);
      if (s.ok()) s = ApplyBatch(batches[i]);
      if (!s.ok()) {
        batches[i]->outbox_seqs.clear();
        (*results)[i] = s;
      }
    }
    return Status::Ok();
  }

  Status Sync() override { return Status::Ok(); }

  Result<std::optional<FormRecord>> GetForm(std::string_view id) override {
    std::shared_lock lock(mu_);
    auto it = t_.forms.find(id);
    if (it == t_.forms.end()) return std::optional<FormRecord>();
    return std::optional<FormRecord>(it->second);
  }
  Result<std::optional<CaseRecord>> GetCase(std::string_view id) override {
    std::shared_lock lock(mu_);
    auto it = t_.cases.find(id);
    if (it == t_.cases.end()) return std::optional<CaseRecord>();
    return std::optional<CaseRecord>(it->second);
  }
  Result<std::vector<CaseTransaction>> GetCaseTransactions(std::string_view id) override {
    std::shared_lock lock(mu_);
    auto it = t_.case_txs.find(id);
    if (it == t_.case_txs.end()) return std::vector<CaseTransaction>();
    return it->second;
  }
  Result<std::vector<LedgerValue>> GetLedgerValues(std::string_view id) override {
    std::shared_lock lock(mu_);
    std::vector<LedgerValue> out;
    for (const auto& [k, v] : t_.ledger_values)
      if (std::get<0>(k) == id) out.push_back(v);
    return out;
  }
  Result<std::vector<LedgerTransaction>> GetLedgerTransactions(std::string_view id) override {
    std::shared_lock lock(mu_);
    std::vector<LedgerTransaction> out;
    for (const auto& [k, v] : t_.ledger_txs)
      if (std::get<0>(k) == id) out.push_back(v);
    std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      return std::tie(a.report_date, a.form_id, a.seq) < std::tie(b.report_date, b.form_id, b.seq);
    });
    return out;
  }
  Status ScanCases(const CaseFilter& f, const std::function<bool(const CaseRecord&)>& fn) override {
    std::vector<CaseRecord> hits;
    {
      std::shared_lock lock(mu_);
      for (const auto& [id, c] : t_.cases) {
        if (!f.domain.empty() && c.domain != f.domain) continue;
        if (!f.type.empty() && c.type != f.type) continue;
        if (!f.owner_id.empty() && c.owner_id != f.owner_id) continue;
        if (f.closed && c.closed != *f.closed) continue;
        if (!f.include_deleted && c.deleted) continue;
        hits.push_back(c);
      }
    }
    for (const auto& c : hits)
      if (!fn(c)) break;
    return Status::Ok();
  }
  Result<std::vector<CaseNode>> OpenCasesByOwner(std::string_view domain,
                                                 std::string_view owner_id) override {
    std::shared_lock lock(mu_);
    std::vector<CaseNode> out;
    for (const auto& [id, c] : t_.cases)
      if (c.domain == domain && c.owner_id == owner_id && !c.closed && !c.deleted)
        out.push_back(Node(c));
    return out;
  }
  Result<std::vector<CaseNode>> CaseNodes(std::span<const std::string> ids) override {
    std::shared_lock lock(mu_);
    std::vector<CaseNode> out;
    for (const auto& id : ids)
      if (auto it = t_.cases.find(id); it != t_.cases.end()) out.push_back(Node(it->second));
    return out;
  }
  Result<std::vector<CaseIndexEdge>> IndicesOf(std::span<const std::string> ids) override {
    std::shared_lock lock(mu_);
    std::vector<CaseIndexEdge> out;
    for (const auto& id : ids)
      if (auto it = t_.cases.find(id); it != t_.cases.end())
        for (const auto& ix : it->second.indices) out.push_back({id, ix});
    return out;
  }
  Result<std::vector<CaseIndexEdge>> ExtensionsOf(std::span<const std::string> ids) override {
    std::shared_lock lock(mu_);
    std::set<std::string_view> wanted(ids.begin(), ids.end());
    std::vector<CaseIndexEdge> out;
    for (const auto& [id, c] : t_.cases)
      for (const auto& ix : c.indices)
        if (ix.relationship == "extension" && wanted.count(ix.referenced_id))
          out.push_back({id, ix});
    return out;
  }
  Result<std::vector<CaseIndexEdge>> IndicesPointingAt(std::span<const std::string> ids) override {
    std::shared_lock lock(mu_);
    std::set<std::string_view> wanted(ids.begin(), ids.end());
    std::vector<CaseIndexEdge> out;
    for (const auto& [id, c] : t_.cases)  // an ordered map: by the pointing case's id
      for (const auto& ix : c.indices)
        if (wanted.count(ix.referenced_id)) out.push_back({id, ix});
    return out;
  }
  Result<std::vector<std::string>> CasesModifiedSince(std::string_view domain,
                                                      int64_t since) override {
    std::shared_lock lock(mu_);
    std::vector<std::string> out;
    for (const auto& [id, c] : t_.cases)
      if (c.domain == domain && t_.case_written.at(id) >= since) out.push_back(id);
    return out;
  }
  Status ScanForms(const std::function<bool(const FormRecord&)>& fn) override {
    std::vector<FormRecord> all;
    {
      std::shared_lock lock(mu_);
      for (const auto& [id, f] : t_.forms) all.push_back(f);
    }
    for (const auto& f : all)
      if (!fn(f)) break;
    return Status::Ok();
  }
  Result<std::vector<OutboxRow>> ReadOutbox(int64_t after, size_t max) override {
    std::shared_lock lock(mu_);
    std::vector<OutboxRow> out;
    for (auto it = t_.outbox.upper_bound(after); it != t_.outbox.end() && out.size() < max; ++it)
      out.push_back(it->second);
    return out;
  }
  Result<std::vector<StagedBlob>> ReadStagedBlobs(int64_t after, size_t max) override {
    std::shared_lock lock(mu_);
    std::vector<StagedBlob> out;
    for (auto it = t_.staged.upper_bound(after); it != t_.staged.end() && out.size() < max; ++it)
      out.push_back(it->second);
    return out;
  }
  Result<int64_t> MaxStagedBlobSeq() override {
    std::shared_lock lock(mu_);
    return t_.staged.empty() ? int64_t{0} : t_.staged.rbegin()->first;
  }
  Result<std::vector<Intent>> PendingIntents() override {
    std::shared_lock lock(mu_);
    std::vector<Intent> out;
    for (const auto& [k, v] : t_.intents) out.push_back({k, v});
    return out;
  }
  Result<std::vector<std::string>> AppliedMarkers() override {
    std::shared_lock lock(mu_);
    return std::vector<std::string>(t_.markers.begin(), t_.markers.end());
  }
  Status DeleteAppliedMarkers(std::span<const std::string> markers) override {
    std::unique_lock lock(mu_);
    for (const auto& m : markers) t_.markers.erase(m);
    return Status::Ok();
  }

 private:
  Status CheckRevs(const WriteBatch& b) {
    if (!b.applied_marker.empty() && t_.markers.count(b.applied_marker)) return Status::Ok();
    std::map<std::string, int64_t> pending;  // revs written by earlier ops of this batch
    for (const auto& op : b.ops) {
      if (const auto* pf = std::get_if<PutForm>(&op);
          pf && pf->must_be_new && t_.forms.count(pf->form.form_id))
        return Status::Aborted(fmt::format("form '{}' was stored concurrently", pf->form.form_id));
      const auto* pc = std::get_if<PutCase>(&op);
      if (!pc) continue;
      auto pit = pending.find(pc->record.case_id);
      int64_t current;
      if (pit != pending.end()) {
        current = pit->second;
      } else {
        auto it = t_.cases.find(pc->record.case_id);
        current = it == t_.cases.end() ? 0 : it->second.rev;
      }
      if (current != pc->expected_rev)
        return Status::Aborted(fmt::format("case '{}' changed concurrently (rev {} != expected {})",
                                           pc->record.case_id, current, pc->expected_rev));
      pending[pc->record.case_id] = pc->record.rev;
    }
    return Status::Ok();
  }
  Status ApplyBatch(WriteBatch* b) {
    b->outbox_seqs.clear();
    if (!b->applied_marker.empty() && !t_.markers.insert(b->applied_marker).second)
      return Status::Ok();
    for (const auto& op : b->ops)
      CC_RETURN_IF_ERROR(std::visit([&](const auto& o) { return Apply(o, b); }, op));
    return Status::Ok();
  }
  Status Apply(const PutForm& op, WriteBatch*) {
    t_.forms[op.form.form_id] = op.form;
    return Status::Ok();
  }
  Status Apply(const DeleteForm& op, WriteBatch*) {
    t_.forms.erase(op.form_id);
    return Status::Ok();
  }
  Status Apply(const PutCase& op, WriteBatch*) {
    t_.cases[op.record.case_id] = op.record;  // revs were checked by CheckRevs
    t_.case_written[op.record.case_id] = util::NowMicros();
    return Status::Ok();
  }
  Status Apply(const PutCaseTransaction& op, WriteBatch*) {
    auto& v = t_.case_txs[op.tx.case_id];
    if (!op.tx.form_id.empty())
      for (auto& t : v)
        if (t.form_id == op.tx.form_id) {
          int64_t seq = t.seq;
          t = op.tx;
          t.seq = seq;
          return Status::Ok();
        }
    CaseTransaction t = op.tx;
    t.seq = v.empty() ? 1 : v.back().seq + 1;
    v.push_back(std::move(t));
    return Status::Ok();
  }
  Status Apply(const PutLedgerValue& op, WriteBatch*) {
    t_.ledger_values[{op.value.case_id, op.value.section_id, op.value.entry_id}] = op.value;
    return Status::Ok();
  }
  Status Apply(const ReplaceLedgerTransactions& op, WriteBatch*) {
    std::erase_if(t_.ledger_txs, [&](const auto& kv) {
      return kv.second.case_id == op.case_id && kv.second.form_id == op.form_id;
    });
    for (const auto& t : op.txs) t_.ledger_txs[{t.case_id, t.form_id, t.seq}] = t;
    return Status::Ok();
  }
  Status Apply(const AddOutbox& op, WriteBatch* b) {
    int64_t seq = t_.next_outbox++;
    t_.outbox[seq] = OutboxRow{seq, op.meta};
    b->outbox_seqs.push_back(seq);
    return Status::Ok();
  }
  Status Apply(const StageBlob& op, WriteBatch*) {
    int64_t seq = t_.next_staged++;
    t_.staged[seq] = StagedBlob{seq, op.key, op.data};
    return Status::Ok();
  }
  Status Apply(const DeleteOutbox& op, WriteBatch*) {
    t_.outbox.erase(t_.outbox.begin(), t_.outbox.upper_bound(op.up_to_seq));
    return Status::Ok();
  }
  Status Apply(const ReleaseBlobs& op, WriteBatch*) {
    t_.staged.erase(t_.staged.begin(), t_.staged.upper_bound(op.up_to_seq));
    return Status::Ok();
  }
  Status Apply(const PutIntent& op, WriteBatch*) {
    t_.intents[op.intent_id] = op.payload;
    return Status::Ok();
  }
  Status Apply(const DeleteIntent& op, WriteBatch*) {
    t_.intents.erase(op.intent_id);
    return Status::Ok();
  }

  std::shared_mutex mu_;
  Tables t_;
};

class MemoryBlobStore final : public BlobStore {
 public:
  Result<std::string> Put(std::string_view key, std::string_view data, bool) override {
    std::lock_guard l(mu_);
    blobs_[std::string(key)] = std::string(data);
    return std::string(key);
  }
  Result<std::string> Get(std::string_view key) override {
    std::lock_guard l(mu_);
    auto it = blobs_.find(key);
    if (it == blobs_.end()) return Status::NotFound(fmt::format("no blob '{}'", key));
    return it->second;
  }
  Status Delete(std::string_view key) override {
    std::lock_guard l(mu_);
    blobs_.erase(std::string(key));
    return Status::Ok();
  }
  Result<bool> Exists(std::string_view key) override {
    std::lock_guard l(mu_);
    return blobs_.find(key) != blobs_.end();
  }
  Status Sync() override { return Status::Ok(); }
  Status Restore(std::string_view key, std::string_view data) override {
    return Put(key, data, true).status();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string, std::less<>> blobs_;
};

}  // namespace

std::unique_ptr<PrimaryStore> NewMemoryPrimaryStore() {
  return std::make_unique<MemoryPrimaryStore>();
}
std::unique_ptr<BlobStore> NewMemoryBlobStore() { return std::make_unique<MemoryBlobStore>(); }

}  // namespace commcare::storage
