#include "server/responses.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace commcare::server {

namespace json = boost::json;

http::Response Json(int status, const json::value& v) {
  http::Response r;
  r.status = status;
  r.body = json::serialize(v);
  return r;
}
namespace {

void SortKeys(json::value* v) {
  if (v->is_array()) {
    for (auto& x : v->as_array()) SortKeys(&x);
    return;
  }
  if (!v->is_object()) return;
  json::object& o = v->as_object();
  std::vector<std::pair<std::string, json::value>> kv;
  kv.reserve(o.size());
  for (auto& e : o) kv.emplace_back(std::string(e.key()), std::move(e.value()));
  std::sort(kv.begin(), kv.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  o.clear();
  for (auto& [k, x] : kv) {
    SortKeys(&x);
    o.emplace(k, std::move(x));
  }
}

}  // namespace

http::Response SortedJson(int status, json::value v) {
  SortKeys(&v);
  return Json(status, v);
}
http::Response Error(int status, std::string_view message) {
  return Json(status, json::object{{"error", message}});
}
int StatusFor(const Status& s) {
  switch (s.code()) {
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kAborted:
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kFailedPrecondition:
      return 412;
    case StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

http::Response TooManyRequests(double wait, std::string_view message) {
  http::Response r =
      Error(429, fmt::format("{}: retry in {} s", message, static_cast<int64_t>(std::ceil(wait))));
  r.headers.emplace_back("Retry-After", std::to_string(static_cast<int64_t>(std::ceil(wait))));
  return r;
}

std::string UrlEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':')
      out.push_back(static_cast<char>(c));
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

http::Response OtaXml(int status, std::string body) {
  http::Response out;
  out.status = status;
  out.content_type = "text/xml; charset=utf-8";
  out.headers.emplace_back("X-OpenRosa-Version", "1.0");
  out.body = std::move(body);
  return out;
}

}  // namespace commcare::server
