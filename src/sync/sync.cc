// Mobile sync's restores (Sync): tokens, the changes since one, the payload in batches, a cache.
//
// Sync logs live in their own database (sync_log_store.cc; CommCare keeps them in a separate
// database too); livequery's walk is in sync_livequery.cc, the payload's blocks in
// sync_payload.cc.
//
// Which cases a phone holds (the rules of CommCare's livequery, re-derived here):
//   - a case is available if it is open and not an extension, or an open extension of an
//     available case; a case is live if it is owned (by one of the user's owner ids) and
//     available;
//   - the parents and hosts of live cases are live (closed or not), and so are the open
//     extensions of live cases; deleted cases break every chain.
// A first sync sends every live case. An incremental sync sends the live cases the phone
// lacks, plus the cases it holds that changed since its token by another token's forms; the
// phone's own forms (their transactions carry its token) are applied to the token's case list
// instead of being echoed back, which is also what its state hash covers.
#include "commcare/sync.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <span>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "sync/sync_internal.h"
#include "util/hash.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare {
namespace {

namespace json = boost::json;
using util::AppendXmlElement;
using util::AppendXmlEscaped;

using sync_internal::BalanceBlocks;
using sync_internal::CaseBlock;
using sync_internal::CaseDoc;
using sync_internal::CaseDocParser;
using sync_internal::LiveQuery;
using sync_internal::Minus;
using sync_internal::Out;
using sync_internal::PerDatabase;

// The elements at the top level of an XML fragment our writers made (text is escaped, so every
// '<' starts a tag; no comments or CDATA).
int64_t CountTopLevelElements(std::string_view xml) {
  int64_t n = 0, depth = 0;
  for (size_t p = xml.find('<'); p != std::string_view::npos; p = xml.find('<', p + 1)) {
    if (p + 1 < xml.size() && xml[p + 1] == '/') {
      --depth;
      continue;
    }
    if (depth == 0) ++n;
    const size_t end = xml.find('>', p);
    if (end == std::string_view::npos) break;
    if (xml[end - 1] != '/') ++depth;
  }
  return n;
}
using sync_internal::SyncLogStore;

// XOR of md5(case_id), kept as 16 bytes so a footprint's hash can be updated per case. An
// empty footprint's hash is "ccsh:", as HQ's Checksum([]).hexdigest() == '' (casexml
// phone/checksum.py) and commcare-core's CaseDBUtils.computeCaseDbHash with no case
// (CaseDBUtils.java:13-32): a phone that holds no case sends state=ccsh:.
struct Hash {
  uint8_t b[16] = {};
  void Flip(std::string_view id) {
    uint8_t d[16];
    util::Md5Raw(id, d);
    for (int i = 0; i < 16; ++i) b[i] ^= d[i];
  }
  bool Empty() const {
    for (uint8_t x : b)
      if (x) return false;
    return true;
  }
  // Parses "ccsh:" or "ccsh:<32 hex>" (false if it is neither).
  bool Parse(std::string_view t) {
    if (t.substr(0, 5) != "ccsh:" || (t.size() != 5 && t.size() != 37)) return false;
    if (t.size() == 5) {
      *this = Hash();
      return true;
    }
    auto hex = [](char c) {
      return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    };
    for (int i = 0; i < 16; ++i) {
      const int hi = hex(t[5 + 2 * i]), lo = hex(t[6 + 2 * i]);
      if (hi < 0 || lo < 0) return false;
      b[i] = static_cast<uint8_t>(hi * 16 + lo);
    }
    return true;
  }
  bool operator==(const Hash& o) const { return std::equal(b, b + 16, o.b); }
  std::string Text() const { return Empty() ? "ccsh:" : "ccsh:" + util::HexEncode(b, sizeof b); }
};

// The cases a phone holds: the token's sorted footprint, and what the phone's own forms added
// to it or took from it since.
struct PhoneSet {
  const std::vector<std::string>* base = nullptr;
  std::unordered_set<std::string> added, removed;
  bool InBase(const std::string& id) const {
    return base && std::binary_search(base->begin(), base->end(), id);
  }
  bool count(const std::string& id) const {
    return added.count(id) || (!removed.count(id) && InBase(id));
  }
  void insert(const std::string& id) {
    removed.erase(id);
    if (!InBase(id)) added.insert(id);
  }
  void erase(const std::string& id) {
    added.erase(id);
    if (InBase(id)) removed.insert(id);
  }
};

class SyncImpl final : public Sync {
 public:
  SyncImpl(Engine* e, std::string cache_dir) : e_(e), cache_dir_(std::move(cache_dir)) {}
  Status Open(const std::string& path) {
    if (!cache_dir_.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(cache_dir_, ec);
      if (ec)
        return Status::Unavailable(
            fmt::format("cannot create the restore cache {}: {}", cache_dir_, ec.message()));
    }
    return logs_.Open(path);
  }

  void InvalidateCache(std::string_view domain, std::string_view user_id) override {
    if (cache_dir_.empty()) return;
    const std::string prefix = UserKey(domain, user_id);
    logs_.Invalidate(prefix);
    std::error_code ec;
    for (const auto& f : std::filesystem::directory_iterator(cache_dir_, ec))
      if (f.path().filename().string().rfind(prefix, 0) == 0) std::filesystem::remove(f.path(), ec);
  }

  Result<SyncLogInfo> GetSyncLog(std::string_view id) override {
    CC_ASSIGN_OR_RETURN(auto stored, logs_.Get(id));
    return std::move(stored.info);
  }
  Result<int64_t> Prune(int64_t max_age_us) override { return logs_.Prune(max_age_us); }

  Result<RestoreResult> Restore(const RestoreRequest& req, const Writer& write) override {
    if (cache_dir_.empty() || !req.since.empty()) return Compute(req, write);
    // A first sync: answer from the cache, or compute it and keep a copy as it streams.
    const std::string path = CachePath(req);
    if (!req.overwrite_cache) {
      auto cached = FromCache(path, UserKey(req.domain, req.user.user_id), write);
      if (!cached.ok() || cached->http_status != 0) return cached;
    }
    // As HQ's RestoreConfig.set_cached_payload_if_necessary (casexml/apps/phone/restore.py):
    // a payload is kept only when computing it took longer than INITIAL_SYNC_CACHE_THRESHOLD
    // (const.py, 60 s) or the request forces it; a fast restore is always computed afresh, so
    // it never misses a case changed or assigned since. A copy is written as it streams (the
    // duration is known only at the end) and dropped when it is not kept.
    const auto began = std::chrono::steady_clock::now();
    const std::string tmp = path + "." + util::NewUuidHex() + ".tmp";
    std::ofstream copy(tmp, std::ios::binary);
    auto tee = [&](int status, std::string_view chunk) -> Status {
      if (status == 200 && copy)
        copy.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      return write(status, chunk);
    };
    auto res = Compute(req, tee);
    copy.close();
    std::error_code ec;
    const bool keep = req.force_cache ||
                      std::chrono::steady_clock::now() - began > std::chrono::seconds(kCacheAfter);
    if (res.ok() && res->http_status == 200 && copy && keep) {
      res->cached = true;
      std::ofstream(path + ".id") << res->sync_id << ' ' << res->cases << ' ' << res->ledgers << ' '
                                  << res->footprint;
      std::filesystem::rename(tmp, path, ec);
    } else {
      std::filesystem::remove(tmp, ec);
      // An answer computed afresh supersedes what was kept (HQ's
      // delete_cached_payload_if_necessary for overwrite_cache).
      if (res.ok() && res->http_status == 200) {
        std::filesystem::remove(path, ec);
        std::filesystem::remove(path + ".id", ec);
      }
    }
    return res;
  }

  Result<RestoreResult> Compute(const RestoreRequest& req, const Writer& write) {
    RestoreResult res;
    auto refuse = [&](int status, std::string msg) -> Result<RestoreResult> {
      res.http_status = status;
      res.message = std::move(msg);
      CC_RETURN_IF_ERROR(write(status, RestoreErrorPayload(res.message)));
      return res;
    };
    if (req.version != "1.0" && req.version != "2.0" && req.version != "3.0")
      return refuse(400, fmt::format("version '{}' must be 1.0, 2.0 or 3.0", req.version));
    if (req.domain.empty() || req.user.user_id.empty())
      return refuse(400, "a restore needs a domain and a user");
    // Changes at or after this instant are new to the phone next time; then seal what is
    // committed so the reads below see every acknowledged submission.
    const int64_t started = util::NowMicros();
    auto lap = std::chrono::steady_clock::now();
    auto timing = [&](const char* phase) {
      auto now = std::chrono::steady_clock::now();
      res.timings.emplace_back(phase, std::chrono::duration<double, std::milli>(now - lap).count());
      lap = now;
    };
    for (int d = 0; d < e_->NumDatabases(); ++d) CC_RETURN_IF_ERROR(e_->Database(d)->Flush());

    PhoneSet phone;  // the token's footprint, with the phone's own forms
    Hash prev_hash, phone_hash;
    std::unordered_set<std::string> changed_elsewhere;  // on the phone, changed by others
    SyncLogStore::Stored stored;
    SyncLogInfo& prev = stored.info;
    bool graph_unchanged = false;
    if (!req.since.empty()) {
      auto got = logs_.Get(req.since);
      if (!got.ok()) {
        if (!got.status().IsNotFound()) return got.status();
        return refuse(412, fmt::format("Invalid sync token '{}'", req.since));
      }
      stored = std::move(got).value();
      if (prev.domain != req.domain || prev.user_id != req.user.user_id)
        return refuse(412, fmt::format("sync token '{}' belongs to another user", req.since));
      phone.base = &prev.case_ids;
      if (!prev_hash.Parse(prev.state_hash)) prev_hash.Parse(CaseStateHash(prev.case_ids));
      phone_hash = prev_hash;
      CC_RETURN_IF_ERROR(
          ApplyChangesSince(req, prev, &phone, &phone_hash, &changed_elsewhere, &graph_unchanged));
      Hash sent;
      if (!req.state.empty() && !(sent.Parse(req.state) && sent == phone_hash))
        return refuse(412, "Phone case list is inconsistent with server's record.");
    }
    timing("changes since the token");
    // The live set (sorted): the token's, when nothing that changed can alter the case graph
    // (then the phone holds all of it); else livequery's.
    std::vector<std::string> footprint, indexed, send;
    if (graph_unchanged) {
      footprint = prev.case_ids;
      indexed = prev.indexed_case_ids;
    } else {
      LiveQuery lq(e_);
      CC_RETURN_IF_ERROR(lq.Run(req.domain, req.user.owner_ids));
      footprint.assign(lq.live().begin(), lq.live().end());
      std::sort(footprint.begin(), footprint.end());
      for (const auto& id : footprint) {
        if (lq.HasIndices(id)) indexed.push_back(id);
        if (!phone.count(id)) send.push_back(id);
      }
    }
    timing("livequery");
    for (const auto& id : changed_elsewhere)
      if (phone.count(id)) send.push_back(id);
    std::sort(send.begin(), send.end());
    send.erase(std::unique(send.begin(), send.end()), send.end());

    SyncLogInfo log;
    log.sync_id = util::NewUuidHex();
    log.domain = req.domain;
    log.user_id = req.user.user_id;
    log.previous_id = req.since;
    log.device_id = req.device_id;
    log.app_id = req.app_id;
    log.date = started;
    log.owner_ids = req.user.owner_ids;
    log.indexed_case_ids = std::move(indexed);
    // What the phone keeps is the live set: it purges the others it is sent.
    std::unordered_set<std::string> dropped;  // sent, but deleted or gone

    // Ledger values first: `items` needs their count, and they are small.
    std::unordered_map<std::string, std::vector<LedgerValue>> ledgers;
    CC_RETURN_IF_ERROR(PerDatabase(e_, send, [&](storage::PrimaryStore* db, auto ids) {
      CC_ASSIGN_OR_RETURN(auto values, db->GetLedgerValuesOf(ids));
      // One <balance> block per (case, section).
      std::set<std::pair<std::string_view, std::string_view>> blocks;
      for (const auto& v : values) blocks.emplace(v.case_id, v.section_id);
      res.ledgers += static_cast<int64_t>(blocks.size());
      for (auto& v : values) ledgers[v.case_id].push_back(std::move(v));
      return Status::Ok();
    }));
    timing("ledgers");
    const bool v1 = req.version == "1.0";
    // "" sends no attachments (RestoreRequest::attachments).
    const std::string attachment_base =
        req.attachments
            ? req.url_base + "/a/" + sync_internal::UrlEncode(req.domain) + "/api/case/attachment/"
            : "";
    Out out(write);
    std::string& o = out.buf();
    o += "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"";
    if (req.items) {
      // HQ's RestoreContent: every top-level element after the message (Sync, Registration,
      // each fixture and schema, each balance block, each case), plus one for the message.
      const int64_t items =
          3 + CountTopLevelElements(req.fixtures) + res.ledgers + static_cast<int64_t>(send.size());
      o += fmt::format(" items=\"{}\"", items);
    }
    o += "><message nature=\"ota_restore_success\">Successfully restored account ";
    AppendXmlEscaped(&o, req.user.username);
    o += "!</message><Sync xmlns=\"http://commcarehq.org/sync\"><restore_id>";
    o += log.sync_id;
    o += "</restore_id></Sync><Registration xmlns=\"http://openrosa.org/user/registration\">";
    AppendXmlElement(&o, "username", req.user.username);
    AppendXmlElement(&o, "password", req.user.password_hash);
    AppendXmlElement(&o, "uuid", req.user.user_id);
    AppendXmlElement(
        &o, "date",
        FormatTime(req.user.date_joined ? req.user.date_joined : started).substr(0, 10));
    o += "<user_data>";
    for (const auto& [k, v] : req.user.user_data) {
      o += "<data key=\"";
      AppendXmlEscaped(&o, k);
      o += "\">";
      AppendXmlEscaped(&o, v);
      o += "</data>";
    }
    o += "</user_data></Registration>";
    o += req.fixtures;
    // Cases in batches: each batch's balances, then its cases (as CommCare orders them).
    // Reading and formatting cases is the payload's cost, so two batches are formatted at a
    // time, this thread taking one and a helper the next; they are written in order. (A
    // pipeline, reading on one thread and formatting on the other, was slower.)
    constexpr size_t kBatch = 1000;
    struct Batch {
      std::string text;
      int64_t cases = 0;
      std::vector<std::string> dropped;  // sent, but deleted or gone
      Status status;
      CaseDocParser parser;
      std::vector<std::string> slots;  // per case of the batch, reused
    };
    auto format = [&](size_t first, Batch* out) -> Status {
      out->text.clear();
      out->cases = 0;
      out->dropped.clear();
      const std::span<const std::string> batch(send.data() + first,
                                               std::min(send.size() - first, kBatch));
      for (const auto& id : batch)
        if (auto it = ledgers.find(id); it != ledgers.end()) BalanceBlocks(&out->text, it->second);
      // Each case's block in its slot, so the batch keeps id order across databases; an
      // empty slot is a case gone without a trace.
      out->slots.resize(batch.size());
      for (auto& slot : out->slots) slot.clear();
      CC_RETURN_IF_ERROR(PerDatabase(e_, batch, [&](storage::PrimaryStore* db, auto ids) {
        return db->ReadCaseDocs(ids, [&](std::string_view text) -> Status {
          unsigned char buf[16 << 10];
          json::monotonic_resource mr(buf, sizeof buf);
          CC_ASSIGN_OR_RETURN(json::object doc, out->parser.Parse(text, &mr));
          CaseDoc c(doc);
          const std::string_view id = c.Str("case_id");
          auto at = std::lower_bound(batch.begin(), batch.end(), id);
          if (at == batch.end() || *at != id)
            return Status::DataLoss(fmt::format("the store answered case '{}' unasked", id));
          CaseBlock(&out->slots[static_cast<size_t>(at - batch.begin())], c, !phone.count(*at), v1,
                    attachment_base);
          ++out->cases;
          if (c.Bool("deleted")) out->dropped.push_back(*at);
          return Status::Ok();
        });
      }));
      for (size_t i = 0; i < batch.size(); ++i) {
        if (out->slots[i].empty()) out->dropped.push_back(batch[i]);  // gone without a trace
        out->text += out->slots[i];
      }
      return Status::Ok();
    };
    Batch batches[2];
    const auto total = static_cast<int64_t>(send.size());
    if (req.progress) req.progress(0, total);
    for (size_t b = 0; b < send.size(); b += 2 * kBatch) {
      const int n = b + kBatch < send.size() ? 2 : 1;
      std::thread helper;
      if (n == 2)
        helper = std::thread([&, b] { batches[1].status = format(b + kBatch, &batches[1]); });
      batches[0].status = format(b, &batches[0]);
      if (helper.joinable()) helper.join();
      for (int k = 0; k < n; ++k) {
        CC_RETURN_IF_ERROR(batches[k].status);
        o += batches[k].text;
        res.cases += batches[k].cases;
        for (auto& id : batches[k].dropped) dropped.insert(std::move(id));
        CC_RETURN_IF_ERROR(out.Maybe());
      }
      if (req.progress) req.progress(std::min<int64_t>(total, b + n * kBatch), total);
    }
    o += "</OpenRosaResponse>";
    CC_RETURN_IF_ERROR(out.Flush());
    timing("payload");
    if (dropped.empty())
      log.case_ids = std::move(footprint);
    else
      for (auto& id : footprint)
        if (!dropped.count(id)) log.case_ids.push_back(std::move(id));
    if (req.since.empty()) {
      log.state_hash = CaseStateHash(log.case_ids);
    } else {  // the token's hash with the cases that came and went flipped
      Hash h = prev_hash;
      for (const auto& id : Minus(log.case_ids, prev.case_ids)) h.Flip(id);
      for (const auto& id : Minus(prev.case_ids, log.case_ids)) h.Flip(id);
      log.state_hash = h.Text();
    }
    CC_RETURN_IF_ERROR(logs_.Put(log, req.since.empty() ? nullptr : &stored));
    timing("sync log");
    res.sync_id = log.sync_id;
    res.footprint = static_cast<int64_t>(log.case_ids.size());
    return res;
  }

 private:
  // The cases changed since the token: the phone's own forms (their transactions carry the
  // token) update its footprint and hash; a change by anyone else marks the case to be sent.
  // *graph_unchanged: the same owners, and no change that could alter the live set (every
  // changed case is either live before and after with no indices, or unowned with none).
  Status ApplyChangesSince(const RestoreRequest& req, const SyncLogInfo& prev, PhoneSet* phone,
                           Hash* phone_hash, std::unordered_set<std::string>* changed_elsewhere,
                           bool* graph_unchanged) {
    std::set<std::string> owners(req.user.owner_ids.begin(), req.user.owner_ids.end());
    *graph_unchanged =
        owners == std::set<std::string>(prev.owner_ids.begin(), prev.owner_ids.end());
    auto in = [](const std::vector<std::string>& sorted, const std::string& id) {
      return std::binary_search(sorted.begin(), sorted.end(), id);
    };
    for (int d = 0; d < e_->NumDatabases(); ++d) {
      auto* db = e_->Database(d);
      CC_ASSIGN_OR_RETURN(auto ids, db->CasesModifiedSince(req.domain, prev.date));
      CC_ASSIGN_OR_RETURN(auto cases, db->GetCases(ids));
      for (const auto& c : cases) {
        const std::string& id = c.case_id;
        const bool owned = owners.count(c.owner_id) > 0;
        if (in(prev.case_ids, id) ? (c.closed || c.deleted || !owned || !c.indices.empty() ||
                                     in(prev.indexed_case_ids, id))
                                  : (owned || !c.indices.empty()))
          *graph_unchanged = false;
        CC_ASSIGN_OR_RETURN(auto txs, db->GetCaseTransactions(id));
        // A ledger-only transaction of the phone's own form (a balance or transfer on a case
        // its form did not otherwise touch) neither adds the case to its footprint nor is
        // echoed back (HQ's get_modified_case_ids skips the token's own transactions).
        bool mine = false, others = false, mine_ledger = false;
        for (const auto& t : txs) {
          if (t.server_date < prev.date) continue;
          if (t.sync_log_id != prev.sync_id)
            others = true;
          else if (t.type == (kTxForm | kTxLedger))
            mine_ledger = true;
          else
            mine = true;
        }
        if (!mine && !others && !mine_ledger) others = true;  // by no form since: the server's
        if (mine) {
          const bool keep = !c.closed && !c.deleted;
          if (keep != phone->count(id)) phone_hash->Flip(id);
          if (keep)
            phone->insert(id);
          else
            phone->erase(id);
        }
        if (others) changed_elsewhere->insert(id);
      }
    }
    return Status::Ok();
  }

  static constexpr int64_t kCacheSeconds = 3600;  // CommCare keeps cached restores an hour
  static constexpr int64_t kCacheAfter = 60;      // HQ's INITIAL_SYNC_CACHE_THRESHOLD

  static std::string UserKey(std::string_view domain, std::string_view user_id) {
    return util::Md5Hex(std::string(domain) + '\0' + std::string(user_id)).substr(0, 16) + "-";
  }
  // The cache file of a first sync: per user, and per everything else that shapes the payload.
  std::string CachePath(const RestoreRequest& q) const {
    std::string shape = q.version + '\0' + q.device_id + '\0' + q.app_id + '\0' + q.url_base +
                        '\0' + q.user.username + '\0' + q.user.password_hash + '\0' + q.fixtures +
                        '\0' + (q.items ? "items" : "") + '\0' +
                        (q.attachments ? "attachments" : "");
    for (const auto& o : q.user.owner_ids) shape += '\0' + o;
    for (const auto& [k, v] : q.user.user_data) shape += '\0' + k + '=' + v;
    return cache_dir_ + "/" + UserKey(q.domain, q.user.user_id) + util::Md5Hex(shape) + ".xml";
  }
  // Streams a fresh cached payload whose sync log is still usable (http_status 200), or answers
  // http_status 0 when there is none to use.
  Result<RestoreResult> FromCache(const std::string& path, const std::string& user_key,
                                  const Writer& write) {
    RestoreResult res;
    res.http_status = 0;
    std::error_code ec;
    auto mtime = std::filesystem::last_write_time(path, ec);
    if (ec ||
        std::filesystem::file_time_type::clock::now() - mtime > std::chrono::seconds(kCacheSeconds))
      return res;
    std::ifstream id(path + ".id");
    std::string sync_id;
    if (!(id >> sync_id >> res.cases >> res.ledgers >> res.footprint) ||
        !logs_.Usable(sync_id, user_key))
      return res;
    std::ifstream in(path, std::ios::binary);
    if (!in) return res;
    std::string buf(64 << 10, '\0');
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      if (in.gcount() > 0)
        CC_RETURN_IF_ERROR(
            write(200, std::string_view(buf.data(), static_cast<size_t>(in.gcount()))));
    }
    res.http_status = 200;
    res.sync_id = sync_id;
    res.from_cache = true;
    return res;
  }

  Engine* e_;
  std::string cache_dir_;
  SyncLogStore logs_;
};

}  // namespace

std::string CaseStateHash(const std::vector<std::string>& case_ids) {
  Hash h;
  for (const auto& id : case_ids) h.Flip(id);
  return h.Text();
}

Result<std::unique_ptr<Sync>> Sync::Open(Engine* engine, const std::string& synclog_path,
                                         const std::string& cache_dir) {
  auto s = std::make_unique<SyncImpl>(engine, cache_dir);
  CC_RETURN_IF_ERROR(s->Open(synclog_path));
  return std::unique_ptr<Sync>(std::move(s));
}

}  // namespace commcare
