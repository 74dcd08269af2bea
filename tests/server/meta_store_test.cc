// The MetaStore: revisions, roles resolving to permissions, groups and locations giving owner
// ids, validation that names the field, and the change stream with its once-only relay.
#include "meta/meta_store.h"

#include <commcare/engine.h>
#include <commcare/storage/change_log.h>
#include <doctest/doctest.h>

#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "../test_util.h"
#include "meta_store_helpers.h"
#include "util/sql_db.h"
#include "util/time.h"

using namespace commcare;
using cctest::Changes;
using cctest::Fixture;
using cctest::MakeDoc;
using cctest::Open;
using meta::Doc;
using meta::MetaStore;
using meta::User;

namespace {

// Both kinds of store, for the tests that run on each.
constexpr bool kStores[] = {false, true};

}  // namespace

TEST_CASE("roles grant permissions, a role change counts at once, even for a cached login") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    auto role =
        f.m->PutDoc(MakeDoc("role", "demo", {{"name", "reader"}, {"permissions", {"access_api"}}}));
    REQUIRE_MESSAGE(role.ok(), role.status().ToString());
    CHECK_FALSE(f.m->Authenticate("w", "pw-w")->Can("demo", meta::kAccessApi));
    User u = f.worker;
    u.role_ids["demo"] = role->id;
    u = f.m->PutUser(u).value();
    CHECK(u.Can("demo", meta::kAccessApi));
    CHECK_FALSE(u.Can("other", meta::kAccessApi));
    CHECK(f.m->Authenticate("w", "pw-w")->Can("demo", meta::kAccessApi));
    Doc r = *role;
    r.body["permissions"] = boost::json::array{"edit_data"};
    REQUIRE(f.m->PutDoc(r).ok());
    auto again = f.m->Authenticate("w", "pw-w");
    CHECK_FALSE(again->Can("demo", meta::kAccessApi));
    CHECK(again->Can("demo", meta::kEditData));
    // A role in use cannot go; a role of another domain cannot be assigned.
    auto del = f.m->DeleteDoc("role", "demo", role->id, role->rev + 1);
    CHECK(del.code() == StatusCode::kFailedPrecondition);
    auto foreign = f.m->PutDoc(MakeDoc("role", "other", {{"name", "x"}}));
    u.role_ids["demo"] = foreign->id;
    auto bad = f.m->PutUser(u);
    CHECK(bad.status().code() == StatusCode::kInvalidArgument);
    CHECK(bad.status().message().find("role_ids") != std::string::npos);
  }
}

TEST_CASE("revisions: a stale write or delete is refused, a fresh one goes through") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    auto g = f.m->PutDoc(MakeDoc("group", "demo", {{"name", "team"}}));
    REQUIRE(g.ok());
    CHECK(g->rev == 1);
    Doc stale = *g;
    stale.rev = 0;
    CHECK(f.m->PutDoc(stale).status().code() == StatusCode::kAborted);
    Doc next = *g;
    next.body["reporting"] = true;
    auto g2 = f.m->PutDoc(next);
    REQUIRE(g2.ok());
    CHECK(g2->rev == 2);
    CHECK(f.m->DeleteDoc("group", "demo", g->id, 1).code() == StatusCode::kAborted);
    CHECK(f.m->DeleteDoc("group", "demo", g->id, 2).ok());
    CHECK(f.m->GetDoc("group", "demo", g->id).status().IsNotFound());
    CHECK(f.m->ListDocs("group", "demo")->empty());
    // Not visible from another domain, and its id cannot be taken there.
    auto h = f.m->PutDoc(MakeDoc("group", "demo", {{"name", "h"}}));
    CHECK(f.m->GetDoc("group", "other", h->id).status().IsNotFound());
    CHECK_FALSE(f.m->PutDoc(MakeDoc("group", "other", {{"name", "h"}}, h->id)).ok());
  }
}

TEST_CASE("validation names the field") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    auto expect = [&](Doc d, const char* field) {
      auto r = f.m->PutDoc(std::move(d));
      REQUIRE_FALSE(r.ok());
      CHECK(r.status().code() == StatusCode::kInvalidArgument);
      CHECK_MESSAGE(r.status().message().find(field) == 0, r.status().message());
    };
    expect(MakeDoc("group", "demo", {{"users", {"a"}}}), "name");
    expect(MakeDoc("group", "demo", {{"name", "g"}, {"users", {"nobody"}}}), "users");
    expect(MakeDoc("group", "demo", {{"name", "g"}, {"case_sharing", "yes"}}), "case_sharing");
    expect(MakeDoc("group", "demo", {{"name", "g"}, {"colour", "red"}}), "colour");
    expect(MakeDoc("role", "demo", {{"name", "r"}, {"permissions", {"fly"}}}), "permissions");
    expect(MakeDoc("location", "demo", {{"name", "l"}}), "location_type");
    expect(
        MakeDoc("location", "demo", {{"name", "l"}, {"location_type", "t"}, {"parent_id", "zz"}}),
        "parent_id");
    expect(MakeDoc("location", "demo",
                   {{"name", "l"}, {"location_type", "t"}, {"metadata", {{"a", 1}}}}),
           "metadata.a");
    CHECK(f.m->PutDoc(MakeDoc("group", "nodomain", {{"name", "g"}})).status().IsNotFound());
    CHECK(f.m->PutDoc(MakeDoc("thing", "demo", {{"name", "g"}})).status().code() ==
          StatusCode::kInvalidArgument);
    // A location cannot become its own ancestor.
    auto a = f.m->PutDoc(MakeDoc("location", "demo", {{"name", "a"}, {"location_type", "t"}}));
    auto b = f.m->PutDoc(
        MakeDoc("location", "demo", {{"name", "b"}, {"location_type", "t"}, {"parent_id", a->id}}));
    Doc loop = *a;
    loop.body["parent_id"] = b->id;
    expect(loop, "parent_id");
    CHECK(f.m->DeleteDoc("location", "demo", a->id, a->rev).code() ==
          StatusCode::kFailedPrecondition);
  }
}

TEST_CASE("owner ids: the user, case-sharing groups, case-sharing locations and descendants") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    auto loc = [&](const char* name, std::string parent, bool shares, bool descendants) {
      boost::json::object b{{"name", name},
                            {"location_type", "t"},
                            {"shares_cases", shares},
                            {"view_descendants", descendants}};
      if (!parent.empty()) b["parent_id"] = parent;
      return f.m->PutDoc(MakeDoc("location", "demo", b, name)).value().id;
    };
    std::string region = loc("region", "", false, true);
    std::string district = loc("district", region, true, false);
    std::string clinic = loc("clinic", district, true, false);
    std::string elsewhere = loc("elsewhere", "", true, false);
    (void)elsewhere;
    auto shared = f.m->PutDoc(
        MakeDoc("group", "demo",
                {{"name", "s"}, {"case_sharing", true}, {"users", {f.worker.user_id}}}, "g-share"));
    auto reporting = f.m->PutDoc(
        MakeDoc("group", "demo",
                {{"name", "r"}, {"reporting", true}, {"users", {f.worker.user_id}}}, "g-report"));
    REQUIRE(shared.ok());
    REQUIRE(reporting.ok());
    User u = f.worker;
    u.location_ids = {region};
    u = f.m->PutUser(u).value();
    auto ids = f.m->OwnerIds(u, "demo");
    REQUIRE(ids.ok());
    CHECK(*ids == std::vector<std::string>{f.worker.user_id, clinic, district, "g-share"});
    u.location_ids = {district};
    u = f.m->PutUser(u).value();
    CHECK(*f.m->OwnerIds(u, "demo") ==
          std::vector<std::string>{f.worker.user_id, district, "g-share"});
  }
}

// R9 of research/hq-fidelity.md: HQ's UserGroupsFixtureProvider (corehq/apps/groups/fixtures.py)
// lists restore_user.get_case_sharing_groups(): the user's case-sharing locations as faked
// groups (SQLLocation.case_sharing_group_object: "<path>-Cases", commcare_location_* metadata)
// and the case-sharing groups with their metadata as group_data; a reporting-only group is not
// there. commcare-core takes the phone's owner ids from this fixture (CasePurgeFilter).
TEST_CASE("the user-groups fixture lists the case-sharing groups and locations as HQ does") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    boost::json::object b{
        {"name", "region"}, {"location_type", "state"}, {"view_descendants", true}};
    auto region = f.m->PutDoc(MakeDoc("location", "demo", b, "region")).value().id;
    b = {{"name", "district"},
         {"location_type", "district"},
         {"shares_cases", true},
         {"parent_id", region},
         {"metadata", {{"tier", "2"}}}};
    auto district = f.m->PutDoc(MakeDoc("location", "demo", b, "district")).value().id;
    REQUIRE(f.m->PutDoc(MakeDoc("group", "demo",
                                {{"name", "s"},
                                 {"case_sharing", true},
                                 {"users", {f.worker.user_id}},
                                 {"metadata", {{"leader", "x & y"}}}},
                                "g-share"))
                .ok());
    REQUIRE(f.m->PutDoc(MakeDoc("group", "demo",
                                {{"name", "r"}, {"reporting", true}, {"users", {f.worker.user_id}}},
                                "g-report"))
                .ok());
    User u = f.worker;
    u.location_ids = {region};
    u = f.m->PutUser(u).value();
    auto fx = f.m->Fixtures(u, "demo");
    REQUIRE(fx.ok());
    const std::string want =
        "<fixture id=\"user-groups\" user_id=\"" + u.user_id + "\"><groups><group id=\"" +
        district +
        "\"><name>region/district-Cases</name><group_data><data "
        "key=\"commcare_location_type\">district</data><data "
        "key=\"commcare_location_tier\">2</data></group_data></group><group "
        "id=\"g-share\"><name>s</name><group_data><data key=\"leader\">x &amp; "
        "y</data></group_data></group></groups></fixture>";
    CHECK(fx->substr(0, want.size()) == want);
    // The owner ids are the fixture's groups and the user.
    CHECK(*f.m->OwnerIds(u, "demo") == std::vector<std::string>{u.user_id, district, "g-share"});
    // R7: the Registration's user_data carries HQ's system fields (users/models.py
    // get_user_session_data, UserData.to_dict), over any custom field of the same name.
    // commcare_first_name, _last_name and _phone_number are the user's first_name, last_name
    // and default (first) phone number; the Registration's date is date_joined (xml.py
    // get_registration_element_data: date_to_xml_string(restore_user.date_joined)).
    u.user_data = {
        {"district", "north"}, {"commcare_project", "spoofed"}, {"commcare_first_name", "spoofed"}};
    u.first_name = "Asha";
    u.last_name = "Mwangi";
    u.phone_numbers = {"+254700000001", "+254700000002"};
    u = f.m->PutUser(u).value();
    CHECK(u.first_name == "Asha");
    CHECK(u.phone_numbers == std::vector<std::string>{"+254700000001", "+254700000002"});
    auto q = meta::MakeRestoreRequest(f.m.get(), u, "demo");
    REQUIRE(q.ok());
    CHECK(q->user.date_joined == f.worker.date_joined);
    std::map<std::string, std::string> data(q->user.user_data.begin(), q->user.user_data.end());
    CHECK(data == std::map<std::string, std::string>{{"commcare_first_name", "Asha"},
                                                     {"commcare_last_name", "Mwangi"},
                                                     {"commcare_location_id", region},
                                                     {"commcare_location_ids", region},
                                                     {"commcare_phone_number", "+254700000001"},
                                                     {"commcare_primary_case_sharing_id", region},
                                                     {"commcare_project", "demo"},
                                                     {"commcare_user_type", "commcare"},
                                                     {"district", "north"}});
  }
}

// HQ's Registration <date> is the user's date_joined (casexml/apps/phone/xml.py
// get_registration_element_data; Django's User.date_joined, set when the user is made).
TEST_CASE("date_joined: set once when a user is first stored, and older users are dated at open") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    const int64_t joined = f.worker.date_joined;
    CHECK(joined > 0);
    // Later writes keep it, whatever they carry.
    User u = f.worker;
    u.date_joined = 1;
    u = f.m->PutUser(u).value();
    CHECK(u.date_joined == joined);
    CHECK(f.m->GetUser("w")->date_joined == joined);
    CHECK(meta::UserJson(u)["date_joined"] == boost::json::value(FormatTime(joined)));
    // A new user may come with one (a user moved from elsewhere keeps its date).
    User moved;
    moved.username = "moved";
    moved.domains = {"demo"};
    moved.date_joined = 1577934245000000;  // 2020-01-02T03:04:05Z
    CHECK(f.m->PutUser(moved, "pw-moved")->date_joined == 1577934245000000);
    // The admin API cannot set it.
    std::string pw;
    auto st = meta::ApplyUserFields({{"date_joined", "2020-01-01"}}, "demo", &u, &pw);
    CHECK(st.message().find("date_joined") != std::string::npos);
    st = meta::ApplyUserFields({{"phone_numbers", {"+1", 2}}}, "demo", &u, &pw);
    CHECK(st.message().find("phone_numbers") != std::string::npos);
    // A user stored before users kept the date gets the time the store is next opened, once.
    {
      auto db = util::SqlDb::Open(f.where, "commcare_meta");
      REQUIRE(db.ok());
      REQUIRE((*db)
                  ->Run("forgetting a date",
                        postgres ? "UPDATE users SET doc=doc - 'date_joined' WHERE username='w'"
                                 : "UPDATE users SET doc=json_remove(doc, '$.date_joined') "
                                   "WHERE username='w'")
                  .ok());
    }
    f.m.reset();
    const int64_t before = util::NowMicros();
    f.m = cctest::Open(f.where);
    const int64_t dated = f.m->GetUser("w")->date_joined;
    CHECK(dated >= before);
    CHECK(dated <= util::NowMicros());
    f.m.reset();
    f.m = cctest::Open(f.where);
    CHECK(f.m->GetUser("w")->date_joined == dated);
    CHECK(f.m->GetUser("moved")->date_joined == 1577934245000000);
  }
}

// R8 of research/hq-fidelity.md: HQ's flat location fixture (corehq/apps/locations/fixtures.py
// FlatLocationSerializer, fixtures/utils.py get_index_schema_node): a <schema id="locations">
// with the sorted indices, then one <location type id {code}_id...> per location the user syncs
// (assigned, ancestors, descendants; get_location_fixture_queryset) ordered by site_code, with
// the fixed fields and location_data holding every known field. R11: restore.py counts each
// top-level element; the fixture and its schema are two.
TEST_CASE("the locations fixture is HQ's flat fixture with its index schema") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    auto put = [&](const char* id, boost::json::object b) {
      return f.m->PutDoc(MakeDoc("location", "demo", std::move(b), id));
    };
    REQUIRE(put("st", {{"name", "State"}, {"location_type", "state"}, {"site_code", "s1"}}).ok());
    REQUIRE(put("di", {{"name", "District"},
                       {"location_type", "district"},
                       {"site_code", "d1"},
                       {"parent_id", "st"},
                       {"latitude", 1.5},
                       {"external_id", "ext-d"},
                       {"metadata", {{"tier", "2"}}}})
                .ok());
    REQUIRE(put("cl", {{"name", "Clinic"},
                       {"location_type", "clinic"},
                       {"site_code", "c1"},
                       {"parent_id", "di"},
                       {"metadata", {{"beds", "<9"}}}})
                .ok());
    REQUIRE(put("far", {{"name", "Far"}, {"location_type", "state"}, {"site_code", "a0"}}).ok());
    // Names a phone cannot parse as elements or attributes are refused, naming the field.
    auto bad = put("x", {{"name", "X"}, {"location_type", "2 words"}});
    CHECK(bad.status().message().find("location_type") != std::string::npos);
    bad = put("x", {{"name", "X"}, {"location_type", "t"}, {"metadata", {{"a b", "1"}}}});
    CHECK(bad.status().message().find("metadata.a b") != std::string::npos);
    CHECK_FALSE(put("x", {{"name", "X"}, {"location_type", "t"}, {"latitude", 91}}).ok());

    User u = f.worker;
    u.location_ids = {"di"};
    u = f.m->PutUser(u).value();
    auto fx = f.m->Fixtures(u, "demo");
    REQUIRE(fx.ok());
    const size_t at = fx->find("<schema id=\"locations\">");
    REQUIRE(at != std::string::npos);
    const std::string loc = [&] {
      std::string o;
      auto one = [&](const char* type, const char* id, const char* ids, const char* fields,
                     const char* data) {
        o += std::string("<location type=\"") + type + "\" id=\"" + id + "\" " + ids + ">" +
             fields + "<location_data>" + data + "</location_data></location>";
      };
      // Ordered by site_code: c1, d1, s1 ("far" is not the user's).
      one("clinic", "cl", "clinic_id=\"cl\" district_id=\"di\" state_id=\"st\"",
          "<name>Clinic</name><site_code>c1</site_code><external_id></external_id><latitude>"
          "</latitude><longitude></longitude><location_type>clinic</location_type>"
          "<supply_point_id></supply_point_id>",
          "<beds>&lt;9</beds><tier></tier>");
      one("district", "di", "clinic_id=\"\" district_id=\"di\" state_id=\"st\"",
          "<name>District</name><site_code>d1</site_code><external_id>ext-d</external_id>"
          "<latitude>1.5</latitude><longitude></longitude><location_type>district"
          "</location_type><supply_point_id></supply_point_id>",
          "<beds></beds><tier>2</tier>");
      one("state", "st", "clinic_id=\"\" district_id=\"\" state_id=\"st\"",
          "<name>State</name><site_code>s1</site_code><external_id></external_id><latitude>"
          "</latitude><longitude></longitude><location_type>state</location_type>"
          "<supply_point_id></supply_point_id>",
          "<beds></beds><tier></tier>");
      return o;
    }();
    const std::string want =
        "<schema id=\"locations\"><indices><index>@clinic_id</index><index>@district_id</index>"
        "<index>@id</index><index>@state_id</index><index>@type</index><index>name</index>"
        "</indices></schema><fixture id=\"locations\" user_id=\"" +
        u.user_id + "\" indexed=\"true\"><locations>" + loc + "</locations></fixture>";
    CHECK(fx->substr(at) == want);
    // A user with no location gets the schema and an empty fixture; a domain without
    // locations gets neither (HQ: only projects that use locations).
    u.location_ids.clear();
    u = f.m->PutUser(u).value();
    CHECK(f.m->Fixtures(u, "demo")->find("<locations></locations>") != std::string::npos);
    CHECK(f.m->Fixtures(u, "other")->find("locations") == std::string::npos);
  }
}

// R10 of research/hq-fidelity.md §5.5: HQ's lookup tables as restore fixtures
// (corehq/apps/fixtures/fixturegenerators.py ItemListsProvider, models.py to_xml): one
// <fixture id="item-list:<tag>"> per table sorted by tag, holding <tag>_list/<tag> items sorted
// by sort_key, every field of the table (empty when the item has none, repeated with its
// properties as attributes); an indexed table sends its schema first and indexed="true"; a
// global table goes to everyone, another to the owners of each item (user, group, location).
TEST_CASE("lookup tables are item-list fixtures as HQ writes them") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    auto put = [&](const char* kind, const char* id, boost::json::object b) {
      return f.m->PutDoc(MakeDoc(kind, "demo", std::move(b), id));
    };
    auto table_put = put("lookup_table", "t-district",
                         {{"tag", "district"},
                          {"is_global", true},
                          {"is_indexed", true},
                          {"item_attributes", {"rank"}},
                          {"fields",
                           {boost::json::object{{"field_name", "name"}, {"properties", {"lang"}}},
                            boost::json::object{{"field_name", "code"}, {"is_indexed", true}}}}});
    INFO(table_put.status().message());
    REQUIRE(table_put.ok());
    REQUIRE(put("lookup_table", "t-cadre", {{"tag", "cadre"}, {"fields", {"title"}}}).ok());
    // Two items of the global table, out of sort_key order; one with two names by language.
    REQUIRE(put("lookup_item", "i2",
                {{"table_id", "t-district"},
                 {"sort_key", 2},
                 {"fields", {{"code", "d2"}}},
                 {"item_attributes", {{"rank", "2"}}}})
                .ok());
    REQUIRE(
        put("lookup_item", "i1",
            {{"table_id", "t-district"},
             {"sort_key", 1},
             {"fields",
              {{"name",
                {boost::json::object{{"value", "North"}, {"properties", {{"lang", "en"}}}},
                 boost::json::object{{"value", "Nord & co"}, {"properties", {{"lang", "fr"}}}}}},
               {"code", "d1"}}}})
            .ok());
    // The user-owned table: one item owned by the worker, one by a group they are not in.
    REQUIRE(put("lookup_item", "c1",
                {{"table_id", "t-cadre"},
                 {"fields", {{"title", "nurse"}}},
                 {"owners", {{"users", {f.worker.user_id}}}}})
                .ok());
    REQUIRE(put("lookup_item", "c2",
                {{"table_id", "t-cadre"},
                 {"fields", {{"title", "doctor"}}},
                 {"owners", {{"groups", {"g-none"}}}}})
                .ok());
    // Bad documents are refused, naming the field.
    auto msg = [&](const char* kind, boost::json::object b) {
      auto r = put(kind, "bad", std::move(b));
      return r.ok() ? std::string("accepted") : std::string(r.status().message());
    };
    CHECK(msg("lookup_table", {{"tag", "district"}, {"fields", {"x"}}}).find("tag") == 0);
    CHECK(msg("lookup_table", {{"tag", "t2"}, {"fields", {"a b"}}}).find("fields[0]") == 0);
    CHECK(msg("lookup_item", {{"table_id", "nope"}}).find("table_id") == 0);
    CHECK(msg("lookup_item", {{"table_id", "t-cadre"}, {"fields", {{"salary", "1"}}}})
              .find("fields.salary") == 0);
    CHECK(msg("lookup_item",
              {{"table_id", "t-district"},
               {"fields",
                {{"code", {boost::json::object{{"value", "x"}, {"properties", {{"zz", "1"}}}}}}}}})
              .find("fields.code[0].properties.zz") == 0);
    // A table with items cannot be deleted.
    auto table = f.m->GetDoc("lookup_table", "demo", "t-cadre");
    CHECK(f.m->DeleteDoc("lookup_table", "demo", "t-cadre", table->rev).code() ==
          StatusCode::kFailedPrecondition);

    auto fx = f.m->LookupFixtures(f.worker, "demo", *f.m->ReadDirectory("demo"));
    REQUIRE(fx.ok());
    const std::string u = f.worker.user_id;
    CHECK(*fx ==
          "<fixture id=\"item-list:cadre\" user_id=\"" + u +
              "\"><cadre_list><cadre><title>nurse</title></cadre></cadre_list></fixture>"
              "<schema id=\"item-list:district\"><indices><index>code</index></indices></schema>"
              "<fixture id=\"item-list:district\" user_id=\"" +
              u +
              "\" indexed=\"true\"><district_list><district rank=\"\"><name lang=\"en\">North"
              "</name><name lang=\"fr\">Nord &amp; co</name><code>d1</code></district>"
              "<district rank=\"2\"><name></name><code>d2</code></district></district_list>"
              "</fixture>");
    // They come between user-groups and locations, as HQ's FIXTURE_GENERATORS order them.
    auto all = f.m->Fixtures(f.worker, "demo");
    REQUIRE(all.ok());
    CHECK(all->find("item-list:cadre") > all->find("user-groups"));
  }
}

TEST_CASE("every write queues a change, the relay appends each once, even after a crash") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    auto log = storage::NewMemoryChangeLog();
    REQUIRE(f.m->SetChangeLog(log.get()).ok());  // relays what the fixture queued
    CHECK(Changes(log.get(), "domain").size() == 2);
    auto users = Changes(log.get(), "commcare-user");
    REQUIRE(users.size() == 1);
    CHECK(users[0].document_id == f.worker.user_id);
    CHECK(users[0].domain == "demo");
    CHECK(users[0].document_type == "CommCareUser");
    auto g = f.m->PutDoc(MakeDoc("group", "demo", {{"name", "g"}}));
    REQUIRE(f.m->DeleteDoc("group", "demo", g->id, g->rev).ok());
    auto groups = Changes(log.get(), "group");
    REQUIRE(groups.size() == 2);
    CHECK_FALSE(groups[0].is_deletion);
    CHECK(groups[1].is_deletion);

    // Writes made while no log is attached wait in the store's outbox across a reopen...
    f.m.reset();
    f.m = Open(f.where);
    REQUIRE(
        f.m->PutDoc(MakeDoc("location", "demo", {{"name", "l"}, {"location_type", "t"}}, "loc1"))
            .ok());
    REQUIRE(f.m->PutDoc(MakeDoc("app", "demo", {{"name", "app"}, {"version", 3}}, "app1")).ok());
    // ...and a record the log already holds (appended with the producer mark, then a crash
    // before the outbox was emptied) is not appended again.
    CHECK(f.m->RelayProducer().rfind("relay-meta-", 0) == 0);
    auto mark = log->GetProducerMark(f.m->RelayProducer()).value();
    std::vector<storage::ChangeMessage> first = {
        {"location", "loc1",
         ChangeMetaToJson(ChangeMeta{.topic = "location", .document_id = "loc1"})}};
    storage::ProducerMark m{f.m->RelayProducer(), mark + 1};
    REQUIRE(log->Append(first, &m).ok());
    REQUIRE(f.m->SetChangeLog(log.get()).ok());
    CHECK(Changes(log.get(), "location").size() == 1);
    CHECK(Changes(log.get(), "app").size() == 1);
    REQUIRE(f.m->Relay().ok());
    CHECK(Changes(log.get(), "app").size() == 1);
    // A second store (another server process) relaying into the same log has marks of its own:
    // its records are not taken for the first store's.
    Fixture second(postgres);
    CHECK(second.m->RelayProducer() != f.m->RelayProducer());
    const size_t before = Changes(log.get(), "domain").size();
    REQUIRE(second.m->SetChangeLog(log.get()).ok());
    CHECK(Changes(log.get(), "domain").size() == before + 2);
    CHECK(Changes(log.get(), "commcare-user").size() == 2);
  }
}

namespace {

// A change log whose appends wait until released (a slow or unreachable Kafka).
struct GatedLog : storage::ChangeLog {
  std::unique_ptr<storage::ChangeLog> inner = storage::NewMemoryChangeLog();
  std::mutex mu;
  std::condition_variable cv;
  bool open = false, waiting = false;
  Status CreateTopic(std::string_view t, int n) override { return inner->CreateTopic(t, n); }
  Result<int> Partitions(std::string_view t) override { return inner->Partitions(t); }
  Result<std::vector<std::string>> Topics() override { return inner->Topics(); }
  Status Append(std::span<const storage::ChangeMessage> m,
                const storage::ProducerMark* mark) override {
    std::unique_lock l(mu);
    waiting = true;
    cv.notify_all();
    cv.wait_for(l, std::chrono::seconds(30), [&] { return open; });
    waiting = false;
    return inner->Append(m, mark);
  }
  Result<int64_t> GetProducerMark(std::string_view p) override { return inner->GetProducerMark(p); }
  Result<std::vector<storage::ChangeRecord>> Read(std::string_view t, int p, int64_t from,
                                                  size_t max) override {
    return inner->Read(t, p, from, max);
  }
  Result<int64_t> EndOffset(std::string_view t, int p) override { return inner->EndOffset(t, p); }
  Result<int64_t> StartOffset(std::string_view t, int p) override {
    return inner->StartOffset(t, p);
  }
  Result<int64_t> ApplyRetention(const storage::RetentionPolicy& r) override {
    return inner->ApplyRetention(r);
  }
  uint64_t WaitForAppend(uint64_t seen, std::chrono::milliseconds t) override {
    return inner->WaitForAppend(seen, t);
  }
};

}  // namespace

TEST_CASE("a relay stuck on the change log holds up neither logins nor reads") {
  for (bool postgres : kStores) {
    CAPTURE(postgres);
    Fixture f(postgres);
    if (!f.m) continue;
    GatedLog log;
    {
      std::lock_guard l(log.mu);
      log.open = true;  // the fixture's queued changes go through
    }
    REQUIRE(f.m->SetChangeLog(&log).ok());
    {
      std::lock_guard l(log.mu);
      log.open = false;
    }
    std::thread writer([&] { CHECK(f.m->PutDoc(MakeDoc("group", "demo", {{"name", "g"}})).ok()); });
    {
      std::unique_lock l(log.mu);
      REQUIRE(log.cv.wait_for(l, std::chrono::seconds(30), [&] { return log.waiting; }));
    }
    // The group is stored and its change is being appended, which does not return yet.
    CHECK(f.m->Authenticate("w", "pw-w").ok());
    CHECK(f.m->ListDocs("group", "demo")->size() == 1);
    {
      std::lock_guard l(log.mu);
      CHECK(log.waiting);  // the answers above did not wait for the append
      log.open = true;
    }
    log.cv.notify_all();
    writer.join();
    CHECK(Changes(log.inner.get(), "group").size() == 1);
  }
}
