// The restore fixtures the MetaStore knows (meta_store.h Fixtures): "user-groups" as HQ's
// UserGroupsFixtureProvider writes it, and "locations" as HQ's flat location fixture
// (corehq/apps/locations/fixtures.py FlatLocationSerializer), with its index schema.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "meta/meta_store.h"
#include "util/codec.h"
#include "util/xml.h"

namespace commcare::meta {
namespace {

namespace json = boost::json;
using codec::GetStr;
using util::AppendXmlAttr;
using util::AppendXmlElement;
using util::AppendXmlEscaped;
using util::IsXmlName;

// A location field as text: strings as they are, numbers (latitude, longitude) in their
// shortest form, missing or null as ''.
std::string Field(const json::object& body, std::string_view key) {
  const json::value* v = body.if_contains(key);
  if (!v || v->is_null()) return "";
  if (v->is_string()) return std::string(v->get_string());
  if (v->is_double()) return fmt::format("{}", v->get_double());  // 1.5, as HQ's Decimal
  return json::serialize(*v);
}

std::string GroupsFixture(const User& user, const std::vector<MetaStore::SharingGroup>& groups) {
  // corehq/apps/groups/fixtures.py group_fixture: id, name, and group_data from the metadata.
  std::string o = "<fixture id=\"user-groups\"";
  AppendXmlAttr(&o, "user_id", user.user_id);
  o += "><groups>";
  for (const auto& g : groups) {
    o += "<group";
    AppendXmlAttr(&o, "id", g.id);
    o += '>';
    AppendXmlElement(&o, "name", g.name);
    if (!g.metadata.empty()) {
      o += "<group_data>";
      for (const auto& kv : g.metadata) {
        o += "<data";
        AppendXmlAttr(&o, "key", kv.key());
        o += '>';
        AppendXmlEscaped(&o, kv.value().is_string() ? std::string(kv.value().get_string())
                                                    : json::serialize(kv.value()));
        o += "</data>";
      }
      o += "</group_data>";
    }
    o += "</group>";
  }
  o += "</groups></fixture>";
  return o;
}

// The locations a user syncs (HQ's get_location_fixture_queryset with the location types'
// default expansion): the assigned locations, their ancestors and all their descendants.
std::vector<const Doc*> LocationsToSync(const User& user, const std::vector<Doc>& all) {
  std::map<std::string, const Doc*> by_id;
  std::multimap<std::string, const Doc*> children;
  for (const auto& l : all) {
    by_id[l.id] = &l;
    children.emplace(GetStr(l.body, "parent_id"), &l);
  }
  std::set<std::string> seen;
  std::vector<const Doc*> out;
  auto add = [&](const Doc* l) {
    if (seen.insert(l->id).second) out.push_back(l);
  };
  for (const auto& id : user.location_ids) {
    auto it = by_id.find(id);
    if (it == by_id.end()) continue;
    for (const Doc* up = it->second; up;) {  // the location and its ancestors
      add(up);
      auto p = by_id.find(GetStr(up->body, "parent_id"));
      up = p == by_id.end() ? nullptr : p->second;
    }
    std::vector<const Doc*> todo = {it->second};  // its descendants
    while (!todo.empty()) {
      const Doc* l = todo.back();
      todo.pop_back();
      auto [b, e] = children.equal_range(l->id);
      for (auto c = b; c != e; ++c)
        if (!seen.count(c->second->id)) {
          add(c->second);
          todo.push_back(c->second);
        }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Doc* a, const Doc* b) {
    return GetStr(a->body, "site_code") < GetStr(b->body, "site_code");
  });
  return out;
}

// FlatLocationSerializer: <schema id="locations"> naming the indexed attributes, then
// <fixture id="locations" indexed="true"><locations><location type=… id=… {code}_id=…> per
// location, with an {code}_id attribute for every location type of the domain (the location's
// own or an ancestor's id, else ''), the fixed fields, and location_data holding every metadata
// key any location of the domain has (HQ writes an empty node for each known field).
std::string LocationsFixture(const User& user, const std::vector<Doc>& all) {
  std::set<std::string> types, data_keys;
  std::map<std::string, const Doc*> by_id;
  for (const auto& l : all) {
    by_id[l.id] = &l;
    if (std::string t = GetStr(l.body, "location_type"); IsXmlName(t + "_id")) types.insert(t);
    if (const json::value* md = l.body.if_contains("metadata"); md && md->is_object())
      for (const auto& kv : md->get_object())
        if (IsXmlName(kv.key())) data_keys.emplace(kv.key());
  }
  std::vector<std::string> indices = {"@id", "@type", "name"};
  for (const auto& t : types) indices.push_back("@" + t + "_id");
  std::sort(indices.begin(), indices.end());  // as HQ's get_index_schema_node
  std::string o = "<schema id=\"locations\"><indices>";
  for (const auto& i : indices) AppendXmlElement(&o, "index", i);
  o += "</indices></schema><fixture id=\"locations\"";
  AppendXmlAttr(&o, "user_id", user.user_id);
  o += " indexed=\"true\"><locations>";
  for (const Doc* l : LocationsToSync(user, all)) {
    std::map<std::string, std::string> ids;
    for (const auto& t : types) ids[t + "_id"];
    std::set<std::string> seen;
    for (const Doc* at = l; at && seen.insert(at->id).second;) {
      if (std::string t = GetStr(at->body, "location_type"); types.count(t))
        ids[t + "_id"] = at->id;
      auto p = by_id.find(GetStr(at->body, "parent_id"));
      at = p == by_id.end() ? nullptr : p->second;
    }
    o += "<location";
    AppendXmlAttr(&o, "type", GetStr(l->body, "location_type"));
    AppendXmlAttr(&o, "id", l->id);
    for (const auto& [name, id] : ids) AppendXmlAttr(&o, name, id);
    o += '>';
    for (const char* f : {"name", "site_code", "external_id", "latitude", "longitude",
                          "location_type", "supply_point_id"})
      AppendXmlElement(&o, f, Field(l->body, f));
    o += "<location_data>";
    const json::value* md = l->body.if_contains("metadata");
    for (const auto& k : data_keys) {
      const json::value* v = md && md->is_object() ? md->get_object().if_contains(k) : nullptr;
      AppendXmlElement(&o, k, v && v->is_string() ? std::string(v->get_string()) : "");
    }
    o += "</location_data></location>";
  }
  o += "</locations></fixture>";
  return o;
}

}  // namespace

Result<std::string> MetaStore::Fixtures(const User& user, std::string_view domain,
                                        const Directory& dir) {
  std::string o = GroupsFixture(user, CaseSharingGroups(user, dir));
  CC_ASSIGN_OR_RETURN(std::string lookups, LookupFixtures(user, domain, dir));
  o += lookups;
  // HQ sends the location fixture only to projects that use locations.
  if (!dir.locations.empty()) o += LocationsFixture(user, dir.locations);
  return o;
}

Result<std::string> MetaStore::Fixtures(const User& user, std::string_view domain) {
  CC_ASSIGN_OR_RETURN(auto dir, ReadDirectory(domain));
  return Fixtures(user, domain, dir);
}

}  // namespace commcare::meta
