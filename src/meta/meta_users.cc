// The MetaStore's users (meta_store.h): their stored form and the admin API's fields, writes
// and reads, and what a user owns in a restore (owner ids; the fixtures are meta_fixtures.cc).
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "meta/meta_store.h"
#include "meta/meta_store_internal.h"
#include "meta/restore_params.h"
#include "util/codec.h"
#include "util/hash.h"
#include "util/sql_db.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare::meta {
namespace {

namespace json = boost::json;
using codec::GetBool;
using codec::GetStr;

json::object EncodeUser(const User& u) {
  json::object o = UserProfile(u);
  o["password"] = u.password_hash;
  o["digest_md5"] = u.digest_md5;
  o["digest_sha256"] = u.digest_sha256;
  return o;
}

User DecodeUser(std::string_view text, int64_t rev) {
  User u;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return u;
  const auto& o = v.get_object();
  u.username = GetStr(o, "username");
  u.user_id = GetStr(o, "user_id");
  u.web_user = GetBool(o, "web_user");
  u.is_superuser = GetBool(o, "is_superuser");
  u.is_active = GetBool(o, "is_active");
  u.password_hash = GetStr(o, "password");
  if (auto* r = o.if_contains("role_ids"); r && r->is_object())
    for (const auto& kv : r->get_object())
      if (kv.value().is_string()) u.role_ids[std::string(kv.key())] = kv.value().get_string();
  if (auto* l = o.if_contains("location_ids"); l && l->is_array())
    for (const auto& x : l->get_array())
      if (x.is_string()) u.location_ids.emplace_back(x.get_string());
  if (auto* d = o.if_contains("user_data"); d && d->is_object()) u.user_data = d->get_object();
  u.first_name = GetStr(o, "first_name");
  u.last_name = GetStr(o, "last_name");
  if (auto* p = o.if_contains("phone_numbers"); p && p->is_array())
    for (const auto& x : p->get_array())
      if (x.is_string()) u.phone_numbers.emplace_back(x.get_string());
  if (std::string t = GetStr(o, "date_joined"); !t.empty()) util::ParseIsoTime(t, &u.date_joined);
  u.digest_md5 = GetStr(o, "digest_md5");
  u.digest_sha256 = GetStr(o, "digest_sha256");
  if (auto* a = o.if_contains("domains"); a && a->is_array())
    for (const auto& x : a->get_array())
      if (x.is_string()) u.domains.emplace_back(x.get_string());
  // Permissions by domain; a list (stored before they were per domain) holds in each domain.
  auto list = [](const json::value& a, std::vector<std::string>* out) {
    if (a.is_array())
      for (const auto& x : a.get_array())
        if (x.is_string()) out->emplace_back(x.get_string());
  };
  if (auto* p = o.if_contains("permissions"); p && p->is_object())
    for (const auto& kv : p->get_object()) list(kv.value(), &u.permissions[kv.key()]);
  else if (p)
    for (const auto& d : u.domains) list(*p, &u.permissions[d]);
  u.rev = rev;
  return u;
}

const std::set<std::string_view> kPermissions = {kEditData, kAccessApi, kMobileEndpoints,
                                                 kManageUsers};
}  // namespace

json::object UserJson(const User& u, std::string_view domain) {
  json::object o = UserProfile(u);
  if (!domain.empty()) {
    json::array perms;
    if (auto it = u.permissions.find(std::string(domain)); it != u.permissions.end())
      for (const auto& p : it->second) perms.emplace_back(p);
    o["permissions"] = std::move(perms);
  }
  o["_rev"] = u.rev;
  return o;
}

Status ApplyUserFields(const json::object& o, std::string_view domain, User* u,
                       std::string* password) {
  for (const auto& kv : o) {
    std::string_view k = kv.key();
    const json::value& x = kv.value();
    if (k == "username" || k == "_rev" || k == "revoke_api_keys") continue;
    if (k == "password") {
      if (!x.is_string() || x.get_string().size() < 4)
        return Status::InvalidArgument("password: must be a string of at least 4 characters");
      *password = std::string(x.get_string());
    } else if (k == "is_active") {
      if (!x.is_bool()) return Status::InvalidArgument("is_active: must be true or false");
      u->is_active = x.get_bool();
    } else if (k == "web_user") {
      if (!x.is_bool()) return Status::InvalidArgument("web_user: must be true or false");
      u->web_user = x.get_bool();
    } else if (k == "role_id") {
      if (x.is_null()) {
        u->role_ids.erase(std::string(domain));
      } else {
        if (!x.is_string()) return Status::InvalidArgument("role_id: must be a role's id or null");
        u->role_ids[std::string(domain)] = std::string(x.get_string());
      }
    } else if (k == "location_ids") {
      if (!x.is_array())
        return Status::InvalidArgument("location_ids: must be a list of location ids");
      u->location_ids.clear();
      for (const auto& l : x.get_array()) {
        if (!l.is_string()) return Status::InvalidArgument("location_ids: each must be a string");
        u->location_ids.emplace_back(l.get_string());
      }
    } else if (k == "user_data") {
      if (!x.is_object()) return Status::InvalidArgument("user_data: must be an object");
      u->user_data = x.get_object();
    } else if (k == "first_name" || k == "last_name") {
      if (!x.is_string()) return Status::InvalidArgument(fmt::format("{}: must be a string", k));
      (k == "first_name" ? u->first_name : u->last_name) = std::string(x.get_string());
    } else if (k == "phone_numbers") {
      if (!x.is_array())
        return Status::InvalidArgument("phone_numbers: must be a list (the first is the default)");
      u->phone_numbers.clear();
      for (const auto& n : x.get_array()) {
        if (!n.is_string() || n.get_string().empty())
          return Status::InvalidArgument("phone_numbers: each must be a non-empty string");
        u->phone_numbers.emplace_back(n.get_string());
      }
    } else if (k == "date_joined") {
      return Status::InvalidArgument("date_joined: is set when the user is created");
    } else if (k == "permissions") {
      if (!x.is_array()) return Status::InvalidArgument("permissions: must be a list");
      auto& granted = u->permissions[std::string(domain)];
      granted.clear();
      for (const auto& p : x.get_array()) {
        if (!p.is_string() || !kPermissions.count(p.get_string()))
          return Status::InvalidArgument(
              "permissions: each must be edit_data, access_api, "
              "access_mobile_endpoints or manage_users");
        granted.emplace_back(p.get_string());
      }
    } else if (k == "domains") {
      if (!x.is_array() || x.get_array().empty())
        return Status::InvalidArgument("domains: must be a non-empty list of domain names");
      u->domains.clear();
      for (const auto& d : x.get_array()) {
        if (!d.is_string()) return Status::InvalidArgument("domains: each must be a string");
        u->domains.emplace_back(d.get_string());
      }
    } else {
      return Status::InvalidArgument(fmt::format("{}: unknown field", k));
    }
  }
  return Status::Ok();
}

Result<RestoreRequest> MakeRestoreRequest(MetaStore* meta, const User& user,
                                          const std::string& domain) {
  RestoreRequest q;
  q.domain = domain;
  if (auto d = meta->GetDomain(domain); d.ok()) q.attachments = d->case_attachments_in_restore;
  q.user.username = user.username;
  q.user.user_id = user.user_id;
  // Only a mobile worker's restore carries its password hash (for offline login, as HQ's);
  // a web user's or superuser's never does.
  if (!user.web_user && !user.is_superuser) q.user.password_hash = user.password_hash;
  // HQ's Registration <date> (casexml/apps/phone/xml.py get_registration_element_data):
  // date_to_xml_string(restore_user.date_joined).
  q.user.date_joined = user.date_joined;
  // HQ's session data (users/models.py get_user_session_data over UserData.to_dict): the
  // custom fields, then the system ones, which win over a custom field of the same name:
  // commcare_project, the location ids when the user has a location (the first is the
  // primary), and commcare_first_name, _last_name, _phone_number (the default number,
  // phone_numbers[0]; empty when unset) and _user_type.
  std::map<std::string, std::string> system = {
      {"commcare_project", domain},
      {"commcare_first_name", user.first_name},
      {"commcare_last_name", user.last_name},
      {"commcare_phone_number", user.phone_numbers.empty() ? "" : user.phone_numbers.front()},
      {"commcare_user_type", user.web_user ? "web" : "commcare"}};
  if (!user.location_ids.empty()) {
    std::string ids;
    for (const auto& id : user.location_ids) ids += (ids.empty() ? "" : " ") + id;
    system["commcare_location_id"] = user.location_ids.front();
    system["commcare_location_ids"] = ids;
    system["commcare_primary_case_sharing_id"] = user.location_ids.front();
  }
  for (const auto& kv : user.user_data)
    if (!system.count(std::string(kv.key())))
      q.user.user_data.emplace_back(std::string(kv.key()),
                                    kv.value().is_string() ? std::string(kv.value().get_string())
                                                           : json::serialize(kv.value()));
  for (auto& [k, v] : system) q.user.user_data.emplace_back(k, std::move(v));
  CC_ASSIGN_OR_RETURN(auto dir, meta->ReadDirectory(domain));
  q.user.owner_ids = MetaStore::OwnerIds(user, dir);
  CC_ASSIGN_OR_RETURN(q.fixtures, meta->Fixtures(user, domain, dir));
  return q;
}

// The request with a restore route's parameters applied (restore_params.h).
Result<RestoreRequest> MakeRestoreRequest(MetaStore* meta, const User& user,
                                          const std::string& domain, const RestoreParams& p) {
  CC_ASSIGN_OR_RETURN(RestoreRequest q, MakeRestoreRequest(meta, user, domain));
  if (p.hide_password) q.user.password_hash.clear();  // never another user's
  q.since = p.since;
  q.version = p.version;
  q.state = p.state;
  q.items = p.items;
  q.device_id = p.device_id;
  q.app_id = p.app_id;
  q.url_base = p.url_base;
  q.overwrite_cache = p.overwrite_cache;
  if (p.skip_fixtures && !q.since.empty()) q.fixtures.clear();
  return q;
}

json::object UserProfile(const User& u) {
  json::array domains, locations, phones;
  json::object roles, perms;
  for (const auto& d : u.domains) domains.emplace_back(d);
  for (const auto& n : u.phone_numbers) phones.emplace_back(n);
  for (const auto& [d, list] : u.permissions) {
    json::array a;
    for (const auto& p : list) a.emplace_back(p);
    perms[d] = std::move(a);
  }
  for (const auto& l : u.location_ids) locations.emplace_back(l);
  for (const auto& [d, r] : u.role_ids) roles[d] = r;
  return {{"username", u.username},
          {"user_id", u.user_id},
          {"web_user", u.web_user},
          {"domains", domains},
          {"is_superuser", u.is_superuser},
          {"is_active", u.is_active},
          {"permissions", perms},
          {"role_ids", roles},
          {"location_ids", locations},
          {"user_data", u.user_data},
          {"first_name", u.first_name},
          {"last_name", u.last_name},
          {"phone_numbers", phones},
          {"date_joined",
           u.date_joined ? json::value(util::FormatIsoTime(u.date_joined)) : json::value()}};
}

bool User::InDomain(std::string_view domain) const {
  return is_superuser || std::find(domains.begin(), domains.end(), domain) != domains.end();
}

bool User::Can(std::string_view domain, std::string_view permission) const {
  if (!is_active || !InDomain(domain)) return false;
  if (is_superuser) return true;
  if (auto g = permissions.find(std::string(domain));
      g != permissions.end() &&
      std::find(g->second.begin(), g->second.end(), permission) != g->second.end())
    return true;
  auto r = role_permissions.find(std::string(domain));
  return r != role_permissions.end() &&
         std::find(r->second.begin(), r->second.end(), permission) != r->second.end();
}

// The user with each role's permissions filled in (mu held).
Result<std::optional<User>> MetaStore::Impl::LoadUser(std::string_view username) {
  CC_ASSIGN_OR_RETURN(
      auto r, db->Run("reading a user", "SELECT doc, rev FROM users WHERE username=?", {username}));
  std::optional<User> u;
  if (r.empty()) return u;
  u = DecodeUser(r.Str(0, 0), r.Int(0, 1));
  for (const auto& [domain, role] : u->role_ids) {
    bool deleted = false;
    CC_ASSIGN_OR_RETURN(auto d, LoadDoc("role", role, &deleted));
    auto& perms = u->role_permissions[domain];
    if (!d || deleted || d->domain != domain) continue;
    if (auto* p = d->body.if_contains("permissions"); p && p->is_array())
      for (const auto& x : p->get_array())
        if (x.is_string()) perms.emplace_back(x.get_string());
  }
  return u;
}

Result<User> MetaStore::PutUser(User u, std::string_view password) {
  if (u.username.empty() || u.username.size() > 128 ||
      u.username.find_first_of(" :\t\r\n") != std::string::npos)
    return Status::InvalidArgument(
        fmt::format("username '{}' must be 1-128 characters without spaces or ':'", u.username));
  if (!u.web_user && u.domains.size() != 1 && !u.is_superuser)
    return Status::InvalidArgument("a mobile worker belongs to exactly one domain");
  for (const auto& d : u.domains) CC_RETURN_IF_ERROR(GetDomain(d).status());
  for (const auto& [domain, role] : u.role_ids) {
    if (!u.InDomain(domain))
      return Status::InvalidArgument(
          fmt::format("role_ids: {} is not one of the user's domains", domain));
    if (!GetDoc("role", domain, role).ok())
      return Status::InvalidArgument(fmt::format("role_ids: no role {} in {}", role, domain));
  }
  for (const auto& loc : u.location_ids) {
    bool found = false;
    for (const auto& d : u.domains) found = found || GetDoc("location", d, loc).ok();
    if (!found)
      return Status::InvalidArgument(
          fmt::format("location_ids: no location {} in the user's domains", loc));
  }
  for (const auto& kv : u.user_data)
    if (!kv.value().is_string() && !kv.value().is_number() && !kv.value().is_bool())
      return Status::InvalidArgument(
          fmt::format("user_data.{}: must be a string, number or boolean", kv.key()));
  if (!password.empty()) {
    u.password_hash = HashPassword(password);
    const std::string a1 = fmt::format("{}:{}:{}", u.username, kDigestRealm, password);
    u.digest_md5 = util::Md5Hex(a1);
    u.digest_sha256 = Sha256Hex(a1);
  }
  {
    std::lock_guard l(impl_->mu);
    util::SqlDb& db = *impl_->db;
    CC_RETURN_IF_ERROR(impl_->Write("writing a user", [&]() -> Status {
      CC_ASSIGN_OR_RETURN(auto old, impl_->LoadUser(u.username));
      const int64_t stored = old ? old->rev : 0;
      if (stored != u.rev)
        return Status::Aborted(
            fmt::format("user {} is at revision {}, not {}", u.username, stored, u.rev));
      if (u.user_id.empty()) u.user_id = old ? old->user_id : util::NewUuidHex();
      // Set once, when the user is first stored (Django's User.date_joined).
      if (old && old->date_joined) u.date_joined = old->date_joined;
      if (!u.date_joined) u.date_joined = util::NowMicros();
      if (u.password_hash.empty() && old) {
        u.password_hash = old->password_hash;
        u.digest_md5 = old->digest_md5;
        u.digest_sha256 = old->digest_sha256;
      }
      u.rev = stored + 1;
      CC_RETURN_IF_ERROR(db.Run("writing a user",
                                "INSERT INTO users(username, doc, rev) VALUES(?,?,?) "
                                "ON CONFLICT(username) DO UPDATE SET doc=excluded.doc, "
                                "rev=excluded.rev",
                                {u.username, json::serialize(EncodeUser(u)), u.rev})
                             .status());
      CC_RETURN_IF_ERROR(
          db.Run("writing a user", "DELETE FROM user_domains WHERE username=?", {u.username})
              .status());
      for (const auto& dom : u.domains)
        CC_RETURN_IF_ERROR(db.Run("writing a user",
                                  "INSERT INTO user_domains(domain, username) VALUES(?,?)",
                                  {dom, u.username})
                               .status());
      const std::string domain = u.web_user || u.domains.empty() ? "" : u.domains[0];
      CC_RETURN_IF_ERROR(impl_->Queue(u.web_user ? "web-user" : "commcare-user",
                                      u.web_user ? "WebUser" : "CommCareUser", u.user_id, domain,
                                      false));
      // A mobile worker made a web user, or moved to another domain, is no longer that domain's
      // CommCareUser: readers of the commcare-user topic (UCR) are told so.
      if (!old || old->web_user) return Status::Ok();
      const std::string was = old->domains.empty() ? "" : old->domains[0];
      if (!u.web_user && was == domain) return Status::Ok();
      return impl_->Queue("commcare-user", "CommCareUser", u.user_id, was, true);
    }));
    impl_->Forget();  // a changed password or deactivation counts at once
    CC_ASSIGN_OR_RETURN(auto fresh, impl_->LoadUser(u.username));
    if (fresh) u = *fresh;
  }
  RelayAfterWrite();
  return u;
}

Result<User> MetaStore::GetUser(std::string_view username) {
  std::lock_guard l(impl_->mu);
  CC_ASSIGN_OR_RETURN(auto u, impl_->LoadUser(username));
  if (!u) return Status::NotFound(fmt::format("no user '{}'", username));
  return *std::move(u);
}

Result<std::vector<User>> MetaStore::ListUsers(std::string_view domain) {
  std::vector<std::string> names;
  {
    std::lock_guard l(impl_->mu);
    CC_ASSIGN_OR_RETURN(
        auto r, impl_->db->Run("listing users",
                               "SELECT username FROM user_domains WHERE domain=? ORDER BY username",
                               {domain}));
    for (size_t i = 0; i < r.size(); ++i) names.emplace_back(r.Str(i, 0));
  }
  std::vector<User> out;
  for (const auto& n : names) {
    CC_ASSIGN_OR_RETURN(User u, GetUser(n));
    out.push_back(std::move(u));
  }
  return out;
}

Result<MetaStore::Directory> MetaStore::ReadDirectory(std::string_view domain) {
  Directory dir;
  CC_ASSIGN_OR_RETURN(dir.locations, ListDocs("location", domain));
  CC_ASSIGN_OR_RETURN(dir.groups, ListDocs("group", domain));
  return dir;
}

std::vector<MetaStore::SharingGroup> MetaStore::CaseSharingGroups(const User& user,
                                                                  const Directory& dir) {
  std::vector<SharingGroup> out;
  if (!user.location_ids.empty()) {
    const std::vector<Doc>& locations = dir.locations;
    std::map<std::string, const Doc*> by_id;
    std::multimap<std::string, const Doc*> children;
    for (const auto& l : locations) {
      by_id[l.id] = &l;
      children.emplace(GetStr(l.body, "parent_id"), &l);
    }
    // get_path_display: the names from the root down, joined by '/'.
    auto path = [&](const Doc* l) {
      std::vector<std::string> names;
      std::set<std::string> seen;
      for (const Doc* at = l; at && seen.insert(at->id).second;) {
        names.push_back(GetStr(at->body, "name"));
        auto up = by_id.find(GetStr(at->body, "parent_id"));
        at = up == by_id.end() ? nullptr : up->second;
      }
      std::string out;
      for (auto it = names.rbegin(); it != names.rend(); ++it)
        out += (out.empty() ? "" : "/") + *it;
      return out;
    };
    std::set<std::string> seen;
    // (location, whether an assigned ancestor lets the user see its descendants)
    std::vector<std::pair<const Doc*, bool>> todo;
    for (auto id = user.location_ids.rbegin(); id != user.location_ids.rend(); ++id)
      if (auto it = by_id.find(*id); it != by_id.end()) todo.emplace_back(it->second, false);
    while (!todo.empty()) {
      auto [l, inherited] = todo.back();
      todo.pop_back();
      if (!seen.insert(l->id).second) continue;
      if (GetBool(l->body, "shares_cases")) {
        SharingGroup g{l->id, path(l) + "-Cases", {}};
        g.metadata["commcare_location_type"] = GetStr(l->body, "location_type");
        if (const json::value* md = l->body.if_contains("metadata"); md && md->is_object())
          for (const auto& kv : md->get_object())
            g.metadata["commcare_location_" + std::string(kv.key())] = kv.value();
        out.push_back(std::move(g));
      }
      if (inherited || GetBool(l->body, "view_descendants")) {
        auto [b, e] = children.equal_range(l->id);
        std::vector<const Doc*> kids;
        for (auto it = b; it != e; ++it) kids.push_back(it->second);
        for (auto it = kids.rbegin(); it != kids.rend(); ++it) todo.emplace_back(*it, true);
      }
    }
  }
  for (const auto& g : dir.groups) {
    if (!GetBool(g.body, "case_sharing")) continue;
    const json::value* us = g.body.if_contains("users");
    if (!us || !us->is_array() ||
        std::none_of(us->get_array().begin(), us->get_array().end(),
                     [&](auto& x) { return x.is_string() && x.get_string() == user.user_id; }))
      continue;
    SharingGroup sg{g.id, GetStr(g.body, "name"), {}};
    if (const json::value* md = g.body.if_contains("metadata"); md && md->is_object())
      sg.metadata = md->get_object();
    out.push_back(std::move(sg));
  }
  return out;
}

std::vector<std::string> MetaStore::OwnerIds(const User& user, const Directory& dir) {
  std::vector<std::string> out = {user.user_id};
  for (auto& g : CaseSharingGroups(user, dir)) out.push_back(std::move(g.id));
  std::sort(out.begin() + 1, out.end());
  out.erase(std::unique(out.begin() + 1, out.end()), out.end());
  return out;
}

Result<std::vector<std::string>> MetaStore::OwnerIds(const User& user, std::string_view domain) {
  CC_ASSIGN_OR_RETURN(auto dir, ReadDirectory(domain));
  return OwnerIds(user, dir);
}

}  // namespace commcare::meta
