// The REST shape of saved named definitions (server/named_definitions.h), and the start every
// such route shares (App::AdmitNamed: path, method, permission, task queue).
#include "server/named_definitions.h"

#include <boost/json.hpp>

#include "server/app.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

Response Fail(const Status& s) { return Error(StatusFor(s), s.message()); }

Response Save(const Request& r, const std::string& domain, const std::string& name,
              const NamedDefinitions& d) {
  int status = 400;
  auto def = NamedDefinitionBody(r.body, domain, name, d.texts, &status);
  if (!def.ok()) return Error(status, def.status().message());
  const json::value parsed = json::parse(*def);
  const json::value* nv = parsed.get_object().if_contains("name");
  const std::string saved_name = nv && nv->is_string() ? std::string(nv->get_string()) : "";
  const bool existed = !saved_name.empty() && d.get(saved_name).ok();
  auto saved = d.save(*def);
  if (!saved.ok()) return Fail(saved.status());
  return Json(existed ? 200 : 201, json::parse(*saved));
}

}  // namespace

NamedPath SplitNamedPath(std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  const auto slash = rest.find('/');
  NamedPath p;
  p.name = rest.substr(0, slash);
  p.verb = slash == std::string::npos ? "" : rest.substr(slash + 1);
  return p;
}

Result<std::string> NamedDefinitionBody(const std::string& body, const std::string& domain,
                                        const std::string& name, const NamedDefinitionTexts& texts,
                                        int* status) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  *status = 400;
  if (ec || !v.is_object()) return Status::InvalidArgument("the body must be a JSON object");
  json::object& o = v.get_object();
  if (!name.empty() && !o.contains("name")) o["name"] = name;
  if (!o.contains("domain")) o["domain"] = domain;
  if (!name.empty() && (!o.at("name").is_string() || o.at("name").get_string() != name))
    return Status::InvalidArgument(texts.name_mismatch);
  if (!o.at("domain").is_string() || o.at("domain").get_string() != domain) {
    *status = 403;
    return Status::PermissionDenied(texts.foreign_domain);
  }
  return json::serialize(v);
}

Response ServeNamedDefinitions(const Request& r, const std::string& domain, const NamedPath& path,
                               const NamedDefinitions& d) {
  if (path.name.empty()) {
    if (r.method == "POST" && d.post_adds) return Save(r, domain, "", d);
    if (r.method != "GET") return Error(405, d.texts.collection_method);
    auto all = d.list();
    if (!all.ok()) return Fail(all.status());
    json::array objects;
    for (const auto& line : *all) objects.push_back(json::parse(line));
    return Json(200, json::object{{"objects", std::move(objects)}});
  }
  if (r.method == "GET") {
    auto line = d.get(path.name);
    if (!line.ok()) return Fail(line.status());
    return Json(200, json::parse(*line));
  }
  if (r.method == "DELETE") {
    if (Status st = d.remove(path.name); !st.ok()) return Fail(st);
    return Json(200, json::object{{"name", path.name}, {"deleted", true}});
  }
  if (r.method != "PUT") return Error(405, d.texts.save_method);
  return Save(r, domain, path.name, d);
}

std::optional<Response> App::AdmitNamed(const Request& r, const std::string& domain,
                                        std::string_view methods) {
  if (r.method != "GET" && r.method != "PUT" && r.method != "DELETE" && r.method != "POST")
    return Error(405, methods);
  const bool write = r.method != "GET";
  Response deny;
  if (!Admit(r, domain, write ? meta::kEditData : meta::kAccessApi, &deny)) return deny;
  if (!tasks_) return Error(503, "this server has no task queue");
  return std::nullopt;
}

}  // namespace commcare::server
