// Mobile sync: CommCare's livequery case selection over the primary store's graph reads, the
// restore payload streamed in batches, and sync logs in their own SQLite file (CommCare keeps
// them in a separate database too).
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
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "util/hash.h"
#include "util/sqlite_conn.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare {
namespace {

using util::AppendXmlEscaped;
using util::Bind;
using util::Col;
using storage::CaseIndexEdge;

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS synclogs(
  sync_id TEXT PRIMARY KEY, domain TEXT NOT NULL, user_id TEXT NOT NULL, previous_id TEXT NOT NULL,
  device_id TEXT NOT NULL, app_id TEXT NOT NULL, date INTEGER NOT NULL, owner_ids TEXT NOT NULL,
  state_hash TEXT NOT NULL, case_ids BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS synclogs_user ON synclogs(domain, user_id, device_id, app_id, date);
CREATE INDEX IF NOT EXISTS synclogs_date ON synclogs(date);
)";

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out.push_back('\n');
    out += s;
  }
  return out;
}

std::vector<std::string> Split(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    size_t nl = s.find('\n');
    out.emplace_back(s.substr(0, nl));
    if (nl == std::string_view::npos) break;
    s.remove_prefix(nl + 1);
  }
  return out;
}

// XOR of md5(case_id), kept as 16 bytes so a footprint's hash can be updated per case.
struct Hash {
  uint8_t b[16] = {};
  void Flip(std::string_view id) {
    uint8_t d[16];
    util::Md5Raw(id, d);
    for (int i = 0; i < 16; ++i) b[i] ^= d[i];
  }
  std::string Text() const {
    static const char* kHex = "0123456789abcdef";
    std::string out = "ccsh:";
    for (uint8_t c : b) {
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
    return out;
  }
};

std::string FormatQuantity(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v))) return std::to_string(static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

class SyncLogStore {
 public:
  Status Open(const std::string& path) {
    CC_RETURN_IF_ERROR(db_.Open(path.empty() ? ":memory:" : path, false, false));
    CC_RETURN_IF_ERROR(db_.Exec("PRAGMA synchronous=NORMAL"));  // WAL: no corruption on a crash
    return db_.Exec(kSchema);
  }
  Status Put(const SyncLogInfo& l) {
    std::lock_guard lock(mu_);
    sqlite3_stmt* s = db_.Prep(
        "INSERT OR REPLACE INTO synclogs(sync_id, domain, user_id, previous_id, device_id, "
        "app_id, date, owner_ids, state_hash, case_ids) VALUES(?,?,?,?,?,?,?,?,?,?)");
    Bind(s, 1, l.sync_id);
    Bind(s, 2, l.domain);
    Bind(s, 3, l.user_id);
    Bind(s, 4, l.previous_id);
    Bind(s, 5, l.device_id);
    Bind(s, 6, l.app_id);
    Bind(s, 7, l.date);
    Bind(s, 8, Join(l.owner_ids));
    Bind(s, 9, l.state_hash);
    Bind(s, 10, Join(l.case_ids));
    if (sqlite3_step(s) != SQLITE_DONE) return db_.Err("storing a sync log");
    return Status::Ok();
  }
  Result<SyncLogInfo> Get(std::string_view id) {
    std::lock_guard lock(mu_);
    sqlite3_stmt* s = db_.Prep(
        "SELECT domain, user_id, previous_id, device_id, app_id, date, owner_ids, state_hash, "
        "case_ids FROM synclogs WHERE sync_id=?");
    Bind(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
      sqlite3_reset(s);
      if (rc == SQLITE_DONE) return Status::NotFound(fmt::format("no sync log '{}'", id));
      return db_.Err("reading a sync log");
    }
    SyncLogInfo l;
    l.sync_id = std::string(id);
    l.domain = std::string(Col(s, 0));
    l.user_id = std::string(Col(s, 1));
    l.previous_id = std::string(Col(s, 2));
    l.device_id = std::string(Col(s, 3));
    l.app_id = std::string(Col(s, 4));
    l.date = sqlite3_column_int64(s, 5);
    l.owner_ids = Split(Col(s, 6));
    l.state_hash = std::string(Col(s, 7));
    l.case_ids = Split(Col(s, 8));
    sqlite3_reset(s);
    return l;
  }
  Result<int64_t> Prune(int64_t max_age_us) {
    std::lock_guard lock(mu_);
    CC_RETURN_IF_ERROR(db_.Exec("BEGIN IMMEDIATE"));
    sqlite3_stmt* old = db_.Prep("DELETE FROM synclogs WHERE date<?");
    Bind(old, 1, util::NowMicros() - max_age_us);
    bool ok = sqlite3_step(old) == SQLITE_DONE;
    int64_t n = sqlite3_changes(db_.db());
    // Per (user, device, app): keep the newest two.
    sqlite3_stmt* extra = db_.Prep(
        "DELETE FROM synclogs WHERE sync_id IN (SELECT sync_id FROM (SELECT sync_id, "
        "ROW_NUMBER() OVER (PARTITION BY domain, user_id, device_id, app_id ORDER BY date DESC) "
        "AS k FROM synclogs) WHERE k > 2)");
    ok = ok && sqlite3_step(extra) == SQLITE_DONE;
    n += sqlite3_changes(db_.db());
    if (!ok) {
      Status e = db_.Err("pruning sync logs");
      (void)db_.Exec("ROLLBACK");
      return e;
    }
    CC_RETURN_IF_ERROR(db_.Exec("COMMIT"));
    return n;
  }

 private:
  std::mutex mu_;
  util::Conn db_;
};

// The livequery walk over the case graph (see the rules at the top of this file).
class LiveQuery {
 public:
  explicit LiveQuery(Engine* e) : e_(e) {}

  Status Run(std::string_view domain, const std::vector<std::string>& owner_ids) {
    for (int d = 0; d < e_->NumDatabases(); ++d)
      for (const auto& o : owner_ids) {
        CC_ASSIGN_OR_RETURN(auto nodes, e_->Database(d)->OpenCasesByOwner(domain, o));
        for (auto& n : nodes) {
          owned_.insert(n.case_id);
          open_.insert(n.case_id);
          has_indices_[n.case_id] = n.has_indices;
        }
      }
    std::vector<std::string> frontier(owned_.begin(), owned_.end());
    std::unordered_set<std::string> all(owned_.begin(), owned_.end());
    while (!frontier.empty()) {
      // Indices the frontier's cases hold, and extensions pointing at them. Child indices
      // pointing at them are not needed: a parent never makes its child live.
      std::vector<std::string> holders;
      for (const auto& id : frontier)
        if (auto h = has_indices_.find(id); h == has_indices_.end() || h->second)
          holders.push_back(id);
      std::vector<CaseIndexEdge> related;
      CC_RETURN_IF_ERROR(PerDatabase(holders, [&](storage::PrimaryStore* db, auto ids) {
        CC_ASSIGN_OR_RETURN(auto edges, db->IndicesOf(ids));
        for (auto& e : edges) related.push_back(std::move(e));
        return Status::Ok();
      }));
      for (int d = 0; d < e_->NumDatabases(); ++d) {
        CC_ASSIGN_OR_RETURN(auto edges, e_->Database(d)->ExtensionsOf(frontier));
        for (auto& e : edges) related.push_back(std::move(e));
      }
      if (related.empty()) break;
      // States of the cases met for the first time.
      std::vector<std::string> fresh;
      for (const auto& e : related)
        for (const std::string* id : {&e.case_id, &e.index.referenced_id})
          if (!all.count(*id) && known_.insert(*id).second)
            fresh.push_back(*id);
      CC_RETURN_IF_ERROR(PerDatabase(fresh, [&](storage::PrimaryStore* db, auto ids) {
        CC_ASSIGN_OR_RETURN(auto nodes, db->CaseNodes(ids));
        for (const auto& n : nodes) {
          has_indices_[n.case_id] = n.has_indices;
          if (n.deleted) deleted_.insert(n.case_id);
          if (!n.closed && !n.deleted) open_.insert(n.case_id);
        }
        return Status::Ok();
      }));
      for (const auto& id : fresh)  // not stored at all: as good as deleted
        if (!has_indices_.count(id)) deleted_.insert(id);
      std::unordered_set<std::string> in_frontier(frontier.begin(), frontier.end());
      std::vector<std::string> next;
      for (const auto& e : related) {
        const std::string& sub = e.case_id;
        const std::string& ref = e.index.referenced_id;
        if (deleted_.count(sub) || deleted_.count(ref)) continue;
        if (!seen_.insert(sub + ' ' + e.index.identifier).second) continue;
        bool ignore = false;
        if (live_.count(sub)) {
          Enliven(ref);  // ref has a live child or extension
        } else if (e.index.relationship == "extension") {
          if (!open_.count(sub)) {
            ignore = true;  // a closed extension
          } else if (live_.count(ref)) {
            Enliven(sub);  // an open extension of a live case
          } else {
            extensions_by_host_[ref].insert(sub);
            hosts_by_extension_[sub].insert(ref);
          }
        } else if (owned_.count(sub)) {
          Enliven(sub);  // owned and available
          Enliven(ref);  // ref has a live child
        } else {
          parents_by_child_[sub].insert(ref);
        }
        if (ignore) continue;
        const std::string& n = in_frontier.count(sub) ? ref : sub;
        if (all.insert(n).second) next.push_back(n);
      }
      frontier = std::move(next);
    }
    for (const auto& id : owned_)
      if (!IsExtension(id)) Enliven(id);
    std::unordered_map<std::string, bool> cache;
    for (const auto& id : open_)
      if (!live_.count(id) && !IsExtension(id) && HasLiveExtension(id, &cache)) Enliven(id);
    return Status::Ok();
  }

  const std::unordered_set<std::string>& live() const { return live_; }

 private:
  // Calls fn with the ids of each database (ids grouped by the database that holds them).
  template <typename F>
  Status PerDatabase(const std::vector<std::string>& ids, F&& fn) {
    if (ids.empty()) return Status::Ok();
    std::vector<std::vector<std::string>> by_db(static_cast<size_t>(e_->NumDatabases()));
    for (const auto& id : ids) by_db[static_cast<size_t>(e_->DatabaseFor(id))].push_back(id);
    for (size_t d = 0; d < by_db.size(); ++d)
      if (!by_db[d].empty())
        CC_RETURN_IF_ERROR(fn(e_->Database(static_cast<int>(d)),
                              std::span<const std::string>(by_db[d])));
    return Status::Ok();
  }
  // An extension case (a case that is both a child and an extension is not one).
  bool IsExtension(const std::string& id) const {
    return hosts_by_extension_.count(id) && !parents_by_child_.count(id);
  }
  bool HasLiveExtension(const std::string& id, std::unordered_map<std::string, bool>* cache) {
    if (auto it = cache->find(id); it != cache->end()) return it->second;
    (*cache)[id] = false;  // breaks cycles
    bool result = false;
    if (auto it = extensions_by_host_.find(id); it != extensions_by_host_.end())
      for (const auto& ext : it->second)
        if (live_.count(ext) || owned_.count(ext) || HasLiveExtension(ext, cache)) {
          result = true;
          break;
        }
    (*cache)[id] = result;
    return result;
  }
  // Marks the case live, and with it its pending extensions, hosts and parents.
  void Enliven(const std::string& first) {
    std::vector<std::string> todo = {first};
    while (!todo.empty()) {
      std::string id = std::move(todo.back());
      todo.pop_back();
      if (!live_.insert(id).second) continue;
      for (const auto* m : {&extensions_by_host_, &hosts_by_extension_, &parents_by_child_})
        if (auto it = m->find(id); it != m->end())
          for (const auto& other : it->second) todo.push_back(other);
    }
  }

  Engine* e_;
  std::unordered_set<std::string> owned_, open_, deleted_, live_, known_, seen_;
  std::unordered_map<std::string, bool> has_indices_;
  std::unordered_map<std::string, std::set<std::string>> extensions_by_host_, hosts_by_extension_,
      parents_by_child_;
};

// Writes the payload in ~64 KB chunks.
class Out {
 public:
  explicit Out(const Sync::Writer& w) : write_(w) {}
  std::string& buf() { return buf_; }
  Status Maybe() { return buf_.size() >= (64 << 10) ? Flush() : Status::Ok(); }
  Status Flush() {
    if (buf_.empty()) return Status::Ok();
    Status s = write_(200, buf_);
    buf_.clear();
    return s;
  }

 private:
  const Sync::Writer& write_;
  std::string buf_;
};

void Elem(std::string* o, std::string_view name, std::string_view text) {
  *o += '<';
  *o += name;
  *o += '>';
  AppendXmlEscaped(o, text);
  *o += "</";
  *o += name;
  *o += '>';
}

// A case block as CommCare's generators write it for this restore version.
void CaseBlock(std::string* o, const CaseRecord& c, bool create, bool v1) {
  if (c.deleted) {  // gone from the server: the phone drops it
    if (v1) {
      *o += "<case><case_id>";
      AppendXmlEscaped(o, c.case_id);
      *o += "</case_id><close/></case>";
    } else {
      *o += "<case xmlns=\"http://commcarehq.org/case/transaction/v2\" case_id=\"";
      AppendXmlEscaped(o, c.case_id);
      *o += "\"><close/></case>";
    }
    return;
  }
  const std::string modified = FormatTime(c.modified_on);
  if (v1) {
    *o += "<case>";
    Elem(o, "case_id", c.case_id);
    Elem(o, "date_modified", modified);
    if (create) {
      *o += "<create>";
      Elem(o, "case_type_id", c.type);
      Elem(o, "user_id", c.opened_by);
      Elem(o, "case_name", c.name);
      Elem(o, "external_id", c.external_id);
      *o += "</create>";
    }
  } else {
    *o += "<case xmlns=\"http://commcarehq.org/case/transaction/v2\" case_id=\"";
    AppendXmlEscaped(o, c.case_id);
    *o += "\" date_modified=\"";
    *o += modified;
    *o += "\" user_id=\"";
    AppendXmlEscaped(o, c.modified_by);
    *o += "\">";
    if (create) {
      *o += "<create>";
      Elem(o, "case_type", c.type);
      Elem(o, "case_name", c.name);
      Elem(o, "owner_id", c.owner_id);
      *o += "</create>";
    }
  }
  *o += "<update>";
  if (!create && !v1) {  // base properties go in the update when there is no create
    Elem(o, "case_type", c.type);
    Elem(o, "case_name", c.name);
    Elem(o, "owner_id", c.owner_id);
  }
  if (!v1) {
    if (!c.external_id.empty()) Elem(o, "external_id", c.external_id);
    Elem(o, "date_opened", FormatTime(c.opened_on));
  }
  for (const auto& [k, v] : c.properties) Elem(o, k, v);
  *o += "</update>";
  if (!c.indices.empty()) {
    std::vector<const CaseIndex*> ix;
    for (const auto& i : c.indices) ix.push_back(&i);
    std::sort(ix.begin(), ix.end(),
              [](const auto* a, const auto* b) { return a->identifier < b->identifier; });
    *o += "<index>";
    for (const auto* i : ix) {
      *o += '<';
      *o += i->identifier;
      *o += " case_type=\"";
      AppendXmlEscaped(o, i->referenced_type);
      *o += '"';
      if (i->relationship == "extension") *o += " relationship=\"extension\"";
      *o += '>';
      AppendXmlEscaped(o, i->referenced_id);
      *o += "</";
      *o += i->identifier;
      *o += '>';
    }
    *o += "</index>";
  }
  if (!c.attachments.empty() && !v1) {
    *o += "<attachment>";
    for (const auto& a : c.attachments) {
      *o += '<';
      *o += a.name;
      *o += " src=\"";
      AppendXmlEscaped(o, a.src);
      *o += "\" from=\"";
      AppendXmlEscaped(o, a.from.empty() ? "local" : a.from);
      *o += "\"/>";
    }
    *o += "</attachment>";
  }
  if (c.closed) *o += "<close/>";
  *o += "</case>";
}

void BalanceBlocks(std::string* o, const std::vector<LedgerValue>& values, int64_t* blocks) {
  for (size_t i = 0; i < values.size();) {
    size_t j = i;
    int64_t date = 0;
    while (j < values.size() && values[j].section_id == values[i].section_id)
      date = std::max(date, values[j++].last_modified);
    *o += "<ns0:balance xmlns:ns0=\"http://commcarehq.org/ledger/v1\" date=\"";
    *o += FormatTime(date);
    *o += "\" entity-id=\"";
    AppendXmlEscaped(o, values[i].case_id);
    *o += "\" section-id=\"";
    AppendXmlEscaped(o, values[i].section_id);
    *o += "\">";
    for (size_t k = i; k < j; ++k) {
      *o += "<ns0:entry id=\"";
      AppendXmlEscaped(o, values[k].entry_id);
      *o += "\" quantity=\"";
      *o += FormatQuantity(values[k].balance);
      *o += "\"/>";
    }
    *o += "</ns0:balance>";
    ++*blocks;
    i = j;
  }
}

Status ErrorPayload(const Sync::Writer& write, int status, std::string_view msg) {
  std::string o =
      "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"><message "
      "nature=\"ota_restore_error\">";
  AppendXmlEscaped(&o, msg);
  o += "</message></OpenRosaResponse>";
  return write(status, o);
}

class SyncImpl final : public Sync {
 public:
  SyncImpl(Engine* e) : e_(e) {}
  Status Open(const std::string& path) { return logs_.Open(path); }

  Result<SyncLogInfo> GetSyncLog(std::string_view id) override { return logs_.Get(id); }
  Result<int64_t> Prune(int64_t max_age_us) override { return logs_.Prune(max_age_us); }

  Result<RestoreResult> Restore(const RestoreRequest& req, const Writer& write) override {
    RestoreResult res;
    auto refuse = [&](int status, std::string msg) -> Result<RestoreResult> {
      res.http_status = status;
      res.message = std::move(msg);
      CC_RETURN_IF_ERROR(ErrorPayload(write, status, res.message));
      return res;
    };
    if (req.version != "1.0" && req.version != "2.0" && req.version != "3.0")
      return refuse(400, fmt::format("version '{}' must be 1.0, 2.0 or 3.0", req.version));
    if (req.domain.empty() || req.user.user_id.empty())
      return refuse(400, "a restore needs a domain and a user");
    // Changes at or after this instant are new to the phone next time; then seal what is
    // committed so the reads below see every acknowledged submission.
    const int64_t started = util::NowMicros();
    for (int d = 0; d < e_->NumDatabases(); ++d) CC_RETURN_IF_ERROR(e_->Database(d)->Flush());

    std::unordered_set<std::string> phone;  // the token's footprint, with the phone's own forms
    std::unordered_set<std::string> changed_elsewhere;  // on the phone, changed by others
    SyncLogInfo prev;
    if (!req.since.empty()) {
      auto got = logs_.Get(req.since);
      if (!got.ok()) {
        if (!got.status().IsNotFound()) return got.status();
        return refuse(412, fmt::format("Invalid sync token '{}'", req.since));
      }
      prev = std::move(got).value();
      if (prev.domain != req.domain || prev.user_id != req.user.user_id)
        return refuse(412, fmt::format("sync token '{}' belongs to another user", req.since));
      phone.insert(prev.case_ids.begin(), prev.case_ids.end());
      CC_RETURN_IF_ERROR(ApplyChangesSince(req, prev, &phone, &changed_elsewhere));
      if (!req.state.empty() && req.state != CaseStateHash({phone.begin(), phone.end()}))
        return refuse(412, "Phone case list is inconsistent with server's record.");
    }
    LiveQuery lq(e_);
    CC_RETURN_IF_ERROR(lq.Run(req.domain, req.user.owner_ids));
    std::vector<std::string> send;
    for (const auto& id : lq.live())
      if (!phone.count(id)) send.push_back(id);
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
    // What the phone keeps: the live cases (it purges the others it is sent).
    std::set<std::string> footprint(lq.live().begin(), lq.live().end());

    // Ledger values first: `items` needs their count, and they are small.
    std::unordered_map<std::string, std::vector<LedgerValue>> ledgers;
    int64_t ledger_blocks = 0;
    for (const auto& id : send) {
      auto* db = e_->Database(e_->DatabaseFor(id));
      CC_ASSIGN_OR_RETURN(auto values, db->GetLedgerValues(id));
      if (values.empty()) continue;
      for (size_t i = 0; i < values.size(); ++i)
        ledger_blocks += i == 0 || values[i].section_id != values[i - 1].section_id;
      ledgers[id] = std::move(values);
    }
    const bool v1 = req.version == "1.0";
    Out out(write);
    std::string& o = out.buf();
    o += "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"";
    if (req.items) {
      size_t fixtures = 0;
      for (size_t p = req.fixtures.find("<fixture"); p != std::string::npos;
           p = req.fixtures.find("<fixture", p + 1))
        ++fixtures;
      o += fmt::format(" items=\"{}\"",
                       static_cast<int64_t>(send.size()) + ledger_blocks +
                           static_cast<int64_t>(fixtures));
    }
    o += "><message nature=\"ota_restore_success\">Successfully restored account ";
    AppendXmlEscaped(&o, req.user.username);
    o += "!</message><Sync xmlns=\"http://commcarehq.org/sync\"><restore_id>";
    o += log.sync_id;
    o += "</restore_id></Sync><Registration xmlns=\"http://openrosa.org/user/registration\">";
    Elem(&o, "username", req.user.username);
    Elem(&o, "password", req.user.password_hash);
    Elem(&o, "uuid", req.user.user_id);
    Elem(&o, "date",
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
    constexpr size_t kBatch = 1000;
    for (size_t b = 0; b < send.size(); b += kBatch) {
      const size_t e = std::min(send.size(), b + kBatch);
      for (size_t i = b; i < e; ++i)
        if (auto it = ledgers.find(send[i]); it != ledgers.end())
          BalanceBlocks(&o, it->second, &res.ledgers);
      for (size_t i = b; i < e; ++i) {
        const std::string& id = send[i];
        CC_ASSIGN_OR_RETURN(auto c, e_->Database(e_->DatabaseFor(id))->GetCase(id));
        if (!c) {  // gone without a trace
          footprint.erase(id);
          continue;
        }
        CaseBlock(&o, *c, !phone.count(id), v1);
        ++res.cases;
        if (c->deleted) footprint.erase(id);
        CC_RETURN_IF_ERROR(out.Maybe());
      }
    }
    o += "</OpenRosaResponse>";
    CC_RETURN_IF_ERROR(out.Flush());
    log.case_ids.assign(footprint.begin(), footprint.end());
    log.state_hash = CaseStateHash(log.case_ids);
    CC_RETURN_IF_ERROR(logs_.Put(log));
    res.sync_id = log.sync_id;
    res.footprint = static_cast<int64_t>(log.case_ids.size());
    return res;
  }

 private:
  // The cases changed since the token: the phone's own forms (their transactions carry the
  // token) update its footprint; a change by anyone else marks the case to be sent.
  Status ApplyChangesSince(const RestoreRequest& req, const SyncLogInfo& prev,
                           std::unordered_set<std::string>* phone,
                           std::unordered_set<std::string>* changed_elsewhere) {
    for (int d = 0; d < e_->NumDatabases(); ++d) {
      auto* db = e_->Database(d);
      CC_ASSIGN_OR_RETURN(auto ids, db->CasesModifiedSince(req.domain, prev.date));
      for (const auto& id : ids) {
        CC_ASSIGN_OR_RETURN(auto txs, db->GetCaseTransactions(id));
        bool mine = false, others = false;
        for (const auto& t : txs) {
          if (t.server_date < prev.date) continue;
          (t.sync_log_id == prev.sync_id ? mine : others) = true;
        }
        if (!mine && !others) others = true;  // changed, but by no form since: the server's
        if (mine) {
          CC_ASSIGN_OR_RETURN(auto c, db->GetCase(id));
          if (c && !c->closed && !c->deleted)
            phone->insert(id);
          else
            phone->erase(id);
        }
        if (others) changed_elsewhere->insert(id);
      }
    }
    return Status::Ok();
  }

  Engine* e_;
  SyncLogStore logs_;
};

}  // namespace

std::string CaseStateHash(const std::vector<std::string>& case_ids) {
  Hash h;
  for (const auto& id : case_ids) h.Flip(id);
  return h.Text();
}

Result<std::unique_ptr<Sync>> Sync::Open(Engine* engine, const std::string& synclog_path) {
  auto s = std::make_unique<SyncImpl>(engine);
  CC_RETURN_IF_ERROR(s->Open(synclog_path));
  return std::unique_ptr<Sync>(std::move(s));
}

}  // namespace commcare
