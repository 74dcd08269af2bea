// Case import from XLSX (written here with libxlsxwriter: numbers, dates and strings as HQ
// reads them), the table reader's CSV edge cases and sheets by name, options JSON, and the
// lookup-table workbook upload.
#include <commcare/engine.h>
#include <commcare/importer.h>
#include <fmt/format.h>
#include <xlsxwriter.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine_helpers.h"
#include "import/lookup_upload.h"
#include "import/table_reader.h"
#include "meta/meta_store.h"

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

namespace {

using Rows = std::vector<std::vector<std::string>>;

// A workbook of sheets (name, rows of text cells) written with libxlsxwriter; numbers where a
// cell is all digits, as a spreadsheet user would type them.
std::string Workbook(const std::vector<std::pair<std::string, Rows>>& sheets) {
  const std::string path = NewDir("lookup-xlsx") + "/tables.xlsx";
  lxw_workbook* wb = workbook_new(path.c_str());
  for (const auto& [name, rows] : sheets) {
    lxw_worksheet* ws = workbook_add_worksheet(wb, name.c_str());
    for (size_t r = 0; r < rows.size(); ++r)
      for (size_t c = 0; c < rows[r].size(); ++c) {
        const std::string& v = rows[r][c];
        if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos)
          worksheet_write_number(ws, r, c, std::stod(v), nullptr);
        else if (!v.empty())
          worksheet_write_string(ws, r, c, v.c_str(), nullptr);
      }
  }
  REQUIRE(workbook_close(wb) == LXW_NO_ERROR);
  return path;
}

}  // namespace

TEST_CASE("Import: an XLSX sheet is read by its name") {
  const std::string path =
      Workbook({{"first", {{"a"}, {"1"}}}, {"types", {{"table_id"}, {"t"}}}, {"b&c", {{"x"}}}});
  auto names = importer::SheetNames(path);
  REQUIRE(names.ok());
  CHECK(*names == std::vector<std::string>{"first", "types", "b&c"});
  auto t = importer::OpenSheet(path, "types");
  REQUIRE(t.ok());
  std::vector<std::string> cells;
  REQUIRE(*(*t)->Next(&cells));
  CHECK(cells == std::vector<std::string>{"table_id"});
  REQUIRE(*(*t)->Next(&cells));
  CHECK(cells == std::vector<std::string>{"t"});
  CHECK(importer::OpenSheet(path, "b&c").ok());
  CHECK(importer::OpenSheet(path, "nope").status().code() == StatusCode::kNotFound);
  CHECK(ReadAll(path)[1] == std::vector<std::string>{"1"});  // OpenTable: the first sheet
  CHECK(importer::SheetNames(WriteFile("n.csv", "a,b\n")).status().code() ==
        StatusCode::kInvalidArgument);
}

// HQ's fixture upload (corehq/apps/fixtures/upload/workbook.py, run_upload.py,
// failure_messages.py; the layout of download.py): a types sheet and a sheet per table; a
// global table, and one whose rows a user and a group own.
TEST_CASE("Import: lookup tables upload from a workbook, once, and replace deletes rows") {
  const std::string dir = NewDir("lookup-meta");
  auto opened = meta::MetaStore::Open(dir + "/meta.sqlite");
  REQUIRE(opened.ok());
  auto m = std::move(opened).value();
  meta::Domain d;
  d.name = "demo";
  REQUIRE(m->PutDomain(d).ok());
  meta::User u;
  u.username = "nurse@demo.commcarehq.org";
  u.domains = {"demo"};
  const meta::User nurse = m->PutUser(u, "pw").value();
  meta::Doc g;
  g.kind = "group";
  g.domain = "demo";
  g.body = {{"name", "Team A"}, {"users", {nurse.user_id}}};
  REQUIRE(m->PutDoc(g).ok());

  const Rows types = {{"Delete(Y/N)", "table_id", "is_global?", "field 1", "field 2",
                       "field 2: property 1", "property 1"},
                      {"N", "district", "yes", "name", "code", "", ""},
                      {"N", "cadre", "no", "title", "", "", "grade"}};
  const Rows district = {{"UID", "Delete(Y/N)", "field: name", "field: code"},
                         {"", "N", "North", "101"},
                         {"", "N", "South", "102"}};
  const Rows cadre = {
      {"UID", "Delete(Y/N)", "field: title", "property: grade", "user 1", "group 1"},
      {"", "N", "nurse", "3", "NURSE", ""},
      {"", "N", "doctor", "5", "", "Team A"},
      {"", "N", "clerk", "1", "", ""}};
  auto book = [&](const Rows& dis, const Rows& cad, const Rows& ty) {
    return Workbook({{"types", ty}, {"district", dis}, {"cadre", cad}});
  };
  auto fixtures = [&] {
    return m->LookupFixtures(nurse, "demo", *m->ReadDirectory("demo")).value();
  };

  auto r = importer::UploadLookupTables(m.get(), "demo", book(district, cadre, types), false);
  REQUIRE_MESSAGE(r.ok(), r.status().message());
  CHECK(r->tables_created == 2);
  CHECK(r->rows_created == 5);
  std::string fx = fixtures();
  CHECK(fx.find("<district_list><district><name>North</name><code>101</code></district>"
                "<district><name>South</name><code>102</code></district></district_list>") !=
        std::string::npos);
  CHECK(fx.find("<cadre_list><cadre grade=\"3\"><title>nurse</title></cadre>"
                "<cadre grade=\"5\"><title>doctor</title></cadre></cadre_list>") !=
        std::string::npos);

  // The same workbook again: nothing changes, not even a revision.
  auto items = [&] { return m->ListDocs("lookup_item", "demo").value(); };
  auto revs = [&] {
    std::map<std::string, int64_t> out;
    for (const auto& i : items()) out[i.id] = i.rev;
    return out;
  };
  const auto before = revs();
  r = importer::UploadLookupTables(m.get(), "demo", book(district, cadre, types), false);
  REQUIRE(r.ok());
  CHECK(r->rows_unchanged == 5);
  CHECK(r->tables_unchanged == 2);
  CHECK(revs() == before);

  // Without replace a row the sheet lacks stays; with replace it goes.
  const Rows north = {district[0], district[1]};
  r = importer::UploadLookupTables(m.get(), "demo", book(north, cadre, types), false);
  REQUIRE(r.ok());
  CHECK(r->rows_deleted == 0);
  CHECK(items().size() == 5);
  r = importer::UploadLookupTables(m.get(), "demo", book(north, cadre, types), true);
  REQUIRE(r.ok());
  CHECK(r->rows_deleted == 1);
  CHECK(fixtures().find("South") == std::string::npos);

  // A row deleted by its UID, and a table deleted from the types sheet with its rows.
  std::string clerk;
  for (const auto& i : items())
    if (const auto* t = i.body.at("fields").as_object().if_contains("title");
        t && t->as_string() == "clerk")
      clerk = i.id;
  REQUIRE(!clerk.empty());
  Rows cadre2 = cadre;
  cadre2[3] = {clerk, "Y", "clerk", "1", "", ""};
  Rows types2 = types;
  types2[1][0] = "Y";
  r = importer::UploadLookupTables(m.get(), "demo", book(north, cadre2, types2), false);
  REQUIRE_MESSAGE(r.ok(), r.status().message());
  CHECK(r->tables_deleted == 1);
  CHECK(r->rows_deleted == 2);
  CHECK(items().size() == 2);
  CHECK(m->ListDocs("lookup_table", "demo")->size() == 1);
}

TEST_CASE("Import: a bad lookup-table workbook names sheet, row and column, and writes nothing") {
  const std::string dir = NewDir("lookup-bad");
  auto m = std::move(meta::MetaStore::Open(dir + "/meta.sqlite")).value();
  meta::Domain d;
  d.name = "demo";
  REQUIRE(m->PutDomain(d).ok());
  const Rows types = {{"table_id", "is_global?", "field 1"}, {"city", "yes", "name"}};
  const Rows city = {{"field: name"}, {"Lyon"}};
  auto problems = [&](const std::vector<std::pair<std::string, Rows>>& sheets) {
    std::vector<std::string> out;
    auto r = importer::UploadLookupTables(m.get(), "demo", Workbook(sheets), false, &out);
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    std::string all;
    for (const auto& p : out) all += p + "\n";
    return all;
  };
  CHECK(problems({{"city", city}}).find("Workbook does not contain a sheet called types") !=
        std::string::npos);
  CHECK(problems({{"types", types}}).find("There's no sheet for type 'city'") != std::string::npos);
  CHECK(problems({{"types", {types[0], {"city", "perhaps", "name"}}}, {"city", city}})
            .find("sheet 'types', row 2, column 'is_global?': must be yes or no") !=
        std::string::npos);
  CHECK(problems({{"types", {types[0], {"my city", "yes", "name"}}}, {"city", city}})
            .find("sheet 'types', row 2, column 'table_id': table_id 'my city' must be a valid "
                  "XML name") != std::string::npos);
  CHECK(problems({{"types", {types[0], {"city", "yes", "1st"}}}, {"city", city}})
            .find("sheet 'types', row 2, column 'field 1': field '1st'") != std::string::npos);
  CHECK(problems({{"types", types}, {"city", {{"field: name", "field: size"}, {"Lyon", "1"}}}})
            .find("sheet 'city', row 1, column 'field: size'") != std::string::npos);
  CHECK(problems({{"types", types}, {"city", {{"Delete(Y/N)", "field: name"}, {"X", "Lyon"}}}})
            .find("sheet 'city', row 2, column 'Delete(Y/N)': must be Y or N") !=
        std::string::npos);
  for (const char* owner : {"user 1", "group 1", "location 1"})
    CHECK(problems({{"types", types},
                    {"city",
                     {{"field: name", owner},
                      {
                          "Lyon",
                          "",
                      },
                      {"Nice", "ghost"}}}})
              .find(fmt::format("sheet 'city', row 3, column '{}': Unknown", owner)) !=
          std::string::npos);
  CHECK(problems(
            {{"types", types}, {"city", {{"UID", "field: name"}, {"a1", "Lyon"}, {"a1", "Nice"}}}})
            .find("sheet 'city', row 3, column 'UID': 'a1' names two rows") != std::string::npos);
  // A good sheet beside a bad one: nothing of either is written.
  const Rows types2 = {types[0], types[1], {"town", "yes", "name"}};
  CHECK(!problems(
             {{"types", types2}, {"city", city}, {"town", {{"field: name", "user 1"}, {"A", "x"}}}})
             .empty());
  CHECK(m->ListDocs("lookup_table", "demo")->empty());
  CHECK(m->ListDocs("lookup_item", "demo")->empty());
  CHECK(importer::UploadLookupTables(m.get(), "demo", WriteFile("x.xlsx", "PK\x03\x04junk"), false)
            .status()
            .message() == "Invalid file-format. Please upload a valid xlsx file.");
}

// HQ's download layout of a field with properties (corehq/apps/fixtures/download.py: "field:
// <name> <n>" and "<name>: <property> <n>"; upload/workbook.py _process_item_field), and an
// indexed field ("field 1: is_indexed?").
TEST_CASE("Import: a lookup-table field with properties, one value per numbered column") {
  const std::string dir = NewDir("lookup-props");
  auto m = std::move(meta::MetaStore::Open(dir + "/meta.sqlite")).value();
  meta::Domain d;
  d.name = "demo";
  REQUIRE(m->PutDomain(d).ok());
  const Rows types = {
      {"table_id", "is_global?", "field 1", "field 1 : property 1", "field 1: is_indexed?"},
      {"city", "yes", "name", "lang", "yes"}};
  const Rows city = {{"field: name 1", "name: lang 1", "field: name 2", "name: lang 2"},
                     {"Lyon", "en", "Lyons", "fr"},
                     {"Nice", "en", "", ""}};
  auto r = importer::UploadLookupTables(m.get(), "demo",
                                        Workbook({{"types", types}, {"city", city}}), false);
  REQUIRE_MESSAGE(r.ok(), r.status().message());
  meta::User u;
  u.user_id = "u1";
  auto fx = m->LookupFixtures(u, "demo", *m->ReadDirectory("demo"));
  REQUIRE(fx.ok());
  CHECK(*fx ==
        "<schema id=\"item-list:city\"><indices><index>name</index></indices></schema>"
        "<fixture id=\"item-list:city\" user_id=\"u1\" indexed=\"true\"><city_list>"
        "<city><name lang=\"en\">Lyon</name><name lang=\"fr\">Lyons</name></city>"
        "<city><name lang=\"en\">Nice</name></city></city_list></fixture>");
}
