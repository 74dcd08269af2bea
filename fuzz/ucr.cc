// Fuzz target: UCR data source configs and their expressions. The input is a config (JSON),
// then a line "@@", then a document: JSON evaluated as it is, or anything else taken as a
// form's XML and made into the form document the ucr pillow builds. A config that compiles is
// evaluated over the document (no engine: related_doc and ledger lookups answer null).
#include "pillows/ucr.h"

#include <boost/json.hpp>
#include <cstdint>

#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace commcare;
  namespace ucr = commcare::pillows::ucr;
  namespace json = boost::json;
  auto [config, doc_text] = fuzz::SplitParts(fuzz::AsText(data, size));
  auto ds = ucr::Compile(config);
  if (!ds.ok()) {
    FUZZ_CHECK(ds.status().IsInvalidArgument());
    return 0;
  }
  boost::system::error_code ec;
  json::value doc = json::parse(doc_text, ec);
  if (ec) {
    FormRecord f;
    f.form_id = "form-1";
    f.domain = (*ds)->domain;
    f.xmlns = "http://example.org/fuzz";
    f.received_on = 1'700'000'000'000'000;
    auto fd = ucr::FormDocument(f, doc_text);
    if (!fd.ok()) return 0;
    doc = std::move(*fd);
  }
  auto rows = (*ds)->Rows(doc, nullptr);
  // A row fills the insert statement: doc_id, inserted_at, [repeat_iteration,] the columns.
  if (rows.ok())
    for (const auto& row : *rows)
      FUZZ_CHECK(row.size() == 2 + ((*ds)->base_item ? 1 : 0) + (*ds)->columns.size());
  return 0;
}
