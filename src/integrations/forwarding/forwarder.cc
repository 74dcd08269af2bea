// Forwarders and repeat records as JSON: parsing with a check of every field (errors name it),
// and the JSON every face shows (secrets masked).
#include <fmt/format.h>

#include <boost/json.hpp>

#include "commcare/engine.h"
#include "integrations/forwarding/forwarding.h"

namespace commcare {

namespace json = boost::json;

namespace {

const std::pair<RecordState, const char*> kStateNames[] = {
    {RecordState::kPending, "pending"},     {RecordState::kFailed, "failed"},
    {RecordState::kSucceeded, "succeeded"}, {RecordState::kCancelled, "cancelled"},
    {RecordState::kEmpty, "empty"},         {RecordState::kInvalidPayload, "invalid_payload"}};

Result<std::vector<std::string>> Strings(const json::object& o, const char* key) {
  std::vector<std::string> out;
  const auto* v = o.if_contains(key);
  if (!v || v->is_null()) return out;
  if (!v->is_array()) return Status::InvalidArgument(fmt::format("\"{}\" must be a list", key));
  for (const auto& s : v->get_array()) {
    if (!s.is_string() || s.get_string().empty())
      return Status::InvalidArgument(fmt::format("\"{}\" must hold non-empty strings", key));
    out.emplace_back(s.get_string());
  }
  return out;
}

}  // namespace

namespace forwarding {

Status CheckForwarder(const Forwarder& f) {
  auto bad = [](std::string m) { return Status::InvalidArgument(std::move(m)); };
  if (f.domain.empty()) return bad("a forwarder needs a \"domain\"");
  if (f.kind != "form" && f.kind != "case") return bad("\"kind\" must be form or case");
  const bool form_fmt = f.format == "form_xml" || f.format == "form_json";
  const bool case_fmt = f.format == "case_xml" || f.format == "case_json";
  if (f.kind == "form" && !form_fmt)
    return bad("\"format\" of a form forwarder must be form_xml or form_json");
  if (f.kind == "case" && !case_fmt)
    return bad("\"format\" of a case forwarder must be case_xml or case_json");
  if (f.url.rfind("http://", 0) != 0 && f.url.rfind("https://", 0) != 0)
    return bad(fmt::format("\"url\" must start with http:// or https:// (got '{}')", f.url));
  if (f.url.find_first_of(" \r\n\t") != std::string::npos) return bad("\"url\" has white space");
  if (!f.auth.empty() && f.auth != "basic" && f.auth != "digest" && f.auth != "bearer")
    return bad("\"auth\" must be basic, digest or bearer");
  if ((f.auth == "basic" || f.auth == "digest") && f.username.empty())
    return bad("basic and digest auth need a \"username\"");
  if (f.auth == "bearer" && f.token.empty()) return bad("bearer auth needs a \"token\"");
  for (const auto& [k, v] : f.headers)
    if (k.empty() || k.find_first_of(": \r\n") != std::string::npos ||
        v.find_first_of("\r\n") != std::string::npos)
      return bad(fmt::format("header '{}' is not a valid header", k));
  for (const auto& e : f.events)
    if (e != "create" && e != "update" && e != "close")
      return bad(fmt::format("\"events\" holds '{}': use create, update or close", e));
  if (f.kind == "form" && (!f.case_types.empty() || !f.events.empty()))
    return bad("\"case_types\" and \"events\" are for case forwarders");
  if (f.kind == "case" && !f.xmlns.empty()) return bad("\"xmlns\" is for form forwarders");
  if (f.max_attempts < 1 || f.max_attempts > 100) return bad("\"max_attempts\" must be 1..100");
  if (f.timeout_ms < 100 || f.timeout_ms > 600000) return bad("\"timeout_ms\" must be 100..600000");
  return Status::Ok();
}

}  // namespace forwarding

std::string_view RecordStateName(RecordState s) {
  for (const auto& [st, name] : kStateNames)
    if (st == s) return name;
  return "unknown";
}

std::optional<RecordState> ParseRecordState(std::string_view name) {
  for (const auto& [st, n] : kStateNames)
    if (name == n) return st;
  return std::nullopt;
}

Result<Forwarder> Forwarder::FromJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("a forwarder must be a JSON object");
  const json::object& o = v.get_object();
  Forwarder f;
  static const char* const kKnown[] = {"id",
                                       "domain",
                                       "name",
                                       "kind",
                                       "format",
                                       "url",
                                       "auth",
                                       "username",
                                       "password",
                                       "token",
                                       "headers",
                                       "xmlns",
                                       "include_case_blocks",
                                       "include_app_id_param",
                                       "case_types",
                                       "events",
                                       "max_attempts",
                                       "timeout_ms",
                                       "paused",
                                       "created_at"};
  for (const auto& kv : o) {
    bool known = false;
    for (const char* k : kKnown) known = known || kv.key() == k;
    if (!known) return Status::InvalidArgument(fmt::format("unknown field \"{}\"", kv.key()));
  }
  auto str = [&](const char* key, std::string* out) -> Status {
    if (const auto* x = o.if_contains(key); x && !x->is_null()) {
      if (!x->is_string()) return Status::InvalidArgument(fmt::format("\"{}\" must be text", key));
      *out = std::string(x->get_string());
    }
    return Status::Ok();
  };
  auto boolean = [&](const char* key, bool* out) -> Status {
    if (const auto* x = o.if_contains(key); x && !x->is_null()) {
      if (!x->is_bool())
        return Status::InvalidArgument(fmt::format("\"{}\" must be true/false", key));
      *out = x->get_bool();
    }
    return Status::Ok();
  };
  auto integer = [&](const char* key, int64_t* out) -> Status {
    if (const auto* x = o.if_contains(key); x && !x->is_null()) {
      if (!x->is_int64())
        return Status::InvalidArgument(fmt::format("\"{}\" must be a number", key));
      *out = x->get_int64();
    }
    return Status::Ok();
  };
  const std::pair<const char*, std::string*> texts[] = {
      {"id", &f.id},      {"domain", &f.domain},     {"name", &f.name},
      {"kind", &f.kind},  {"format", &f.format},     {"url", &f.url},
      {"auth", &f.auth},  {"username", &f.username}, {"password", &f.password},
      {"token", &f.token}};
  for (const auto& [k, p] : texts) CC_RETURN_IF_ERROR(str(k, p));
  if (!o.contains("format") && f.kind == "case") f.format = "case_json";
  CC_RETURN_IF_ERROR(boolean("include_case_blocks", &f.include_case_blocks));
  CC_RETURN_IF_ERROR(boolean("include_app_id_param", &f.include_app_id_param));
  CC_RETURN_IF_ERROR(boolean("paused", &f.paused));
  int64_t n = f.max_attempts, t = f.timeout_ms;
  CC_RETURN_IF_ERROR(integer("max_attempts", &n));
  CC_RETURN_IF_ERROR(integer("timeout_ms", &t));
  CC_RETURN_IF_ERROR(integer("created_at", &f.created_at));
  if (n < 1 || n > 100 || t < 100 || t > 600000)
    return Status::InvalidArgument(
        "\"max_attempts\" must be 1..100 and \"timeout_ms\" 100..600000");
  f.max_attempts = static_cast<int>(n);
  f.timeout_ms = static_cast<int>(t);
  CC_ASSIGN_OR_RETURN(f.xmlns, Strings(o, "xmlns"));
  CC_ASSIGN_OR_RETURN(f.case_types, Strings(o, "case_types"));
  CC_ASSIGN_OR_RETURN(f.events, Strings(o, "events"));
  if (const auto* h = o.if_contains("headers"); h && !h->is_null()) {
    if (!h->is_object()) return Status::InvalidArgument("\"headers\" must be an object");
    for (const auto& kv : h->get_object()) {
      if (!kv.value().is_string())
        return Status::InvalidArgument(fmt::format("header '{}' must be text", kv.key()));
      f.headers.emplace_back(std::string(kv.key()), std::string(kv.value().get_string()));
    }
  }
  CC_RETURN_IF_ERROR(forwarding::CheckForwarder(f));
  return f;
}

std::string Forwarder::ToJson(bool with_secrets) const {
  json::object o;
  o["id"] = id;
  o["domain"] = domain;
  o["name"] = name;
  o["kind"] = kind;
  o["format"] = format;
  o["url"] = url;
  o["auth"] = auth;
  o["username"] = username;
  auto secret = [&](const std::string& s) { return with_secrets || s.empty() ? s : "***"; };
  o["password"] = secret(password);
  o["token"] = secret(token);
  json::object h;
  for (const auto& [k, v] : headers) h[k] = v;
  o["headers"] = std::move(h);
  auto list = [](const std::vector<std::string>& v) {
    json::array a;
    for (const auto& s : v) a.emplace_back(s);
    return a;
  };
  if (kind == "form") {
    o["xmlns"] = list(xmlns);
    o["include_case_blocks"] = include_case_blocks;
    o["include_app_id_param"] = include_app_id_param;
  } else {
    o["case_types"] = list(case_types);
    o["events"] = list(events);
  }
  o["max_attempts"] = max_attempts;
  o["timeout_ms"] = timeout_ms;
  o["paused"] = paused;
  o["created_at"] = created_at;
  return json::serialize(o);
}

std::string RepeatRecord::ToJson() const {
  json::object o;
  o["id"] = id;
  o["forwarder"] = forwarder_id;
  o["domain"] = domain;
  o["doc_id"] = doc_id;
  o["doc_type"] = doc_type;
  if (!event.empty()) o["event"] = event;
  o["state"] = RecordStateName(state);
  o["attempts"] = attempts;
  o["tries"] = tries;
  o["created_at"] = FormatTime(created_at);
  o["next_check"] = FormatTime(next_check);
  o["last_checked"] = FormatTime(last_checked);
  if (!attempt_log.empty()) {
    json::array a;
    for (const auto& t : attempt_log) {
      json::object x;
      x["at"] = FormatTime(t.at);
      x["state"] = RecordStateName(t.state);
      x["http_status"] = t.http_status;
      x["message"] = t.message;
      x["duration_ms"] = static_cast<double>(t.duration_us) / 1000.0;
      a.emplace_back(std::move(x));
    }
    o["attempt_log"] = std::move(a);
  }
  return json::serialize(o);
}

}  // namespace commcare
