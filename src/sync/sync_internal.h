// What the mobile sync files share (internal to src/sync): the log store, livequery, payload.
#pragma once

#include <boost/json.hpp>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "commcare/sync.h"
#include "util/codec.h"
#include "util/sql_db.h"

namespace commcare::sync_internal {

namespace json = boost::json;

// Sync logs (sync_log_store.cc).
std::vector<std::string> Minus(const std::vector<std::string>& a,
                               const std::vector<std::string>& b);

class SyncLogStore {
 public:
  // A log as read, with the full log its ids are stored against.
  struct Stored {
    SyncLogInfo info;
    std::string base_id;                // the full log (itself if stored in full)
    std::vector<std::string> base_ids;  // that log's case ids
  };

  Status Open(const std::string& where);
  // Stores l, as a difference from base when that is under a quarter of its size.
  Status Put(const SyncLogInfo& l, const Stored* base);
  Result<Stored> Get(std::string_view id);
  // Whether the log is stored (without reading its case ids) and, when the store is shared
  // (PostgreSQL), was made after the user's last submission on any server.
  bool Usable(std::string_view id, std::string_view user_key);
  // Marks the user's cached restores stale for every server sharing the store (PostgreSQL).
  void Invalidate(std::string_view user_key);
  Result<int64_t> Prune(int64_t max_age_us);

 private:
  Status Row(std::string_view id, SyncLogInfo* l, std::string* base_id,
             std::vector<std::string>* ids, std::vector<std::string>* removed);

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

// The livequery walk over the case graph (see the rules at the top of sync.cc).
class LiveQuery {
 public:
  explicit LiveQuery(Engine* e) : e_(e) {}

  Status Run(std::string_view domain, const std::vector<std::string>& owner_ids);

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
  bool HasLiveExtension(const std::string& id, std::unordered_map<std::string, bool>* cache);
  // Marks the case live, and with it its pending extensions, hosts and parents.
  void Enliven(const std::string& first);

  Engine* e_;
  std::unordered_set<std::string> owned_, open_, deleted_, live_, seen_;
  std::unordered_map<std::string, bool> has_indices_;
  std::unordered_map<std::string, std::set<std::string>> extensions_by_host_, hosts_by_extension_,
      parents_by_child_;
};

// The restore payload (sync_payload.cc).
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

// Percent-encodes all but RFC 3986's unreserved characters.
std::string UrlEncode(std::string_view s);
// A case block; attachment_base + "<case_id>/<name>" is where the phone fetches an attachment.
void CaseBlock(std::string* o, const CaseDoc& c, bool create, bool v1,
               std::string_view attachment_base);
void BalanceBlocks(std::string* o, const std::vector<LedgerValue>& values);

}  // namespace commcare::sync_internal
