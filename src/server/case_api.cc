// The Case API v2 (CommCare HQ's corehq/apps/hqcase/api/ and hqcase/views.py): reads from the
// case-search index and the engine, writes as generated case_api forms through the engine.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "commcare/pillows.h"
#include "server/app.h"
#include "server/case_query.h"
#include "server/request_parse.h"
#include "server/responses.h"
#include "util/hash.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare::server {
namespace {

using util::XmlEscape;

namespace json = boost::json;
using http::Request;
using http::Response;

// The most cases one bulk fetch may name, case ids and external ids together (HQ's
// get_bulk.py: MAX_PAGE_SIZE).
constexpr size_t kMaxBulkFetch = 5000;

// A case of the domain as the API serves it; NotFound for a deleted case or another domain's
// (HQ's _get_single_case reads the case search index, which drops deleted cases).
Result<CaseRecord> LiveCase(Engine* engine, const std::string& domain, std::string_view id) {
  auto c = engine->GetCase(domain, id);
  if (c.ok() && (c->deleted || c->domain != domain)) return Status::NotFound("deleted");
  return c;
}

// A case as HQ's serialize_case shapes it: CaseToJson plus indexed_on, which for a case read
// from the primary store is the time the server last changed it (the search index's own
// indexed_on trails it by the pillow's lag).
json::value ApiCase(const CaseRecord& c) {
  json::value v = json::parse(CaseToJson(c));
  v.as_object()["indexed_on"] =
      c.server_modified_on ? json::value(util::FormatIsoTime(c.server_modified_on)) : nullptr;
  return v;
}

// The case id a case created through ext/{external_id}/ gets: derived from the external id, so
// that a second PUT finds the case in the primary store even before the search index has it.
std::string ExternalCaseId(const std::string& domain, const std::string& external_id) {
  return util::Sha256Hex(domain + '\0' + external_id).substr(0, 32);
}

// The live case with an external id (nullopt if none); InvalidArgument if several have it
// (HQ's _get_by_external_id: raise_multiple).
Result<std::optional<CaseRecord>> ByExternalId(Engine* engine, const std::string& pillows_dir,
                                               const std::string& domain,
                                               const std::string& external_id) {
  CaseSearchQuery q;
  q.domain = domain;
  q.external_id = external_id;
  q.limit = 10;
  std::vector<std::string> ids;
  auto page = SearchCases(pillows_dir, q);
  if (!page.ok() && !page.status().IsNotFound()) return page.status();
  if (page.ok())
    for (const auto& doc : page->cases)
      ids.emplace_back(json::parse(doc).at("case_id").as_string());
  const std::string derived = ExternalCaseId(domain, external_id);
  if (std::find(ids.begin(), ids.end(), derived) == ids.end()) ids.push_back(derived);
  std::vector<CaseRecord> found;
  for (const auto& id : ids) {
    auto c = LiveCase(engine, domain, id);
    if (c.ok() && c->external_id == external_id) found.push_back(std::move(*c));
  }
  if (found.size() > 1) {
    std::string list;
    for (const auto& c : found) list += (list.empty() ? "" : ", ") + c.case_id;
    return Status::InvalidArgument(
        fmt::format("Multiple cases found with external_id '{}': {}", external_id, list));
  }
  if (found.empty()) return std::optional<CaseRecord>();
  return std::optional<CaseRecord>(std::move(found[0]));
}

// HQ's bulk answer (get_bulk.py): one entry per id asked, in order, case ids first; a missing
// id is {"case_id"|"external_id": id, "error": "not found"}.
Result<json::object> BulkCases(Engine* engine, const std::string& pillows_dir,
                               const std::string& domain, const std::vector<std::string>& case_ids,
                               const std::vector<std::string>& external_ids) {
  json::array cases;
  int64_t missing = 0;
  std::map<std::string, json::value> seen;  // a repeated id is read once
  auto add = [&](const char* key, const std::string& id,
                 const std::function<Result<std::optional<CaseRecord>>()>& find) -> Status {
    auto it = seen.find(std::string(key) + ':' + id);
    if (it == seen.end()) {
      CC_ASSIGN_OR_RETURN(auto c, find());
      json::value v =
          c ? ApiCase(*c) : json::value(json::object{{key, id}, {"error", "not found"}});
      it = seen.emplace(std::string(key) + ':' + id, std::move(v)).first;
    }
    if (it->second.as_object().contains("error")) ++missing;
    cases.push_back(it->second);
    return Status::Ok();
  };
  for (const auto& id : case_ids)
    CC_RETURN_IF_ERROR(add("case_id", id, [&]() -> Result<std::optional<CaseRecord>> {
      auto c = LiveCase(engine, domain, id);
      if (c.ok()) return std::optional<CaseRecord>(std::move(*c));
      if (c.status().IsNotFound()) return std::optional<CaseRecord>();
      return c.status();
    }));
  for (const auto& id : external_ids)
    CC_RETURN_IF_ERROR(
        add("external_id", id, [&] { return ByExternalId(engine, pillows_dir, domain, id); }));
  const int64_t total = static_cast<int64_t>(cases.size());
  return json::object{
      {"matching_records", total - missing}, {"missing_records", missing}, {"cases", cases}};
}

// A body's list of strings at key (absent: empty).
Status StringList(const json::object& o, const char* key, std::vector<std::string>* out) {
  const json::value* v = o.if_contains(key);
  if (!v || v->is_null()) return Status::Ok();
  if (!v->is_array()) return Status::InvalidArgument(fmt::format("{}: must be a list", key));
  for (const auto& x : v->get_array()) {
    if (!x.is_string()) return Status::InvalidArgument(fmt::format("{}: must hold strings", key));
    out->emplace_back(x.get_string());
  }
  return Status::Ok();
}

}  // namespace

// POST .../case/v2/bulk-fetch/ {"case_ids": [...], "external_ids": [...]} (HQ's
// _handle_bulk_fetch).
Response App::BulkFetch(const Request& r, const std::string& domain) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return Error(400, "Payload must be valid JSON (an object)");
  std::vector<std::string> case_ids, external_ids;
  for (auto [key, out] :
       {std::pair{"case_ids", &case_ids}, std::pair{"external_ids", &external_ids}})
    if (Status st = StringList(v.get_object(), key, out); !st.ok()) return Error(400, st.message());
  if (case_ids.empty() && external_ids.empty())
    return Error(400, "Payload must include 'case_ids' or 'external_ids' fields");
  if (case_ids.size() + external_ids.size() > kMaxBulkFetch)
    return Error(400, fmt::format("You cannot request more than {} cases per request (got {}).",
                                  kMaxBulkFetch, case_ids.size() + external_ids.size()));
  auto out = BulkCases(engine_, pillows_dir_, domain, case_ids, external_ids);
  if (!out.ok()) return Error(StatusFor(out.status()), out.status().message());
  return Json(200, *out);
}

// POST (create) or PUT (update) one case, or POST/PUT a list (HQ's handle_case_update). With
// external_id, the PUT of ext/{external_id}/ (HQ's _handle_ext_put) or of one case without a
// case_id to /case/v2/: an update of the case with that external id, else a create. A list's
// item with an external_id, no case_id and no "create" flag is upserted alike (cases-v2.rst
// "Upsert"; an external id upserted twice in one request is refused, where HQ would create two
// cases). HQ answers 200 with form_id (cases-v2.rst calls it xform_id: both are sent).
Response App::CaseWrite(const Request& r, const std::string& domain, const std::string& id,
                        const meta::User& user, const std::string& external_id) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec) return Error(400, "body: not JSON (" + ec.message() + ")");
  const bool bulk = v.is_array();
  if (bulk && !id.empty())
    return Error(400, "a bulk write is a POST or PUT of a list to /case/v2/");
  if (bulk && v.get_array().size() > 100) return Error(400, "body: at most 100 cases per request");
  if (!bulk && !id.empty() && r.method != "PUT") return Error(405, "update a case with PUT");
  std::string ext = external_id;
  std::string single_id = id;
  if (!bulk && r.method == "PUT" && id.empty() && ext.empty() && v.is_object()) {
    // PUT /case/v2/ of one case (HQ's JsonCaseUpdate): by its case_id, else an upsert by its
    // external_id, as PUT ext/{external_id}/.
    const auto& o = v.get_object();
    const json::value* cid = o.if_contains("case_id");
    const json::value* eid = o.if_contains("external_id");
    if (cid && cid->is_string() && !cid->get_string().empty())
      single_id = std::string(cid->get_string());
    else if (eid && eid->is_string() && !eid->get_string().empty())
      ext = std::string(eid->get_string());
    else
      return Error(400, "Case updates must provide either a case_id or external_id");
  }
  std::optional<CaseRecord> ext_case;
  if (!ext.empty()) {
    if (!v.is_object()) return Error(400, "Payload must be a single JSON object");
    auto& o = v.get_object();
    if (!o.contains("external_id")) o["external_id"] = ext;
    auto found = ByExternalId(engine_, pillows_dir_, domain, ext);
    if (!found.ok()) return Error(StatusFor(found.status()), found.status().message());
    ext_case = std::move(*found);
    const json::value* cid = o.if_contains("case_id");
    if (ext_case && cid && (!cid->is_string() || cid->get_string() != ext_case->case_id))
      return Error(400, fmt::format("The given value of \"case_id\" does not match the existing "
                                    "value for the case identified by external_id = \"{}\". "
                                    "\"case_id\" is read-only and cannot be modified.",
                                    ext));
  }
  std::vector<const json::value*> items;
  if (bulk)
    for (const auto& x : v.get_array()) items.push_back(&x);
  else
    items.push_back(&v);
  // Case ids first (temporary ids may refer to cases created later in the list, external ids to
  // cases of this request or stored ones).
  std::map<std::string, std::string> temp_ids, ext_ids;
  std::set<std::string> upserted;                  // external ids upserted by this request
  std::vector<std::pair<bool, std::string>> plan;  // (create, case id)
  auto str_of = [](const json::object& o, const char* k) {
    const json::value* x = o.if_contains(k);
    return x && x->is_string() ? std::string(x->get_string()) : std::string();
  };
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string at = bulk ? fmt::format("[{}]", i) : "";
    if (!items[i]->is_object())
      return Error(400, (at.empty() ? "body" : at) + ": must be an object");
    const auto& o = items[i]->get_object();
    bool create = r.method == "POST" || (!ext.empty() && !ext_case);
    const std::string item_ext = str_of(o, "external_id");
    const bool has_case_id = o.contains("case_id") && !o.at("case_id").is_null();
    bool upsert = false;  // cases-v2.rst "Upsert": external_id, no case_id, no create flag
    if (bulk) {
      const json::value* c = o.if_contains("create");
      if (c && !c->is_bool()) return Error(400, at + ".create: must be true or false");
      if (c) {
        create = c->get_bool();
      } else if (!item_ext.empty() && !has_case_id) {
        upsert = true;
      } else {
        return Error(400, at + ".create: A 'create' flag is required for each update (or, to "
                               "upsert, an external_id and no case_id)");
      }
      if (create && has_case_id)
        return Error(400, at + ".case_id: You cannot specify case_id when creating a new case");
    }
    std::string case_id;
    if (!ext.empty()) {
      case_id = ext_case ? ext_case->case_id : ExternalCaseId(domain, ext);
    } else if (upsert) {
      if (!upserted.insert(item_ext).second)  // HQ would create duplicates (cases-v2.rst)
        return Error(400, fmt::format("{}.external_id: '{}' is upserted twice in this request", at,
                                      item_ext));
      auto found = ByExternalId(engine_, pillows_dir_, domain, item_ext);
      if (!found.ok())
        return Error(StatusFor(found.status()), at + ": " + found.status().message());
      create = !*found;
      case_id = *found ? (*found)->case_id : ExternalCaseId(domain, item_ext);
    } else if (create) {
      case_id = util::NewUuidHex();
    } else if (!bulk) {
      case_id = single_id;
    } else if (has_case_id) {
      const json::value& cid = o.at("case_id");
      if (!cid.is_string()) return Error(400, at + ".case_id: must be a string");
      case_id = std::string(cid.get_string());
    } else if (!item_ext.empty()) {  // HQ's JsonCaseUpdate.get_case_id: by external_id
      if (auto in = ext_ids.find(item_ext); in != ext_ids.end()) {
        case_id = in->second;
      } else {
        auto found = ByExternalId(engine_, pillows_dir_, domain, item_ext);
        if (!found.ok())
          return Error(StatusFor(found.status()), at + ": " + found.status().message());
        if (!*found)
          return Error(400, fmt::format("{}.external_id: Could not find a case with "
                                        "external_id '{}'",
                                        at, item_ext));
        case_id = (*found)->case_id;
      }
    } else {
      return Error(400, at + ": Case updates must provide either a case_id or external_id");
    }
    if (!create && !LiveCase(engine_, domain, case_id).ok())
      return Error(404, fmt::format("{}: no case {}", at.empty() ? "case_id" : at, case_id));
    if (const json::value* t = o.if_contains("temporary_id"); t && t->is_string())
      temp_ids[std::string(t->get_string())] = case_id;
    if (!item_ext.empty()) ext_ids[item_ext] = case_id;
    plan.emplace_back(create, case_id);
  }
  // Index targets named by external_id: a case of this request, else a stored one.
  for (size_t i = 0; i < items.size(); ++i) {
    const json::value* idx = items[i]->get_object().if_contains("indices");
    if (!idx || !idx->is_object()) continue;
    for (const auto& kv : idx->get_object()) {
      if (!kv.value().is_object()) continue;
      const std::string target = str_of(kv.value().get_object(), "external_id");
      if (target.empty() || ext_ids.count(target)) continue;
      auto found = ByExternalId(engine_, pillows_dir_, domain, target);
      if (!found.ok()) return Error(StatusFor(found.status()), found.status().message());
      if (*found) ext_ids[target] = (*found)->case_id;
    }
  }
  std::string blocks;
  for (size_t i = 0; i < items.size(); ++i) {
    std::string cid;
    auto b = CaseApiBlock(*items[i], bulk ? fmt::format("[{}]", i) : "", plan[i].first,
                          plan[i].second, user.user_id, temp_ids, ext_ids, &cid);
    if (!b.ok()) return Error(400, b.status().message());
    blocks += *b;
  }
  const std::string form_id = util::NewUuidHex();
  const std::string now = util::FormatIsoTime(util::NowMicros());
  std::string xml = fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://commcarehq.org/case_api"><meta xmlns="http://openrosa.org/jr/xforms"><deviceID>case_api</deviceID><timeStart>{1}</timeStart><timeEnd>{1}</timeEnd><username>{2}</username><userID>{3}</userID><instanceID>{0}</instanceID></meta>{4}</data>)",
      form_id, now, XmlEscape(user.username), XmlEscape(user.user_id), blocks);
  SubmitRequest s;
  s.domain = domain;
  s.user_id = user.user_id;
  s.body = std::move(xml);
  s.content_type = "text/xml";
  s.openrosa_version = "3.0";
  s.submit_ip = r.remote;
  SubmitResponse sr = engine_->Submit(s);
  if (sr.http_status != 201)
    return Json(400, json::object{{"error", sr.message}, {"form_id", sr.form_id}});
  json::array cases;
  for (const auto& [create, cid] : plan) {
    auto c = engine_->GetCase(domain, cid);
    if (c.ok()) cases.push_back(ApiCase(*c));
  }
  json::object out{{"form_id", form_id}, {"xform_id", form_id}};
  if (bulk)
    out["cases"] = std::move(cases);
  else
    out["case"] = cases.empty() ? json::value() : cases[0];
  return Json(200, out);
}

// GET .../case/v2/ (a list), /{id}, /{id},{id} (bulk), ext/{external_id}/; POST a case or a
// list; POST bulk-fetch/; PUT /{id}, ext/{external_id}/ (HQ's corehq/apps/hqcase/views.py).
Response App::CaseApi(const Request& r, const std::string& domain, const std::string& rest) {
  if (r.method != "GET" && r.method != "POST" && r.method != "PUT")
    return Error(405, "the Case API serves GET, POST and PUT");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  std::string ids = TrimSlashes(rest);
  std::string external_id;
  if (ids.rfind("ext/", 0) == 0) {
    external_id = ids.substr(4);
    if (external_id.empty()) return Error(404, "name a case: /case/v2/ext/{external_id}/");
  }
  if (r.method != "GET") {
    if (!user->Can(domain, meta::kEditData))
      return Error(403,
                   fmt::format("user {} may not edit data in domain {}", user->username, domain));
    if (ids == "bulk-fetch" && r.method == "POST") return BulkFetch(r, domain);
    if (!external_id.empty() && r.method != "PUT")
      return Error(405, "ext/{external_id}/ serves GET and PUT");
    return CaseWrite(r, domain, external_id.empty() ? ids : "", *user, external_id);
  }
  if (ids == "bulk-fetch") return Error(405, "bulk-fetch/ is a POST");
  if (!external_id.empty()) {
    auto c = ByExternalId(engine_, pillows_dir_, domain, external_id);
    if (!c.ok()) return Error(StatusFor(c.status()), c.status().message());
    if (!*c) return Error(404, fmt::format("Case '{}' not found", external_id));
    return Json(200, ApiCase(**c));
  }
  if (!ids.empty() && ids.find(',') == std::string::npos) {
    auto c = LiveCase(engine_, domain, ids);
    if (c.status().IsNotFound()) return Error(404, fmt::format("Case '{}' not found", ids));
    if (!c.ok()) return Error(StatusFor(c.status()), c.status().message());
    return Json(200, ApiCase(*c));
  }
  if (!ids.empty()) {  // several comma-separated: HQ's bulk answer
    std::vector<std::string> list;
    size_t start = 0;
    for (size_t i = 0; i <= ids.size(); ++i)
      if (i == ids.size() || ids[i] == ',') {
        list.push_back(ids.substr(start, i - start));
        start = i + 1;
      }
    if (list.size() > kMaxBulkFetch)
      return Error(
          400, fmt::format("You cannot request more than {} cases per request.", kMaxBulkFetch));
    auto out = BulkCases(engine_, pillows_dir_, domain, list, {});
    if (!out.ok()) return Error(StatusFor(out.status()), out.status().message());
    return Json(200, *out);
  }
  auto q = CaseListQuery(r, domain);
  if (!q.ok()) return Error(400, q.status().message());
  auto page = SearchCases(pillows_dir_, *q);
  if (!page.ok()) return Error(StatusFor(page.status()), page.status().message());
  json::array cases;
  for (const auto& c : page->cases) cases.push_back(json::parse(c));
  json::object out{{"matching_records", page->total}, {"cases", cases}};
  if (!page->next_cursor.empty()) {  // HQ: an absolute URL, absent on the last page
    std::string link = "/a/" + domain + "/api/case/v2/?";
    if (const auto* host = r.Header("host"))
      link = fmt::format("{}://{}{}", r.tls ? "https" : "http", *host, link);
    for (const auto& [k, v] : r.query)
      if (k != "cursor") link += UrlEncode(k) + "=" + UrlEncode(v) + "&";
    out["next"] = link + "cursor=" + UrlEncode(page->next_cursor);
  }
  return Json(200, out);
}

}  // namespace commcare::server
