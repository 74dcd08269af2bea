// The MetaStore's domain-scoped documents (meta_store.h): roles, groups, locations and apps,
// validated per kind, with revisions and tombstones.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <initializer_list>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "meta/meta_store.h"
#include "meta/meta_store_internal.h"
#include "util/codec.h"
#include "util/hash.h"
#include "util/sql_db.h"
#include "util/xml.h"

namespace commcare::meta {
namespace {

namespace json = boost::json;
using codec::GetStr;
using util::IsXmlName;

const std::map<std::string_view, std::pair<std::string_view, std::string_view>> kDocTopics = {
    {"role", {"role", "UserRole"}},
    {"group", {"group", "Group"}},
    {"location", {"location", "Location"}},
    {"app", {"app", "Application"}},
    {"lookup_table", {"lookup_table", "LookupTable"}},
    {"lookup_item", {"lookup_table", "LookupTableRow"}},
    // Served by /a/{domain}/api/ucr/report/{id}/ only (not a kDocKinds route): the server
    // checks the configuration before it is put.
    {"ucr_report", {"ucr_report", "ReportConfiguration"}}};

Status CheckString(const json::object& b, const char* k, bool required) {
  const json::value* v = b.if_contains(k);
  if ((!v && required) || (v && !v->is_string()) || (required && v->get_string().empty()))
    return Status::InvalidArgument(
        fmt::format("{}: {} a string", k, required ? "is required," : "must be"));
  return Status::Ok();
}
Status CheckBool(const json::object& b, const char* k) {
  if (const json::value* v = b.if_contains(k); v && !v->is_bool())
    return Status::InvalidArgument(fmt::format("{}: must be true or false", k));
  return Status::Ok();
}
Status CheckStringMap(const json::object& b, const char* k) {
  if (const json::value* v = b.if_contains(k)) {
    if (!v->is_object()) return Status::InvalidArgument(fmt::format("{}: must be an object", k));
    for (const auto& kv : v->get_object())
      if (!kv.value().is_string())
        return Status::InvalidArgument(fmt::format("{}.{}: must be a string", k, kv.key()));
  }
  return Status::Ok();
}
Status CheckNumber(const json::object& b, const char* k, double lo, double hi) {
  const json::value* v = b.if_contains(k);
  if (!v || v->is_null()) return Status::Ok();
  if (!v->is_number() || v->to_number<double>() < lo || v->to_number<double>() > hi)
    return Status::InvalidArgument(fmt::format("{}: must be a number from {} to {}", k, lo, hi));
  return Status::Ok();
}
Status CheckOnly(const json::object& b, std::initializer_list<std::string_view> keys) {
  for (const auto& kv : b)
    if (std::find(keys.begin(), keys.end(), kv.key()) == keys.end())
      return Status::InvalidArgument(fmt::format("{}: unknown field", kv.key()));
  return Status::Ok();
}

}  // namespace

// A stored document (live or deleted) and its revision (mu held).
Result<std::optional<Doc>> MetaStore::Impl::LoadDoc(std::string_view kind, std::string_view id,
                                                    bool* deleted) {
  CC_ASSIGN_OR_RETURN(
      auto r,
      db->Run("reading a document",
              "SELECT domain, doc, rev, deleted FROM docs WHERE kind=? AND id=?", {kind, id}));
  std::optional<Doc> d;
  if (r.empty()) return d;
  d.emplace();
  d->kind = std::string(kind);
  d->id = std::string(id);
  d->domain = std::string(r.Str(0, 0));
  boost::system::error_code ec;
  json::value v = json::parse(r.Str(0, 1), ec);
  if (!ec && v.is_object()) d->body = std::move(v.get_object());
  d->rev = r.Int(0, 2);
  *deleted = r.Int(0, 3) != 0;
  return d;
}

Result<Doc> MetaStore::PutDoc(Doc d) {
  if (!kDocTopics.count(d.kind))
    return Status::InvalidArgument(fmt::format("no document kind '{}'", d.kind));
  CC_RETURN_IF_ERROR(GetDomain(d.domain).status());
  if (d.id.empty()) d.id = util::NewUuidHex();
  if (d.id.size() > 64 ||
      d.id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789-_.") != std::string::npos)
    return Status::InvalidArgument(
        fmt::format("id: '{}' must be 1-64 letters, digits, '-', '_' or '.'", d.id));
  const json::object& b = d.body;
  const bool lookup = d.kind == "lookup_table" || d.kind == "lookup_item";
  if (!lookup && d.kind != "ucr_report") CC_RETURN_IF_ERROR(CheckString(b, "name", true));
  if (d.kind == "role") {
    CC_RETURN_IF_ERROR(CheckOnly(b, {"name", "permissions"}));
    if (const json::value* p = b.if_contains("permissions")) {
      if (!p->is_array()) return Status::InvalidArgument("permissions: must be a list");
      for (const auto& x : p->get_array())
        if (!x.is_string() ||
            (x.get_string() != kEditData && x.get_string() != kAccessApi &&
             x.get_string() != kMobileEndpoints && x.get_string() != kManageUsers))
          return Status::InvalidArgument(
              "permissions: each must be edit_data, access_api, access_mobile_endpoints or "
              "manage_users");
    }
  } else if (d.kind == "group") {
    CC_RETURN_IF_ERROR(CheckOnly(b, {"name", "users", "case_sharing", "reporting", "metadata"}));
    CC_RETURN_IF_ERROR(CheckBool(b, "case_sharing"));
    CC_RETURN_IF_ERROR(CheckBool(b, "reporting"));
    CC_RETURN_IF_ERROR(CheckStringMap(b, "metadata"));
    if (const json::value* p = b.if_contains("users")) {
      if (!p->is_array()) return Status::InvalidArgument("users: must be a list of user ids");
      CC_ASSIGN_OR_RETURN(auto members, ListUsers(d.domain));
      for (const auto& x : p->get_array()) {
        bool known = x.is_string() && std::any_of(members.begin(), members.end(), [&](auto& u) {
                       return u.user_id == x.get_string();
                     });
        if (!known)
          return Status::InvalidArgument(
              fmt::format("users: {} is not the id of a user of {}", json::serialize(x), d.domain));
      }
    }
  } else if (lookup) {
    CC_RETURN_IF_ERROR(CheckLookupDoc(d));
  } else if (d.kind == "location") {
    CC_RETURN_IF_ERROR(
        CheckOnly(b, {"name", "site_code", "location_type", "parent_id", "shares_cases",
                      "view_descendants", "metadata", "external_id", "latitude", "longitude"}));
    CC_RETURN_IF_ERROR(CheckString(b, "location_type", true));
    CC_RETURN_IF_ERROR(CheckString(b, "site_code", false));
    CC_RETURN_IF_ERROR(CheckString(b, "external_id", false));
    CC_RETURN_IF_ERROR(CheckNumber(b, "latitude", -90, 90));
    CC_RETURN_IF_ERROR(CheckNumber(b, "longitude", -180, 180));
    // The type code names fixture attributes ({code}_id) and metadata keys name elements, so
    // both must be XML names (HQ: fixtures/utils.py is_identifier_invalid).
    if (!IsXmlName(GetStr(b, "location_type")))
      return Status::InvalidArgument(
          "location_type: must start with a letter or _ and hold letters, digits, _, - or . only");
    if (const json::value* md = b.if_contains("metadata"); md && md->is_object())
      for (const auto& kv : md->get_object())
        if (!IsXmlName(kv.key()))
          return Status::InvalidArgument(fmt::format(
              "metadata.{}: a key must start with a letter or _ and hold letters, digits, _, - "
              "or . only",
              std::string_view(kv.key())));
    CC_RETURN_IF_ERROR(CheckBool(b, "shares_cases"));
    CC_RETURN_IF_ERROR(CheckBool(b, "view_descendants"));
    CC_RETURN_IF_ERROR(CheckStringMap(b, "metadata"));
    if (const json::value* p = b.if_contains("parent_id"); p && !p->is_null()) {
      if (!p->is_string()) return Status::InvalidArgument("parent_id: must be a string or null");
      // The parent must exist, and d must not be among its ancestors.
      std::string at(p->get_string());
      for (int depth = 0; !at.empty(); ++depth) {
        if (at == d.id || depth > 64)
          return Status::InvalidArgument(
              fmt::format("parent_id: {} would make a cycle", p->get_string()));
        auto parent = GetDoc("location", d.domain, at);
        if (!parent.ok())
          return Status::InvalidArgument(
              fmt::format("parent_id: no location {} in {}", at, d.domain));
        at = GetStr(parent->body, "parent_id");
      }
    }
  }
  {
    std::lock_guard l(impl_->mu);
    const auto& [topic, type] = kDocTopics.at(d.kind);
    CC_RETURN_IF_ERROR(impl_->Write("writing a document", [&]() -> Status {
      bool deleted = false;
      CC_ASSIGN_OR_RETURN(auto old, impl_->LoadDoc(d.kind, d.id, &deleted));
      if (old && old->domain != d.domain)
        return Status::AlreadyExists(fmt::format("{} {} belongs to another domain", d.kind, d.id));
      const int64_t stored = old ? old->rev : 0;
      if (stored != d.rev)
        return Status::Aborted(
            fmt::format("{} {} is at revision {}, not {}", d.kind, d.id, stored, d.rev));
      d.rev = stored + 1;
      CC_RETURN_IF_ERROR(impl_->db
                             ->Run("writing a document",
                                   "INSERT INTO docs(kind, id, domain, doc, rev, deleted) "
                                   "VALUES(?,?,?,?,?,0) ON CONFLICT(kind, id) DO UPDATE SET "
                                   "domain=excluded.domain, doc=excluded.doc, rev=excluded.rev, "
                                   "deleted=0",
                                   {d.kind, d.id, d.domain, json::serialize(d.body), d.rev})
                             .status());
      return impl_->Queue(topic, type, d.id, d.domain, false);
    }));
    if (d.kind == "role") impl_->Forget();  // permissions changed for its users
  }
  RelayAfterWrite();
  return d;
}

Result<Doc> MetaStore::GetDoc(std::string_view kind, std::string_view domain, std::string_view id) {
  std::lock_guard l(impl_->mu);
  bool deleted = false;
  CC_ASSIGN_OR_RETURN(auto d, impl_->LoadDoc(kind, id, &deleted));
  if (!d || deleted || d->domain != domain)
    return Status::NotFound(fmt::format("no {} {} in {}", kind, id, domain));
  return *std::move(d);
}

Result<std::vector<Doc>> MetaStore::ListDocs(std::string_view kind, std::string_view domain) {
  std::lock_guard l(impl_->mu);
  CC_ASSIGN_OR_RETURN(
      auto r,
      impl_->db->Run(
          "listing documents",
          "SELECT id, doc, rev FROM docs WHERE kind=? AND domain=? AND deleted=0 ORDER BY id",
          {kind, domain}));
  std::vector<Doc> out;
  for (size_t i = 0; i < r.size(); ++i) {
    Doc d;
    d.kind = std::string(kind);
    d.domain = std::string(domain);
    d.id = std::string(r.Str(i, 0));
    boost::system::error_code ec;
    json::value v = json::parse(r.Str(i, 1), ec);
    if (!ec && v.is_object()) d.body = std::move(v.get_object());
    d.rev = r.Int(i, 2);
    out.push_back(std::move(d));
  }
  return out;
}

Status MetaStore::DeleteDoc(std::string_view kind, std::string_view domain, std::string_view id,
                            int64_t rev) {
  CC_ASSIGN_OR_RETURN(Doc d, GetDoc(kind, domain, id));
  if (kind == "location") {
    CC_ASSIGN_OR_RETURN(auto all, ListDocs("location", domain));
    for (const auto& c : all)
      if (GetStr(c.body, "parent_id") == id)
        return Status::FailedPrecondition(
            fmt::format("location {} has child locations (first: {})", id, c.id));
  }
  if (kind == "lookup_table") {
    CC_ASSIGN_OR_RETURN(auto items, ListDocs("lookup_item", domain));
    for (const auto& i : items)
      if (GetStr(i.body, "table_id") == id)
        return Status::FailedPrecondition(
            fmt::format("lookup table {} has items (first: {}); delete them first", id, i.id));
  }
  if (kind == "role") {
    CC_ASSIGN_OR_RETURN(auto users, ListUsers(domain));
    for (const auto& u : users)
      if (auto r = u.role_ids.find(std::string(domain)); r != u.role_ids.end() && r->second == id)
        return Status::FailedPrecondition(
            fmt::format("role {} is assigned to user {}", id, u.username));
  }
  {
    std::lock_guard l(impl_->mu);
    const auto& [topic, type] = kDocTopics.at(kind);
    CC_RETURN_IF_ERROR(impl_->Write("deleting a document", [&]() -> Status {
      bool deleted = false;
      CC_ASSIGN_OR_RETURN(auto old, impl_->LoadDoc(kind, id, &deleted));
      if (!old || deleted) return Status::NotFound(fmt::format("no {} {} in {}", kind, id, domain));
      if (old->rev != rev)
        return Status::Aborted(
            fmt::format("{} {} is at revision {}, not {}", kind, id, old->rev, rev));
      CC_RETURN_IF_ERROR(impl_->db
                             ->Run("deleting a document",
                                   "UPDATE docs SET deleted=1, rev=rev+1 WHERE kind=? AND id=?",
                                   {kind, id})
                             .status());
      return impl_->Queue(topic, type, id, domain, true);
    }));
    if (kind == "role") impl_->Forget();
  }
  return Relay();
}

}  // namespace commcare::meta
