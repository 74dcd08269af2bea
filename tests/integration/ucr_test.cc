// UCR: config compilation (errors name their path), every filter, expression and indicator
// kind, form JSON, and the ucr pillow's delete-and-reinsert, rebuild and retry behaviour.
#include "pillows/ucr.h"

#include <commcare/pillows.h>

#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <set>

#include "engine_helpers.h"
#include "ucr_helpers.h"
#include "xform/xml2json.h"

using namespace commcare;
namespace json = boost::json;
namespace ucr = commcare::pillows::ucr;
using cctest::CaseForm;
using cctest::OpenMemory;
using cctest::Submit;
using cctest::ucr_test::CompileError;
using cctest::ucr_test::Config;
using cctest::ucr_test::kDoc;
using cctest::ucr_test::RowsOf;
using cctest::ucr_test::Value;

TEST_CASE("xml2json: CommCare's form JSON shape") {
  auto j = xform::FormXmlToJson(
      R"(<data xmlns="http://x" name="F"><q>1</q><empty/><g a="b">t<r>1</r></g><rep><v>1</v></rep><rep><v>2</v></rep><n:meta xmlns:n="http://m"><n:id>i</n:id></n:meta></data>)");
  REQUIRE(j.ok());
  json::object& o = *j;
  CHECK(o["#type"] == "data");
  CHECK(o["@xmlns"] == "http://x");
  CHECK(o["@name"] == "F");
  CHECK(o["q"] == "1");
  CHECK(o["empty"] == "");
  CHECK(o["g"].at("@a") == "b");
  CHECK(o["g"].at("#text") == "t");
  CHECK(o["g"].at("r") == "1");
  REQUIRE(o["rep"].is_array());
  CHECK(o["rep"].get_array().size() == 2);
  CHECK(o["rep"].get_array()[1].at("v") == "2");
  CHECK(o["meta"].at("@xmlns") == "http://m");
  CHECK(o["meta"].at("id") == "i");
  CHECK(!xform::FormXmlToJson("<a><b></a>").ok());
  CHECK(xform::FormXmlToJson("<!DOCTYPE x><a/>").status().message().find("DOCTYPE") !=
        std::string::npos);
}

TEST_CASE("UCR: a bad config is rejected with the offending path") {
  CHECK(CompileError("{").find("not JSON") != std::string::npos);
  CHECK(CompileError("[]").find("JSON object") != std::string::npos);
  CHECK(CompileError(
            R"({"domain":"d","referenced_doc_type":"CommCareCase","configured_indicators":[]})") ==
        "table_id: is required");
  CHECK(CompileError(Config("Nope", "")).find("referenced_doc_type") == 0);
  CHECK(
      CompileError(Config(
          "CommCareCase",
          R"({"type":"expression","column_id":"a","datatype":"string","expression":{"type":"identity"}},)"
          R"({"type":"boolean","column_id":"b","filter":{"type":"and","filters":[]}},)"
          R"({"type":"raw","column_id":"c","property_name":"x"},)"
          R"({"type":"expression","column_id":"d","datatype":"string","expression":{"type":"nope"}})")) ==
      "configured_indicators[3].expression.type: unknown expression type 'nope'");
  CHECK(
      CompileError(Config(
          "CommCareCase",
          R"({"type":"boolean","column_id":"b","filter":{"type":"or","filters":[{"type":"boolean_expression","expression":1,"operator":"like","property_value":1}]}})")) ==
      "configured_indicators[0].filter.filters[0].operator: must be one of eq, not_eq, in, "
      "in_multi, any_in_multi, lt, lte, gt, gte, regex");
  CHECK(CompileError(
            Config("CommCareCase",
                   R"({"type":"expression","column_id":"a","datatype":"text","expression":1})")) ==
        "configured_indicators[0].datatype: must be one of string, integer, small_integer, "
        "decimal, date, datetime, boolean, array");
  CHECK(
      CompileError(Config(
          "CommCareCase",
          R"({"type":"raw","column_id":"a","property_name":"x"},{"type":"raw","column_id":"a","property_name":"y"})")) ==
      "configured_indicators[1].column_id: column 'a' is defined twice");
  CHECK(
      CompileError(Config(
          "CommCareCase",
          R"({"type":"expression","column_id":"a","datatype":"string","expression":{"type":"named","name":"ghost"}})")) ==
      "configured_indicators[0].expression.name: no named expression 'ghost'");
  CHECK(CompileError(Config("CommCareCase", R"({"type":"raw","column_id":"a"})")) ==
        "configured_indicators[0]: needs property_name or property_path");
  CHECK(CompileError(Config("CommCareCase", R"({"type":"gauge","column_id":"a"})")) ==
        "configured_indicators[0].type: unknown indicator type 'gauge'");
  CHECK(
      CompileError(Config(
          "CommCareCase",
          R"({"type":"boolean","column_id":"b","filter":{"type":"boolean_expression","expression":1,"operator":"in","property_value":1}})")) ==
      "configured_indicators[0].filter.property_value: must be a list for operator in");
  CHECK(CompileError(
            Config("CommCareCase", R"({"type":"raw","column_id":"a b","property_name":"x"})"))
            .find("column id 'a b'") != std::string::npos);
}

TEST_CASE("UCR: filters and their operators") {
  auto passes = [](const std::string& filter) {
    return !RowsOf(
                Config("CommCareCase", R"({"type":"raw","column_id":"n","property_name":"name"})",
                       R"("configured_filter":)" + filter),
                kDoc)
                .empty();
  };
  auto be = [](const std::string& prop, const std::string& op, const std::string& value) {
    return fmt::format(
        R"({{"type":"boolean_expression","expression":{{"type":"property_name","property_name":"{}"}},"operator":"{}","property_value":{}}})",
        prop, op, value);
  };
  CHECK(passes(be("type", "eq", "\"patient\"")));
  CHECK(!passes(be("type", "eq", "\"household\"")));
  CHECK(passes(be("type", "not_eq", "\"household\"")));
  CHECK(passes(be("age", "eq", "\"42\"")));  // Python ==: see ucr_hq_test.cc for "42" vs 42
  CHECK(passes(be("type", "in", R"(["x","patient"])")));
  CHECK(!passes(be("type", "in", R"(["x"])")));
  CHECK(passes(be("tags", "any_in_multi", R"(["z","b"])")));
  CHECK(!passes(be("tags", "any_in_multi", R"(["z"])")));
  CHECK(passes(be("tags", "in_multi", R"("b")")));
  auto be_int = [](const std::string& prop, const std::string& op, const std::string& value) {
    return fmt::format(
        R"({{"type":"boolean_expression","expression":{{"type":"property_name","property_name":"{}","datatype":"integer"}},"operator":"{}","property_value":{}}})",
        prop, op, value);
  };
  CHECK(passes(be_int("age", "gt", "9")));  // numeric, not text ("42" < "9" as text)
  CHECK(passes(be_int("age", "gte", "42")));
  CHECK(!passes(be_int("age", "lt", "42")));
  CHECK(passes(be_int("age", "lte", "42")));
  CHECK(passes(be("dob", "lt", "\"1990-01-01\"")));
  CHECK(!passes(be("missing", "gt", "1")));  // null compares false
  CHECK(passes(R"({"type":"and","filters":[)" + be("type", "eq", "\"patient\"") + "," +
               be("age", "gt", "40") + "]}"));
  CHECK(!passes(R"({"type":"and","filters":[)" + be("type", "eq", "\"patient\"") + "," +
                be_int("age", "gt", "50") + "]}"));
  CHECK(passes(R"({"type":"or","filters":[)" + be("type", "eq", "\"x\"") + "," +
               be("age", "gt", "40") + "]}"));
  CHECK(passes(R"({"type":"not","filter":)" + be("type", "eq", "\"x\"") + "}"));
  CHECK(passes(R"({"type":"property_match","property_name":"colour","property_value":"red"})"));
  auto named =
      RowsOf(Config("CommCareCase", R"({"type":"raw","column_id":"n","property_name":"name"})",
                    R"("named_filters":{"adult":)" + be("age", "gte", "18") +
                        R"(},"configured_filter":{"type":"named","name":"adult"})"),
             kDoc);
  CHECK(named.size() == 1);
  // The domain and doc type are part of every filter.
  CHECK(RowsOf(Config("XFormInstance", R"({"type":"raw","column_id":"n","property_name":"name"})"),
               kDoc)
            .empty());
}

TEST_CASE("UCR: expressions") {
  CHECK(Value(R"({"type":"property_name","property_name":"name"})", kDoc) == "Ana Lima");
  CHECK(Value(R"({"type":"constant","constant":"k"})", kDoc) == "k");
  CHECK(Value(R"("literal")", kDoc) == "literal");
  CHECK(Value(R"({"type":"property_path","property_path":["nested","inner","x"]})", kDoc) ==
        "deep");
  CHECK(Value(R"({"type":"property_path","property_path":["nested","nope","x"]})", kDoc).is_null());
  CHECK(Value(R"({"type":"property_name","property_name":"age","datatype":"integer"})", kDoc,
              "integer") == 42);
  CHECK(Value(R"({"type":"identity"})", R"({"_id":"c1","domain":"demo","doc_type":"CommCareCase"})",
              "string")
            .as_string()
            .starts_with("{"));
  CHECK(
      Value(
          R"({"type":"conditional","test":{"type":"boolean_expression","expression":{"type":"property_name","property_name":"age"},"operator":"gt","property_value":40},"expression_if_true":"old","expression_if_false":"young"})",
          kDoc) == "old");
  CHECK(
      Value(
          R"({"type":"switch","switch_on":{"type":"property_name","property_name":"colour"},"cases":{"red":"R","blue":"B"},"default":"?"})",
          kDoc) == "R");
  CHECK(Value(R"({"type":"switch","switch_on":"green","cases":{"red":"R"},"default":"?"})", kDoc) ==
        "?");
  CHECK(
      Value(
          R"({"type":"array_index","array_expression":{"type":"property_name","property_name":"list"},"index_expression":1})",
          kDoc) == "q");
  CHECK(
      Value(
          R"({"type":"array_index","array_expression":{"type":"property_name","property_name":"list"},"index_expression":-1})",
          kDoc) == "r");
  CHECK(
      Value(
          R"({"type":"array_index","array_expression":{"type":"property_name","property_name":"list"},"index_expression":9})",
          kDoc)
          .is_null());
  CHECK(
      Value(
          R"({"type":"split_string","string_expression":{"type":"property_name","property_name":"tags"},"index_expression":2})",
          kDoc) == "c");
  CHECK(
      Value(
          R"({"type":"split_string","string_expression":"1-2-3","delimiter":"-","index_expression":0})",
          kDoc) == "1");
  CHECK(Value(R"({"type":"split_string","string_expression":"x y"})", kDoc, "array") ==
        R"(["x","y"])");
  CHECK(
      Value(
          R"({"type":"iterator","expressions":[{"type":"property_name","property_name":"age"},"7",{"type":"property_name","property_name":"missing"}],"test":{"type":"not","filter":{"type":"boolean_expression","expression":{"type":"identity"},"operator":"eq","property_value":null}}})",
          kDoc, "array") == R"(["42","7"])");
  CHECK(
      Value(
          R"({"type":"nested","argument_expression":{"type":"property_name","property_name":"nested"},"value_expression":{"type":"property_path","property_path":["inner","x"]}})",
          kDoc) == "deep");
  CHECK(
      Value(
          R"({"type":"nested","argument_expression":{"type":"dict","properties":{"a":{"type":"property_name","property_name":"colour"},"b":2}},"value_expression":{"type":"property_name","property_name":"a"}})",
          kDoc) == "red");
  CHECK(Value(R"({"type":"root_doc","expression":{"type":"property_name","property_name":"_id"}})",
              kDoc) == "c1");
  CHECK(
      Value(
          R"({"type":"add_days","date_expression":{"type":"property_name","property_name":"dob"},"count_expression":1})",
          kDoc, "date") == "1980-03-01");
  CHECK(Value(R"({"type":"add_months","date_expression":"2020-01-31","months_expression":1})", kDoc,
              "date") == "2020-02-29");
  CHECK(Value(R"({"type":"add_months","date_expression":"2020-03-15","months_expression":-3})",
              kDoc, "date") == "2019-12-15");
  CHECK(
      Value(
          R"({"type":"diff_days","from_date_expression":"2020-01-01","to_date_expression":{"type":"property_name","property_name":"when"}})",
          kDoc, "integer") == 30);
  CHECK(
      Value(
          R"({"type":"month_start_date","date_expression":{"type":"property_name","property_name":"when"}})",
          kDoc, "date") == "2020-01-01");
  CHECK(Value(R"({"type":"month_end_date","date_expression":"2021-02-10"})", kDoc, "date") ==
        "2021-02-28");
  CHECK(Value(R"({"type":"named","name":"n"})", kDoc, "string", nullptr,
              R"("named_expressions":{"n":{"type":"property_name","property_name":"colour"}})") ==
        "red");
  CHECK(Value(R"({"type":"property_name","property_name":"when"})", kDoc, "datetime") ==
        "2020-01-31T10:00:00.000000Z");
  CHECK(Value(R"({"type":"property_name","property_name":"name"})", kDoc, "integer").is_null());
  CHECK(Value(R"({"type":"property_name","property_name":"visits"})", kDoc, "decimal") == 3.0);
}

TEST_CASE("UCR: indicators and base items over a real form, related docs and ledgers") {
  auto e = OpenMemory();
  const std::string samples = COMMCARE_SAMPLES_DIR;
  REQUIRE(Submit(e.get(), cctest::ReadFile(samples + "/case-multicase__case_in_repeats.xml"))
              .http_status == 201);
  REQUIRE(Submit(e.get(), cctest::ReadFile(samples + "/receiverwrapper__case_ledger_form.xml"))
              .http_status == 201);
  std::string form_id;
  REQUIRE(e->ListCases({}, [&](const CaseRecord&) { return true; }).ok());
  REQUIRE(e->Database(0)
              ->ScanForms([&](const FormRecord& f) {
                if (f.xmlns.find("FB088320") != std::string::npos) form_id = f.form_id;
                return true;
              })
              .ok());
  REQUIRE(!form_id.empty());
  auto f = e->GetForm("demo", form_id);
  REQUIRE(f.ok());
  auto doc = ucr::FormDocument(*f, *e->GetFormXml("demo", form_id));
  REQUIRE(doc.ok());
  std::string config = Config(
      "XFormInstance",
      R"({"type":"expression","column_id":"sex","datatype":"integer","expression":{"type":"property_name","property_name":"sex"}},)"
      R"({"type":"expression","column_id":"iteration","datatype":"integer","expression":{"type":"base_iteration_number"}},)"
      R"({"type":"expression","column_id":"delivered","datatype":"date","expression":{"type":"root_doc","expression":{"type":"property_path","property_path":["form","delivery_date"]}}},)"
      R"({"type":"choice_list","column_id":"bf","choices":["1","2"],"property_name":"breastfeeding"},)"
      R"({"type":"boolean","column_id":"is_case","filter":{"type":"boolean_expression","expression":{"type":"property_path","property_path":["case","create","case_type_id"]},"operator":"eq","property_value":"newborn_hiv_child"}},)"
      R"({"type":"expression","column_id":"mother","datatype":"string","expression":{"type":"related_doc","related_doc_type":"CommCareCase","doc_id_expression":{"type":"property_path","property_path":["case","case_id"]},"value_expression":{"type":"property_name","property_name":"name"}}},)"
      // specs.py RelatedDocExpressionSpec: the related document is a new EvaluationContext
      // (doc, 0), so its iteration number is 0 whatever the row's.
      R"({"type":"expression","column_id":"related_iteration","datatype":"integer","expression":{"type":"related_doc","related_doc_type":"CommCareCase","doc_id_expression":{"type":"property_path","property_path":["case","case_id"]},"value_expression":{"type":"base_iteration_number"}}})",
      R"("base_item_expression":{"type":"property_path","property_path":["form","child_repeat"]})");
  auto ds = ucr::Compile(config);
  REQUIRE_MESSAGE(ds.ok(), ds.status().ToString());
  auto rows = (*ds)->Rows(json::value(*doc), e.get());
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 3);  // one per child in the repeat
  for (size_t i = 0; i < rows->size(); ++i) {
    const auto& r = (*rows)[i];
    CHECK(r[0] == json::value(form_id));
    CHECK(r[2] == static_cast<int64_t>(i));  // repeat_iteration
    CHECK(r[4] == static_cast<int64_t>(i));  // base_iteration_number
    CHECK(r[5] == "2011-09-19");
    if (i == 1) {  // the second child has no case block
      CHECK(r[8] == 0);
      CHECK(r[9].is_null());
      CHECK(r[10].is_null());
    } else {
      CHECK(r[8] == 1);      // is_case
      CHECK(r[9] == "ADG");  // related_doc: the case the repeat created
      CHECK(r[10] == 0);     // its iteration, not the row's (2 for the third child)
    }
  }
  // ledger_balances over the ledger sample's case.
  std::string ledger_case;
  REQUIRE(e->ListCases({}, [&](const CaseRecord& c) {
             auto l = e->GetLedger("demo", c.case_id);
             if (l.ok() && !l->empty()) ledger_case = c.case_id;
             return true;
           }).ok());
  REQUIRE(!ledger_case.empty());
  auto ledger = *e->GetLedger("demo", ledger_case);
  const auto& lv = ledger[0];
  auto c = e->GetCase("demo", ledger_case);
  auto lrows = RowsOf(
      Config(
          "CommCareCase",
          fmt::format(
              R"({{"type":"ledger_balances","column_id":"soh","ledger_section":"{}","product_codes":["{}","none"],"case_id_expression":{{"type":"property_name","property_name":"_id"}}}})",
              lv.section_id, lv.entry_id)),
      json::serialize(ucr::CaseDocument(*c)), e.get());
  REQUIRE(lrows.size() == 1);
  CHECK(lrows[0][2] == static_cast<int64_t>(lv.balance));
  CHECK(lrows[0][3] == 0);
  // indicators/__init__.py DueListDateIndicator: the same spec, each balance as 1970-01-01 plus
  // that many days; no ledger is the epoch.
  auto drows = RowsOf(
      Config(
          "CommCareCase",
          fmt::format(
              R"({{"type":"due_list_date","column_id":"due","ledger_section":"{}","product_codes":["{}","none"],"case_id_expression":{{"type":"property_name","property_name":"_id"}}}})",
              lv.section_id, lv.entry_id)),
      json::serialize(ucr::CaseDocument(*c)), e.get());
  REQUIRE(drows.size() == 1);
  const std::chrono::year_month_day due{
      std::chrono::sys_days{std::chrono::year{1970} / std::chrono::January / 1} +
      std::chrono::days{static_cast<int64_t>(lv.balance)}};
  CHECK(drows[0][2].as_string() == fmt::format("{:04}-{:02}-{:02}", int(due.year()),
                                               unsigned(due.month()), unsigned(due.day())));
  CHECK(drows[0][3].as_string() == "1970-01-01");
  auto due_ds = ucr::Compile(Config(
      "CommCareCase",
      R"({"type":"due_list_date","column_id":"due","ledger_section":"s","product_codes":["p"],"case_id_expression":"x"})"));
  REQUIRE(due_ds.ok());
  CHECK((*due_ds)->columns.back().id == "due_p");
  CHECK((*due_ds)->columns.back().datatype == "date");
}

TEST_CASE("UCR pillow: delete-and-reinsert, filtered-out and archived documents, rebuild") {
  for (const std::string& dir : cctest::PillowStores("ucr")) {
    CAPTURE(dir);
    auto e = OpenMemory();
    PillowHostOptions o;
    o.dir = dir;
    auto h = PillowHost::Open(e.get(), o);
    REQUIRE(h.ok());
    auto& host = *h;
    for (int i = 0; i < 6; ++i)
      REQUIRE(Submit(e.get(),
                     CaseForm(fmt::format("f{}", i), fmt::format("c{}", i),
                              fmt::format(
                                  "<create><case_type>patient</case_type><case_name>P{}</case_name>"
                                  "<owner_id>u1</owner_id></create><update><age>{}</age></update>",
                                  i, 10 * i)))
                  .http_status == 201);
    const std::string cases =
        R"({"domain":"demo","table_id":"adults","referenced_doc_type":"CommCareCase",
    "configured_filter":{"type":"boolean_expression","expression":{"type":"property_name","property_name":"age","datatype":"integer"},"operator":"gte","property_value":18},
    "configured_indicators":[{"type":"raw","column_id":"name","property_name":"name"},
      {"type":"expression","column_id":"age","datatype":"integer","expression":{"type":"property_name","property_name":"age"}}]})";
    const std::string forms =
        R"({"domain":"demo","table_id":"forms","referenced_doc_type":"XFormInstance",
    "configured_indicators":[{"type":"expression","column_id":"q","datatype":"integer","expression":{"type":"property_path","property_path":["form","q"]}}]})";
    auto loaded = host->UcrLoad(cases);
    REQUIRE_MESSAGE(loaded.ok(), loaded.status().ToString());
    CHECK(*loaded == 4);  // ages 20..50 (rows built from the primary store at load)
    CHECK(*host->UcrLoad(forms) == 6);
    CHECK(host->UcrLoad("{}").status().message() == "domain: is required");
    REQUIRE(e->RelayChanges().ok());
    REQUIRE(host->RunUntilCaughtUp().ok());
    CHECK(UcrRows(dir, "demo", "adults")->size() == 4);  // no duplicates after the backfill
    // An update re-inserts; one that fails the filter deletes.
    REQUIRE(Submit(e.get(), CaseForm("u3", "c3", "<update><age>33</age></update>")).http_status ==
            201);
    REQUIRE(Submit(e.get(), CaseForm("u4", "c4", "<update><age>4</age></update>")).http_status ==
            201);
    REQUIRE(e->ArchiveForm("demo", "f5").ok());
    REQUIRE(e->RelayChanges().ok());
    REQUIRE(host->RunUntilCaughtUp().ok());
    auto rows = UcrRows(dir, "demo", "adults");
    REQUIRE(rows.ok());
    std::map<std::string, int64_t> age;
    for (const auto& r : *rows) {
      auto v = json::parse(r);
      age[std::string(v.at("doc_id").as_string())] = v.at("age").as_int64();
    }
    // c5 lost its create with the archive (the case is gone or has no age); c4 is 4 now.
    CHECK(age.count("c2"));
    CHECK(age["c3"] == 33);
    CHECK(!age.count("c4"));
    CHECK(!age.count("c5"));
    auto frows = UcrRows(dir, "demo", "forms");
    std::set<std::string> fids;
    for (const auto& r : *frows) fids.insert(std::string(json::parse(r).at("doc_id").as_string()));
    CHECK(!fids.count("f5"));  // archived: no longer an XFormInstance
    CHECK(fids.count("u3"));
    // A rebuild from the primary store gives the same rows.
    std::vector<std::string> before = *UcrRows(dir, "demo", "adults");
    CHECK(*host->UcrRebuild("demo", "adults") == static_cast<int64_t>(before.size()));
    std::vector<std::string> after = *UcrRows(dir, "demo", "adults");
    auto strip = [](std::vector<std::string> v) {
      std::set<std::string> out;
      for (auto& s : v) {
        auto j = json::parse(s);
        j.as_object().erase("inserted_at");
        out.insert(json::serialize(j));
      }
      return out;
    };
    CHECK(strip(before) == strip(after));
    CHECK(host->UcrRebuild("demo", "nope").status().IsNotFound());
    CHECK(UcrRows(dir, "demo", "nope").status().IsNotFound());
  }
}

TEST_CASE("UCR pillow: a document whose row does not fit goes to the retry queue") {
  for (const std::string& dir : cctest::PillowStores("ucr")) {
    CAPTURE(dir);
    auto e = OpenMemory();
    PillowHostOptions o;
    o.dir = dir;
    o.only = {"ucr"};
    auto host = PillowHost::Open(e.get(), o);
    REQUIRE(host.ok());
    REQUIRE(
        (*host)
            ->UcrLoad(R"({"domain":"demo","table_id":"strict","referenced_doc_type":"CommCareCase",
      "configured_indicators":[{"type":"expression","column_id":"age","datatype":"integer","is_nullable":false,
      "expression":{"type":"property_name","property_name":"age"}}]})")
            .ok());
    REQUIRE(Submit(e.get(),
                   CaseForm("f1", "c1",
                            "<create><case_type>p</case_type><case_name>x</case_name><owner_id>u</"
                            "owner_id></create><update><age>5</age></update>"))
                .http_status == 201);
    REQUIRE(Submit(e.get(),
                   CaseForm("f2", "c2",
                            "<create><case_type>p</case_type><case_name>y</case_name><owner_id>u</"
                            "owner_id></create><update><age>old</age></update>"))
                .http_status == 201);
    REQUIRE(e->RelayChanges().ok());
    REQUIRE((*host)->RunUntilCaughtUp().ok());
    CHECK(UcrRows(dir, "demo", "strict")->size() == 1);
    auto rs = (*host)->Retries("ucr");
    REQUIRE(rs.ok());
    REQUIRE(rs->size() == 1);
    CHECK((*rs)[0].doc_id == "c2");
    CHECK((*rs)[0].error.find("does not fit") != std::string::npos);
  }
}
