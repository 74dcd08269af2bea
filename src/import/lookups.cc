// Owner and case lookups of the case importer (lookups.h).
#include "import/lookups.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "meta/meta_store.h"

namespace commcare::importer {

namespace json = boost::json;

namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string Field(const json::object& o, const char* k) {
  const json::value* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

bool Flag(const json::object& o, const char* k) {
  const json::value* v = o.if_contains(k);
  return v && v->is_bool() && v->get_bool();
}

}  // namespace

Status OwnerLookup::Load() {
  if (loaded_) return Status::Ok();
  if (!meta_) return Status::FailedPrecondition("no user store to look owners up in");
  CC_ASSIGN_OR_RETURN(auto users, meta_->ListUsers(domain_));
  for (const auto& u : users) {
    user_by_name_[Lower(u.username)] = u.user_id;
    users_.insert(u.user_id);
  }
  CC_ASSIGN_OR_RETURN(auto groups, meta_->ListDocs("group", domain_));
  for (const auto& g : groups) {
    groups_[g.id] = Flag(g.body, "case_sharing");
    group_by_name_.emplace(Field(g.body, "name"), g.id);
  }
  CC_ASSIGN_OR_RETURN(auto locs, meta_->ListDocs("location", domain_));
  for (const auto& l : locs) {
    locations_[l.id] = Flag(l.body, "shares_cases");
    location_by_name_.emplace(Lower(Field(l.body, "name")), l.id);
    if (std::string code = Field(l.body, "site_code"); !code.empty())
      location_by_name_.emplace(Lower(code), l.id);
  }
  loaded_ = true;
  return Status::Ok();
}

bool OwnerLookup::CheckId(const std::string& owner_id, RowError* err) {
  if (Status s = Load(); !s.ok()) {
    *err = {"owner_id", "Invalid Owner ID", s.message()};
    return false;
  }
  if (users_.count(owner_id)) return true;
  if (auto g = groups_.find(owner_id); g != groups_.end() && g->second) return true;
  if (auto l = locations_.find(owner_id); l != locations_.end() && l->second) return true;
  *err = {"owner_id", "Invalid Owner ID",
          fmt::format("'{}' is not a user of the project, a case-sharing group or a "
                      "case-sharing location",
                      owner_id)};
  return false;
}

Result<std::string> OwnerLookup::IdFromName(const std::string& name, RowError* err) {
  if (Status s = Load(); !s.ok()) {
    *err = {"owner_name", "Invalid Owner Name", s.message()};
    return s;
  }
  const std::string lower = Lower(name);
  for (const std::string& u :
       {lower, lower.find('@') == std::string::npos
                   ? fmt::format("{}@{}.commcarehq.org", lower, Lower(domain_))
                   : lower})
    if (auto it = user_by_name_.find(u); it != user_by_name_.end()) return it->second;
  std::string id;
  if (auto [b, e] = group_by_name_.equal_range(name); b != e) {
    id = b->second;
  } else {
    auto [lb, le] = location_by_name_.equal_range(lower);
    std::set<std::string> ids;
    for (auto it = lb; it != le; ++it) ids.insert(it->second);
    if (ids.size() > 1) {
      *err = {"owner_name", "Duplicate Location Name",
              fmt::format("more than one location is named '{}'", name)};
      return Status::InvalidArgument(err->reason);
    }
    if (!ids.empty()) id = *ids.begin();
  }
  if (id.empty()) {
    *err = {"owner_name", "Invalid Owner Name",
            fmt::format("no user, group or location is named '{}'", name)};
    return Status::NotFound(err->reason);
  }
  if (!CheckId(id, err)) {
    err->column = "owner_name";
    err->title = "Invalid Owner Name";
    return Status::InvalidArgument(err->reason);
  }
  return id;
}

Result<std::optional<FoundCase>> CaseLookup::ById(const std::string& case_id,
                                                  const std::string& type) {
  auto c = engine_->GetCase(domain_, case_id);
  if (c.status().IsNotFound()) return std::optional<FoundCase>();
  if (!c.ok()) return c.status();
  if (c->deleted || (!type.empty() && c->type != type)) return std::optional<FoundCase>();
  return std::optional<FoundCase>(FoundCase{c->case_id, c->type});
}

Status CaseLookup::Index(const std::string& type) {
  if (by_external_.count(type)) return Status::Ok();
  auto& index = by_external_[type];
  storage::CaseFilter f;
  f.domain = domain_;
  f.type = type;
  CC_RETURN_IF_ERROR(engine_->ListCaseDocuments(f, [&](std::string_view doc) {
    boost::system::error_code ec;
    json::value v = json::parse(doc, ec);
    if (ec || !v.is_object()) return true;
    std::string ext = Field(v.get_object(), "external_id");
    if (!ext.empty()) index.emplace(std::move(ext), Field(v.get_object(), "case_id"));
    return true;
  }));
  return Status::Ok();
}

Result<std::vector<std::string>> CaseLookup::ByExternalId(const std::string& external_id,
                                                          const std::string& type) {
  CC_RETURN_IF_ERROR(Index(type));
  std::vector<std::string> out;
  auto [b, e] = by_external_[type].equal_range(external_id);
  for (auto it = b; it != e; ++it)
    if (std::find(out.begin(), out.end(), it->second) == out.end()) out.push_back(it->second);
  auto [cb, ce] = created_[type].equal_range(external_id);
  for (auto it = cb; it != ce; ++it)
    if (std::find(out.begin(), out.end(), it->second) == out.end()) out.push_back(it->second);
  return out;
}

void CaseLookup::Created(const std::string& type, const std::string& external_id,
                         const std::string& case_id) {
  if (!external_id.empty()) created_[type].emplace(external_id, case_id);
}

}  // namespace commcare::importer
