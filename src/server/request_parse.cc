// The request parsing the routes share (request_parse.h), apart from the routes themselves.
#include "server/request_parse.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>

#include "server/app.h"
#include "server/case_query.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using util::XmlEscape;

std::string TrimSlashes(std::string_view rest) {
  while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
  while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  return std::string(rest);
}

bool SplitDomainPath(const std::string& path, std::string* domain, std::string* rest) {
  if (path.rfind("/a/", 0) != 0) return false;
  auto slash = path.find('/', 3);
  *domain = path.substr(3, slash == std::string::npos ? std::string::npos : slash - 3);
  *rest = slash == std::string::npos ? "" : path.substr(slash + 1);
  return !domain->empty();
}

bool App::RouteSpec::Matches(const std::string& p) const {
  switch (match) {
    case kExact:
      return p == path || (path != "/" && p == path + "/");
    case kSegment:
      return p == path || p.starts_with(path + "/");
    case kPrefix:
      return p.starts_with(path);
  }
  return false;
}

std::string Base64Decode(std::string_view in) {
  std::string out(3 * ((in.size() + 3) / 4), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return {};
  size_t pad = 0;
  if (!in.empty() && in.back() == '=') ++pad;
  if (in.size() > 1 && in[in.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

// key=value, key="quoted value", ... as in a Digest Authorization header.
std::map<std::string, std::string> ParseAuthParams(std::string_view s) {
  std::map<std::string, std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == ',')) ++i;
    size_t eq = s.find('=', i);
    if (eq == std::string_view::npos) break;
    std::string key(s.substr(i, eq - i));
    while (!key.empty() && key.back() == ' ') key.pop_back();
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    i = eq + 1;
    std::string value;
    if (i < s.size() && s[i] == '"') {
      ++i;
      while (i < s.size() && s[i] != '"') {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value.push_back(s[i++]);
      }
      ++i;
    } else {
      size_t end = s.find(',', i);
      value = std::string(s.substr(i, end == std::string_view::npos ? end : end - i));
      while (!value.empty() && value.back() == ' ') value.pop_back();
      i = end == std::string_view::npos ? s.size() : end;
    }
    out[key] = value;
  }
  return out;
}

Credentials ParseAuthorization(std::string_view a) {
  Credentials c;
  auto space = a.find(' ');
  c.scheme = std::string(a.substr(0, space));
  for (char& ch : c.scheme) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::string_view cred = space == std::string_view::npos ? "" : a.substr(space + 1);
  while (!cred.empty() && cred.front() == ' ') cred.remove_prefix(1);
  c.malformed =
      Status::Unauthenticated(fmt::format("unsupported authorization scheme '{}'", c.scheme));
  if (c.scheme == "basic" || c.scheme == "apikey") {
    std::string text = c.scheme == "basic" ? Base64Decode(cred) : std::string(cred);
    auto colon = text.find(':');
    c.claimed = text.substr(0, colon);
    if (colon != std::string::npos) {
      c.secret = text.substr(colon + 1);
      c.malformed = Status::Ok();
    } else {
      c.malformed = Status::Unauthenticated(c.scheme == "basic"
                                                ? "malformed Basic credentials"
                                                : "ApiKey credentials must be 'ApiKey user:key'");
    }
  } else if (c.scheme == "digest") {
    c.digest = ParseAuthParams(cred);
    if (auto u = c.digest.find("username"); u != c.digest.end()) c.claimed = u->second;
    c.malformed = Status::Ok();
  }
  return c;
}

// One case block of a Case API write; `at` names the item in errors ("" or "[3]").
namespace {

// InvalidArgument naming field when s holds a character XML 1.0 cannot carry (a control
// character other than tab, newline and carriage return, or U+FFFE, U+FFFF): the case XML the
// Case API writes would not be well-formed. s is UTF-8 (Boost.JSON checks it).
Status XmlText(std::string_view s, const std::string& field) {
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const bool control = c < 0x20 && c != '\t' && c != '\n' && c != '\r';
    const bool non_char = c == 0xEF && i + 2 < s.size() &&
                          static_cast<unsigned char>(s[i + 1]) == 0xBF &&
                          (static_cast<unsigned char>(s[i + 2]) & 0xFE) == 0xBE;
    if (control || non_char)
      return Status::InvalidArgument(field + ": holds a character XML cannot carry");
  }
  return Status::Ok();
}

}  // namespace

Result<std::string> CaseApiBlock(const json::value& v, const std::string& at, bool create,
                                 std::string case_id, const std::string& user_id,
                                 const std::map<std::string, std::string>& temp_ids,
                                 const std::map<std::string, std::string>& ext_ids,
                                 std::string* out_case_id) {
  if (!v.is_object())
    return Status::InvalidArgument(fmt::format("{}: must be an object", at.empty() ? "body" : at));
  const auto& o = v.get_object();
  auto field = [&](const char* k) { return at.empty() ? std::string(k) : at + "." + k; };
  auto str = [&](const char* k, std::string* out) -> Status {
    const json::value* x = o.if_contains(k);
    if (!x || x->is_null()) return Status::Ok();
    if (!x->is_string()) return Status::InvalidArgument(field(k) + ": must be a string");
    *out = std::string(x->get_string());
    return XmlText(*out, field(k));
  };
  CC_RETURN_IF_ERROR(XmlText(case_id, field("case_id")));
  std::string type, name, owner, external;
  CC_RETURN_IF_ERROR(str("case_type", &type));
  CC_RETURN_IF_ERROR(str("case_name", &name));
  CC_RETURN_IF_ERROR(str("owner_id", &owner));
  CC_RETURN_IF_ERROR(str("external_id", &external));
  for (const auto& kv : o) {
    static const std::set<std::string_view> kKnown = {
        "case_type", "case_name", "owner_id", "external_id", "properties",
        "indices",   "close",     "create",   "case_id",     "temporary_id"};
    if (!kKnown.count(kv.key()))
      return Status::InvalidArgument(
          fmt::format("{}: unknown field", field(std::string(kv.key()).c_str())));
  }
  if (create) {
    if (type.empty()) return Status::InvalidArgument(field("case_type") + ": is required");
    if (name.empty()) return Status::InvalidArgument(field("case_name") + ": is required");
    if (owner.empty()) owner = user_id;
  }
  *out_case_id = case_id;
  std::string xml = fmt::format(
      R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{}" date_modified="{}" user_id="{}">)",
      XmlEscape(case_id), util::FormatIsoTime(util::NowMicros()), XmlEscape(user_id));
  if (create)
    xml += fmt::format(
        "<create><case_type>{}</case_type><case_name>{}</case_name><owner_id>{}</owner_id></"
        "create>",
        XmlEscape(type), XmlEscape(name), XmlEscape(owner));
  std::string update;
  if (!create) {
    if (!type.empty()) update += "<case_type>" + XmlEscape(type) + "</case_type>";
    if (!name.empty()) update += "<case_name>" + XmlEscape(name) + "</case_name>";
    if (!owner.empty()) update += "<owner_id>" + XmlEscape(owner) + "</owner_id>";
  }
  if (!external.empty()) update += "<external_id>" + XmlEscape(external) + "</external_id>";
  if (const json::value* props = o.if_contains("properties")) {
    if (!props->is_object())
      return Status::InvalidArgument(field("properties") + ": must be an object");
    for (const auto& kv : props->get_object()) {
      std::string k(kv.key());
      std::string pf = field("properties") + "." + k;
      if (!util::IsCasePropertyName(k))
        return Status::InvalidArgument(pf + ": not a valid property name");
      if (!kv.value().is_string()) return Status::InvalidArgument(pf + ": must be a string");
      CC_RETURN_IF_ERROR(XmlText(kv.value().get_string(), pf));
      update += fmt::format("<{0}>{1}</{0}>", k, XmlEscape(kv.value().get_string()));
    }
  }
  if (!update.empty()) xml += "<update>" + update + "</update>";
  if (const json::value* idx = o.if_contains("indices")) {
    if (!idx->is_object()) return Status::InvalidArgument(field("indices") + ": must be an object");
    std::string index;
    for (const auto& kv : idx->get_object()) {
      std::string k(kv.key());
      std::string pf = field("indices") + "." + k;
      if (!util::IsCasePropertyName(k))
        return Status::InvalidArgument(pf + ": not a valid index name");
      if (!kv.value().is_object()) return Status::InvalidArgument(pf + ": must be an object");
      const auto& io = kv.value().get_object();
      auto get = [&](const char* f) {
        const json::value* x = io.if_contains(f);
        return x && x->is_string() ? std::string(x->get_string()) : std::string();
      };
      CC_RETURN_IF_ERROR(XmlText(get("case_id"), pf + ".case_id"));
      CC_RETURN_IF_ERROR(XmlText(get("case_type"), pf + ".case_type"));
      std::string target = get("case_id");
      if ((!target.empty()) + (!get("temporary_id").empty()) + (!get("external_id").empty()) > 1)
        return Status::InvalidArgument(
            pf + ": Indices must specify case_id, external_id, or temporary ID, and only one");
      if (!get("external_id").empty()) {  // HQ's CaseIDLookerUpper.get_by_external_id
        auto t = ext_ids.find(get("external_id"));
        if (t == ext_ids.end())
          return Status::InvalidArgument(
              fmt::format("{}.external_id: Could not find a case with external_id '{}'", pf,
                          get("external_id")));
        target = t->second;
      }
      if (target.empty() && !get("temporary_id").empty()) {
        auto t = temp_ids.find(get("temporary_id"));
        if (t == temp_ids.end())
          return Status::InvalidArgument(pf + ".temporary_id: no case in this request has it");
        target = t->second;
      }
      std::string rel = get("relationship").empty() ? "child" : get("relationship");
      if (rel != "child" && rel != "extension")
        return Status::InvalidArgument(pf + ".relationship: must be child or extension");
      if (get("case_type").empty()) return Status::InvalidArgument(pf + ".case_type: is required");
      index += fmt::format(R"(<{0} case_type="{1}" relationship="{2}">{3}</{0}>)", k,
                           XmlEscape(get("case_type")), rel, XmlEscape(target));
    }
    if (!index.empty()) xml += "<index>" + index + "</index>";
  }
  if (const json::value* c = o.if_contains("close")) {
    if (!c->is_bool()) return Status::InvalidArgument(field("close") + ": must be true or false");
    if (c->get_bool()) xml += "<close/>";
  }
  return xml + "</case>";
}

namespace {

// HQ's _to_boolean (get_list.py): "" and dimagi's FALSE_STRINGS are false, anything else true.
bool ToBoolean(std::string v) {
  for (auto& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const std::set<std::string> kFalse = {"", "false", "f", "no", "n", "off", "0", "none"};
  return !kFalse.count(v);
}

bool IsRange(const std::string& k) {
  auto dot = k.rfind('.');
  if (dot == std::string::npos) return false;
  const std::string op = k.substr(dot + 1);
  return op == "gt" || op == "gte" || op == "lt" || op == "lte";
}

}  // namespace

// The list's query from the request's parameters: a repeated parameter ORs its values (HQ's
// _get_query); a single value uses the index-friendly field of CaseSearchQuery.
Result<CaseSearchQuery> CaseListQuery(const Request& r, const std::string& domain) {
  CaseSearchQuery q;
  q.domain = domain;
  q.count = true;
  std::map<std::string, std::vector<std::string>> params;
  for (const auto& [k, v] : r.query) params[k].push_back(v);
  for (const auto& [k, vals] : params) {
    const std::string& v = vals.back();
    if (k == "q") {  // full text over name and property values (libcommcare's extension)
      q.text = v;
    } else if (k == "limit") {
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (!*v.c_str() || *end || n < 1 || n > 5000)
        return Status::InvalidArgument(
            fmt::format("'{}' is not a valid value for 'limit' (1..5000)", v));
      q.limit = static_cast<size_t>(n);
    } else if (k == "cursor") {
      q.cursor = v;
    } else if (k == "query") {  // HQ's XPath, the subset of case_query.h
      for (const auto& x : vals) CC_RETURN_IF_ERROR(AddXPathQuery(x, &q));
    } else if (k == "include_deprecated") {
      // HQ leaves out cases of deprecated case types unless this is true; no case type is
      // deprecated here (there is no data dictionary), so every value answers the same.
    } else if (k == "closed") {
      if (vals.size() == 1 || std::all_of(vals.begin(), vals.end(), [&](const std::string& x) {
            return ToBoolean(x) == ToBoolean(v);
          }))
        q.closed = ToBoolean(v);
      // open or closed: every case
    } else if (IsRange(k)) {
      const auto dot = k.rfind('.');
      std::string field = k.substr(0, dot);
      if (field.rfind("properties.", 0) == 0) field = field.substr(11);
      for (const auto& x : vals) q.ranges.push_back({field, k.substr(dot + 1), x});
    } else if (k == "case_type" || k == "owner_id" || k == "case_name" || k == "external_id" ||
               (k.rfind("properties.", 0) == 0 && k.size() > 11) ||
               (k.rfind("indices.", 0) == 0 && k.size() > 8)) {
      if (vals.size() == 1 && !v.empty() && k.rfind("indices.", 0) != 0) {
        if (k == "case_type")
          q.case_type = v;
        else if (k == "owner_id")
          q.owner_id = v;
        else if (k == "case_name")
          q.case_name = v;
        else if (k == "external_id")
          q.external_id = v;
        else
          q.equals.emplace_back(k.substr(11), v);
      } else {
        q.any_of.emplace_back(k, vals);
      }
    } else {
      return Status::InvalidArgument(fmt::format("'{}' is not a valid parameter.", k));
    }
  }
  return q;
}

Result<meta::RestoreParams> RestoreParamsFromRequest(const Request& r, const std::string& app_id) {
  const std::string state = r.Param("state");
  // "ccsh:" is the empty footprint's hash (what a phone without cases sends).
  if (!state.empty() &&
      ((state.size() != 37 && state.size() != 5) || state.rfind("ccsh:", 0) != 0 ||
       state.find_first_not_of("0123456789abcdef", 5) != std::string::npos))
    return Status::InvalidArgument(
        fmt::format("state '{}' is not a case state hash (ccsh:[32 hex])", state));
  meta::RestoreParams p;
  p.since = r.Param("since");
  p.version = r.Param("version", "2.0");
  p.state = state;
  p.items = r.Param("items") == "true";
  p.device_id = r.Param("device_id");
  p.app_id = app_id;
  if (const auto* host = r.Header("host"))  // where the phone fetches case attachments
    p.url_base = fmt::format("{}://{}", r.tls ? "https" : "http", *host);
  p.overwrite_cache = r.Param("overwrite_cache") == "true";
  p.skip_fixtures = r.Param("skip_fixtures") == "true";
  return p;
}

}  // namespace commcare::server
