// Livequery: which cases a phone holds, walked over the case graph (rules at the top of sync.cc).
#include <algorithm>

#include "sync/sync_internal.h"

namespace commcare::sync_internal {
namespace {

using storage::CaseIndexEdge;

}  // namespace

Status LiveQuery::Run(std::string_view domain, const std::vector<std::string>& owner_ids) {
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

bool LiveQuery::HasLiveExtension(const std::string& id,
                                 std::unordered_map<std::string, bool>* cache) {
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

void LiveQuery::Enliven(const std::string& first) {
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

}  // namespace commcare::sync_internal
