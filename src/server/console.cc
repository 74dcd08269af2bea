// The web console (docs/console.md): its static assets, compiled into the binary from
// src/server/console/ (console_assets.h), at / and /console/; and /console/api/:
//   POST login   {username, password} (form-encoded or JSON) -> a session cookie (HttpOnly,
//                SameSite=Strict, Secure over TLS) and the session's CSRF token;
//   POST logout  ends the session;
//   GET  session who is signed in, the CSRF token, the domains and permissions;
//   GET  pillows the pillows' status (per-partition lag, retries, dead letters);
//   GET  pillows/{name}/retries, POST pillows/{name}/requeue (superusers; console_api.cc).
// Sessions live in the MetaStore, so every server sharing it knows them. The API routes take
// the session cookie as one more credential (SessionUser); their permission checks are the
// same.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cmath>

#include "commcare/pillows.h"
#include "server/app.h"
#include "server/console_assets.h"
#include "server/responses.h"
#include "util/secret.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

constexpr std::string_view kCookie = "cc_session";
constexpr const char* kCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'";

bool SafeMethod(const std::string& m) { return m == "GET" || m == "HEAD" || m == "OPTIONS"; }

// Whether an Origin header, if sent, names the Host the request was sent to.
bool SameOrigin(const Request& r) {
  const std::string* origin = r.Header("origin");
  if (!origin) return true;
  const std::string* host = r.Header("host");
  if (!host) return false;
  auto scheme = origin->find("://");
  return scheme != std::string::npos && origin->substr(scheme + 3) == *host;
}

std::string SetCookie(const Request& r, std::string_view value, int64_t max_age) {
  return fmt::format("{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}", kCookie, value,
                     max_age, r.tls ? "; Secure" : "");
}

// The username and password of a sign-in body: form-encoded, or a JSON object.
bool LoginFields(const Request& r, std::string* username, std::string* password) {
  const std::string* ct = r.Header("content-type");
  if (ct && ct->rfind("application/json", 0) == 0) {
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object()) return false;
    const auto* u = v.get_object().if_contains("username");
    const auto* p = v.get_object().if_contains("password");
    if (!u || !p || !u->is_string() || !p->is_string()) return false;
    *username = std::string(u->get_string());
    *password = std::string(p->get_string());
    return true;
  }
  size_t start = 0;
  while (start <= r.body.size()) {
    size_t end = r.body.find('&', start);
    if (end == std::string::npos) end = r.body.size();
    std::string_view item(r.body.data() + start, end - start);
    auto eq = item.find('=');
    if (eq != std::string_view::npos) {
      std::string key = http::UrlDecode(item.substr(0, eq), true);
      if (key == "username") *username = http::UrlDecode(item.substr(eq + 1), true);
      if (key == "password") *password = http::UrlDecode(item.substr(eq + 1), true);
    }
    start = end + 1;
  }
  return !username->empty();
}

Response Asset(const Request& r, std::string_view name) {
  const console::Asset* a = console::FindAsset(name);
  if (!a) return Error(404, "no such console file");
  if (r.method != "GET" && r.method != "HEAD") return Error(405, "use GET");
  Response out;
  const std::string etag = fmt::format("\"{}\"", a->etag);
  out.headers = {{"Content-Security-Policy", kCsp}, {"X-Content-Type-Options", "nosniff"},
                 {"X-Frame-Options", "DENY"},       {"Referrer-Policy", "no-referrer"},
                 {"Cache-Control", "no-cache"},     {"ETag", etag}};
  if (const std::string* inm = r.Header("if-none-match"); inm && *inm == etag) {
    out.status = 304;
    out.content_type.clear();
    return out;
  }
  out.content_type = std::string(a->content_type);
  if (r.method == "GET") out.body = std::string(a->data);
  return out;
}

}  // namespace

std::string SessionCookie(const Request& r) {
  const std::string* c = r.Header("cookie");
  if (!c) return "";
  std::string_view s = *c;
  while (!s.empty()) {
    auto semi = s.find(';');
    std::string_view item = s.substr(0, semi);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (item.size() > kCookie.size() && item.substr(0, kCookie.size()) == kCookie &&
        item[kCookie.size()] == '=')
      return std::string(item.substr(kCookie.size() + 1));
    if (semi == std::string_view::npos) break;
    s.remove_prefix(semi + 1);
  }
  return "";
}

Result<meta::User> App::SessionUser(const Request& r) {
  CC_ASSIGN_OR_RETURN(meta::Session s, meta_->GetSession(SessionCookie(r)));
  if (!SafeMethod(r.method)) {
    const std::string* token = r.Header("x-csrf-token");
    if (!token || !util::SameSecret(*token, s.csrf_token))
      return Status::PermissionDenied(
          "the console's CSRF token (X-CSRF-Token) is missing or wrong");
    if (!SameOrigin(r)) return Status::PermissionDenied("cross-origin request refused");
  }
  auto user = meta_->GetUser(s.username);
  if (!user.ok() && !user.status().IsNotFound()) return user.status();
  if (!user.ok() || !user->is_active)
    return Status::Unauthenticated("the session's user is gone or inactive");
  return user;
}

std::optional<Response> App::Console(const Request& r, std::string* route) {
  const std::string& p = r.path;
  if (p == "/" || p == "/console" || p == "/console/") {
    *route = "console";
    return Asset(r, "index.html");
  }
  if (p.rfind("/console/api/", 0) == 0) {
    *route = "console_api";
    const std::string what = p.substr(13);
    if (what == "login") return Login(r);
    if (what == "logout") return Logout(r);
    if (what == "session") return SessionInfo(r);
    if (what == "pillows") return PillowsJson(r);
    if (what.rfind("pillows/", 0) == 0) return PillowQueue(r, what.substr(8));
    return Error(404, "no such console route");
  }
  if (p.rfind("/console/", 0) == 0) {
    *route = "console";
    return Asset(r, std::string_view(p).substr(9));
  }
  return std::nullopt;
}

Response App::Login(const Request& r) {
  if (r.method != "POST") return Error(405, "sign in with POST");
  if (!SameOrigin(r)) return Error(403, "cross-origin sign-in refused");
  std::string username, password;
  if (!LoginFields(r, &username, &password))
    return Error(400, "the body must hold username and password");
  if (double wait = login_guard_.Wait(username, r.remote); wait > 0)
    return TooManyRequests(wait, "too many failed logins for this user or from this address");
  auto user = meta_->Authenticate(username, password);
  if (!user.ok()) {
    if (user.status().code() != StatusCode::kUnauthenticated)
      return Error(StatusFor(user.status()), user.status().message());
    login_guard_.Failed(username, r.remote);
    return Error(401, "wrong username or password, or the user is inactive");
  }
  login_guard_.Succeeded(username);
  meta::Session s;
  auto id = meta_->CreateSession(user->username, limits_.session_seconds, &s);
  if (!id.ok()) return Error(StatusFor(id.status()), id.status().message());
  Response out = Json(200, json::object{{"username", s.username}, {"csrf_token", s.csrf_token}});
  out.headers.emplace_back("Set-Cookie", SetCookie(r, *id, limits_.session_seconds));
  out.headers.emplace_back("Cache-Control", "no-store");
  return out;
}

Response App::Logout(const Request& r) {
  if (r.method != "POST") return Error(405, "sign out with POST");
  auto user = SessionUser(r);
  if (!user.ok() && user.status().code() == StatusCode::kPermissionDenied)
    return Error(403, user.status().message());
  Status st = meta_->DeleteSession(SessionCookie(r));
  if (!st.ok()) return Error(StatusFor(st), st.message());
  Response out = Json(200, json::object{{"signed_out", true}});
  out.headers.emplace_back("Set-Cookie", SetCookie(r, "", 0));
  return out;
}

Response App::SessionInfo(const Request& r) {
  if (r.method != "GET") return Error(405, "use GET");
  auto s = meta_->GetSession(SessionCookie(r));
  if (!s.ok()) return Error(401, s.status().message());
  auto user = Authenticate(r);
  if (!user.ok()) return Error(StatusFor(user.status()), user.status().message());
  std::vector<std::string> names = user->domains;
  if (user->is_superuser) {
    auto all = meta_->ListDomains();
    if (!all.ok()) return Error(StatusFor(all.status()), all.status().message());
    names.clear();
    for (const auto& d : *all) names.push_back(d.name);
  }
  json::array domains;
  for (const auto& d : names) {
    json::array perms;
    for (auto p : {meta::kEditData, meta::kAccessApi, meta::kMobileEndpoints, meta::kManageUsers})
      if (user->Can(d, p)) perms.push_back(json::string(p));
    domains.push_back(json::object{{"name", d}, {"permissions", perms}});
  }
  Response out = Json(200, json::object{{"username", user->username},
                                        {"is_superuser", user->is_superuser},
                                        {"csrf_token", s->csrf_token},
                                        {"expires", s->expires},
                                        {"domains", domains}});
  out.headers.emplace_back("Cache-Control", "no-store");
  return out;
}

Response App::PillowsJson(const Request& r) {
  if (r.method != "GET") return Error(405, "use GET");
  auto user = Authenticate(r);
  if (!user.ok()) return Unauthorized(user.status());
  if (!pillows_) return Json(200, json::object{{"pillows", json::array{}}});
  auto st = pillows_->GetStatus();
  if (!st.ok()) return Error(StatusFor(st.status()), st.status().message());
  json::array out;
  for (const auto& p : *st) out.push_back(json::parse(PillowStatusToJson(p)));
  return Json(200, json::object{{"pillows", out}});
}

}  // namespace commcare::server
