// The reference server's admin routes: domains, users and their API keys, and the
// domain's roles, groups, locations and apps. App's members; the other routes are in app.cc.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <string>

#include "server/app.h"
#include "server/responses.h"
#include "util/time.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

// GET/POST /api/domains/ (superusers): list and create domains.
Response App::DomainsApi(const Request& r) {
  auto user = Authenticate(r);
  if (!user.ok()) return Unauthorized(user.status());
  if (!user->is_superuser) return Error(403, "only superusers manage domains");
  if (r.method == "GET") {
    auto ds = meta_->ListDomains();
    if (!ds.ok()) return Error(500, ds.status().message());
    json::array out;
    for (const auto& d : *ds)
      out.push_back(json::object{{"name", d.name},
                                 {"secure_submissions", d.secure_submissions},
                                 {"async_restore", d.async_restore},
                                 {"case_attachments_in_restore", d.case_attachments_in_restore},
                                 {"_rev", d.rev}});
    return Json(200, json::object{{"domains", out}});
  }
  if (r.method != "POST") return Error(405, "use GET or POST");
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return Error(400, "body: must be a JSON object");
  const auto& o = v.get_object();
  meta::Domain d;
  const json::value* name = o.if_contains("name");
  if (!name || !name->is_string()) return Error(400, "name: is required (a string)");
  d.name = std::string(name->get_string());
  if (const json::value* s = o.if_contains("secure_submissions")) {
    if (!s->is_bool()) return Error(400, "secure_submissions: must be true or false");
    d.secure_submissions = s->get_bool();
  }
  if (const json::value* s = o.if_contains("async_restore")) {
    if (!s->is_bool()) return Error(400, "async_restore: must be true or false");
    d.async_restore = s->get_bool();
  }
  if (const json::value* s = o.if_contains("case_attachments_in_restore")) {
    if (!s->is_bool()) return Error(400, "case_attachments_in_restore: must be true or false");
    d.case_attachments_in_restore = s->get_bool();
  }
  if (meta_->GetDomain(d.name).ok()) return Error(409, fmt::format("domain {} exists", d.name));
  auto put = meta_->PutDomain(d);
  if (!put.ok()) return Error(StatusFor(put.status()), put.status().message());
  return Json(201, json::object{{"name", put->name}, {"_rev", put->rev}});
}

namespace {

// Whether actor, a manager of domain, may change target's account (credentials, activity,
// profile) and not only its grants in domain: superusers may change anyone; nobody else may
// touch a superuser, or a user who also belongs to another domain (a manager there would
// otherwise take over the account here).
bool Administers(const meta::User& actor, const meta::User& target, std::string_view domain) {
  if (actor.is_superuser) return true;
  if (target.is_superuser) return false;
  if (actor.username == target.username) return true;
  return target.domains.size() == 1 && target.domains[0] == domain;
}

json::object KeyJson(const meta::ApiKeyInfo& k) {
  auto when = [](int64_t secs) -> json::value {
    if (secs <= 0) return nullptr;
    return json::value(util::FormatIsoTime(secs * 1'000'000));
  };
  return {{"id", k.id}, {"created", when(k.created)}, {"expires", when(k.expires)}};
}

}  // namespace

// /a/{domain}/api/users/{username}/api_key[/{id}]: a user's API keys. A user manages its own;
// a superuser anyone's; a manager of the domain those of mobile workers of this domain alone
// (HQ: users make their own keys), never a web user's or a superuser's.
Response App::ApiKeys(const Request& r, const std::string& domain, const meta::User& actor,
                      const std::string& name, const std::string& id) {
  auto target = meta_->GetUser(name);
  if (!target.ok() || !target->InDomain(domain) || (target->is_superuser && !actor.is_superuser))
    return Error(404, fmt::format("no user {} in domain {}", name, domain));
  const bool self = actor.username == target->username;
  const bool managed = actor.Can(domain, meta::kManageUsers) && !target->web_user &&
                       Administers(actor, *target, domain);
  if (!self && !actor.is_superuser && !managed)
    return Error(403,
                 fmt::format("user {} may not manage the API keys of {}", actor.username, name));
  if (r.method == "GET") {
    if (!id.empty()) return Error(405, "GET lists the keys: .../api_key/");
    auto keys = meta_->ListApiKeys(name);
    if (!keys.ok()) return Error(StatusFor(keys.status()), keys.status().message());
    json::array out;
    for (const auto& k : *keys) out.push_back(KeyJson(k));
    return Json(200, json::object{{"username", name}, {"api_keys", out}});
  }
  if (r.method == "DELETE") {
    if (id.empty()) return Error(405, "DELETE names a key: .../api_key/{id}");
    Status st = meta_->RevokeApiKey(name, id);
    if (!st.ok()) return Error(StatusFor(st), st.message());
    return Json(200, json::object{{"id", id}, {"revoked", true}});
  }
  if (r.method != "POST" || !id.empty())
    return Error(405, "POST .../api_key creates a key; GET lists; DELETE .../{id} revokes");
  int64_t expires = 0;
  const int64_t now = util::NowMicros() / 1'000'000;
  if (!r.body.empty()) {
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object()) return Error(400, "body: must be a JSON object (or empty)");
    for (const auto& kv : v.get_object()) {
      if (kv.key() == "expires") {
        int64_t t = 0;
        if (!kv.value().is_string() || !util::ParseIsoTime(kv.value().get_string(), &t))
          return Error(400, "expires: must be an ISO-8601 time");
        expires = t / 1'000'000;
      } else if (kv.key() == "expires_in_days") {
        if (!kv.value().is_int64() || kv.value().get_int64() < 1 || kv.value().get_int64() > 3650)
          return Error(400, "expires_in_days: must be a whole number of days, 1..3650");
        expires = now + kv.value().get_int64() * 86'400;
      } else {
        return Error(400, fmt::format("{}: unknown field", std::string(kv.key())));
      }
    }
    if (expires != 0 && expires <= now) return Error(400, "expires: must be in the future");
  }
  std::string key_id;
  auto k = meta_->CreateApiKey(name, expires, &key_id);
  if (!k.ok()) return Error(StatusFor(k.status()), k.status().message());
  json::object out = KeyJson({key_id, now, expires});
  out["username"] = name;
  out["key"] = *k;
  return Json(201, out);
}

// /a/{domain}/api/users/[{username}[/api_key[/{id}]]]: list, create, update users; API keys.
// A manager sees and changes users of the domain, never a superuser (404); the password,
// activity and profile of a user who also belongs to another domain only a superuser
// changes (a manager there may set its role and permissions here).
Response App::UsersApi(const Request& r, const std::string& domain, const std::string& rest) {
  std::string name = rest;
  while (!name.empty() && name.back() == '/') name.pop_back();
  Response deny;
  auto user = Admit(r, domain, "", &deny);
  if (!user) return deny;
  if (auto k = name.find("/api_key"); k != std::string::npos) {
    std::string tail = name.substr(k + 8);
    if (!tail.empty() && (tail[0] != '/' || tail.find('/', 1) != std::string::npos))
      return Error(404, "no such route");
    return ApiKeys(r, domain, *user, name.substr(0, k), tail.empty() ? "" : tail.substr(1));
  }
  if (!user->Can(domain, meta::kManageUsers))
    return Error(403,
                 fmt::format("user {} may not manage users of domain {}", user->username, domain));
  if (r.method == "GET") {
    if (!name.empty()) {
      auto u = meta_->GetUser(name);
      if (!u.ok() || !u->InDomain(domain) || (u->is_superuser && !user->is_superuser))
        return Error(404, fmt::format("no user {} in domain {}", name, domain));
      return Json(200, meta::UserJson(*u, domain));
    }
    auto us = meta_->ListUsers(domain);
    if (!us.ok()) return Error(500, us.status().message());
    // Optional paging: ?limit=1..1000&offset=N answers that slice, the total and the next offset.
    char* end = nullptr;
    const std::string limit_text = r.Param("limit", "0"), offset_text = r.Param("offset", "0");
    const long long limit = std::strtoll(limit_text.c_str(), &end, 10);
    if (*end || limit < 0 || limit > 1000) return Error(400, "limit: must be 1..1000");
    const long long offset = std::strtoll(offset_text.c_str(), &end, 10);
    if (*end || offset < 0) return Error(400, "offset: must be a whole number, 0 or more");
    json::array out;
    long long seen = 0;
    for (const auto& u : *us) {
      if (u.is_superuser && !user->is_superuser) continue;
      if (seen++ >= offset && (limit == 0 || seen <= offset + limit))
        out.push_back(meta::UserJson(u, domain));
    }
    json::object body{{"users", out}};
    if (limit > 0) {
      body["total"] = seen;
      if (offset + limit < seen) body["next"] = offset + limit;
    }
    return Json(200, body);
  }
  if (r.method != "POST" && r.method != "PUT") return Error(405, "use GET, POST or PUT");
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return Error(400, "body: must be a JSON object");
  const auto& o = v.get_object();
  if (o.contains("domains") && !user->is_superuser)
    return Error(403, "domains: only a superuser sets a user's domains");
  meta::User u;
  std::string password;
  if (r.method == "POST") {
    if (!name.empty()) return Error(405, "POST to /api/users/ creates; PUT updates");
    const json::value* n = o.if_contains("username");
    if (!n || !n->is_string()) return Error(400, "username: is required (a string)");
    u.username = std::string(n->get_string());
    if (meta_->GetUser(u.username).ok())
      return Error(409, fmt::format("user {} exists", u.username));
    u.domains = {domain};
    u.permissions[domain] = {std::string(meta::kEditData), std::string(meta::kMobileEndpoints)};
    const json::value* pw = o.if_contains("password");
    if (!pw || !pw->is_string() || pw->get_string().size() < 4)
      return Error(400, "password: is required (at least 4 characters)");
  } else {
    if (name.empty()) return Error(400, "PUT needs /api/users/{username}");
    auto old = meta_->GetUser(name);
    if (!old.ok() || !old->InDomain(domain) || (old->is_superuser && !user->is_superuser))
      return Error(404, fmt::format("no user {} in domain {}", name, domain));
    if (!Administers(*user, *old, domain))
      for (const auto& kv : o)
        if (kv.key() != "role_id" && kv.key() != "permissions" && kv.key() != "_rev")
          return Error(403, fmt::format("{}: user {} belongs to other domains too; only a "
                                        "superuser changes it (a manager may set role_id and "
                                        "permissions)",
                                        std::string(kv.key()), name));
    u = *old;
    const json::value* rev = o.if_contains("_rev");
    if (!rev || !rev->is_int64()) return Error(400, "_rev: is required (the revision you read)");
    u.rev = rev->get_int64();
  }
  bool revoke_keys = false;
  if (const json::value* rk = o.if_contains("revoke_api_keys")) {
    if (!rk->is_bool()) return Error(400, "revoke_api_keys: must be true or false");
    revoke_keys = rk->get_bool();
  }
  if (Status st = meta::ApplyUserFields(o, domain, &u, &password); !st.ok())
    return Error(400, st.message());
  auto put = meta_->PutUser(u, password);
  if (!put.ok()) return Error(StatusFor(put.status()), put.status().message());
  if (revoke_keys)
    if (Status st = meta_->RevokeApiKey(put->username, ""); !st.ok())
      return Error(StatusFor(st), st.message());
  return Json(r.method == "POST" ? 201 : 200, meta::UserJson(*put, domain));
}

// /a/{domain}/api/{roles,groups,locations,apps,lookup_tables,lookup_items}/[{id}/]: list, read,
// create (POST), update (PUT with the _rev read) and delete (DELETE ?_rev=N). Reading needs
// access_api or the writing permission: manage_users, or for lookup tables edit_data (HQ's
// require_can_edit_fixtures, corehq/apps/fixtures/views.py).
Response App::DocsApi(const Request& r, const std::string& domain, const std::string& kind,
                      const std::string& rest) {
  std::string id = rest;
  while (!id.empty() && id.back() == '/') id.pop_back();
  Response deny;
  auto user = Admit(r, domain, "", &deny);
  if (!user) return deny;
  const bool lookup = kind == "lookup_table" || kind == "lookup_item";
  const bool writer = user->Can(domain, lookup ? meta::kEditData : meta::kManageUsers);
  if (!writer && !(r.method == "GET" && user->Can(domain, meta::kAccessApi)))
    return Error(403, fmt::format("user {} may not {} {}s of domain {}", user->username,
                                  r.method == "GET" ? "read" : "change", kind, domain));
  auto to_json = [&](const meta::Doc& d) {
    json::object o = d.body;
    o["id"] = d.id;
    o["domain"] = d.domain;
    o["_rev"] = d.rev;
    return o;
  };
  if (r.method == "GET") {
    if (!id.empty()) {
      auto d = meta_->GetDoc(kind, domain, id);
      if (!d.ok()) return Error(404, d.status().message());
      return Json(200, to_json(*d));
    }
    auto ds = meta_->ListDocs(kind, domain);
    if (!ds.ok()) return Error(500, ds.status().message());
    json::array out;
    for (const auto& d : *ds) out.push_back(to_json(d));
    return Json(200, json::object{{kind + "s", out}});
  }
  if (r.method == "DELETE") {
    if (id.empty()) return Error(405, fmt::format("DELETE needs /api/{}s/{{id}}/", kind));
    auto rev = r.query.find("_rev");
    char* end = nullptr;
    long long n = rev == r.query.end() ? 0 : std::strtoll(rev->second.c_str(), &end, 10);
    if (rev == r.query.end() || rev->second.empty() || *end || n <= 0)
      return Error(400, "_rev: is required (?_rev=N, the revision you read)");
    Status s = meta_->DeleteDoc(kind, domain, id, n);
    if (s.code() == StatusCode::kFailedPrecondition) return Error(409, s.message());  // in use
    if (!s.ok()) return Error(StatusFor(s), s.message());
    return Json(200, json::object{{"id", id}, {"deleted", true}});
  }
  if (r.method != "POST" && r.method != "PUT") return Error(405, "use GET, POST, PUT or DELETE");
  if (r.method == "POST" && !id.empty())
    return Error(405, fmt::format("POST to /api/{}s/ creates; PUT updates", kind));
  if (r.method == "PUT" && id.empty())
    return Error(400, fmt::format("PUT needs /api/{}s/{{id}}/", kind));
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return Error(400, "body: must be a JSON object");
  meta::Doc d;
  d.kind = kind;
  d.domain = domain;
  d.id = id;
  d.body = std::move(v.get_object());
  if (r.method == "PUT") {
    const json::value* rev = d.body.if_contains("_rev");
    if (!rev || !rev->is_int64()) return Error(400, "_rev: is required (the revision you read)");
    d.rev = rev->get_int64();
    if (!meta_->GetDoc(kind, domain, id).ok())
      return Error(404, fmt::format("no {} {} in {}", kind, id, domain));
  } else if (const json::value* given = d.body.if_contains("id")) {
    if (!given->is_string()) return Error(400, "id: must be a string");
    d.id = std::string(given->get_string());
    bool deleted_or_live = meta_->GetDoc(kind, domain, d.id).ok();
    if (deleted_or_live) return Error(409, fmt::format("{} {} exists", kind, d.id));
  }
  for (const char* k : {"_rev", "id", "domain"}) d.body.erase(k);
  auto put = meta_->PutDoc(std::move(d));
  if (!put.ok()) return Error(StatusFor(put.status()), put.status().message());
  return Json(r.method == "POST" ? 201 : 200, to_json(*put));
}

}  // namespace commcare::server
