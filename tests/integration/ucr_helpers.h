// Shared helpers for the UCR tests: a data source config around indicators, its rows over a
// document, one expression's value, a config's compile error.
#pragma once

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "pillows/ucr.h"

namespace cctest::ucr_test {

namespace json = boost::json;
namespace ucr = commcare::pillows::ucr;

inline std::string Config(const std::string& doc_type, const std::string& indicators,
                          const std::string& extra = "") {
  return fmt::format(
      R"({{"domain":"demo","table_id":"t","referenced_doc_type":"{}",{}"configured_indicators":[{}]}})",
      doc_type, extra.empty() ? "" : extra + ",", indicators);
}

inline std::string CompileError(const std::string& config) {
  auto ds = ucr::Compile(config);
  REQUIRE(!ds.ok());
  CHECK(ds.status().code() == commcare::StatusCode::kInvalidArgument);
  return ds.status().message();
}

// Rows of a data source over a document given as JSON text (no engine).
inline std::vector<std::vector<json::value>> RowsOf(const std::string& config,
                                                    const std::string& doc,
                                                    commcare::Engine* engine = nullptr) {
  auto ds = ucr::Compile(config);
  REQUIRE_MESSAGE(ds.ok(), ds.status().ToString());
  auto rows = (*ds)->Rows(json::parse(doc), engine);
  REQUIRE_MESSAGE(rows.ok(), rows.status().ToString());
  return *rows;
}

// One expression indicator's value for a document.
inline json::value Value(const std::string& expr, const std::string& doc,
                         const std::string& datatype = "string", commcare::Engine* engine = nullptr,
                         const std::string& extra = "") {
  auto rows = RowsOf(Config("CommCareCase",
                            fmt::format(R"({{"type":"expression","column_id":"v","datatype":"{}",)"
                                        R"("expression":{}}})",
                                        datatype, expr),
                            extra),
                     doc, engine);
  REQUIRE(rows.size() == 1);
  return rows[0].back();
}

inline const char* kDoc =
    R"({"_id":"c1","domain":"demo","doc_type":"CommCareCase","type":"patient","name":"Ana Lima",)"
    R"("age":"42","dob":"1980-02-29","visits":"3","tags":"a b c","when":"2020-01-31T10:00:00Z",)"
    R"("nested":{"inner":{"x":"deep"}},"list":["p","q","r"],"colour":"red"})";

}  // namespace cctest::ucr_test
