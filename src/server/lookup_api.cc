// HQ's v0.5 lookup-table resources (corehq/apps/fixtures/resources/v0_1.py: FixtureResource,
// read-only; LookupTableResource and LookupTableItemResource, read and written):
// /a/{domain}/api/v0.5/fixture/, lookup_table/ and lookup_table_item/, over the lookup_table and
// lookup_item documents that /api/lookup_tables/ and /api/lookup_items/ also write
// (meta_lookup.cc); and HQ's Excel upload of
// lookup tables, POST /a/{domain}/fixtures/fixapi/ (corehq/apps/fixtures/views.py
// upload_fixture_api), through importer::UploadLookupTables.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdint>
#include <cstdio>
#include <map>

#include "import/lookup_upload.h"
#include "server/app.h"
#include "server/request_parse.h"
#include "server/responses.h"
#include "xform/parser.h"

namespace commcare::server {
namespace {

namespace json = boost::json;
using http::Request;
using http::Response;

std::string Str(const json::object& o, const char* k) {
  const json::value* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

// A stored field value ("text" or [{"value", "properties"}]) as HQ's FieldList.to_api_json.
json::object FieldList(const json::value& v) {
  json::array list;
  if (v.is_string()) {
    list.push_back(json::object{{"field_value", v.get_string()}, {"properties", json::object()}});
  } else if (v.is_array()) {
    for (const auto& e : v.get_array()) {
      if (!e.is_object()) continue;
      const json::value* props = e.get_object().if_contains("properties");
      list.push_back(json::object{
          {"field_value", Str(e.get_object(), "value")},
          {"properties", props && props->is_object() ? *props : json::value(json::object())}});
    }
  }
  return {{"field_list", std::move(list)}};
}

json::object Fields(const json::object& item) {
  json::object out;
  if (const json::value* f = item.if_contains("fields"); f && f->is_object())
    for (const auto& kv : f->get_object()) out[kv.key()] = FieldList(kv.value());
  return out;
}

// HQ's try_fields_without_attributes: {name: value} when every field is one value without
// properties, else every field as its field_list.
json::object FieldsWithoutAttributes(const json::object& item) {
  json::object lists = Fields(item), plain;
  for (const auto& kv : lists) {
    const auto& l = kv.value().get_object().at("field_list").get_array();
    if (l.size() != 1 || !l[0].get_object().at("properties").get_object().empty()) return lists;
    plain[kv.key()] = l[0].get_object().at("field_value");
  }
  return plain;
}

json::object TableJson(const meta::Doc& t, const std::string& uri) {
  json::array fields;
  if (const json::value* f = t.body.if_contains("fields"); f && f->is_array())
    for (const auto& x : f->get_array()) {
      if (x.is_string()) {
        fields.push_back(json::object{{"field_name", x}, {"properties", json::array()}});
      } else if (x.is_object()) {
        const json::value* ps = x.get_object().if_contains("properties");
        fields.push_back(
            json::object{{"field_name", Str(x.get_object(), "field_name")},
                         {"properties", ps && ps->is_array() ? *ps : json::value(json::array())}});
      }
    }
  const json::value* attrs = t.body.if_contains("item_attributes");
  const json::value* global = t.body.if_contains("is_global");
  return {{"id", t.id},
          {"tag", Str(t.body, "tag")},
          {"is_global", global && global->is_bool() && global->get_bool()},
          {"fields", std::move(fields)},
          {"item_attributes", attrs && attrs->is_array() ? *attrs : json::value(json::array())},
          {"resource_uri", uri}};
}

json::object ItemJson(const meta::Doc& i, const std::string& uri) {
  const json::value* attrs = i.body.if_contains("item_attributes");
  const json::value* sort = i.body.if_contains("sort_key");
  return {{"id", i.id},
          {"data_type_id", Str(i.body, "table_id")},
          {"fields", Fields(i.body)},
          {"item_attributes", attrs && attrs->is_object() ? *attrs : json::value(json::object())},
          {"sort_key", sort && sort->is_int64() ? *sort : json::value(nullptr)},
          {"resource_uri", uri}};
}

// Tastypie's list answer, every object on one page (HQ's FixtureResource has limit 0).
json::object List(json::array objects) {
  const auto n = static_cast<int64_t>(objects.size());
  return {{"meta", json::object{{"limit", 0},
                                {"next", nullptr},
                                {"offset", 0},
                                {"previous", nullptr},
                                {"total_count", n}}},
          {"objects", std::move(objects)}};
}

// HQ's TypeField as a request gives it ({"field_name" or "name", "properties", "is_indexed"})
// as the stored table field; anything else is left for CheckTable to name.
json::value TableField(const json::value& f) {
  if (!f.is_object()) return f;
  json::object o = f.get_object();
  if (!o.if_contains("field_name") && o.if_contains("name")) {
    o["field_name"] = o.at("name");
    o.erase("name");
  }
  return o;
}

// HQ's FieldsDictField.hydrate: {name: {"field_list": [{"field_value" or "value",
// "properties"}]}} as the stored {name: [{"value", "properties"}]}; a plain string stays one.
Result<json::object> ItemFields(const json::value& v) {
  if (!v.is_object()) return Status::InvalidArgument("fields: must be an object");
  json::object out;
  for (const auto& kv : v.get_object()) {
    const std::string at = fmt::format("fields.{}", std::string_view(kv.key()));
    if (kv.value().is_string()) {
      out[kv.key()] = kv.value();
      continue;
    }
    const json::value* list =
        kv.value().is_object() ? kv.value().get_object().if_contains("field_list") : nullptr;
    if (!list || !list->is_array())
      return Status::InvalidArgument(at + ": must be {\"field_list\": [...]}");
    json::array values;
    for (const auto& e : list->get_array()) {
      if (!e.is_object()) return Status::InvalidArgument(at + ".field_list: must hold objects");
      json::object x = e.get_object();
      if (!x.if_contains("value") && x.if_contains("field_value")) {
        x["value"] = x.at("field_value");
        x.erase("field_value");
      }
      values.push_back(std::move(x));
    }
    out[kv.key()] = std::move(values);
  }
  return out;
}

// The request body of a v0.5 write, without the read-only keys a client echoes from a GET.
Result<json::object> WriteBody(const Request& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("body: must be a JSON object");
  json::object o = std::move(v.get_object());
  for (const char* k : {"id", "resource_uri"}) o.erase(k);
  return o;
}

}  // namespace

// POST, PUT and DELETE of HQ's v0.5 lookup_table/ and lookup_table_item/ (obj_create,
// obj_update, obj_delete): 201 with Location, 204, 202, as tastypie answers (a PUT to an unknown
// id creates, there: put_detail's fallback); edit_data.
Response App::LookupWrite(const Request& r, const std::string& domain, const std::string& resource,
                          const std::string& id) {
  if (resource == "fixture") return Error(405, "the v0.5 fixture resource is read-only");
  if (r.method == "POST" && !id.empty()) return Error(405, "POST to the list creates; PUT updates");
  if (r.method != "POST" && id.empty())
    return Error(405, fmt::format("{} needs /api/v0.5/{}/{{id}}/", r.method, resource));
  Response deny;
  if (!Admit(r, domain, meta::kEditData, &deny)) return deny;
  const bool table = resource == "lookup_table";
  const std::string kind = table ? "lookup_table" : "lookup_item";
  const std::string what = table ? "Lookup table" : "Lookup table item";
  auto answer = [](const Status& s) { return Error(StatusFor(s), s.message()); };
  meta::Doc d;
  bool create = r.method == "POST";
  if (!create) {
    auto old = meta_->GetDoc(kind, domain, id);
    if (old.ok()) {
      d = std::move(*old);
    } else if (r.method == "PUT" && old.status().IsNotFound()) {
      create = true;  // tastypie's put_detail: obj_update's NotFound is an obj_create
      d.id = id;
    } else {
      return Error(404, fmt::format("{} not found", what));
    }
  }
  if (r.method == "DELETE") {
    if (table) {  // HQ deletes the table's rows with it (a foreign key's cascade)
      auto items = meta_->ListDocs("lookup_item", domain);
      if (!items.ok()) return answer(items.status());
      for (const auto& i : *items)
        if (Str(i.body, "table_id") == id)
          if (Status s = meta_->DeleteDoc("lookup_item", domain, i.id, i.rev); !s.ok())
            return answer(s);
    }
    if (Status s = meta_->DeleteDoc(kind, domain, id, d.rev); !s.ok()) return answer(s);
    Response out;
    out.status = 202;
    return out;
  }
  auto body = WriteBody(r);
  if (!body.ok()) return Error(400, body.status().message());
  if (table) {
    const json::value* tag = body->if_contains("tag");
    if (r.method == "PUT" && !tag) return Error(400, "tag must be specified");
    if (!create && (!tag->is_string() || tag->get_string() != Str(d.body, "tag")))
      return Error(400, "Lookup table tag cannot be changed");
    if (create && tag && tag->is_string()) {
      auto tables = meta_->ListDocs("lookup_table", domain);
      if (!tables.ok()) return answer(tables.status());
      for (const auto& t : *tables)
        if (Str(t.body, "tag") == tag->get_string())
          return Error(400, fmt::format("A lookup table with name {} already exists",
                                        std::string_view(tag->get_string())));
    }
    if (const json::value* fs = body->if_contains("fields"); fs && fs->is_array())
      for (auto& f : (*body)["fields"].get_array()) f = TableField(f);
  } else {
    const json::value* type_id = body->if_contains("data_type_id");
    if (!type_id || !type_id->is_string() || type_id->get_string().empty())
      return Error(400, "data_type_id must be specified");
    if (!meta_->GetDoc("lookup_table", domain, type_id->get_string()).ok())
      return Error(404, "Lookup table not found");
    if (create) {  // the next sort_key of the table, as HQ's Max('sort_key') + 1
      auto items = meta_->ListDocs("lookup_item", domain);
      if (!items.ok()) return answer(items.status());
      int64_t next = 0;
      for (const auto& i : *items)
        if (const json::value* k = i.body.if_contains("sort_key");
            k && k->is_int64() && Str(i.body, "table_id") == type_id->get_string())
          next = std::max(next, k->get_int64() + 1);
      d.body["sort_key"] = next;
    }
    d.body["table_id"] = type_id->get_string();
    body->erase("data_type_id");
    if (const json::value* fs = body->if_contains("fields")) {
      auto fields = ItemFields(*fs);
      if (!fields.ok()) return Error(400, fields.status().message());
      (*body)["fields"] = std::move(*fields);
    }
  }
  for (auto& kv : *body) d.body[kv.key()] = kv.value();  // what the request names, replaced
  d.kind = kind;
  d.domain = domain;
  auto put = meta_->PutDoc(std::move(d));
  if (!put.ok()) return answer(put.status());
  if (!create) {
    Response out;
    out.status = 204;
    return out;
  }
  const std::string uri = fmt::format("/a/{}/api/v0.5/{}/{}/", domain, resource, put->id);
  Response out = Json(201, table ? TableJson(*put, uri) : ItemJson(*put, uri));
  out.headers.emplace_back("Location", uri);
  return out;
}

// GET /a/{domain}/api/v0.5/{fixture,lookup_table,lookup_table_item}/[{id}/]; other methods
// write (LookupWrite).
Response App::LookupApi(const Request& r, const std::string& domain, const std::string& resource,
                        const std::string& rest) {
  std::string id = TrimSlashes(rest);
  if (id.find('/') != std::string::npos)
    return Error(404, fmt::format("no {} resource at {}", resource, r.path));
  if (r.method == "POST" || r.method == "PUT" || r.method == "DELETE")
    return LookupWrite(r, domain, resource, id);
  if (r.method != "GET") return Error(405, "use GET, POST, PUT or DELETE");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  const std::string base = fmt::format("/a/{}/api/v0.5/{}/", domain, resource);
  auto tables = meta_->ListDocs("lookup_table", domain);
  if (!tables.ok()) return Error(StatusFor(tables.status()), tables.status().message());
  std::map<std::string, std::string> tag_of;  // table id -> tag
  for (const auto& t : *tables) tag_of[t.id] = Str(t.body, "tag");
  if (resource == "lookup_table") {
    for (const auto& [k, v] : r.query)
      if (k != "format") return Error(400, fmt::format("'{}' is not a valid parameter", k));
    json::array out;
    for (const auto& t : *tables) {
      if (!id.empty() && t.id != id) continue;
      out.push_back(TableJson(t, base + t.id + "/"));
    }
    if (!id.empty())
      return out.empty() ? Error(404, fmt::format("Lookup table {} not found", id))
                         : Json(200, out[0]);
    return Json(200, List(std::move(out)));
  }
  // fixture and lookup_table_item: the rows. fixture_type (a tag) or fixture_type_id filters
  // fixture/ (HQ's obj_get_list); its parent_id/child_type lookup is not served.
  std::string type_id;
  bool filtered = false;
  for (const auto& [k, v] : r.query) {
    if (k == "format") continue;
    if (resource == "fixture" && (k == "fixture_type" || k == "fixture_type_id")) {
      filtered = true;
      for (const auto& [tid, tag] : tag_of)
        if (k == "fixture_type" ? tag == v : tid == v) type_id = tid;
      continue;
    }
    if (resource == "fixture" &&
        (k == "parent_id" || k == "parent_ref_name" || k == "references" || k == "child_type"))
      return Error(400, fmt::format("'{}' (HQ's parent lookup) is not supported", k));
    return Error(400, fmt::format("'{}' is not a valid parameter", k));
  }
  auto items = meta_->ListDocs("lookup_item", domain);
  if (!items.ok()) return Error(StatusFor(items.status()), items.status().message());
  // HQ lists a table's rows by sort_key (the row order of the upload).
  auto sort_key = [](const meta::Doc& d) {
    const json::value* k = d.body.if_contains("sort_key");
    return k && k->is_int64() ? k->get_int64() : INT64_MAX;
  };
  std::stable_sort(items->begin(), items->end(), [&](const meta::Doc& a, const meta::Doc& b) {
    return sort_key(a) < sort_key(b);
  });
  json::array out;
  for (const auto& i : *items) {
    if (!id.empty() && i.id != id) continue;
    const std::string table = Str(i.body, "table_id");
    if (filtered && (type_id.empty() || table != type_id)) continue;
    if (resource == "fixture") {
      auto tag = tag_of.find(table);
      out.push_back(json::object{
          {"id", i.id},
          {"fixture_type", tag == tag_of.end() ? json::value(nullptr) : json::value(tag->second)},
          {"fields", FieldsWithoutAttributes(i.body)},
          {"resource_uri", base + i.id + "/"}});
    } else {
      out.push_back(ItemJson(i, base + i.id + "/"));
    }
  }
  if (!id.empty())
    return out.empty() ? Error(404, fmt::format("Lookup table item {} not found", id))
                       : Json(200, out[0]);
  return Json(200, List(std::move(out)));
}

namespace {

// HQ's UploadFixtureAPIResponse: {"message", "code"}, code 200 (success) or 405 (fail); the
// HTTP status here is the request's (HQ answers every one 200).
Response FixApi(int status, const std::string& message, json::object extra = {}) {
  extra["message"] = message;
  extra["code"] = status == 200 ? 200 : 405;
  return Json(status, extra);
}

}  // namespace

// POST /a/{domain}/fixtures/fixapi/, multipart: file-to-upload (the XLSX workbook) and replace
// (true or false); async=true is refused (the upload is always answered when done). It needs
// edit_data, as HQ's require_can_edit_fixtures and the other lookup-table writes.
Response App::LookupUploadApi(const Request& r, const std::string& domain) {
  if (r.method != "POST") return Error(405, "POST the workbook as multipart/form-data");
  Response deny;
  auto user = Admit(r, domain, meta::kEditData, &deny);
  if (!user) return deny;
  const auto* ct = r.Header("content-type");
  const std::string boundary = xform::MultipartBoundary(ct ? *ct : "");
  std::vector<xform::MultipartPart> parts;
  if (!boundary.empty())
    if (Status s = xform::ParseMultipart(r.body, boundary, &parts); !s.ok())
      return FixApi(400, s.message());
  const xform::MultipartPart *file = nullptr, *replace = nullptr;
  bool async = false;
  for (const auto& p : parts) {
    if (p.name == "file-to-upload") file = &p;
    if (p.name == "replace") replace = &p;
    if (p.name == "async") async = p.data == "true" || p.data == "True";
  }
  const std::string rv = replace ? std::string(replace->data) : "";
  if (!file || (rv != "true" && rv != "false" && rv != "True" && rv != "False"))
    return FixApi(400,
                  "Invalid post request. Submit the form with field 'file-to-upload' and POST "
                  "parameter 'replace' (true or false)");
  if (async)
    return FixApi(400, "async=true is not supported here: the upload is answered when done");
  char path[] = "/tmp/commcare-fixapi-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return FixApi(500, "cannot make a temp file for the workbook");
  const bool written =
      ::write(fd, file->data.data(), file->data.size()) == static_cast<ssize_t>(file->data.size());
  ::close(fd);
  std::vector<std::string> problems;
  auto res =
      written ? importer::UploadLookupTables(meta_, domain, path, rv[0] == 't' || rv[0] == 'T',
                                             &problems)
              : Result<importer::LookupUploadResult>(Status::Internal("cannot write the workbook"));
  std::remove(path);
  if (!problems.empty()) {
    std::string msg = "Please fix the following formatting issues in your Excel file:";
    json::array errors;
    for (const auto& p : problems) msg += "\n" + p, errors.push_back(json::value(p));
    return FixApi(400, msg, {{"errors", std::move(errors)}});
  }
  if (!res.ok()) return FixApi(StatusFor(res.status()), std::string(res.status().message()));
  return FixApi(200, res->Message(),
                {{"tables", json::object{{"total", res->tables},
                                         {"created", res->tables_created},
                                         {"updated", res->tables_updated},
                                         {"deleted", res->tables_deleted},
                                         {"unchanged", res->tables_unchanged}}},
                 {"rows", json::object{{"created", res->rows_created},
                                       {"updated", res->rows_updated},
                                       {"deleted", res->rows_deleted},
                                       {"unchanged", res->rows_unchanged}}}});
}

}  // namespace commcare::server
