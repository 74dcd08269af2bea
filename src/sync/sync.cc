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
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "util/codec.h"
#include "util/hash.h"
#include "util/sql_db.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare {
namespace {

namespace json = boost::json;
using storage::CaseIndexEdge;
using util::AppendXmlEscaped;

// A log stores its case ids in full, or as a difference from a full log (base_id) when that
// is small: an incremental sync then writes a few ids, not the whole footprint.
constexpr int kSchemaVersion = 1;
// One schema for both databases (SQLite reads BIGINT as INTEGER; stores made before it keep
// their BLOB columns, which hold the same text).
constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS synclogs(
  sync_id TEXT PRIMARY KEY, domain TEXT NOT NULL, user_id TEXT NOT NULL, previous_id TEXT NOT NULL,
  device_id TEXT NOT NULL, app_id TEXT NOT NULL, date BIGINT NOT NULL, owner_ids TEXT NOT NULL,
  state_hash TEXT NOT NULL, base_id TEXT NOT NULL, case_ids TEXT NOT NULL, removed TEXT NOT NULL,
  indexed_ids TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS synclogs_user ON synclogs(domain, user_id, device_id, app_id, date);
CREATE INDEX IF NOT EXISTS synclogs_date ON synclogs(date);
CREATE INDEX IF NOT EXISTS synclogs_base ON synclogs(base_id) WHERE base_id != '';
CREATE TABLE IF NOT EXISTS restore_invalidations(user_key TEXT PRIMARY KEY, at BIGINT NOT NULL);
)";
// The PostgreSQL advisory lock a prune holds (writes of single logs need none).
constexpr int64_t kPruneLock = 7234618150;

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
  // Parses "ccsh:<32 hex>" (false if it is not that).
  bool Parse(std::string_view t) {
    if (t.size() != 37 || t.substr(0, 5) != "ccsh:") return false;
    auto hex = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    for (int i = 0; i < 16; ++i)
      b[i] = static_cast<uint8_t>(hex(t[5 + 2 * i]) * 16 + hex(t[6 + 2 * i]));
    return true;
  }
  std::string Text() const { return "ccsh:" + util::HexEncode(b, sizeof b); }
};

std::string FormatQuantity(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v)))
    return std::to_string(static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

// Sorted a minus sorted b.
std::vector<std::string> Minus(const std::vector<std::string>& a,
                               const std::vector<std::string>& b) {
  std::vector<std::string> out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

class SyncLogStore {
 public:
  // A log as read, with the full log its ids are stored against.
  struct Stored {
    SyncLogInfo info;
    std::string base_id;                // the full log (itself if stored in full)
    std::vector<std::string> base_ids;  // that log's case ids
  };

  Status Open(const std::string& where) {
    CC_ASSIGN_OR_RETURN(db_, util::SqlDb::Open(where, "commcare_synclogs"));
    if (!db_->postgres())  // WAL: no corruption on a crash
      CC_RETURN_IF_ERROR(db_->Run("setting up", "PRAGMA synchronous=NORMAL").status());
    return db_->Migrate("synclogs", kSchemaVersion, kSchema, kSchema);
  }
  // Stores l, as a difference from base when that is under a quarter of its size.
  Status Put(const SyncLogInfo& l, const Stored* base) {
    std::string base_id, ids, removed;
    if (base && !base->base_id.empty()) {
      auto add = Minus(l.case_ids, base->base_ids), del = Minus(base->base_ids, l.case_ids);
      if ((add.size() + del.size()) * 4 < base->base_ids.size()) {
        base_id = base->base_id;
        ids = Join(add);
        removed = Join(del);
      }
    }
    if (base_id.empty()) ids = Join(l.case_ids);
    std::lock_guard lock(mu_);
    return db_
        ->Run("storing a sync log",
              "INSERT INTO synclogs(sync_id, domain, user_id, previous_id, device_id, app_id, "
              "date, owner_ids, state_hash, base_id, case_ids, removed, indexed_ids) "
              "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(sync_id) DO UPDATE SET "
              "domain=excluded.domain, user_id=excluded.user_id, "
              "previous_id=excluded.previous_id, device_id=excluded.device_id, "
              "app_id=excluded.app_id, date=excluded.date, owner_ids=excluded.owner_ids, "
              "state_hash=excluded.state_hash, base_id=excluded.base_id, "
              "case_ids=excluded.case_ids, removed=excluded.removed, "
              "indexed_ids=excluded.indexed_ids",
              {l.sync_id, l.domain, l.user_id, l.previous_id, l.device_id, l.app_id, l.date,
               Join(l.owner_ids), l.state_hash, base_id, ids, removed, Join(l.indexed_case_ids)})
        .status();
  }
  Result<Stored> Get(std::string_view id) {
    std::lock_guard lock(mu_);
    Stored out;
    std::vector<std::string> add, del;
    CC_RETURN_IF_ERROR(Row(id, &out.info, &out.base_id, &add, &del));
    if (out.base_id.empty()) {
      out.base_id = out.info.sync_id;
      out.base_ids = add;
      out.info.case_ids = std::move(add);
      return out;
    }
    SyncLogInfo base;
    std::string none;
    std::vector<std::string> base_del;
    Status s = Row(out.base_id, &base, &none, &out.base_ids, &base_del);
    if (s.IsNotFound()) return Status::NotFound(fmt::format("sync log '{}' lost its base log", id));
    CC_RETURN_IF_ERROR(s);
    std::vector<std::string> kept = Minus(out.base_ids, del);
    std::merge(kept.begin(), kept.end(), add.begin(), add.end(),
               std::back_inserter(out.info.case_ids));
    return out;
  }
  // Whether the log is stored (without reading its case ids) and, when the store is shared
  // (PostgreSQL), was made after the user's last submission on any server.
  bool Usable(std::string_view id, std::string_view user_key) {
    std::lock_guard lock(mu_);
    auto r = db_->Run("reading a sync log", "SELECT date FROM synclogs WHERE sync_id=?", {id});
    if (!r.ok() || r->empty()) return false;
    if (!db_->postgres()) return true;  // one server: its own cache files were removed
    auto inv = db_->Run("reading a restore invalidation",
                        "SELECT at FROM restore_invalidations WHERE user_key=?", {user_key});
    return inv.ok() && (inv->empty() || inv->Int(0, 0) < r->Int(0, 0));
  }
  // Marks the user's cached restores stale for every server sharing the store (PostgreSQL).
  void Invalidate(std::string_view user_key) {
    std::lock_guard lock(mu_);
    if (!db_->postgres()) return;
    (void)db_->Run("recording a restore invalidation",
                   "INSERT INTO restore_invalidations(user_key, at) VALUES(?,?) "
                   "ON CONFLICT(user_key) DO UPDATE SET at=excluded.at",
                   {user_key, util::NowMicros()});
  }
  Result<int64_t> Prune(int64_t max_age_us) {
    std::lock_guard lock(mu_);
    int64_t n = 0;
    CC_RETURN_IF_ERROR(db_->Transaction("pruning sync logs", kPruneLock, [&]() -> Status {
      // Never a log another log's ids are stored against.
      const int64_t cutoff = util::NowMicros() - max_age_us;
      CC_ASSIGN_OR_RETURN(
          auto old, db_->Run("pruning sync logs",
                             "DELETE FROM synclogs WHERE date<? AND sync_id NOT IN (SELECT base_id "
                             "FROM synclogs WHERE base_id != '' AND date>=?)",
                             {cutoff, cutoff}));
      // Per (user, device, app): keep the newest two (and the logs they are stored against).
      CC_ASSIGN_OR_RETURN(
          auto extra,
          db_->Run("pruning sync logs",
                   "WITH ranked AS (SELECT sync_id, base_id, ROW_NUMBER() OVER (PARTITION BY "
                   "domain, user_id, device_id, app_id ORDER BY date DESC) AS k FROM synclogs) "
                   "DELETE FROM synclogs WHERE sync_id IN (SELECT sync_id FROM ranked WHERE k > 2) "
                   "AND sync_id NOT IN (SELECT base_id FROM ranked WHERE k <= 2)"));
      n = old.changed + extra.changed;
      return Status::Ok();
    }));
    return n;
  }

 private:
  Status Row(std::string_view id, SyncLogInfo* l, std::string* base_id,
             std::vector<std::string>* ids, std::vector<std::string>* removed) {
    CC_ASSIGN_OR_RETURN(
        auto r, db_->Run("reading a sync log",
                         "SELECT domain, user_id, previous_id, device_id, app_id, date, owner_ids, "
                         "state_hash, base_id, case_ids, removed, indexed_ids FROM synclogs "
                         "WHERE sync_id=?",
                         {id}));
    if (r.empty()) return Status::NotFound(fmt::format("no sync log '{}'", id));
    l->sync_id = std::string(id);
    l->domain = std::string(r.Str(0, 0));
    l->user_id = std::string(r.Str(0, 1));
    l->previous_id = std::string(r.Str(0, 2));
    l->device_id = std::string(r.Str(0, 3));
    l->app_id = std::string(r.Str(0, 4));
    l->date = r.Int(0, 5);
    l->owner_ids = Split(r.Str(0, 6));
    l->state_hash = std::string(r.Str(0, 7));
    *base_id = std::string(r.Str(0, 8));
    *ids = Split(r.Str(0, 9));
    *removed = Split(r.Str(0, 10));
    l->indexed_case_ids = Split(r.Str(0, 11));
    return Status::Ok();
  }

  std::mutex mu_;
  std::unique_ptr<util::SqlDb> db_;
};

// Calls fn(store, ids) for each database with the ids it holds.
template <typename F>
Status PerDatabase(Engine* e, std::span<const std::string> ids, F&& fn) {
  if (ids.empty()) return Status::Ok();
  std::vector<std::vector<std::string>> by_db(static_cast<size_t>(e->NumDatabases()));
  for (const auto& id : ids) by_db[static_cast<size_t>(e->DatabaseFor(id))].push_back(id);
  for (size_t d = 0; d < by_db.size(); ++d)
    if (!by_db[d].empty())
      CC_RETURN_IF_ERROR(
          fn(e->Database(static_cast<int>(d)), std::span<const std::string>(by_db[d])));
  return Status::Ok();
}

// The livequery walk over the case graph (see the rules at the top of this file).
class LiveQuery {
 public:
  explicit LiveQuery(Engine* e) : e_(e) {}

  Status Run(std::string_view domain, const std::vector<std::string>& owner_ids) {
    for (int d = 0; d < e_->NumDatabases(); ++d)
      for (const auto& o : owner_ids) {
        CC_ASSIGN_OR_RETURN(auto nodes, e_->Database(d)->OpenCasesByOwner(domain, o));
        // Sized once: rehashing while 10,000s of ids go in cost more than the inserts.
        for (auto* set : {&owned_, &open_, &live_}) set->reserve(set->size() + nodes.size());
        has_indices_.reserve(has_indices_.size() + nodes.size());
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
      CC_RETURN_IF_ERROR(PerDatabase(e_, holders, [&](storage::PrimaryStore* db, auto ids) {
        CC_ASSIGN_OR_RETURN(auto edges, db->IndicesOf(ids));
        for (auto& e : edges) related.push_back(std::move(e));
        return Status::Ok();
      }));
      for (int d = 0; d < e_->NumDatabases(); ++d) {
        CC_ASSIGN_OR_RETURN(auto edges, e_->Database(d)->ExtensionsOf(frontier));
        for (auto& e : edges) related.push_back(std::move(e));
      }
      if (related.empty()) break;
      // States of the cases met for the first time (a case's state is known once it is in
      // has_indices_ or, when not stored, in deleted_).
      std::vector<std::string> fresh;
      for (const auto& e : related)
        for (const std::string* id : {&e.case_id, &e.index.referenced_id})
          if (!has_indices_.count(*id) && !deleted_.count(*id)) fresh.push_back(*id);
      std::sort(fresh.begin(), fresh.end());
      fresh.erase(std::unique(fresh.begin(), fresh.end()), fresh.end());
      CC_RETURN_IF_ERROR(PerDatabase(e_, fresh, [&](storage::PrimaryStore* db, auto ids) {
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
  bool HasIndices(const std::string& id) const {
    auto it = has_indices_.find(id);
    return it != has_indices_.end() && it->second;
  }

 private:
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
  std::unordered_set<std::string> owned_, open_, deleted_, live_, seen_;
  std::unordered_map<std::string, bool> has_indices_;
  std::unordered_map<std::string, std::set<std::string>> extensions_by_host_, hosts_by_extension_,
      parents_by_child_;
};

// Writes the payload in chunks once 64 KB have gathered (a batch of cases at a time).
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

// A stored case document (the codec's case encoding), read in place: the restore formats
// straight from it (decoding into CaseRecords and their property maps cost more than the
// formatting).
class CaseDoc {
 public:
  explicit CaseDoc(const json::object& o) : o_(&o) {}
  std::string_view Str(std::string_view key) const {
    const json::value* v = o_->if_contains(key);
    return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
  }
  int64_t Int(std::string_view key) const { return codec::GetInt(*o_, key); }
  bool Bool(std::string_view key) const { return codec::GetBool(*o_, key); }
  // The array or object under key (empty when absent or of another type).
  const json::array& Array(std::string_view key) const {
    static const json::array kNone;
    const json::value* v = o_->if_contains(key);
    return v && v->is_array() ? v->get_array() : kNone;
  }
  const json::object& Object(std::string_view key) const {
    static const json::object kNone;
    const json::value* v = o_->if_contains(key);
    return v && v->is_object() ? v->get_object() : kNone;
  }

 private:
  const json::object* o_;
};

// Parses stored case documents one after another, reusing the parser and a stack buffer.
class CaseDocParser {
 public:
  Result<json::object> Parse(std::string_view text, json::storage_ptr sp) {
    parser_.reset(std::move(sp));
    boost::system::error_code ec;
    parser_.write(text, ec);  // the whole text: an incomplete document is an error
    if (ec) return Status::DataLoss("a stored case is not valid JSON");
    json::value v = parser_.release();
    if (!v.is_object()) return Status::DataLoss("a stored case is not a JSON object");
    return std::move(v.get_object());
  }

 private:
  json::parser parser_;
};

// A case block as CommCare's generators write it for this restore version.
void CaseBlock(std::string* o, const CaseDoc& c, bool create, bool v1) {
  const std::string_view case_id = c.Str("case_id");
  if (c.Bool("deleted")) {  // gone from the server: the phone drops it
    if (v1) {
      *o += "<case><case_id>";
      AppendXmlEscaped(o, case_id);
      *o += "</case_id><close/></case>";
    } else {
      *o += "<case xmlns=\"http://commcarehq.org/case/transaction/v2\" case_id=\"";
      AppendXmlEscaped(o, case_id);
      *o += "\"><close/></case>";
    }
    return;
  }
  const std::string modified = FormatTime(c.Int("modified_on"));
  if (v1) {
    *o += "<case>";
    Elem(o, "case_id", case_id);
    Elem(o, "date_modified", modified);
    if (create) {
      *o += "<create>";
      Elem(o, "case_type_id", c.Str("type"));
      Elem(o, "user_id", c.Str("opened_by"));
      Elem(o, "case_name", c.Str("name"));
      Elem(o, "external_id", c.Str("external_id"));
      *o += "</create>";
    }
  } else {
    *o += "<case xmlns=\"http://commcarehq.org/case/transaction/v2\" case_id=\"";
    AppendXmlEscaped(o, case_id);
    *o += "\" date_modified=\"";
    *o += modified;
    *o += "\" user_id=\"";
    AppendXmlEscaped(o, c.Str("modified_by"));
    *o += "\">";
    if (create) {
      *o += "<create>";
      Elem(o, "case_type", c.Str("type"));
      Elem(o, "case_name", c.Str("name"));
      Elem(o, "owner_id", c.Str("owner_id"));
      *o += "</create>";
    }
  }
  *o += "<update>";
  if (!create && !v1) {  // base properties go in the update when there is no create
    Elem(o, "case_type", c.Str("type"));
    Elem(o, "case_name", c.Str("name"));
    Elem(o, "owner_id", c.Str("owner_id"));
  }
  if (!v1) {
    if (auto ext = c.Str("external_id"); !ext.empty()) Elem(o, "external_id", ext);
    Elem(o, "date_opened", FormatTime(c.Int("opened_on")));
  }
  // Properties by name (the codec writes them sorted; sorted here too for any other writer).
  const json::object& props = c.Object("properties");
  std::vector<const json::key_value_pair*> kv;
  kv.reserve(props.size());
  for (const auto& p : props)
    if (p.value().is_string()) kv.push_back(&p);
  auto by_key = [](const auto* a, const auto* b) { return a->key() < b->key(); };
  if (!std::is_sorted(kv.begin(), kv.end(), by_key)) std::sort(kv.begin(), kv.end(), by_key);
  for (const auto* p : kv) Elem(o, p->key(), p->value().get_string());
  *o += "</update>";
  if (const json::array& indices = c.Array("indices"); !indices.empty()) {
    std::vector<CaseDoc> ix;
    for (const auto& i : indices)
      if (i.is_object()) ix.emplace_back(i.get_object());
    std::sort(ix.begin(), ix.end(), [](const CaseDoc& a, const CaseDoc& b) {
      return a.Str("identifier") < b.Str("identifier");
    });
    *o += "<index>";
    for (const auto& i : ix) {
      *o += '<';
      *o += i.Str("identifier");
      *o += " case_type=\"";
      AppendXmlEscaped(o, i.Str("referenced_type"));
      *o += '"';
      if (i.Str("relationship") == "extension") *o += " relationship=\"extension\"";
      *o += '>';
      AppendXmlEscaped(o, i.Str("referenced_id"));
      *o += "</";
      *o += i.Str("identifier");
      *o += '>';
    }
    *o += "</index>";
  }
  if (const json::array& atts = c.Array("attachments"); !atts.empty() && !v1) {
    *o += "<attachment>";
    for (const auto& av : atts) {
      if (!av.is_object()) continue;
      CaseDoc a(av.get_object());
      *o += '<';
      *o += a.Str("name");
      *o += " src=\"";
      AppendXmlEscaped(o, a.Str("src"));
      *o += "\" from=\"";
      AppendXmlEscaped(o, a.Str("from").empty() ? "local" : a.Str("from"));
      *o += "\"/>";
    }
    *o += "</attachment>";
  }
  if (c.Bool("closed")) *o += "<close/>";
  *o += "</case>";
}

// One balance block per section of a case's ledger values (ordered by section).
void BalanceBlocks(std::string* o, const std::vector<LedgerValue>& values) {
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
    i = j;
  }
}

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
    if (res.ok() && res->http_status == 200 && copy) {
      std::ofstream(path + ".id") << res->sync_id << ' ' << res->cases << ' ' << res->ledgers << ' '
                                  << res->footprint;
      std::filesystem::rename(tmp, path, ec);
    } else {
      std::filesystem::remove(tmp, ec);
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
      if (!req.state.empty() && req.state != phone_hash.Text())
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
      for (size_t i = 0; i < values.size(); ++i) {
        res.ledgers += i == 0 || values[i].section_id != values[i - 1].section_id ||
                       values[i].case_id != values[i - 1].case_id;
        ledgers[values[i].case_id].push_back(std::move(values[i]));
      }
      return Status::Ok();
    }));
    timing("ledgers");
    const bool v1 = req.version == "1.0";
    Out out(write);
    std::string& o = out.buf();
    o += "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"";
    if (req.items) {
      size_t fixtures = 0;
      for (size_t p = req.fixtures.find("<fixture"); p != std::string::npos;
           p = req.fixtures.find("<fixture", p + 1))
        ++fixtures;
      o += fmt::format(" items=\"{}\"", static_cast<int64_t>(send.size()) + res.ledgers +
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
          CaseBlock(&out->slots[static_cast<size_t>(at - batch.begin())], c, !phone.count(*at), v1);
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
        bool mine = false, others = false;
        for (const auto& t : txs) {
          if (t.server_date < prev.date) continue;
          (t.sync_log_id == prev.sync_id ? mine : others) = true;
        }
        if (!mine && !others) others = true;  // changed, but by no form since: the server's
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

  static std::string UserKey(std::string_view domain, std::string_view user_id) {
    return util::Md5Hex(std::string(domain) + '\0' + std::string(user_id)).substr(0, 16) + "-";
  }
  // The cache file of a first sync: per user, and per everything else that shapes the payload.
  std::string CachePath(const RestoreRequest& q) const {
    std::string shape = q.version + '\0' + q.device_id + '\0' + q.app_id + '\0' + q.user.username +
                        '\0' + q.user.password_hash + '\0' + q.fixtures + '\0' +
                        (q.items ? "items" : "");
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

std::string RestoreErrorPayload(std::string_view message) {
  std::string o =
      "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"><message "
      "nature=\"ota_restore_error\">";
  AppendXmlEscaped(&o, message);
  o += "</message></OpenRosaResponse>";
  return o;
}

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
