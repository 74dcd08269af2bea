// Case import from XLSX (written here with libxlsxwriter: numbers, dates and strings as HQ
// reads them), the table reader's CSV edge cases, and options JSON.
#include <commcare/engine.h>
#include <commcare/importer.h>
#include <xlsxwriter.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine_helpers.h"
#include "import/table_reader.h"

using namespace commcare;
using namespace cctest;

namespace {

// A fresh directory of its own (TempDir names one; nothing creates it).
std::string NewDir(const char* tag) {
  std::string d = TempDir(tag);
  std::filesystem::create_directories(d);
  return d;
}

std::string WriteFile(const std::string& name, const std::string& text) {
  std::string path = NewDir("import") + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::vector<std::vector<std::string>> ReadAll(const std::string& path) {
  auto t = importer::OpenTable(path);
  REQUIRE(t.ok());
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> cells;
  for (;;) {
    auto more = (*t)->Next(&cells);
    REQUIRE(more.ok());
    if (!*more) break;
    rows.push_back(cells);
  }
  return rows;
}

}  // namespace

TEST_CASE("Import: XLSX numbers, dates and strings become HQ's text") {
  const std::string path = NewDir("import-xlsx") + "/cases.xlsx";
  lxw_workbook* wb = workbook_new(path.c_str());
  lxw_worksheet* ws = workbook_add_worksheet(wb, nullptr);
  lxw_format* date = workbook_add_format(wb);
  format_set_num_format(date, "yyyy-mm-dd");
  worksheet_write_string(ws, 0, 0, "external_id", nullptr);
  worksheet_write_string(ws, 0, 1, "name", nullptr);
  worksheet_write_string(ws, 0, 2, "age", nullptr);
  worksheet_write_string(ws, 0, 3, "dob", nullptr);
  worksheet_write_string(ws, 0, 4, "weight", nullptr);
  worksheet_write_number(ws, 1, 0, 1001, nullptr);  // a numeric external id
  worksheet_write_string(ws, 1, 1, "Amina", nullptr);
  worksheet_write_number(ws, 1, 2, 31, nullptr);
  lxw_datetime dob = {1995, 3, 14, 0, 0, 0};
  worksheet_write_datetime(ws, 1, 3, &dob, date);
  worksheet_write_number(ws, 1, 4, 61.5, nullptr);
  // Row 3 is blank; row 4 has a gap in column C.
  worksheet_write_number(ws, 3, 0, 1002, nullptr);
  worksheet_write_string(ws, 3, 1, "Baraka", nullptr);
  worksheet_write_number(ws, 3, 4, 20, nullptr);
  REQUIRE(workbook_close(wb) == LXW_NO_ERROR);

  auto rows = ReadAll(path);
  REQUIRE(rows.size() == 3);
  CHECK(rows[1] == std::vector<std::string>{"1001", "Amina", "31", "1995-03-14", "61.5"});
  CHECK(rows[2] == std::vector<std::string>{"1002", "Baraka", "", "", "20"});

  auto e = OpenMemory();
  CaseImportOptions o;
  o.domain = "demo";
  o.case_type = "patient";
  o.search_field = "external_id";
  o.create_new = true;
  o.user_id = "u1";
  auto r = ImportCases(e.get(), nullptr, o, path);
  REQUIRE(r.ok());
  CHECK(r->created_count == 2);
  CHECK(r->rows == 2);  // the blank row is not a row of the sheet
  int seen = 0;
  REQUIRE(e->ListCases({.domain = "demo"}, [&](const CaseRecord& c) {
             if (c.external_id == "1001") {
               CHECK(c.properties.at("dob") == "1995-03-14");
               CHECK(c.properties.at("age") == "31");
               CHECK(c.properties.at("weight") == "61.5");
               CHECK(c.owner_id == "u1");
               ++seen;
             }
             return true;
           }).ok());
  CHECK(seen == 1);
}

TEST_CASE("Import: CSV quoting, a BOM, CRLF and an unclosed quote") {
  auto rows = ReadAll(
      WriteFile("a.csv", "\xEF\xBB\xBFname,note\r\n\"A, B\",\"say \"\"hi\"\"\nok\"\r\nx,\r\n"));
  REQUIRE(rows.size() == 3);
  CHECK(rows[0][0] == "name");
  CHECK(rows[1] == std::vector<std::string>{"A, B", "say \"hi\"\nok"});
  CHECK(rows[2] == std::vector<std::string>{"x", ""});
  auto t = importer::OpenTable(WriteFile("b.csv", "name\n\"open"));
  REQUIRE(t.ok());
  std::vector<std::string> cells;
  REQUIRE((*t)->Next(&cells).ok());
  auto bad = (*t)->Next(&cells);
  CHECK(!bad.ok());
  CHECK(bad.status().message().find("row 2") != std::string::npos);
}

TEST_CASE("Import: a rerun after a run stopped half-way applies each row once") {
  // The first run stops after its first chunk (here: it sees only the first 10 rows); the rerun
  // of the whole file under the same import id finds that chunk stored and adds the rest.
  auto e = OpenMemory();
  std::string head = "name,n\n", csv;
  for (int i = 0; i < 25; ++i) csv += "c" + std::to_string(i) + "," + std::to_string(i) + "\n";
  const std::string part = WriteFile("part.csv", head + csv.substr(0, csv.find("c10,")));
  const std::string path = WriteFile("whole.csv", head + csv);
  CaseImportOptions o;
  o.domain = "demo";
  o.case_type = "t";
  o.create_new = true;
  o.user_id = "u1";
  o.chunk_size = 10;
  o.import_id = "import-1";
  o.time = 1'700'000'000'000'000;
  auto first = ImportCases(e.get(), nullptr, o, part);
  REQUIRE(first.ok());
  CHECK(first->created_count == 10);
  auto again = ImportCases(e.get(), nullptr, o, path);
  REQUIRE(again.ok());
  CHECK(again->created_count == 25);
  CHECK(again->num_chunks == 3);
  CHECK(again->chunks_already_applied == 1);
  int n = 0;
  REQUIRE(e->ListCases({.domain = "demo"}, [&](const CaseRecord& c) {
             auto h = e->CaseHistory("demo", c.case_id);
             CHECK((h.ok() && h->size() == 1));
             return ++n, true;
           }).ok());
  CHECK(n == 25);
}

TEST_CASE("Import: options JSON names an unknown or mistyped field") {
  auto o = CaseImportOptionsFromJson(R"({"domain": "d", "case_type": "t", "create_new": true})");
  REQUIRE(o.ok());
  CHECK(o->create_new);
  CHECK(CaseImportOptionsFromJson(R"({"colour": 1})").status().message().find("colour") !=
        std::string::npos);
  CHECK(
      CaseImportOptionsFromJson(R"({"create_new": "yes"})").status().message().find("create_new") !=
      std::string::npos);
  auto b = BulkEditOptionsFromJson(
      R"({"domain": "d", "filter": {"case_type": "t"}, "set": {"a": "1"}})");
  REQUIRE(b.ok());
  CHECK(CheckBulkEdit(*b).ok());
  b->filter_json = R"({"colour": "red"})";
  CHECK(CheckBulkEdit(*b).message().find("colour") != std::string::npos);
}
