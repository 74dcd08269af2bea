// Data forwarding over REST (docs/forwarding.md), under /a/{domain}/api/forwarders/:
//   GET  ./                      the domain's forwarders {"objects": [...]}
//   POST ./                      add one (a forwarder's JSON; the domain is the URL's) → 201
//   GET|DELETE ./{id}/           one forwarder; delete it (its waiting records are cancelled)
//   POST ./{id}/pause|resume
//   GET  ./records/              ?state=&forwarder=&limit=&before= {"objects": [...]}
//   GET  ./records/counts        records per state
//   GET  ./records/{id}/         one record with its attempts
//   POST ./records/{id}/resend   send it again now
//   POST ./records/resend_failed ?forwarder= every failed and cancelled record → {"resent": n}
// Edit-data to POST or DELETE; API access to GET. Secrets are never shown ("***").
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdlib>

#include "commcare/forwarding.h"
#include "server/app.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

Response Fail(const Status& s) { return Error(StatusFor(s), s.message()); }

bool ParseId(const std::string& text, int64_t* out) {
  char* end = nullptr;
  *out = std::strtoll(text.c_str(), &end, 10);
  return !text.empty() && !*end && *out > 0;
}

Response RecordsApi(const Request& r, ForwardingStore* store, const std::string& domain,
                    const std::string& rest) {
  if (rest.empty()) {
    if (r.method != "GET") return Error(405, "GET the records");
    RecordFilter q;
    q.domain = domain;
    q.forwarder_id = r.Param("forwarder");
    if (std::string s = r.Param("state"); !s.empty()) {
      q.state = ParseRecordState(s);
      if (!q.state) return Error(400, fmt::format("unknown state '{}'", s));
    }
    int64_t n = 0;
    if (std::string l = r.Param("limit"); !l.empty()) {
      if (!ParseId(l, &n)) return Error(400, "limit must be a positive number");
      q.limit = static_cast<int>(std::min<int64_t>(n, 1 << 20));
    }
    if (std::string b = r.Param("before"); !b.empty()) {
      if (!ParseId(b, &q.before_id)) return Error(400, "before must be a record id");
    }
    auto all = store->Records(q);
    if (!all.ok()) return Fail(all.status());
    json::array objects;
    for (const auto& rec : *all) objects.push_back(json::parse(rec.ToJson()));
    return Json(200, json::object{{"objects", std::move(objects)}});
  }
  if (rest == "counts") {
    if (r.method != "GET") return Error(405, "GET records/counts");
    auto c = store->Counts(domain);
    if (!c.ok()) return Fail(c.status());
    return Json(200, json::parse(*c));
  }
  if (rest == "resend_failed") {
    if (r.method != "POST") return Error(405, "POST records/resend_failed");
    auto n = store->ResendFailed(domain, r.Param("forwarder"));
    if (!n.ok()) return Fail(n.status());
    return Json(200, json::object{{"resent", *n}});
  }
  const auto slash = rest.find('/');
  const std::string verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
  int64_t id = 0;
  if (!ParseId(rest.substr(0, slash), &id)) return Error(404, "no such record");
  if (verb == "resend") {
    if (r.method != "POST") return Error(405, "POST records/{id}/resend");
    Status s = store->Resend(domain, id);
    if (!s.ok()) return Fail(s);
  } else if (!verb.empty()) {
    return Error(404, "no such route: records/{id}/ or records/{id}/resend");
  } else if (r.method != "GET") {
    return Error(405, "GET records/{id}/");
  }
  auto rec = store->Record(domain, id);
  if (!rec.ok()) return Fail(rec.status());
  return Json(200, json::parse(rec->ToJson()));
}

}  // namespace

Response App::ForwardersApi(const Request& r, const std::string& domain, std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  const bool write = r.method == "POST" || r.method == "DELETE";
  if (!write && r.method != "GET") return Error(405, "use GET, POST or DELETE");
  Response deny;
  auto user = Admit(r, domain, write ? meta::kEditData : meta::kAccessApi, &deny);
  if (!user) return deny;
  auto store = ForwardingStore::Open(pillows_dir_, tasks_);
  if (!store.ok()) return Error(503, store.status().message());
  if (rest == "records" || rest.starts_with("records/"))
    return RecordsApi(r, store->get(), domain, rest == "records" ? "" : rest.substr(8));
  if (rest.empty()) {
    if (r.method == "GET") {
      auto all = (*store)->List(domain);
      if (!all.ok()) return Fail(all.status());
      json::array objects;
      for (const auto& f : *all) objects.push_back(json::parse(f.ToJson()));
      return Json(200, json::object{{"objects", std::move(objects)}});
    }
    if (r.method != "POST") return Error(405, "GET the forwarders or POST one");
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (ec || !v.is_object()) return Error(400, "the body must be a JSON object");
    auto& o = v.get_object();
    if (o.contains("domain") && o["domain"] != json::value(domain))
      return Error(403, "the forwarder's domain is not this domain");
    o["domain"] = domain;
    auto f = Forwarder::FromJson(json::serialize(v));
    if (!f.ok()) return Error(400, f.status().message());
    auto added = (*store)->Add(*f);
    if (!added.ok()) return Fail(added.status());
    return Json(201, json::parse(added->ToJson()));
  }
  const auto slash = rest.find('/');
  const std::string id = rest.substr(0, slash);
  const std::string verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (verb == "pause" || verb == "resume") {
    if (r.method != "POST") return Error(405, "POST {id}/" + verb);
    if (Status s = (*store)->SetPaused(domain, id, verb == "pause"); !s.ok()) return Fail(s);
  } else if (!verb.empty()) {
    return Error(404, "no such route: {id}/, {id}/pause or {id}/resume");
  } else if (r.method == "DELETE") {
    if (Status s = (*store)->Delete(domain, id); !s.ok()) return Fail(s);
    return Json(200, json::object{{"deleted", id}});
  } else if (r.method != "GET") {
    return Error(405, "GET or DELETE {id}/");
  }
  auto f = (*store)->Get(domain, id);
  if (!f.ok()) return Fail(f.status());
  return Json(200, json::parse(f->ToJson()));
}

}  // namespace commcare::server
