// UCR's reads of users, groups and locations (the Directory the host gives the ucr pillow over
// the MetaStore), as HQ evaluates them: corehq/apps/userreports/expressions/specs.py
// (_GroupsExpressionSpec, RelatedDocExpressionSpec) and corehq/apps/locations/ucr_expressions.py
// (AncestorLocationExpression, LocationTypeSpec, location_parent_id).
#include <boost/json.hpp>
#include <string>

#include "commcare/host.h"
#include "commcare/pillows.h"
#include "engine_helpers.h"
#include "meta/meta_store.h"

using namespace commcare;
namespace json = boost::json;
using cctest::CaseForm;
using cctest::Submit;
using cctest::TempDir;

namespace {

void PutDoc(meta::MetaStore* m, const char* kind, const char* id, const std::string& body) {
  meta::Doc d;
  d.kind = kind;
  d.id = id;
  d.domain = "demo";
  d.body = json::parse(body).as_object();
  auto r = m->PutDoc(d);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
}

// An indicator of the form data source: its expression evaluated against the form.
std::string Ind(const std::string& column, const std::string& expr) {
  return fmt::format(
      R"({{"type":"expression","column_id":"{}","datatype":"string","expression":{}}})", column,
      expr);
}
std::string Const(const std::string& v) {
  return fmt::format(R"({{"type":"constant","constant":"{}"}})", v);
}
const char* kUser = R"({"type":"property_path","property_path":["form","meta","userID"]})";
// An indicator whose value goes through a custom transform.
std::string Transformed(const std::string& column, const std::string& expr, const char* custom) {
  return fmt::format(
      R"({{"type":"expression","column_id":"{}","datatype":"string","expression":{},"transform":{{"type":"custom","custom_type":"{}"}}}})",
      column, expr, custom);
}

// The host's MetaStore with the domain demo.
meta::MetaStore* DemoMeta(Host* host) {
  auto meta = host->Meta();
  REQUIRE(meta.ok());
  meta::Domain dom;
  dom.name = "demo";
  REQUIRE((*meta)->PutDomain(dom).ok());
  return *meta;
}

}  // namespace

TEST_CASE("UCR HQ: users, groups and locations through the MetaStore") {
  auto host = cctest::NewHost("ucrdir");
  meta::MetaStore* m = DemoMeta(host.get());
  // country > state > district > village; the user works in the village, which shares cases.
  PutDoc(m, "location", "loc-rw",
         R"({"name":"Rwanda","site_code":"rw","location_type":"country"})");
  PutDoc(m, "location", "loc-s",
         R"({"name":"South","site_code":"south","location_type":"state","parent_id":"loc-rw"})");
  PutDoc(m, "location", "loc-d",
         R"({"name":"Huye","site_code":"huye","location_type":"district","parent_id":"loc-s"})");
  PutDoc(m, "location", "loc-v",
         R"({"name":"Tumba","site_code":"tumba","location_type":"village","parent_id":"loc-d",
             "shares_cases":true})");
  meta::User u;
  u.username = "nurse";
  u.domains = {"demo"};
  u.location_ids = {"loc-v"};
  auto put = m->PutUser(u, "pw-nurse");
  REQUIRE_MESSAGE(put.ok(), put.status().ToString());
  const std::string uid = put->user_id;
  PutDoc(
      m, "group", "g-team",
      fmt::format(R"({{"name":"Team","users":["{}"],"case_sharing":true,"reporting":true}})", uid)
          .c_str());
  PutDoc(m, "group", "g-report",
         fmt::format(R"({{"name":"Report","users":["{}"],"case_sharing":false,"reporting":true}})",
                     uid)
             .c_str());
  PutDoc(m, "group", "g-other", R"({"name":"Other","users":[],"case_sharing":true})");
  REQUIRE(Submit(host->engine(), CaseForm("f1", "c1",
                                          "<create><case_type>p</case_type>"
                                          "<case_name>n</case_name></create>",
                                          uid))
              .http_status == 201);

  auto groups = [](const char* kind, const char* user) {
    return fmt::format(
        R"({{"type":"reduce_items","aggregation_fn":"join","items_expression":{{"type":"map_items","items_expression":{{"type":"{}","user_id_expression":{}}},"map_expression":{{"type":"property_name","property_name":"name"}}}}}})",
        kind, user);
  };
  auto related = [](const char* type, const std::string& id, const char* prop) {
    return fmt::format(
        R"({{"type":"related_doc","related_doc_type":"{}","doc_id_expression":{},"value_expression":{{"type":"property_name","property_name":"{}"}}}})",
        type, id, prop);
  };
  const std::string indicators = fmt::format(
      "[{}]",
      fmt::join(
          std::vector<std::string>{
              Ind("sharing", groups("get_case_sharing_groups", kUser)),
              Ind("reporting", groups("get_reporting_groups", kUser)),
              Ind("nobody", groups("get_case_sharing_groups", Const("no-such-user").c_str())),
              Ind("state",
                  R"({"type":"ancestor_location","location_id":{"type":"constant","constant":"loc-v"},"location_type":{"type":"constant","constant":"state"},"location_property":"name"})"),
              Ind("country_lineage",
                  R"({"type":"nested","argument_expression":{"type":"ancestor_location","location_id":{"type":"constant","constant":"loc-v"},"location_type":{"type":"constant","constant":"country"}},"value_expression":{"type":"property_name","property_name":"lineage"}})"),
              Ind("self_type_is_not_an_ancestor",
                  R"({"type":"ancestor_location","location_id":{"type":"constant","constant":"loc-v"},"location_type":{"type":"constant","constant":"village"},"location_property":"name"})"),
              Ind("type",
                  R"({"type":"location_type_name","location_id_expression":{"type":"constant","constant":"loc-d"}})"),
              Ind("parent",
                  R"({"type":"location_parent_id","location_id_expression":{"type":"constant","constant":"loc-d"}})"),
              Ind("username", related("CommCareUser", kUser, "username")),
              Ind("site_code", related("Location", Const("loc-s"), "site_code")),
              Ind("lineage",
                  fmt::format(
                      R"({{"type":"reduce_items","aggregation_fn":"join","items_expression":{}}})",
                      related("Location", Const("loc-v"), "lineage"))),
              Ind("group_name", related("Group", Const("g-report"), "name")),
              Ind("no_location", related("Location", Const("nowhere"), "name")),
              // transforms/custom/users.py: user_display and owner_display.
              Transformed("user_disp", kUser, "user_display"),
              Transformed("owner_user", kUser, "owner_display"),
              Transformed("owner_group", Const("g-team"), "owner_display"),
              Transformed("owner_loc", Const("loc-v"), "owner_display"),
              Transformed("user_of_group", Const("g-team"), "user_display"),
              Transformed("owner_nobody", Const("nobody"), "owner_display")},
          ","));
  const std::string config = fmt::format(
      R"({{"domain":"demo","table_id":"dir","referenced_doc_type":"XFormInstance","configured_indicators":{}}})",
      indicators);
  PillowHostOptions po;
  auto pillows = host->OpenPillows(po);
  REQUIRE_MESSAGE(pillows.ok(), pillows.status().ToString());
  auto n = (*pillows)->UcrLoad(config);
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
  CHECK(*n == 1);
  auto rows = UcrRows((*pillows)->Store(), "demo", "dir");
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 1);
  const json::object row = json::parse((*rows)[0]).as_object();
  auto col = [&](const char* c) {
    const json::value& v = row.at(c);
    return v.is_null() ? std::string("<null>") : std::string(v.as_string());
  };
  // get_case_sharing_groups: the location's group first (HQ's get_case_sharing_groups), then
  // the case-sharing groups; get_reporting_groups: the reporting groups (the default is true).
  CHECK(col("sharing") == "Rwanda/South/Huye/Tumba-CasesTeam");  // join: "".join
  CHECK(col("reporting") == "ReportTeam");                       // by group id
  CHECK(col("nobody").empty());
  CHECK(col("state") == "South");
  CHECK(col("country_lineage") == "<null>");  // ancestor_location leaves lineage out
  CHECK(col("self_type_is_not_an_ancestor") == "<null>");
  CHECK(col("type") == "district");
  CHECK(col("parent") == "loc-s");
  CHECK(col("username") == "nurse");
  CHECK(col("site_code") == "south");
  CHECK(col("lineage") == "loc-dloc-sloc-rw");  // SQLLocation.lineage: nearest first
  CHECK(col("group_name") == "Report");
  CHECK(col("no_location") == "<null>");
  CHECK(col("user_disp") == "nurse");
  CHECK(col("owner_user") == "nurse");
  CHECK(col("owner_group") == "Team");
  CHECK(col("owner_loc") == "Tumba");
  CHECK(col("user_of_group") == "<null>");
  CHECK(col("owner_nobody") == "<null>");
}

// Data sources on users and locations (HQ's referenced_doc_type CommCareUser and Location): the
// rows of HQ's document shapes, built on load and kept up by the meta store's changes.
TEST_CASE("UCR HQ: data sources on CommCareUser and Location follow the MetaStore") {
  auto host = cctest::NewHost("ucrmeta");
  meta::MetaStore* m = DemoMeta(host.get());
  PutDoc(m, "location", "loc-a", R"({"name":"North","site_code":"n","location_type":"state"})");
  PutDoc(m, "location", "loc-b",
         R"({"name":"Huye","site_code":"h","location_type":"district","parent_id":"loc-a"})");
  meta::User u;
  u.username = "nurse";
  u.domains = {"demo"};
  u.location_ids = {"loc-b"};
  auto nurse = m->PutUser(u, "pw-nurse");
  REQUIRE_MESSAGE(nurse.ok(), nurse.status().ToString());
  meta::User web;
  web.username = "admin@example.org";
  web.web_user = true;
  web.domains = {"demo"};
  REQUIRE(m->PutUser(web, "pw-admin").ok());  // a web user is no CommCareUser

  auto prop = [](const char* column, const char* name) {
    return fmt::format(
        R"({{"type":"expression","column_id":"{}","datatype":"string","expression":{{"type":"property_name","property_name":"{}"}}}})",
        column, name);
  };
  const std::string users = fmt::format(
      R"({{"domain":"demo","table_id":"workers","referenced_doc_type":"CommCareUser","configured_indicators":[{},{}]}})",
      prop("username", "username"), prop("location", "location_id"));
  const std::string places = fmt::format(
      R"({{"domain":"demo","table_id":"places","referenced_doc_type":"Location","configured_indicators":[{},{}]}})",
      prop("name", "name"), prop("parent", "parent_location_id"));
  PillowHostOptions po;
  auto pillows = host->OpenPillows(po);
  REQUIRE_MESSAGE(pillows.ok(), pillows.status().ToString());
  auto n = (*pillows)->UcrLoad(users);
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
  CHECK(*n == 1);
  n = (*pillows)->UcrLoad(places);
  REQUIRE_MESSAGE(n.ok(), n.status().ToString());
  CHECK(*n == 2);
  auto table = [&](const char* id, const char* key, const char* value) {
    std::map<std::string, std::string> out;
    auto rows = UcrRows((*pillows)->Store(), "demo", id);
    REQUIRE(rows.ok());
    for (const auto& r : *rows) {
      const json::object o = json::parse(r).as_object();
      const json::value& v = o.at(value);
      out[std::string(o.at(key).as_string())] =
          v.is_null() ? std::string("<null>") : std::string(v.as_string());
    }
    return out;
  };
  CHECK(table("workers", "username", "location") ==
        std::map<std::string, std::string>{{"nurse", "loc-b"}});
  CHECK(table("places", "name", "parent") ==
        std::map<std::string, std::string>{{"North", "<null>"}, {"Huye", "loc-a"}});
  // Changes: a new worker, a worker moved, a new location; the pillow follows.
  u = *nurse;
  u.location_ids = {"loc-c"};
  PutDoc(m, "location", "loc-c",
         R"({"name":"Tumba","location_type":"village","parent_id":"loc-b"})");
  REQUIRE(m->PutUser(u).ok());
  meta::User clerk;
  clerk.username = "clerk";
  clerk.domains = {"demo"};
  REQUIRE(m->PutUser(clerk, "pw-clerk").ok());
  REQUIRE((*pillows)->RunUntilCaughtUp().ok());
  CHECK(table("workers", "username", "location") ==
        std::map<std::string, std::string>{{"nurse", "loc-c"}, {"clerk", "<null>"}});
  CHECK(table("places", "name", "parent") ==
        std::map<std::string, std::string>{
            {"North", "<null>"}, {"Huye", "loc-a"}, {"Tumba", "loc-b"}});
  // A worker made a web user, or moved to another domain, leaves the domain's table.
  auto now_web = m->GetUser("nurse");
  REQUIRE(now_web.ok());
  now_web->web_user = true;
  REQUIRE(m->PutUser(*now_web).ok());
  auto moved = m->GetUser("clerk");
  REQUIRE(moved.ok());
  meta::Domain elsewhere;
  elsewhere.name = "elsewhere";
  REQUIRE(m->PutDomain(elsewhere).ok());
  moved->domains = {"elsewhere"};
  auto put = m->PutUser(*moved);
  REQUIRE_MESSAGE(put.ok(), put.status().ToString());
  REQUIRE((*pillows)->RunUntilCaughtUp().ok());
  CHECK(table("workers", "username", "location").empty());
  // A bad doc type is refused naming the field.
  auto bad = (*pillows)->UcrLoad(
      R"({"domain":"demo","table_id":"x","referenced_doc_type":"WebUser","configured_indicators":[]})");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("referenced_doc_type") != std::string::npos);
}
