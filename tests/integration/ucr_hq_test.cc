// UCR as CommCare HQ evaluates it: each case cites the HQ file and function whose behaviour it
// checks (corehq/apps/userreports/...), so a difference from HQ shows up as a failure here.
#include <boost/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine_helpers.h"
#include "pillows/ucr.h"
#include "ucr_helpers.h"

using namespace commcare;
namespace json = boost::json;
namespace ucr = commcare::pillows::ucr;
using cctest::ucr_test::CompileError;
using cctest::ucr_test::Config;
using cctest::ucr_test::kDoc;
using cctest::ucr_test::RowsOf;
using cctest::ucr_test::Value;

namespace {

// "T" or "F": a conditional on one boolean_expression over a constant input.
std::string Cond(const std::string& input, const std::string& op, const std::string& reference) {
  return Value(
             fmt::format(
                 R"({{"type":"conditional","test":{{"type":"boolean_expression","expression":{},"operator":"{}","property_value":{}}},"expression_if_true":"T","expression_if_false":"F"}})",
                 input, op, reference),
             kDoc)
      .as_string()
      .c_str();
}

bool Passes(const std::string& filter, const std::string& doc = kDoc) {
  return !RowsOf(Config("CommCareCase", R"({"type":"raw","column_id":"n","property_name":"name"})",
                        R"("configured_filter":)" + filter),
                 doc)
              .empty();
}

}  // namespace

// operators.py equal/not_equal are Python's ==; less_than etc. are Python's <, and get_operator
// turns the TypeError of str against int into False; greater_than(_equal) answer True for a str
// input against an int reference and False the other way round.
TEST_CASE("UCR HQ: operators compare as Python does") {
  CHECK(Cond(R"("21")", "eq", "21") == "F");
  CHECK(Cond(R"("21")", "not_eq", "21") == "T");
  CHECK(Cond("21", "eq", "21.0") == "T");
  CHECK(Cond("true", "eq", "1") == "T");  // bool is an int in Python
  CHECK(Cond(R"("3")", "lt", "5") == "F");
  CHECK(Cond(R"("3")", "lte", "5") == "F");
  CHECK(Cond(R"("abc")", "gt", "5") == "T");
  CHECK(Cond(R"("abc")", "gte", "5") == "T");
  CHECK(Cond("5", "gt", R"("abc")") == "F");
  CHECK(Cond(R"("abc")", "gt", "5.5") == "F");  // a float reference is a TypeError
  CHECK(Cond("null", "lt", "5") == "F");
  CHECK(Cond(R"("b")", "gt", R"("a")") == "T");
  CHECK(Cond("[1,2]", "lt", "[1,3]") == "T");
  CHECK(Cond(R"({"type":"constant","constant":null})", "eq", "null") == "T");
  // in_: list membership by ==, a substring of a string.
  CHECK(Cond(R"("1")", "in", "[1,2]") == "F");
  CHECK(Cond("1", "in", "[1,2]") == "T");
  CHECK(Cond(R"("ell")", "in", R"("hello")") == "T");
}

// operators.py in_multiselect: `reference in (input or '').split(' ')` with ONE reference;
// any_in_multiselect takes a list; regex_search is re.search on a string input.
TEST_CASE("UCR HQ: in_multi any_in_multi and regex") {
  const std::string doc =
      R"({"_id":"c1","domain":"demo","doc_type":"CommCareCase","name":"n","colors":"blue red"})";
  auto be = [](const std::string& op, const std::string& value) {
    return fmt::format(
        R"({{"type":"boolean_expression","expression":{{"type":"property_name","property_name":"colors"}},"operator":"{}","property_value":{}}})",
        op, value);
  };
  CHECK(Passes(be("in_multi", R"("red")"), doc));
  CHECK(!Passes(be("in_multi", R"("re")"), doc));
  CHECK(Passes(be("any_in_multi", R"(["red","x"])"), doc));
  CHECK(!Passes(be("any_in_multi", R"(["x","y"])"), doc));
  CHECK(Passes(be("regex", R"("^bl")"), doc));
  CHECK(!Passes(be("regex", R"("^red")"), doc));
  CHECK(Cond("5", "regex", R"("5")") == "F");       // re.search on an int: TypeError, False
  CHECK(Cond("null", "in_multi", R"("")") == "T");  // (None or '').split(' ') == ['']
  CHECK(CompileError(Config("CommCareCase",
                            R"({"type":"raw","column_id":"n","property_name":"name"})",
                            R"("configured_filter":)" + be("regex", R"("(")")))
            .starts_with("configured_filter.property_value: invalid regular expression"));
  // A list for in_multi never matches in HQ (a list is not one of the words): refused here.
  CHECK(CompileError(Config("CommCareCase",
                            R"({"type":"raw","column_id":"n","property_name":"name"})",
                            R"("configured_filter":)" + be("in_multi", R"(["red"])")))
            .find("for a list use any_in_multi") != std::string::npos);
}

// filters/factory.py _build_boolean_expression_filter: property_value goes through
// ExpressionFactory.from_spec, so it may be an expression evaluated per item.
TEST_CASE("UCR HQ: property_value may be an expression") {
  CHECK(Passes(
      R"({"type":"boolean_expression","expression":{"type":"property_name","property_name":"colour"},"operator":"eq","property_value":{"type":"property_name","property_name":"colour"}})"));
  CHECK(Passes(
      R"({"type":"boolean_expression","expression":{"type":"property_name","property_name":"nope"},"operator":"eq","property_value":{"type":"property_name","property_name":"nope2"}})"));
  CHECK(!Passes(
      R"({"type":"boolean_expression","expression":{"type":"property_name","property_name":"colour"},"operator":"eq","property_value":{"type":"property_name","property_name":"name"}})"));
}

// specs.py PropertyNameGetterSpec: property_name is a DefaultProperty compiled as an expression,
// and the getter is item.get(<its value>): a property named by another property, nothing for a
// value that is not a string.
TEST_CASE("UCR HQ: property_name may be an expression") {
  const std::string doc =
      R"({"_id":"c1","domain":"demo","doc_type":"CommCareCase","pick":"colour","colour":"red"})";
  CHECK(
      Value(
          R"({"type":"property_name","property_name":{"type":"property_name","property_name":"pick"}})",
          doc) == json::value("red"));
  CHECK(Value(R"({"type":"property_name","property_name":{"type":"constant","constant":"colour"}})",
              doc) == json::value("red"));
  CHECK(Value(R"({"type":"property_name","property_name":{"type":"constant","constant":5}})", doc)
            .is_null());
  CHECK(
      CompileError(
          Config(
              "CommCareCase",
              R"({"type":"expression","column_id":"x","datatype":"string","expression":{"type":"property_name","property_name":{"type":"nope"}}})"))
          .find("property_name") != std::string::npos);
}

// models.py DataSourceConfiguration._get_filter: `if self.configured_filter` - an empty dict is
// no filter (docs/ucr.rst's repeat sample uses "configured_filter": {}).
TEST_CASE("UCR HQ: an empty configured_filter is no filter") { CHECK(Passes("{}")); }

// specs.py CoalesceExpressionSpec (None or '' gives the default), ConcatenateStrings (the
// separator between the true values), list_specs.py filter/map/reduce/sort_items and flatten,
// utils.py aggregate_items.
TEST_CASE("UCR HQ: coalesce concatenate_strings and the list expressions") {
  const std::string doc =
      R"({"_id":"c1","domain":"demo","doc_type":"CommCareCase","name":"Ana","empty":"",)"
      R"("kids":[{"n":"b","age":3},{"n":"a","age":9},{"n":"c","age":null}],"nums":[1,2,3],)"
      R"("nested":[[1,2],[3]],"mixed":[1,"x"]})";
  auto prop = [](const char* p) {
    return fmt::format(R"({{"type":"property_name","property_name":"{}"}})", p);
  };
  CHECK(
      Value(R"({"type":"coalesce","expression":)" + prop("nope") + R"(,"default_expression":"d"})",
            doc) == "d");
  CHECK(
      Value(R"({"type":"coalesce","expression":)" + prop("empty") + R"(,"default_expression":"d"})",
            doc) == "d");
  CHECK(
      Value(R"({"type":"coalesce","expression":)" + prop("name") + R"(,"default_expression":"d"})",
            doc) == "Ana");
  CHECK(Value(R"({"type":"concatenate_strings","expressions":[)" + prop("name") + "," +
                  prop("empty") + "," + prop("nope") + R"(,"x"],"separator":"-"})",
              doc) == "Ana-x");
  std::string kids = prop("kids");
  CHECK(
      Value(
          R"({"type":"reduce_items","aggregation_fn":"count","items_expression":{"type":"filter_items","items_expression":)" +
              kids + R"(,"filter_expression":{"type":"boolean_expression","expression":)" +
              prop("age") + R"(,"operator":"gt","property_value":4}}})",
          doc, "integer") == 1);
  CHECK(Value(R"({"type":"map_items","items_expression":)" + kids + R"(,"map_expression":)" +
                  prop("n") + "}",
              doc, "array") == R"(["b","a","c"])");
  // sort_items: nulls first ascending, last descending; a TypeError between keys gives [].
  CHECK(Value(R"({"type":"map_items","items_expression":{"type":"sort_items","items_expression":)" +
                  kids + R"(,"sort_expression":)" + prop("age") + R"(},"map_expression":)" +
                  prop("n") + "}",
              doc, "array") == R"(["c","b","a"])");
  CHECK(
      Value(
          R"({"type":"map_items","items_expression":{"type":"sort_items","order":"DESC","items_expression":)" +
              kids + R"(,"sort_expression":)" + prop("age") + R"(},"map_expression":)" + prop("n") +
              "}",
          doc, "array") == R"(["a","b","c"])");
  CHECK(Value(R"({"type":"sort_items","items_expression":)" + prop("mixed") +
                  R"(,"sort_expression":{"type":"identity"}})",
              doc, "array") == "[]");
  const std::vector<std::pair<const char*, const char*>> aggregations = {
      {"sum", "6"},       {"min", "1"},   {"max", "3"},   {"first_item", "1"},
      {"last_item", "3"}, {"count", "3"}, {"join", "123"}};
  for (auto [fn, want] : aggregations)
    CHECK(Value(fmt::format(
                    R"({{"type":"reduce_items","aggregation_fn":"{}","items_expression":{}}})", fn,
                    prop("nums")),
                doc) == want);
  CHECK(Value(R"({"type":"reduce_items","aggregation_fn":"sum","items_expression":)" +
                  prop("mixed") + "}",
              doc)
            .is_null());  // sum([1, "x"]) is a TypeError
  CHECK(Value(R"({"type":"flatten","items_expression":)" + prop("nested") + "}", doc, "array") ==
        "[1,2,3]");
  CHECK(Value(R"({"type":"flatten","items_expression":)" + prop("nums") + "}", doc, "array") ==
        "[]");  // not every item is a list
  CHECK(
      CompileError(
          Config(
              "CommCareCase",
              R"({"type":"expression","column_id":"v","datatype":"string","expression":{"type":"reduce_items","aggregation_fn":"avg","items_expression":[]}})"))
          .starts_with("configured_indicators[0].expression.aggregation_fn: must be one of"));
}

// date_specs.py AddHoursExpressionSpec and UTCNow.
TEST_CASE("UCR HQ: add_hours and utcnow") {
  CHECK(
      Value(
          R"({"type":"add_hours","date_expression":"2024-03-02T23:30:00+01:00","count_expression":2})",
          kDoc, "datetime") == "2024-03-03T00:30:00.000000Z");
  CHECK(Value(R"({"type":"add_hours","date_expression":"nope","count_expression":2})", kDoc,
              "datetime")
            .is_null());
  // The epoch is a date like any other (it was once "", the "no time" of the engine's clock).
  CHECK(Value(R"({"type":"add_days","date_expression":"1970-01-02","count_expression":-1})", kDoc,
              "date") == "1970-01-01");
  CHECK(Value(R"({"type":"month_start_date","date_expression":"1970-01-20"})", kDoc, "date") ==
        "1970-01-01");
  std::string now = Value(R"({"type":"utcnow"})", kDoc, "datetime").as_string().c_str();
  CHECK(now.size() == 27);
  CHECK(now.ends_with("Z"));
  CHECK(now.substr(0, 4) >= "2024");
}

// specs.py EvalExpressionSpec over evaluator/main.py eval_statements: Python arithmetic, no
// powers, None for a TypeError, a ZeroDivisionError or an unknown name; without
// context_variables the item's own properties are the names.
TEST_CASE("UCR HQ: evaluator") {
  auto ev = [](const std::string& statement, const std::string& vars = R"({"a":1,"b":20})",
               const std::string& datatype = "string") {
    return Value(fmt::format(R"({{"type":"evaluator","statement":"{}","context_variables":{}}})",
                             statement, vars),
                 kDoc, datatype);
  };
  CHECK(ev("a + b", R"({"a":1,"b":20})", "integer") == 21);
  CHECK(
      ev("a + b - c + 6",
         R"({"a":1,"b":20,"c":{"type":"property_name","property_name":"visits","datatype":"integer"}})",
         "integer") == 24);
  CHECK(ev("b / 8", R"({"b":20})", "decimal") == 2.5);
  CHECK(ev("-7 // 2", "{}", "integer") == -4);
  CHECK(ev("-7 % 3", "{}", "integer") == 2);
  CHECK(ev("'big' if b > 10 else 'small'") == "big");
  CHECK(ev("a == 1 and b < 30", R"({"a":1,"b":20})", "boolean") == 1);
  CHECK(ev("a / 0").is_null());
  CHECK(ev("a + 'x'").is_null());
  CHECK(ev("ghost + 1").is_null());
  CHECK(ev("int('42') + round(2.5) + len", R"({"len":1})", "integer") == 45);
  CHECK(ev("x['k'] + x.k", R"({"x":{"type":"dict","properties":{"k":"v"}}})") == "vv");
  CHECK(Value(R"({"type":"evaluator","statement":"int(age) + 1"})", kDoc, "integer") == 43);
  CHECK(
      CompileError(
          Config(
              "CommCareCase",
              R"({"type":"expression","column_id":"v","datatype":"string","expression":{"type":"evaluator","statement":"a ** 2","context_variables":{"a":1}}})"))
          .find("'**' is not allowed") != std::string::npos);
  CHECK(
      CompileError(
          Config(
              "CommCareCase",
              R"j({"type":"expression","column_id":"v","datatype":"string","expression":{"type":"evaluator","statement":"open('x')","context_variables":{}}})j"))
          .find("function 'open' is not available") != std::string::npos);
  // Nesting and the expression tree's height are bounded (fuzz/ucr found 8 KB of
  // "not not ..." overflowing the parser's stack): ordinary statements parse, deeper ones are
  // refused with the reason.
  auto nested = [](const std::string& open, const std::string& close, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += open;
    s += "a";
    for (int i = 0; i < n; ++i) s += close;
    return s;
  };
  CHECK(ev(nested("(", ")", 60), R"({"a":7})", "integer") == 7);
  CHECK(ev(nested("- ", "", 60), R"({"a":7})", "integer") == 7);
  CHECK(ev(nested("", "+a", 150), R"({"a":1})", "integer") == 151);
  auto refused = [](const std::string& statement) {
    return CompileError(Config(
        "CommCareCase",
        R"({"type":"expression","column_id":"v","datatype":"string","expression":{"type":"evaluator","statement":")" +
            statement + R"(","context_variables":{"a":1,"x":{"type":"dict","properties":{}}}}})"));
  };
  for (const auto& deep :
       {nested("(", ")", 100000), nested("not ", "", 100000), nested("-", "", 100000),
        nested("x[", "]", 100000), nested("int(", ")", 100000)})
    CHECK(refused(deep).find("nests more than 200 levels deep") != std::string::npos);
  // Chains, alone or carried out of parentheses into an outer chain, count in the tree.
  std::string carried = "a";
  for (int j = 0; j < 10; ++j) carried = "(" + nested("", "+a", 150).replace(0, 1, carried) + ")";
  for (const auto& tall :
       {nested("", "+a", 100000), nested("", "[0]", 100000), nested("", ".k", 100000), carried})
    CHECK(refused(tall).find("more than 500 levels deep") != std::string::npos);
}

// indicators/factory.py: count is a boolean indicator that is always 1; indicators/specs.py
// ExpressionIndicatorSpec.parsed_expression applies transforms/specs.py's transform first.
TEST_CASE("UCR HQ: the count indicator and indicator transforms") {
  auto rows = RowsOf(
      Config(
          "CommCareCase",
          R"({"type":"count","column_id":"count"},)"
          R"({"type":"expression","column_id":"t","datatype":"string","expression":"lmp","transform":{"type":"translation","translations":{"lmp":"Last Menstrual Period"}}},)"
          R"({"type":"expression","column_id":"l","datatype":"string","expression":"a b","transform":{"type":"multiple_value_string_translation","delimiter":" ","translations":{"a":{"en":"A","fr":"Ah"}}}},)"
          R"({"type":"expression","column_id":"n","datatype":"string","expression":"3.14159","transform":{"type":"number_format","format_string":"{0:.2f}"}},)"
          R"({"type":"expression","column_id":"d","datatype":"string","expression":"2024-03-02","transform":{"type":"date_format","format":"%d/%m/%Y"}},)"
          R"({"type":"expression","column_id":"m","datatype":"string","expression":3,"transform":{"type":"custom","custom_type":"month_display"}},)"
          R"({"type":"expression","column_id":"z","datatype":"string","expression":"x","transform":{}})"),
      kDoc);
  REQUIRE(rows.size() == 1);
  const auto& r = rows[0];
  CHECK(r[2] == 1);
  CHECK(r[3] == "Last Menstrual Period");
  CHECK(r[4] == "A b");
  CHECK(r[5] == "3.14");
  CHECK(r[6] == "02/03/2024");
  CHECK(r[7] == "March");
  CHECK(r[8] == "x");
  CHECK(
      CompileError(
          Config(
              "CommCareCase",
              R"({"type":"expression","column_id":"v","datatype":"string","expression":1,"transform":{"type":"custom","custom_type":"ethiopian_date"}})"))
          .starts_with("configured_indicators[0].transform.custom_type: custom transform "
                       "'ethiopian_date' is not supported"));
}

// transforms/custom/numeric.py get_short_decimal_display (HQ's newest: whole numbers as ints,
// else round(x, 2); what `% 1` refuses, a string, is kept).
TEST_CASE("UCR HQ: the short_decimal_display transform") {
  auto sd = [](const std::string& input, const std::string& datatype = "decimal") {
    auto rows = RowsOf(
        Config(
            "CommCareCase",
            fmt::format(
                R"({{"type":"expression","column_id":"v","datatype":"{}","expression":{},"transform":{{"type":"custom","custom_type":"short_decimal_display"}}}})",
                datatype, input)),
        kDoc);
    REQUIRE(rows.size() == 1);
    return rows[0].back();
  };
  CHECK(sd("3.0", "string") == "3");
  CHECK(sd("2.675") == 2.67);  // the double below 2.675: Python rounds it down too
  CHECK(sd("0.125") == 0.12);  // an exact tie goes to even
  CHECK(sd("1.23456") == 1.23);
  CHECK(sd("-4.5", "string") == "-4.5");
  CHECK(sd("7", "integer") == 7);
  CHECK(sd(R"("5.678")", "string") == "5.678");
  CHECK(sd("null", "string").is_null());
}

// expressions/date_specs.py (ethiopian_date_to_gregorian_date, gregorian_date_to_ethiopian_date)
// and transforms/custom/date.py, over ethiopian-date-converter 0.1.5: the pairs of HQ's
// test_date_expressions.py and test_transforms.py, and the converter's own edges.
TEST_CASE("UCR HQ: Ethiopian dates, expressions and transforms") {
  auto e2g = [](const std::string& input) {
    return Value(
        fmt::format(R"({{"type":"ethiopian_date_to_gregorian_date","date_expression":{}}})", input),
        kDoc);
  };
  auto g2e = [](const std::string& input) {
    return Value(
        fmt::format(R"({{"type":"gregorian_date_to_ethiopian_date","date_expression":{}}})", input),
        kDoc);
  };
  CHECK(e2g(R"("2015-01-20")") == "2022-09-30");
  CHECK(e2g(R"("2014-13-05")") == "2022-09-10");  // Pagume: no Gregorian date, a good Ethiopian
  CHECK(e2g(R"("2009-09-11 ")") == "2017-05-19");
  CHECK(e2g(R"("2009-13-5 ")") == "2017-09-10");
  CHECK(e2g(R"("2003-04-11")") == "2010-12-20");
  CHECK(e2g(R"("2012-04-22")") == "2020-01-01");
  CHECK(e2g(R"("2011-13-06")") == "2019-09-11");
  CHECK(e2g(R"("2009-13-06")") == "2017-09-11");  // no range check: rolls over, as HQ's
  // A date-time reads as its date: HQ converts a date object's Y-M-D, and dates here are strings.
  CHECK(e2g(R"("2015-01-20T08:00:00Z")") == "2022-09-30");
  CHECK(e2g(R"("2009-14-01")") == "");
  CHECK(e2g(R"("2009_13_11")") == "");
  CHECK(e2g(R"("abc-13-11")") == "");
  CHECK(e2g(R"("2009-00-11")") == "");
  CHECK(e2g("null") == "");
  CHECK(e2g("20091311") == "");
  CHECK(g2e(R"("2022-09-30")") == "2015-01-20");
  CHECK(g2e(R"("2017-5-19")") == "2009-09-11");
  CHECK(g2e(R"("2017-09-10")") == "2009-13-05");
  CHECK(g2e(R"("2021-10-11")") == "2014-02-01");
  CHECK(g2e(R"("2021-10-9")") == "2014-01-29");
  CHECK(g2e(R"("2024-09-11")") == "2017-01-01");
  CHECK(g2e(R"("2023-09-11")") == "2015-13-06");
  CHECK(g2e(R"("2023-09-12")") == "2016-01-01");
  CHECK(g2e(R"("2020-02-29")") == "2012-06-21");
  CHECK(g2e(R"("2010-12-22")") == "2003-04-13");
  CHECK(g2e(R"("2019-09-12")") == "2012-01-01");
  CHECK(g2e(R"("2017-02-30")") == "2009-06-23");
  CHECK(g2e(R"("2017-13-01")") == "2010-04-23");  // month 13: the library's table still has it
  CHECK(g2e(R"("2017-14-01")") == "");            // month 14: its IndexError
  CHECK(g2e(R"("2009-09--5")") == "");            // four parts to split('-')
  CHECK(g2e(R"({"type":"property_name","property_name":"ghost"})") == "");
  auto rows = RowsOf(
      Config(
          "CommCareCase",
          R"({"type":"expression","column_id":"g","datatype":"date","expression":"2009-09-11","transform":{"type":"custom","custom_type":"ethiopian_date_to_gregorian_date"}},)"
          R"({"type":"expression","column_id":"e","datatype":"string","expression":"2017-05-19","transform":{"type":"custom","custom_type":"gregorian_date_to_ethiopian_date"}},)"
          R"({"type":"expression","column_id":"x","datatype":"string","expression":"nope","transform":{"type":"custom","custom_type":"gregorian_date_to_ethiopian_date"}})"),
      kDoc);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][2] == "2017-05-19");
  CHECK(rows[0][3] == "2009-09-11");
  CHECK(rows[0][4] == "");
}

// specs.py SwitchExpressionSpec (`switch_value == c`, string keys), ArrayIndexExpressionSpec and
// SplitStringExpressionSpec (the index must be an int), ConstantGetterSpec.wrap ("constant" is
// required).
TEST_CASE("UCR HQ: switch array_index split_string and constant are strict") {
  CHECK(Value(R"({"type":"switch","switch_on":1,"cases":{"1":"one"},"default":"d"})", kDoc) == "d");
  CHECK(Value(R"({"type":"switch","switch_on":"1","cases":{"1":"one"},"default":"d"})", kDoc) ==
        "one");
  CHECK(Value(R"({"type":"array_index","array_expression":["a","b"],"index_expression":"1"})", kDoc)
            .is_null());
  CHECK(Value(R"({"type":"array_index","array_expression":["a","b"],"index_expression":1})",
              kDoc) == "b");
  CHECK(Value(R"({"type":"split_string","string_expression":"a b","index_expression":"1"})", kDoc)
            .is_null());
  CHECK(
      CompileError(Config(
          "CommCareCase",
          R"({"type":"expression","column_id":"v","datatype":"string","expression":{"type":"constant"}})")) ==
      "configured_indicators[0].expression.constant: is required");
}

// models.py DataSourceConfiguration.is_deactivated: a deactivated data source writes no rows.
// models.py DataSourceConfiguration.validations: documents failing one are kept out of HQ's
// table; not evaluated here, so a data source with validations is refused by name.
TEST_CASE("UCR HQ: validations are refused by name, an empty list is accepted") {
  const char* ind = R"({"type":"raw","column_id":"n","property_name":"name"})";
  CHECK(CompileError(Config("CommCareCase", ind,
                            R"("validations":[{"name":"v","error_message":"x","expression":)"
                            R"({"type":"boolean_expression","expression":1,"operator":"eq",)"
                            R"("property_value":1}}])"))
            .find("validations") != std::string::npos);
  CHECK(ucr::Compile(Config("CommCareCase", ind, R"("validations":[])")).ok());
}

TEST_CASE("UCR HQ: a deactivated data source writes no rows") {
  CHECK(RowsOf(Config("CommCareCase", R"({"type":"count","column_id":"c"})",
                      R"("is_deactivated":true)"),
               kDoc)
            .empty());
  CHECK(RowsOf(Config("CommCareCase", R"({"type":"count","column_id":"c"})",
                      R"("is_deactivated":false)"),
               kDoc)
            .size() == 1);
}

// The documents as HQ serializes them: form JSON date-times in UTC (form_processor/utils/xform.py
// adjust_datetimes), the form's server_modified_on and build_id (XFormInstanceSQLSerializer), the
// case's xform_ids, modified_by and each index's case_id (CommCareCaseSQLSerializer), and
// extension_expressions.py indexed_case over them.
TEST_CASE("UCR HQ: documents shaped as HQ's and indexed_case") {
  auto e = cctest::OpenMemory();
  std::string form = cctest::CaseForm(
      "f1", "mother",
      R"(<create><case_type>mother</case_type><case_name>Maria</case_name></create>)");
  form.replace(form.find("<timeEnd>2020-01-01T00:01:00Z"), 29,
               "<timeEnd>2024-03-02T10:21:48.715+01:00");
  REQUIRE(cctest::Submit(e.get(), form).http_status == 201);
  REQUIRE(
      cctest::Submit(
          e.get(),
          cctest::CaseForm(
              "f2", "child",
              R"(<create><case_type>child</case_type><case_name>Bia</case_name></create><index><parent case_type="mother">mother</parent></index>)"))
          .http_status == 201);
  REQUIRE(cctest::Submit(e.get(), cctest::CaseForm("f3", "child", R"(<update><w>1</w></update>)"))
              .http_status == 201);
  auto f = e->GetForm("demo", "f1");
  REQUIRE(f.ok());
  auto fdoc = ucr::FormDocument(*f, *e->GetFormXml("demo", "f1"));
  REQUIRE(fdoc.ok());
  json::value fd(*fdoc);
  CHECK(fd.at("form").at("meta").at("timeEnd") == "2024-03-02T09:21:48.715000Z");
  CHECK(fd.at("form").at("meta").at("timeStart") == "2020-01-01T00:00:00.000000Z");
  CHECK(fd.at("server_modified_on").is_string());
  CHECK(fd.as_object().contains("build_id"));

  auto child = e->GetCase("demo", "child");
  REQUIRE(child.ok());
  std::string cdoc = json::serialize(ucr::CaseDocument(*child));
  auto rows = RowsOf(
      Config(
          "CommCareCase",
          R"({"type":"expression","column_id":"forms","datatype":"array","expression":{"type":"property_name","property_name":"xform_ids"}},)"
          R"({"type":"expression","column_id":"by","datatype":"string","expression":{"type":"property_name","property_name":"modified_by"}},)"
          R"({"type":"expression","column_id":"mom","datatype":"string","expression":{"type":"indexed_case","case_expression":{"type":"identity"},"value_expression":{"type":"property_name","property_name":"name"}}},)"
          R"({"type":"expression","column_id":"none","datatype":"string","expression":{"type":"indexed_case","case_expression":{"type":"identity"},"index":"host","value_expression":{"type":"property_name","property_name":"name"}}})"),
      cdoc, e.get());
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][2] == R"(["f2","f3"])");
  CHECK(rows[0][3] == "u1");
  CHECK(rows[0][4] == "Maria");
  CHECK(rows[0][5].is_null());
  auto idx = json::parse(cdoc).at("indices").at(0);
  CHECK(idx.at("case_id") == "child");
  CHECK(idx.at("referenced_id") == "mother");
  // An archived form's transactions are revoked: it leaves xform_ids.
  REQUIRE(e->ArchiveForm("demo", "f3").ok());
  rows = RowsOf(
      Config(
          "CommCareCase",
          R"({"type":"expression","column_id":"forms","datatype":"array","expression":{"type":"property_name","property_name":"xform_ids"}})"),
      json::serialize(ucr::CaseDocument(*e->GetCase("demo", "child"))), e.get());
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][2] == R"(["f2"])");
}

// specs.py JsonpathExpressionSpec: no match is None, one match its value, several a list.
TEST_CASE("UCR HQ: jsonpath") {
  const std::string doc =
      R"({"_id":"c1","domain":"demo","doc_type":"CommCareCase","form":{"list":[{"case":{"name":"a"}},)"
      R"({"case":{"name":"b"}}],"nested":{"case":{"name":"c"}}}})";
  CHECK(Value(R"({"type":"jsonpath","jsonpath":"form.list[0].case.name"})", doc) == "a");
  CHECK(Value(R"({"type":"jsonpath","jsonpath":"$.form.list[-1].case.name"})", doc) == "b");
  CHECK(Value(R"({"type":"jsonpath","jsonpath":"form.list[*].case.name"})", doc, "array") ==
        R"(["a","b"])");
  CHECK(Value(R"({"type":"jsonpath","jsonpath":"$..name"})", doc, "array") == R"(["a","b","c"])");
  CHECK(Value(R"({"type":"jsonpath","jsonpath":"form['nested'].case.name"})", doc) == "c");
  CHECK(Value(R"({"type":"jsonpath","jsonpath":"form.nope"})", doc).is_null());
  CHECK(
      CompileError(
          Config(
              "CommCareCase",
              R"({"type":"expression","column_id":"v","datatype":"string","expression":{"type":"jsonpath","jsonpath":"form[?(@.x)]"}})"))
          .starts_with("configured_indicators[0].expression.jsonpath: unsupported subscript"));
}
