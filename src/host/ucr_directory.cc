// The UCR evaluator's Directory over the MetaStore. The documents are HQ's to_json shapes
// (corehq/apps/locations/models.py SQLLocation.to_json, corehq/apps/groups/models.py Group,
// corehq/apps/users/models.py CommCareUser), holding the fields the MetaStore keeps and null for
// the rest (latitude, longitude, external_id, archived_on).
#include "host/ucr_directory.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <set>

#include "meta/meta_store.h"

namespace commcare {
namespace {

namespace json = boost::json;
using meta::Doc;
using meta::MetaStore;

std::string Str(const json::object& o, const char* k) {
  const json::value* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}
json::value Object(const json::object& o, const char* k) {
  const json::value* v = o.if_contains(k);
  return v && v->is_object() ? *v : json::value(json::object());
}

json::object GroupJson(const Doc& g) {
  const json::value* users = g.body.if_contains("users");
  const json::value* sharing = g.body.if_contains("case_sharing");
  const json::value* reporting = g.body.if_contains("reporting");
  return {{"_id", g.id},
          {"doc_type", "Group"},
          {"domain", g.domain},
          {"name", Str(g.body, "name")},
          {"users", users && users->is_array() ? *users : json::value(json::array())},
          {"case_sharing", sharing && sharing->is_bool() && sharing->get_bool()},
          {"reporting", !reporting || !reporting->is_bool() || reporting->get_bool()},
          {"metadata", Object(g.body, "metadata")},
          {"path", json::array()},
          {"removed_users", json::array()}};
}

class MetaDirectory final : public pillows::ucr::Directory {
 public:
  explicit MetaDirectory(MetaStore* meta) : meta_(meta) {}

  Result<json::object> Get(std::string_view domain, std::string_view doc_type,
                           std::string_view id) override {
    if (doc_type == "Location") return Location(domain, id);
    if (doc_type == "Group") {
      CC_ASSIGN_OR_RETURN(Doc g, meta_->GetDoc("group", domain, id));
      return GroupJson(g);
    }
    if (doc_type == "CommCareUser") {
      CC_ASSIGN_OR_RETURN(meta::User u, UserById(domain, id));
      return UserJson(u, domain);
    }
    return Status::NotFound(fmt::format("no {} documents here", doc_type));
  }

  Result<std::vector<std::string>> Ids(std::string_view domain,
                                       std::string_view doc_type) override {
    std::vector<std::string> out;
    if (doc_type == "Location") {
      CC_ASSIGN_OR_RETURN(auto all, meta_->ListDocs("location", domain));
      for (const auto& l : all) out.push_back(l.id);
    } else if (doc_type == "CommCareUser") {
      CC_ASSIGN_OR_RETURN(auto all, meta_->ListUsers(domain));
      for (const auto& u : all)
        if (!u.web_user) out.push_back(u.user_id);
    }
    return out;
  }

  // The next miss refreshes the id map at once; known ids stay mapped (GetUser reads the user
  // itself fresh), so a burst of user changes lists the users once per new id, not per change.
  void Forget(std::string_view domain) override {
    std::lock_guard l(mu_);
    if (auto it = by_domain_.find(std::string(domain)); it != by_domain_.end())
      it->second.read = {};
  }

  // CommCareUser.get_case_sharing_groups (the locations' groups, then the groups) or
  // get_reporting_groups; a web user is no CommCareUser (HQ's AccountTypeError: none).
  Result<json::array> Groups(std::string_view domain, std::string_view user_id,
                             bool case_sharing) override {
    json::array out;
    auto u = UserById(domain, user_id);
    if (!u.ok()) return u.status().IsNotFound() ? Result<json::array>(out) : u.status();
    if (u->web_user) return out;
    CC_ASSIGN_OR_RETURN(auto dir, meta_->ReadDirectory(domain));
    std::map<std::string, const Doc*> groups;
    for (const auto& g : dir.groups) groups[g.id] = &g;
    if (case_sharing) {
      for (const auto& sg : MetaStore::CaseSharingGroups(*u, dir)) {
        if (auto g = groups.find(sg.id); g != groups.end()) {
          out.push_back(GroupJson(*g->second));
          continue;
        }
        // A location's SQLLocation.case_sharing_group_object (its users are not listed here).
        out.push_back(json::object{{"_id", sg.id},
                                   {"doc_type", "Group"},
                                   {"domain", domain},
                                   {"name", sg.name},
                                   {"users", json::array()},
                                   {"case_sharing", true},
                                   {"reporting", false},
                                   {"metadata", sg.metadata}});
      }
      return out;
    }
    for (const auto& g : dir.groups) {
      json::object j = GroupJson(g);
      const auto& members = j["users"].get_array();
      if (j["reporting"].get_bool() &&
          std::any_of(members.begin(), members.end(), [&](const json::value& x) {
            return x.is_string() && x.get_string() == user_id;
          }))
        out.push_back(std::move(j));
    }
    return out;
  }

 private:
  // SQLLocation.to_json: lineage is the ancestors' ids, nearest first.
  Result<json::object> Location(std::string_view domain, std::string_view id) {
    CC_ASSIGN_OR_RETURN(Doc l, meta_->GetDoc("location", domain, id));
    json::array lineage;
    std::set<std::string> seen{l.id};
    for (std::string up = Str(l.body, "parent_id"); !up.empty() && seen.insert(up).second;) {
      lineage.push_back(json::value(up));
      auto p = meta_->GetDoc("location", domain, up);
      if (!p.ok()) break;
      up = Str(p->body, "parent_id");
    }
    const std::string parent = Str(l.body, "parent_id");
    return json::object{
        {"_id", l.id},
        {"location_id", l.id},
        {"doc_type", "Location"},
        {"domain", l.domain},
        {"name", Str(l.body, "name")},
        {"site_code", Str(l.body, "site_code")},
        {"location_type", Str(l.body, "location_type")},
        {"location_type_code", Str(l.body, "location_type")},
        {"parent_location_id", parent.empty() ? json::value() : json::value(parent)},
        {"metadata", Object(l.body, "metadata")},
        {"is_archived", false},
        {"archived_on", nullptr},
        {"external_id", nullptr},
        {"latitude", nullptr},
        {"longitude", nullptr},
        {"lineage", std::move(lineage)}};
  }

  json::object UserJson(const meta::User& u, std::string_view domain) {
    json::array locations;
    for (const auto& l : u.location_ids) locations.push_back(json::value(l));
    return {
        {"_id", u.user_id},
        {"doc_type", u.web_user ? "WebUser" : "CommCareUser"},
        {"domain", domain},
        {"username", u.username},
        {"is_active", u.is_active},
        {"user_data", u.user_data},
        {"location_id", u.location_ids.empty() ? json::value() : json::value(u.location_ids[0])},
        {"assigned_location_ids", std::move(locations)}};
  }

  // Users are stored by username: the domain's user ids are mapped once and mapped again when an
  // id is missing (a new user), at most once a second.
  Result<meta::User> UserById(std::string_view domain, std::string_view user_id) {
    std::string name;
    {
      std::lock_guard l(mu_);
      auto& m = by_domain_[std::string(domain)];
      auto it = m.names.find(std::string(user_id));
      const auto now = std::chrono::steady_clock::now();
      if (it == m.names.end() && now - m.read > std::chrono::seconds(1)) {
        CC_ASSIGN_OR_RETURN(auto users, meta_->ListUsers(domain));
        m.names.clear();
        for (const auto& u : users) m.names[u.user_id] = u.username;
        m.read = now;
        it = m.names.find(std::string(user_id));
      }
      if (it == m.names.end())
        return Status::NotFound(fmt::format("no user {} in {}", user_id, domain));
      name = it->second;
    }
    CC_ASSIGN_OR_RETURN(meta::User u, meta_->GetUser(name));
    if (u.user_id != user_id || !u.InDomain(domain))
      return Status::NotFound(fmt::format("no user {} in {}", user_id, domain));
    return u;
  }

  struct Users {
    std::map<std::string, std::string> names;  // user id -> username
    std::chrono::steady_clock::time_point read;
  };
  MetaStore* meta_;
  std::mutex mu_;
  std::map<std::string, Users> by_domain_;
};

}  // namespace

std::shared_ptr<pillows::ucr::Directory> NewMetaDirectory(meta::MetaStore* meta) {
  return std::make_shared<MetaDirectory>(meta);
}

}  // namespace commcare
