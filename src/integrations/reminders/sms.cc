// The generic HTTP SMS gateway (integrations/reminders/sms.h), over libcurl.
#include "integrations/reminders/sms.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <cctype>

#include "commcare/log.h"

namespace commcare::reminders {

namespace json = boost::json;

namespace {

Status Bad(const std::string& field, std::string_view why) {
  return Status::InvalidArgument(fmt::format("{}: {}", field, why));
}

std::string UrlEncode(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~')
      out += static_cast<char>(ch);
    else
      out += fmt::format("%{:02X}", ch);
  }
  return out;
}

std::string JsonEncode(std::string_view s) {
  std::string q = json::serialize(json::value(json::string(s)));
  return q.substr(1, q.size() - 2);  // the quoted string's inside
}

std::string Fill(std::string tmpl, std::string_view to, std::string_view message,
                 std::string (*enc)(std::string_view)) {
  for (auto [key, value] :
       {std::pair<std::string_view, std::string_view>{"{to}", to}, {"{message}", message}})
    for (size_t at; (at = tmpl.find(key)) != std::string::npos;)
      tmpl.replace(at, key.size(), enc(value));
  return tmpl;
}

size_t Collect(char* p, size_t size, size_t n, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (s->size() < 64 * 1024) s->append(p, size * n);
  return size * n;
}

Status Str(const json::object& o, const std::string& at, const char* k, std::string* out) {
  const json::value* v = o.if_contains(k);
  if (!v || v->is_null()) return Status::Ok();
  if (!v->is_string()) return Bad(at + k, "must be a string");
  *out = std::string(v->get_string());
  return Status::Ok();
}

}  // namespace

Result<SmsGateway> ParseGateway(const json::value& v, const std::string& at) {
  if (!v.is_object()) return Bad(at.substr(0, at.size() - 1), "must be an object");
  const auto& o = v.get_object();
  for (const auto& kv : o) {
    std::string_view k(kv.key().data(), kv.key().size());
    if (k != "url" && k != "method" && k != "body" && k != "content_type" && k != "headers" &&
        k != "auth" && k != "success" && k != "timeout_ms")
      return Bad(at + std::string(k), "unknown field");
  }
  SmsGateway g;
  CC_RETURN_IF_ERROR(Str(o, at, "url", &g.url));
  if (!g.url.starts_with("http://") && !g.url.starts_with("https://"))
    return Bad(at + "url", "must be an http:// or https:// URL");
  CC_RETURN_IF_ERROR(Str(o, at, "method", &g.method));
  if (g.method != "GET" && g.method != "POST") return Bad(at + "method", "must be GET or POST");
  CC_RETURN_IF_ERROR(Str(o, at, "body", &g.body));
  CC_RETURN_IF_ERROR(Str(o, at, "content_type", &g.content_type));
  if (const json::value* h = o.if_contains("headers"); h && !h->is_null()) {
    if (!h->is_object()) return Bad(at + "headers", "must be an object of strings");
    for (const auto& kv : h->get_object()) {
      if (!kv.value().is_string()) return Bad(at + "headers", "must be an object of strings");
      g.headers[std::string(kv.key().data(), kv.key().size())] =
          std::string(kv.value().get_string());
    }
  }
  if (const json::value* a = o.if_contains("auth"); a && !a->is_null()) {
    if (!a->is_object()) return Bad(at + "auth", "must be an object");
    const auto& ao = a->get_object();
    CC_RETURN_IF_ERROR(Str(ao, at + "auth.", "type", &g.auth));
    CC_RETURN_IF_ERROR(Str(ao, at + "auth.", "username", &g.username));
    CC_RETURN_IF_ERROR(Str(ao, at + "auth.", "password", &g.password));
    CC_RETURN_IF_ERROR(Str(ao, at + "auth.", "token", &g.token));
    if (g.auth != "basic" && g.auth != "bearer")
      return Bad(at + "auth.type", "must be basic or bearer");
  }
  if (const json::value* s = o.if_contains("success"); s && !s->is_null()) {
    if (!s->is_object()) return Bad(at + "success", "must be an object");
    const auto& so = s->get_object();
    if (const json::value* st = so.if_contains("status")) {
      if (!st->is_int64() || st->get_int64() < 100 || st->get_int64() > 599)
        return Bad(at + "success.status", "must be an HTTP status");
      g.success_status = static_cast<int>(st->get_int64());
    }
    CC_RETURN_IF_ERROR(Str(so, at + "success.", "contains", &g.success_contains));
  }
  if (const json::value* t = o.if_contains("timeout_ms"); t && !t->is_null()) {
    if (!t->is_int64() || t->get_int64() < 1) return Bad(at + "timeout_ms", "must be > 0");
    g.timeout_ms = static_cast<int>(t->get_int64());
  }
  return g;
}

json::object GatewayJson(const SmsGateway& g) {
  json::object h;
  for (const auto& [k, v] : g.headers) h[k] = v;
  json::object o{{"url", g.url},
                 {"method", g.method},
                 {"body", g.body},
                 {"content_type", g.content_type},
                 {"headers", std::move(h)},
                 {"timeout_ms", g.timeout_ms}};
  if (!g.auth.empty())
    o["auth"] = json::object{
        {"type", g.auth}, {"username", g.username}, {"password", g.password}, {"token", g.token}};
  json::object s{{"contains", g.success_contains}};
  if (g.success_status) s["status"] = g.success_status;
  o["success"] = std::move(s);
  return o;
}

Status SendSms(const SmsGateway& g, std::string_view to, std::string_view message) {
  const std::string url = Fill(g.url, to, message, UrlEncode);
  const bool json_body = g.content_type.find("json") != std::string::npos;
  const std::string body = Fill(g.body, to, message, json_body ? JsonEncode : UrlEncode);
  CURL* c = curl_easy_init();
  if (!c) return Status::Internal("curl_easy_init failed");
  curl_slist* headers = nullptr;
  for (const auto& [k, v] : g.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
  if (g.method == "POST")
    headers = curl_slist_append(headers, ("Content-Type: " + g.content_type).c_str());
  if (g.auth == "bearer")
    headers = curl_slist_append(headers, ("Authorization: Bearer " + g.token).c_str());
  std::string answer;
  char err[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, long(g.timeout_ms));
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  if (g.method == "POST") {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, long(body.size()));
  }
  if (g.auth == "basic") {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, g.username.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, g.password.c_str());
  }
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  // The URL is not logged: gateways put credentials in it.
  if (rc != CURLE_OK)
    return Status::Unavailable(
        fmt::format("sms gateway: {}", err[0] ? err : curl_easy_strerror(rc)));
  const bool status_ok = g.success_status ? status == g.success_status : status / 100 == 2;
  if (status_ok && answer.find(g.success_contains) != std::string::npos) return Status::Ok();
  const std::string what =
      fmt::format("sms gateway answered {}: {}", status, answer.substr(0, 200));
  if (status >= 500 || status == 429) return Status::Unavailable(what);
  return Status::FailedPrecondition(what);
}

TaskHandler SmsSendHandler() {
  return [](TaskContext& c) -> Result<std::string> {
    boost::system::error_code ec;
    json::value v = json::parse(c.payload(), ec);
    if (ec || !v.is_object()) return Status::InvalidArgument("sms.send: payload must be an object");
    const auto& o = v.get_object();
    const json::value* to = o.if_contains("to");
    const json::value* msg = o.if_contains("message");
    const json::value* gw = o.if_contains("gateway");
    if (!to || !to->is_string() || !msg || !msg->is_string() || !gw)
      return Status::InvalidArgument("sms.send: payload needs \"to\", \"message\", \"gateway\"");
    CC_ASSIGN_OR_RETURN(SmsGateway g, ParseGateway(*gw, "gateway."));
    CC_RETURN_IF_ERROR(SendSms(g, std::string(to->get_string()), std::string(msg->get_string())));
    c.Progress(1, 1, "sent");
    return json::serialize(json::object{{"to", to->get_string()}, {"status", "sent"}});
  };
}

}  // namespace commcare::reminders
