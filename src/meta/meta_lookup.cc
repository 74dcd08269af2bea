// Lookup tables (HQ's fixtures: corehq/apps/fixtures): their validation as MetaStore documents
// and the "item-list:<tag>" restore fixtures (fixturegenerators.py ItemListsProvider,
// models.py FixtureDataItem.to_xml).
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "meta/meta_store.h"
#include "util/codec.h"
#include "util/xml.h"

namespace commcare::meta {
namespace {

namespace json = boost::json;
using codec::GetBool;
using codec::GetStr;
using util::AppendXmlEscaped;
using util::IsXmlName;

Status Bad(std::string_view field, std::string_view why) {
  return Status::InvalidArgument(fmt::format("{}: {}", field, why));
}

Status CheckName(std::string_view field, const json::value& v) {
  if (!v.is_string() || !IsXmlName(v.get_string()))
    return Bad(field,
               "must be a name starting with a letter or _ and holding letters, digits, "
               "_, - or . only");
  return Status::Ok();
}

Status CheckNames(const json::object& b, const char* k) {
  const json::value* v = b.if_contains(k);
  if (!v) return Status::Ok();
  if (!v->is_array()) return Bad(k, "must be a list of names");
  for (size_t i = 0; i < v->get_array().size(); ++i)
    CC_RETURN_IF_ERROR(CheckName(fmt::format("{}[{}]", k, i), v->get_array()[i]));
  return Status::Ok();
}

// A table's field: {"field_name", "properties": [...], "is_indexed"} or just its name.
struct Field {
  std::string name;
  std::vector<std::string> properties;
  bool indexed = false;
};

std::vector<Field> TableFields(const json::object& table) {
  std::vector<Field> out;
  const json::value* fs = table.if_contains("fields");
  if (!fs || !fs->is_array()) return out;
  for (const auto& f : fs->get_array()) {
    Field field;
    if (f.is_string()) {
      field.name = std::string(f.get_string());
    } else if (f.is_object()) {
      field.name = GetStr(f.get_object(), "field_name");
      field.indexed = GetBool(f.get_object(), "is_indexed");
      if (const json::value* ps = f.get_object().if_contains("properties"); ps && ps->is_array())
        for (const auto& p : ps->get_array())
          if (p.is_string()) field.properties.emplace_back(p.get_string());
    }
    out.push_back(std::move(field));
  }
  return out;
}

Status CheckTable(const json::object& b) {
  for (const auto& kv : b)
    if (!std::set<std::string_view>{"tag", "fields", "item_attributes", "is_global", "is_indexed",
                                    "description"}
             .count(kv.key()))
      return Bad(kv.key(), "unknown field");
  if (!b.if_contains("tag")) return Bad("tag", "is required");
  CC_RETURN_IF_ERROR(CheckName("tag", b.at("tag")));
  for (const char* k : {"is_global", "is_indexed"})
    if (const json::value* v = b.if_contains(k); v && !v->is_bool())
      return Bad(k, "must be true or false");
  if (const json::value* v = b.if_contains("description"); v && !v->is_string())
    return Bad("description", "must be a string");
  CC_RETURN_IF_ERROR(CheckNames(b, "item_attributes"));
  const json::value* fs = b.if_contains("fields");
  if (!fs || !fs->is_array() || fs->get_array().empty())
    return Bad("fields", "must be a non-empty list of field names or {\"field_name\": ...}");
  std::set<std::string> seen;
  for (size_t i = 0; i < fs->get_array().size(); ++i) {
    const json::value& f = fs->get_array()[i];
    const std::string at = fmt::format("fields[{}]", i);
    if (f.is_object()) {
      for (const auto& kv : f.get_object())
        if (kv.key() != "field_name" && kv.key() != "properties" && kv.key() != "is_indexed")
          return Bad(fmt::format("{}.{}", at, std::string_view(kv.key())), "unknown field");
      const json::value* name = f.get_object().if_contains("field_name");
      if (!name) return Bad(at + ".field_name", "is required");
      CC_RETURN_IF_ERROR(CheckName(at + ".field_name", *name));
      CC_RETURN_IF_ERROR(CheckNames(f.get_object(), "properties"));
      if (const json::value* v = f.get_object().if_contains("is_indexed"); v && !v->is_bool())
        return Bad(at + ".is_indexed", "must be true or false");
    } else {
      CC_RETURN_IF_ERROR(CheckName(at, f));
    }
  }
  for (const auto& f : TableFields(b))
    if (!seen.insert(f.name).second) return Bad("fields", fmt::format("{} is named twice", f.name));
  return Status::Ok();
}

Status CheckItemField(const std::string& at, const json::value& v, const Field& field) {
  if (v.is_string()) return Status::Ok();
  if (!v.is_array()) return Bad(at, "must be a string or a list of {\"value\", \"properties\"}");
  for (size_t i = 0; i < v.get_array().size(); ++i) {
    const json::value& e = v.get_array()[i];
    const std::string here = fmt::format("{}[{}]", at, i);
    if (!e.is_object()) return Bad(here, "must be {\"value\": ..., \"properties\": {...}}");
    for (const auto& kv : e.get_object()) {
      if (kv.key() == "value") {
        if (!kv.value().is_string()) return Bad(here + ".value", "must be a string");
      } else if (kv.key() == "properties") {
        if (!kv.value().is_object()) return Bad(here + ".properties", "must be an object");
        for (const auto& p : kv.value().get_object())
          if (!p.value().is_string() || std::find(field.properties.begin(), field.properties.end(),
                                                  p.key()) == field.properties.end())
            return Bad(fmt::format("{}.properties.{}", here, std::string_view(p.key())),
                       "must be a string property the table's field declares");
      } else {
        return Bad(fmt::format("{}.{}", here, std::string_view(kv.key())), "unknown field");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status MetaStore::CheckLookupDoc(const Doc& d) {
  const json::object& b = d.body;
  if (d.kind == "lookup_table") {
    CC_RETURN_IF_ERROR(CheckTable(b));
    CC_ASSIGN_OR_RETURN(auto tables, ListDocs("lookup_table", d.domain));
    for (const auto& t : tables)
      if (t.id != d.id && GetStr(t.body, "tag") == GetStr(b, "tag"))
        return Bad("tag", fmt::format("{} is the tag of lookup table {}", GetStr(b, "tag"), t.id));
    return Status::Ok();
  }
  for (const auto& kv : b)
    if (!std::set<std::string_view>{"table_id", "fields", "item_attributes", "sort_key", "owners"}
             .count(kv.key()))
      return Bad(kv.key(), "unknown field");
  auto table = GetDoc("lookup_table", d.domain, GetStr(b, "table_id"));
  if (!table.ok())
    return Bad("table_id",
               fmt::format("no lookup table '{}' in {}", GetStr(b, "table_id"), d.domain));
  const auto fields = TableFields(table->body);
  if (const json::value* fs = b.if_contains("fields")) {
    if (!fs->is_object()) return Bad("fields", "must be an object of field values");
    for (const auto& kv : fs->get_object()) {
      auto f = std::find_if(fields.begin(), fields.end(),
                            [&](const Field& x) { return x.name == kv.key(); });
      if (f == fields.end())
        return Bad(fmt::format("fields.{}", std::string_view(kv.key())),
                   "the table has no such field");
      CC_RETURN_IF_ERROR(
          CheckItemField(fmt::format("fields.{}", std::string_view(kv.key())), kv.value(), *f));
    }
  }
  if (const json::value* as = b.if_contains("item_attributes")) {
    if (!as->is_object()) return Bad("item_attributes", "must be an object of strings");
    std::set<std::string> declared;
    if (const json::value* ds = table->body.if_contains("item_attributes"); ds && ds->is_array())
      for (const auto& x : ds->get_array())
        if (x.is_string()) declared.emplace(x.get_string());
    for (const auto& kv : as->get_object())
      if (!kv.value().is_string() || !declared.count(kv.key()))
        return Bad(fmt::format("item_attributes.{}", std::string_view(kv.key())),
                   "must be a string attribute the table declares");
  }
  if (const json::value* k = b.if_contains("sort_key"); k && !k->is_int64())
    return Bad("sort_key", "must be a whole number");
  if (const json::value* o = b.if_contains("owners")) {
    if (!o->is_object())
      return Bad("owners",
                 "must be {\"users\": [...], \"groups\": [...], "
                 "\"locations\": [...]}");
    for (const auto& kv : o->get_object()) {
      if (kv.key() != "users" && kv.key() != "groups" && kv.key() != "locations")
        return Bad(fmt::format("owners.{}", std::string_view(kv.key())), "unknown field");
      if (!kv.value().is_array() ||
          !std::all_of(kv.value().get_array().begin(), kv.value().get_array().end(),
                       [](const json::value& x) { return x.is_string(); }))
        return Bad(fmt::format("owners.{}", std::string_view(kv.key())), "must be a list of ids");
    }
  }
  return Status::Ok();
}

namespace {

// FixtureDataItem.to_xml: <tag attr=…><field prop=…>value</field>…</tag>, every field of the
// table in its order (an empty element when the item has none, one per value when several).
void AppendItem(std::string* o, const std::string& tag, const json::object& table,
                const std::vector<Field>& fields, const json::object& item) {
  *o += '<' + tag;
  if (const json::value* as = table.if_contains("item_attributes"); as && as->is_array()) {
    const json::value* vals = item.if_contains("item_attributes");
    for (const auto& a : as->get_array()) {
      if (!a.is_string()) continue;
      const json::value* v =
          vals && vals->is_object() ? vals->get_object().if_contains(a.get_string()) : nullptr;
      *o += fmt::format(" {}=\"", std::string_view(a.get_string()));
      AppendXmlEscaped(o, v && v->is_string() ? std::string_view(v->get_string()) : "");
      *o += '"';
    }
  }
  *o += '>';
  const json::value* fvals = item.if_contains("fields");
  for (const auto& f : fields) {
    const json::value* v =
        fvals && fvals->is_object() ? fvals->get_object().if_contains(f.name) : nullptr;
    auto elem = [&](std::string_view text, const json::object* props) {
      *o += '<' + f.name;
      if (props)
        for (const auto& p : *props) {
          *o += fmt::format(" {}=\"", std::string_view(p.key()));
          AppendXmlEscaped(o,
                           p.value().is_string() ? std::string_view(p.value().get_string()) : "");
          *o += '"';
        }
      *o += '>';
      AppendXmlEscaped(o, text);
      *o += "</" + f.name + '>';
    };
    if (!v || (v->is_array() && v->get_array().empty())) {
      elem("", nullptr);
    } else if (v->is_string()) {
      elem(v->get_string(), nullptr);
    } else if (v->is_array()) {
      for (const auto& e : v->get_array()) {
        const json::object& eo = e.get_object();
        const json::value* props = eo.if_contains("properties");
        elem(GetStr(eo, "value"), props && props->is_object() ? &props->get_object() : nullptr);
      }
    }
  }
  *o += "</" + tag + '>';
}

}  // namespace

Result<std::string> MetaStore::LookupFixtures(const User& user, std::string_view domain,
                                              const Directory& dir) {
  CC_ASSIGN_OR_RETURN(auto tables, ListDocs("lookup_table", domain));
  if (tables.empty()) return std::string();
  CC_ASSIGN_OR_RETURN(auto items, ListDocs("lookup_item", domain));
  // What the user owns items through (HQ: get_fixture_data_items): themself, the groups they
  // are in, their locations.
  std::set<std::string> users = {user.user_id}, groups, locations;
  locations.insert(user.location_ids.begin(), user.location_ids.end());
  for (const auto& g : dir.groups)
    if (const json::value* us = g.body.if_contains("users"); us && us->is_array())
      for (const auto& x : us->get_array())
        if (x.is_string() && x.get_string() == user.user_id) groups.insert(g.id);
  auto owned = [&](const json::object& item) {
    const json::value* o = item.if_contains("owners");
    if (!o || !o->is_object()) return false;
    for (const auto& [key, set] : {std::pair{"users", &users}, std::pair{"groups", &groups},
                                   std::pair{"locations", &locations}})
      if (const json::value* ids = o->get_object().if_contains(key); ids && ids->is_array())
        for (const auto& id : ids->get_array())
          if (id.is_string() && set->count(std::string(id.get_string()))) return true;
    return false;
  };
  std::sort(tables.begin(), tables.end(), [](const Doc& a, const Doc& b) {
    return GetStr(a.body, "tag") < GetStr(b.body, "tag");
  });
  std::stable_sort(items.begin(), items.end(), [](const Doc& a, const Doc& b) {
    auto key = [](const Doc& d) {
      const json::value* k = d.body.if_contains("sort_key");
      return k && k->is_int64() ? k->get_int64() : 0;
    };
    return key(a) < key(b);
  });
  std::string o;
  for (const auto& t : tables) {
    const std::string tag = GetStr(t.body, "tag");
    const auto fields = TableFields(t.body);
    const bool indexed = GetBool(t.body, "is_indexed"), global = GetBool(t.body, "is_global");
    const std::string id = "item-list:" + tag;
    if (indexed) {  // get_index_schema_node: the indexed fields, sorted
      std::vector<std::string> names;
      for (const auto& f : fields)
        if (f.indexed) names.push_back(f.name);
      std::sort(names.begin(), names.end());
      o += "<schema id=\"" + id + "\"><indices>";
      for (const auto& n : names) o += "<index>" + n + "</index>";
      o += "</indices></schema>";
    }
    // Global tables carry the restore user's id too (HQ swaps GLOBAL_USER_ID for it).
    o += "<fixture id=\"" + id + "\" user_id=\"";
    AppendXmlEscaped(&o, user.user_id);
    o += indexed ? "\" indexed=\"true\">" : "\">";
    o += '<' + tag + "_list>";
    for (const auto& i : items)
      if (GetStr(i.body, "table_id") == t.id && (global || owned(i.body)))
        AppendItem(&o, tag, t.body, fields, i.body);
    o += "</" + tag + "_list></fixture>";
  }
  return o;
}

}  // namespace commcare::meta
