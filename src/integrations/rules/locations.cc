#include "integrations/rules/locations.h"

#include "meta/meta_store.h"

namespace commcare::rules {

Result<RuleLocations> LoadRuleLocations(meta::MetaStore* meta, std::string_view domain) {
  if (!meta) return Status::FailedPrecondition("no users and locations store");
  RuleLocations out;
  CC_ASSIGN_OR_RETURN(auto locations, meta->ListDocs("location", domain));
  for (const auto& l : locations) {
    const auto* p = l.body.if_contains("parent_id");
    out.parent_of[l.id] = p && p->is_string() ? std::string(p->get_string()) : std::string();
  }
  CC_ASSIGN_OR_RETURN(auto users, meta->ListUsers(domain));
  for (const auto& u : users)
    if (!u.location_ids.empty()) out.user_location[u.user_id] = u.location_ids.front();
  return out;
}

}  // namespace commcare::rules
