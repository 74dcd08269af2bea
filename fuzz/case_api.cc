// Fuzz target: the Case API's query strings and JSON bodies. The input's first line is a query
// string (the list's parameters, query=<xpath> included), then a line "@@", then a body: a case
// or a list of cases as POST takes them. Each item becomes case XML, which must then parse as
// a case block of the same case id (the form the write submits).
#include <boost/json.hpp>
#include <cstdint>
#include <map>

#include "fuzz/fuzz_util.h"
#include "http/server.h"
#include "server/request_parse.h"
#include "xform/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace commcare;
  namespace json = boost::json;
  auto [query, body] = fuzz::SplitParts(fuzz::AsText(data, size));
  http::Request r;
  r.method = "GET";
  http::SetTarget(&r, "/a/fuzz/api/case/v2/?" + std::string(query));
  auto q = server::CaseListQuery(r, "fuzz");
  if (!q.ok()) FUZZ_CHECK(q.status().IsInvalidArgument());

  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) return 0;
  std::vector<const json::value*> items;
  if (v.is_array()) {
    for (const auto& x : v.get_array()) items.push_back(&x);
  } else {
    items.push_back(&v);
  }
  std::map<std::string, std::string> temp_ids = {{"t1", "case-t1"}};
  std::map<std::string, std::string> ext_ids = {{"e1", "case-e1"}};
  int n = 0;
  for (const json::value* item : items) {
    const bool create = !(item->is_object() && item->get_object().contains("case_id"));
    const std::string case_id = "case-" + std::to_string(n++);
    std::string out_id;
    auto xml = server::CaseApiBlock(*item, v.is_array() ? "[0]" : "", create, case_id, "user-1",
                                    temp_ids, ext_ids, &out_id);
    if (!xml.ok()) {
      FUZZ_CHECK(xml.status().IsInvalidArgument());
      continue;
    }
    std::string form = "<data xmlns=\"http://commcarehq.org/case\">" + *xml + "</data>";
    xform::ParsedForm parsed;
    Status st = xform::ParseForm(form, xform::ParseLimits{}, &parsed);
    if (!st.ok()) std::fprintf(stderr, "%s\n%s\n", st.ToString().c_str(), form.c_str());
    FUZZ_CHECK(st.ok());
    FUZZ_CHECK(parsed.cases.size() == 1 && parsed.cases[0].case_id == case_id);
  }
  return 0;
}
