// The Form API v0.5 (CommCare HQ's corehq/apps/api/resources/v0_4.py XFormInstanceResource with
// the filters of corehq/apps/api/es.py): forms from the read-copy pillow's store, one form from
// the engine, its XML.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "commcare/log.h"
#include "commcare/pillows.h"
#include "integrations/forwarding/forwarding.h"
#include "server/app.h"
#include "server/request_parse.h"
#include "server/responses.h"
#include "util/time.h"

namespace commcare::server {
namespace {

namespace json = boost::json;
using http::Request;
using http::Response;

// HQ's attachment urls are absolute (absolute_reverse): the stored paths get this server's
// scheme and host.
void AbsoluteUrls(const Request& r, json::value* form) {
  if (const auto* host = r.Header("host"))
    forwarding::PrefixAttachmentUrls(form, fmt::format("{}://{}", r.tls ? "https" : "http", *host));
}

// cases__full (tastypie's UseIfRequested: "true" in any case, else the key is left out; of a
// repeated parameter the last, as Django's QueryDict.get).
bool CasesFull(const Request& r) {
  bool full = false;
  for (const auto& [k, v] : r.query)
    if (k == "cases__full") {
      std::string l = v;
      for (auto& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      full = l == "true";
    }
  return full;
}

// casexml/apps/case/xform.py extract_case_blocks: the ids of the case blocks in a form's JSON,
// first seen first (a block is a "case" with @case_id or a case_id child; device reports are
// not searched, nor is anything under a "case" key). Ledger-only cases are not there.
void CaseIdsOf(const json::value& v, std::vector<std::string>* ids) {
  auto block_id = [](const json::value& c) -> const json::value* {
    if (!c.is_object()) return nullptr;
    const auto& o = c.get_object();
    if (const auto* id = o.if_contains("@case_id")) return id;
    return o.if_contains("case_id");
  };
  if (v.is_array()) {
    for (const auto& x : v.get_array()) CaseIdsOf(x, ids);
    return;
  }
  if (!v.is_object()) return;
  const auto& o = v.get_object();
  if (const auto* ns = o.if_contains("@xmlns");
      ns && ns->is_string() && ns->get_string() == "http://code.javarosa.org/devicereport")
    return;
  for (const auto& kv : o) {
    if (kv.key() != "case") {
      CaseIdsOf(kv.value(), ids);
      continue;
    }
    const json::value& c = kv.value();
    std::vector<const json::value*> blocks;
    if (c.is_array())
      for (const auto& x : c.get_array()) blocks.push_back(&x);
    else
      blocks.push_back(&c);
    for (const auto* b : blocks) {
      const json::value* id = block_id(*b);
      if (!id) continue;
      std::string s = id->is_string() ? std::string(id->get_string()) : "";
      if (id->is_object())  // <case_id>x</case_id> with attributes
        if (const auto* t = id->get_object().if_contains("#text"); t && t->is_string())
          s = t->get_string();
      if (!s.empty() && std::find(ids->begin(), ids->end(), s) == ids->end()) ids->push_back(s);
    }
  }
}

// HQ's naive UTC datetime as Python writes it: str() ("2024-03-01 12:34:56.789000"), as
// tastypie's CharField writes a SQL case's dates, or isoformat() ("2024-03-01T12:34:56.789000"),
// as its serializer's to_simple writes a datetime inside a dict; the fraction only when there
// is one; null for none.
json::value PyTime(int64_t micros, char sep = ' ') {
  if (micros == 0) return nullptr;
  std::string t = util::FormatIsoTime(micros);  // 2024-03-01T12:34:56.789000Z
  t[10] = sep;
  t.pop_back();
  if (t.ends_with(".000000")) t.resize(t.size() - 7);
  return json::value(t);
}

// v0_4.CommCareCaseResource's dehydration of a SQL CommCareCase (what cases__full nests).
json::value CaseObject(Engine* engine, const CaseRecord& c) {
  std::vector<std::string> xform_ids;
  if (auto h = engine->CaseHistory(c.domain, c.case_id); h.ok())
    xform_ids = forwarding::CaseXformIds(*h);
  json::array ids;
  for (const auto& id : xform_ids) ids.emplace_back(id);
  json::object props = forwarding::CaseApiProperties(c, PyTime(c.opened_on, 'T'));
  json::object idx;
  for (const auto& i : c.indices)
    idx[i.identifier] = json::object{{"case_type", i.referenced_type},
                                     {"case_id", i.referenced_id},
                                     {"relationship", i.relationship}};
  // server_date_opened and indexed_on read attributes the SQL case has not: tastypie's default.
  return json::object{{"id", c.case_id},
                      {"case_id", c.case_id},
                      {"user_id", c.modified_by},
                      {"date_modified", PyTime(c.modified_on)},
                      {"closed", c.closed},
                      {"date_closed", PyTime(c.closed_on)},
                      {"server_date_modified", PyTime(c.server_modified_on)},
                      {"server_date_opened", "1900-01-01"},
                      {"indexed_on", "1900-01-01"},
                      {"domain", c.domain},
                      {"opened_by", c.opened_by},
                      {"closed_by", c.closed_by.empty() ? json::value() : json::value(c.closed_by)},
                      {"xform_ids", std::move(ids)},
                      {"properties", std::move(props)},
                      {"indices", std::move(idx)},
                      {"resource_uri", ""}};
}

// Adds "cases" to a form object: the cases its case blocks name that exist, fully.
void AddCases(Engine* engine, const std::string& domain, json::value* form) {
  if (!form->is_object()) return;
  std::vector<std::string> ids;
  if (const auto* f = form->as_object().if_contains("form")) CaseIdsOf(*f, &ids);
  json::array cases;
  for (const auto& id : ids)
    if (auto c = engine->GetCase(domain, id); c.ok()) cases.push_back(CaseObject(engine, *c));
  form->as_object()["cases"] = std::move(cases);
}

// The list's query from the request's parameters (HQ's es_query_from_get_params, and
// XFormInstanceResource.obj_get_list's case_id and appVersion).
Result<FormListQuery> ListQuery(Engine* engine, const Request& r, const std::string& domain) {
  FormListQuery q;
  q.domain = domain;
  for (const auto& [k, v] : r.query) {
    if (k == "case_id") {  // the forms whose case blocks touched the case
      auto history = engine->CaseHistory(domain, v);
      if (!history.ok() && !history.status().IsNotFound()) return history.status();
      std::vector<std::string> ids;  // an unknown case: no form
      if (history.ok())
        for (const auto& t : *history)
          if (!t.form_id.empty()) ids.push_back(t.form_id);
      if (q.form_ids)  // a second case_id: forms that touched both
        std::erase_if(ids, [&](const std::string& id) {
          return std::find(q.form_ids->begin(), q.form_ids->end(), id) == q.form_ids->end();
        });
      q.form_ids = std::move(ids);
    } else if (k == "appVersion") {
      q.app_version = v;
    } else if (k == "xmlns" || k == "xmlns.exact") {
      q.xmlns = v;
    } else if (k == "app_id") {
      q.app_id = v;
    } else if (k == "user_id") {
      q.user_id = v;
    } else if (k == "include_archived") {  // HQ: present at all, archived forms are included
      q.include_archived = true;
    } else if (k == "order_by") {
      q.order_by = v;
    } else if (k.ends_with("_start") || k.ends_with("_end")) {
      const bool start = k.ends_with("_start");
      const std::string field = k.substr(0, k.size() - (start ? 6 : 4));
      int64_t* bound = nullptr;
      if (field == "received_on")
        bound = start ? &q.received_from : &q.received_to;
      else if (field == "server_modified_on" || field == "server_date_modified")
        bound = start ? &q.server_modified_from : &q.server_modified_to;
      else if (field == "indexed_on")
        bound = start ? &q.indexed_from : &q.indexed_to;
      else
        return Status::InvalidArgument(fmt::format("'{}' is not a valid parameter", k));
      if (!util::ParseIsoTime(v, bound))
        return Status::InvalidArgument(
            fmt::format("Bad query parameter: {}: unknown date format: '{}'", k, v));
    } else if (k == "limit" || k == "offset") {
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || n < 0)
        return Status::InvalidArgument(k + " must be a non-negative integer");
      (k == "limit" ? q.limit : q.offset) = static_cast<size_t>(n);
    } else if (k != "format" && k != "cases__full") {
      return Status::InvalidArgument(fmt::format("'{}' is not a valid parameter", k));
    }
  }
  return q;
}

}  // namespace

// GET /a/{domain}/api/v0.5/form/ (a list, newest first), /{id}/, /{id}/xml.
Response App::FormApi(const Request& r, const std::string& domain, const std::string& rest) {
  if (r.method != "GET") return Error(405, "the form API serves GET");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  std::string id = TrimSlashes(rest);
  if (!id.empty()) {
    bool xml = false;
    if (id.size() > 4 && id.substr(id.size() - 4) == "/xml") {
      xml = true;
      id.resize(id.size() - 4);
    }
    auto f = engine_->GetForm(domain, id);
    if (!f.ok()) return Error(StatusFor(f.status()), f.status().message());
    auto body = engine_->GetFormXml(domain, id);
    if (!body.ok()) {
      // The form exists, so its XML should: a blob store's failure is the server's (500), and
      // its text (file paths, bucket names) goes to the log, not to the client.
      Log(LogLevel::kError, "a stored form's XML could not be read",
          {{"component", "form_api"},
           {"form", id},
           {"error", body.status().ToString()},
           {"next", "answered 500; run commcare check"}});
      return Error(500, fmt::format("form {}: its XML could not be read from the blob store", id));
    }
    if (!xml) {
      auto doc = FormToApiJson(*f, *body);
      if (!doc.ok()) return Error(StatusFor(doc.status()), doc.status().message());
      json::value v = json::parse(*doc);
      AbsoluteUrls(r, &v);
      if (CasesFull(r)) AddCases(engine_, domain, &v);
      return SortedJson(200, std::move(v));
    }
    Response x;
    x.content_type = "text/xml; charset=utf-8";
    x.body = std::move(*body);
    return x;
  }
  auto q = ListQuery(engine_, r, domain);
  if (!q.ok()) return Error(400, q.status().message());
  auto page = ListForms(pillows_dir_, *q);
  if (!page.ok()) return Error(StatusFor(page.status()), page.status().message());
  json::array objects;
  const bool full = CasesFull(r);
  for (const auto& f : page->forms) {
    objects.push_back(json::parse(f));
    AbsoluteUrls(r, &objects.back());
    if (full) AddCases(engine_, domain, &objects.back());
  }
  auto link = [&](int64_t offset) -> json::value {
    if (offset < 0 || offset >= page->total_count) return nullptr;
    std::string l = fmt::format("/a/{}/api/v0.5/form/?", domain);
    for (const auto& [k, v] : r.query)
      if (k != "offset") l += UrlEncode(k) + "=" + UrlEncode(v) + "&";
    return json::value(l + fmt::format("offset={}", offset));
  };
  const auto off = static_cast<int64_t>(q->offset), lim = static_cast<int64_t>(q->limit);
  json::object meta{{"limit", q->limit},
                    {"offset", q->offset},
                    {"total_count", page->total_count},
                    {"next", link(off + lim)},
                    {"previous", off > 0 ? link(std::max<int64_t>(0, off - lim)) : json::value()}};
  return SortedJson(200, json::object{{"meta", meta}, {"objects", objects}});
}

}  // namespace commcare::server
