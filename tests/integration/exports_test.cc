// Exports: case and form exports to CSV (zip for several tables) and XLSX, HQ's rules (`number`
// joining repeat rows, --- for missing values, split multi-selects), filters, renames, bad
// definitions, the export.run task, export files in the blob store (expiry, pruning), saved
// definitions with their schedules.
#include <commcare/exports.h>
#include <commcare/host.h>
#include <commcare/storage/blob_store.h>
#include <commcare/tasks.h>

#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "engine_helpers.h"
#include "util/time.h"

using namespace commcare;
using namespace cctest;

namespace {

using Rows = std::vector<std::vector<std::string>>;

// RFC 4180 CSV into rows.
Rows ParseCsv(const std::string& s) {
  Rows rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quoted) {
      if (c == '"' && i + 1 < s.size() && s[i + 1] == '"') {
        field.push_back('"');
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field.push_back(c);
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
    } else if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') {
      row.push_back(std::move(field));
      field.clear();
      rows.push_back(std::move(row));
      row.clear();
      ++i;
    } else {
      field.push_back(c);
    }
  }
  return rows;
}

// A column of rows by header name.
std::vector<std::string> Col(const Rows& rows, const std::string& name) {
  REQUIRE(!rows.empty());
  auto it = std::find(rows[0].begin(), rows[0].end(), name);
  REQUIRE_MESSAGE(it != rows[0].end(), "no column " << name);
  size_t i = it - rows[0].begin();
  std::vector<std::string> out;
  for (size_t r = 1; r < rows.size(); ++r) out.push_back(rows[r].at(i));
  return out;
}

// One member of a zip file (unzip -p).
std::string Unzip(const std::string& zip, const std::string& member) {
  std::string cmd = "unzip -p '" + zip + "' '" + member + "'";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

const char* kCaseNs = "http://commcarehq.org/case/transaction/v2";

// A household form: a repeat group `child` with `children` items, a group, a multi-select and
// a case block creating household case `case_id`.
std::string HouseholdForm(const std::string& id, const std::string& case_id,
                          const std::string& name, int children, bool with_group = true) {
  std::string kids;
  for (int i = 0; i < children; ++i)
    kids += fmt::format("<child><name>kid{}</name>{}</child>", i, i == 0 ? "<age>3</age>" : "");
  return fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://example.org/hh"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{0}</instanceID><userID>u1</userID><username>alice</username><timeStart>2020-01-01T00:00:00Z</timeStart><timeEnd>2020-01-01T00:01:00Z</timeEnd></meta><hh_name>{2}</hh_name>{3}<colors>red blue</colors>{4}<case xmlns="{5}" case_id="{1}" date_modified="2020-01-01T00:00:00Z" user_id="u1"><create><case_type>household</case_type><case_name>{2}</case_name><owner_id>o1</owner_id></create><update><village>V1</village></update></case></data>)",
      id, case_id, name, with_group ? "<grp><q2>yes</q2></grp>" : "", kids, kCaseNs);
}

std::string MemberForm(const std::string& id, const std::string& case_id,
                       const std::string& parent) {
  return fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://example.org/member"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{0}</instanceID><userID>u2</userID></meta><case xmlns="{3}" case_id="{1}" date_modified="2020-01-02T00:00:00Z" user_id="u2"><create><case_type>member</case_type><case_name>M</case_name><owner_id>o2</owner_id></create><update><age>7</age></update><index><parent case_type="household">{2}</parent></index></case></data>)",
      id, case_id, parent, kCaseNs);
}

void Load(Engine* e) {
  REQUIRE(Submit(e, HouseholdForm("f1", "c1", "Smith, \"Jr\"", 2)).http_status == 201);
  REQUIRE(Submit(e, HouseholdForm("f2", "c3", "Jones", 1, false)).http_status == 201);
  REQUIRE(Submit(e, MemberForm("f3", "c2", "c1")).http_status == 201);
}

ExportDefinition Def(const std::string& json) {
  auto d = ExportDefinition::FromJson(json);
  REQUIRE_MESSAGE(d.ok(), d.status().ToString());
  return *d;
}

}  // namespace

TEST_CASE("Exports: a case export has system columns, the union of properties and ---") {
  auto e = OpenSqlite();
  Load(e.get());
  std::string dir = TempDir("exp");
  auto r = RunExport(e.get(), Def(R"({"kind":"case","domain":"demo"})"), dir + "/c.csv");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->rows == 3);
  CHECK(r->file == dir + "/c.csv");
  Rows rows = ParseCsv(ReadFile(r->file));
  REQUIRE(rows.size() == 4);
  CHECK(rows[0][0] == "case_id");
  auto ids = Col(rows, "case_id");
  auto village = Col(rows, "village"), age = Col(rows, "age"), parent = Col(rows, "parent_case_id");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == "c1") {
      CHECK(village[i] == "V1");
      CHECK(age[i] == "---");
      CHECK(parent[i] == "---");
      CHECK(Col(rows, "name")[i] == "Smith, \"Jr\"");
      CHECK(Col(rows, "closed")[i] == "False");
    } else if (ids[i] == "c2") {
      CHECK(village[i] == "---");
      CHECK(age[i] == "7");
      CHECK(parent[i] == "c1");
      CHECK(Col(rows, "owner_id")[i] == "o2");
    }
  }
}

TEST_CASE("Exports: case filters and selected, renamed columns") {
  auto e = OpenSqlite();
  Load(e.get());
  std::string dir = TempDir("exp");
  auto r =
      RunExport(e.get(), Def(R"({"kind":"case","domain":"demo","filters":{"case_type":"member"},
                            "columns":[{"path":"name","label":"Name"},"age","parent_case_id"]})"),
                dir + "/m.csv");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  Rows rows = ParseCsv(ReadFile(r->file));
  REQUIRE(rows.size() == 2);
  CHECK(rows[0] == std::vector<std::string>{"Name", "age", "parent_case_id"});
  CHECK(rows[1] == std::vector<std::string>{"M", "7", "c1"});
  r = RunExport(e.get(), Def(R"({"kind":"case","domain":"demo","filters":{"owner_id":"o1"}})"),
                dir + "/o.csv");
  REQUIRE(r.ok());
  CHECK(r->rows == 2);
  r = RunExport(e.get(), Def(R"({"kind":"case","domain":"demo","filters":{"closed":true}})"),
                dir + "/x.csv");
  REQUIRE(r.ok());
  CHECK(r->rows == 0);
  r = RunExport(e.get(), Def(R"({"kind":"case","domain":"other"})"), dir + "/y.csv");
  REQUIRE(r.ok());
  CHECK(r->rows == 0);
}

TEST_CASE("Exports: a form export has a table per repeat group joined by number") {
  auto e = OpenSqlite();
  Load(e.get());
  std::string dir = TempDir("exp");
  auto r = RunExport(
      e.get(),
      Def(R"({"kind":"form","domain":"demo","filters":{"xmlns":"http://example.org/hh"}})"),
      dir + "/f.csv");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->file == dir + "/f.zip");
  CHECK(r->tables == std::vector<std::string>{"Forms", "Repeat- child"});
  CHECK(r->rows == 2 + 3);
  Rows forms = ParseCsv(Unzip(r->file, "Forms.csv"));
  Rows kids = ParseCsv(Unzip(r->file, "Repeat- child.csv"));
  REQUIRE(forms.size() == 3);
  CHECK(forms[0][0] == "number");
  CHECK(Col(forms, "number") == std::vector<std::string>{"0", "1"});
  auto ids = Col(forms, "form_id");
  int f1 = ids[0] == "f1" ? 0 : 1, f2 = 1 - f1;
  CHECK(Col(forms, "form.hh_name")[f1] == "Smith, \"Jr\"");
  CHECK(Col(forms, "form.grp.q2")[f1] == "yes");
  CHECK(Col(forms, "form.grp.q2")[f2] == "---");
  CHECK(Col(forms, "username")[f1] == "alice");
  CHECK(Col(forms, "xmlns")[f1] == "http://example.org/hh");
  REQUIRE(kids.size() == 4);
  // HQ's RowNumberColumn: a repeat table's number, then each of its indexes on its own.
  CHECK(kids[0] == std::vector<std::string>{"number", "number__0", "number__1", "form.child.name",
                                            "form.child.age"});
  std::string p1 = std::to_string(f1), p2 = std::to_string(f2);
  std::vector<std::string> numbers = Col(kids, "number");
  std::sort(numbers.begin(), numbers.end());
  CHECK(numbers == std::vector<std::string>{"0.0", "0.1", "1.0"});
  for (size_t i = 1; i < kids.size(); ++i) {
    if (kids[i][0] == p1 + ".1")
      CHECK(kids[i] == std::vector<std::string>{p1 + ".1", p1, "1", "kid1", "---"});
    if (kids[i][0] == p1 + ".0")
      CHECK(kids[i] == std::vector<std::string>{p1 + ".0", p1, "0", "kid0", "3"});
    if (kids[i][0] == p2 + ".0") CHECK(kids[i][3] == "kid0");  // one item: still a repeat row
  }
}

TEST_CASE("Exports: repeat tables are named as HQ's: the last element, item with its parent") {
  auto e = OpenSqlite();
  std::string xml =
      R"(<?xml version="1.0"?><data xmlns="http://example.org/names"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>t1</instanceID><userID>u1</userID></meta><a><m><v>1</v></m><m><v>2</v></m></a><b><m><v>3</v></m><m><v>4</v></m></b><g><item><v>5</v></item><item><v>6</v></item><k><v>7</v></k><k><v>8</v></k></g><k><v>9</v></k><k><v>10</v></k></data>)";
  REQUIRE(Submit(e.get(), xml).http_status == 201);
  auto r = RunExport(
      e.get(),
      Def(R"({"kind":"form","domain":"demo","filters":{"xmlns":"http://example.org/names"}})"),
      TempDir("exp") + "/t.csv");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  // b.m would be a second "Repeat- m": it keeps its path, so sheets and zip entries differ.
  // form.k's path is form.g.k's short name: it takes a number.
  CHECK(r->tables == std::vector<std::string>{"Forms", "Repeat- m", "Repeat- b.m", "Repeat- g.item",
                                              "Repeat- k", "Repeat- k (2)"});
  Rows bm = ParseCsv(Unzip(r->file, "Repeat- b.m.csv"));
  REQUIRE(bm.size() == 3);
  CHECK(bm[2].back() == "4");
}

TEST_CASE("Exports: a repeat inside a repeat has number__0 to number__2, as HQ's") {
  auto e = OpenSqlite();
  std::string xml =
      R"(<?xml version="1.0"?><data xmlns="http://example.org/nest"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>n1</instanceID><userID>u1</userID></meta><hh><name>A</name><m><v>x</v></m><m><v>y</v></m></hh><hh><name>B</name><m><v>z</v></m></hh></data>)";
  REQUIRE(Submit(e.get(), xml).http_status == 201);
  std::string dir = TempDir("exp");
  auto r = RunExport(
      e.get(),
      Def(R"({"kind":"form","domain":"demo","filters":{"xmlns":"http://example.org/nest"}})"),
      dir + "/n.csv");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  // HQ names a repeat's table by its last path element (get_default_table_name).
  CHECK(r->tables == std::vector<std::string>{"Forms", "Repeat- hh", "Repeat- m"});
  Rows forms = ParseCsv(Unzip(r->file, "Forms.csv"));
  CHECK(forms[0][1] == "form_id");  // the main table has number alone
  Rows hh = ParseCsv(Unzip(r->file, "Repeat- hh.csv"));
  REQUIRE(hh.size() == 3);
  CHECK(hh[0] == std::vector<std::string>{"number", "number__0", "number__1", "form.hh.name"});
  CHECK(hh[2] == std::vector<std::string>{"0.1", "0", "1", "B"});
  Rows m = ParseCsv(Unzip(r->file, "Repeat- m.csv"));
  REQUIRE(m.size() == 4);
  CHECK(m[0] ==
        std::vector<std::string>{"number", "number__0", "number__1", "number__2", "form.hh.m.v"});
  CHECK(m[2] == std::vector<std::string>{"0.0.1", "0", "0", "1", "y"});
  CHECK(m[3] == std::vector<std::string>{"0.1.0", "0", "1", "0", "z"});
  // A form with one <hh> (a group, as far as that form shows) first: hh is a repeat all the
  // same, once a later form has two, and its m rows keep their columns.
  std::string one =
      R"(<?xml version="1.0"?><data xmlns="http://example.org/nest2"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>n2</instanceID><userID>u1</userID><timeStart>2020-01-01T00:00:00Z</timeStart></meta><hh><name>A</name><m><v>x</v></m><m><v>y</v></m></hh></data>)";
  std::string two =
      R"(<?xml version="1.0"?><data xmlns="http://example.org/nest2"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>n3</instanceID><userID>u1</userID></meta><hh><name>B</name></hh><hh><name>C</name><m><v>z</v></m></hh></data>)";
  REQUIRE(Submit(e.get(), one).http_status == 201);
  REQUIRE(Submit(e.get(), two).http_status == 201);
  r = RunExport(
      e.get(),
      Def(R"({"kind":"form","domain":"demo","filters":{"xmlns":"http://example.org/nest2"}})"),
      dir + "/n2.csv");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  m = ParseCsv(Unzip(r->file, "Repeat- m.csv"));
  REQUIRE(m.size() == 4);
  CHECK(m[0] ==
        std::vector<std::string>{"number", "number__0", "number__1", "number__2", "form.hh.m.v"});
  for (size_t i = 1; i < m.size(); ++i) {
    CAPTURE(m[i]);
    REQUIRE(m[i].size() == 5);
    CHECK(m[i][0] == m[i][1] + "." + m[i][2] + "." + m[i][3]);
  }
}

TEST_CASE("Exports: selected form columns, split multi-selects, received filter") {
  auto e = OpenSqlite();
  Load(e.get());
  std::string dir = TempDir("exp");
  auto r = RunExport(e.get(), Def(R"({"kind":"form","domain":"demo",
      "filters":{"xmlns":"http://example.org/hh","received_from":"2000-01-01"},
      "columns":["form_id",{"path":"form.hh_name","label":"Household"},
                 {"path":"form.colors","label":"Colors","split":["red","green"]}]})"),
                     dir + "/s.csv");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->file == dir + "/s.csv");  // one table: no zip
  Rows rows = ParseCsv(ReadFile(r->file));
  REQUIRE(rows.size() == 3);
  CHECK(rows[0] == std::vector<std::string>{"number", "form_id", "Household", "Colors | red",
                                            "Colors | green", "Colors | extra"});
  CHECK(rows[1][3] == "1");
  CHECK(rows[1][4] == "");
  CHECK(rows[1][5] == "blue");
  r = RunExport(e.get(), Def(R"({"kind":"form","domain":"demo",
      "filters":{"xmlns":"http://example.org/hh","received_from":"2999-01-01"}})"),
                dir + "/none.csv");
  REQUIRE(r.ok());
  CHECK(r->rows == 0);
}

TEST_CASE("Exports: HTML and JSON hold every table in one document, as HQ's writers") {
  auto e = OpenSqlite();
  Load(e.get());
  std::string dir = TempDir("exp");
  auto r = RunExport(e.get(), Def(R"({"kind":"form","domain":"demo","format":"html",
      "filters":{"xmlns":"http://example.org/hh"}})"),
                     dir + "/f.html");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->file == dir + "/f.html");
  CHECK(ExportExtension(Def(R"({"kind":"case","domain":"d","format":"html"})")) == "html");
  std::string html = ReadFile(r->file);
  CHECK(html.rfind("<!DOCTYPE HTML>\n<html>", 0) == 0);
  CHECK(html.find("<title>Dashboard</title>") != std::string::npos);
  auto forms_at =
      html.find("<h2>Forms</h2>\n<table>\n<thead>\n<tr><th>number</th><th>form_id</th>");
  auto kids_at = html.find(
      "<h2>Repeat- child</h2>\n<table>\n<thead>\n<tr><th>number</th><th>number__0</th>"
      "<th>number__1</th><th>form.child.name</th>");
  CHECK(forms_at != std::string::npos);
  CHECK(kids_at != std::string::npos);
  CHECK(forms_at < kids_at);
  CHECK(html.find("<td>Smith, &quot;Jr&quot;</td>") != std::string::npos);  // escaped
  CHECK(html.find("<td>kid1</td><td>---</td></tr>") != std::string::npos);
  CHECK(html.ends_with("</table>\n</body>\n</html>\n"));

  r = RunExport(e.get(), Def(R"({"kind":"form","domain":"demo","format":"json",
      "filters":{"xmlns":"http://example.org/hh"}})"),
                dir + "/f.json");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  boost::system::error_code ec;
  auto doc = boost::json::parse(ReadFile(r->file), ec);
  REQUIRE_MESSAGE(!ec, ec.message());
  const auto& o = doc.as_object();
  CHECK(o.size() == 2);
  const auto& forms = o.at("Forms").as_object();
  CHECK(forms.at("headers").as_array().at(0).as_string() == "number");
  CHECK(forms.at("rows").as_array().size() == 2);
  const auto& kids = o.at("Repeat- child").as_object();
  CHECK(kids.at("headers").as_array().size() == 5);
  CHECK(kids.at("rows").as_array().size() == 3);
  for (const auto& row : kids.at("rows").as_array()) {
    CHECK(row.as_array().size() == 5);
    // number is HQ's dotted string, number__N its ints (RowNumberColumn.get_value)
    CHECK(row.as_array().at(0).is_string());
    CHECK(row.as_array().at(1).is_int64());
    CHECK(row.as_array().at(2).is_int64());
    CHECK(row.as_array().at(0).as_string() ==
          fmt::format("{}.{}", row.as_array().at(1).as_int64(), row.as_array().at(2).as_int64()));
    if (row.as_array().at(3).as_string() == "kid1")
      CHECK(row.as_array().at(4).as_string() == "---");
  }
  // A case export with no rows is still a table with its headers.
  r = RunExport(e.get(), Def(R"({"kind":"case","domain":"other","format":"json"})"),
                dir + "/c.json");
  REQUIRE(r.ok());
  auto cases = boost::json::parse(ReadFile(r->file), ec);
  REQUIRE(!ec);
  CHECK(cases.at("Cases").at("rows").as_array().empty());
  CHECK(!cases.at("Cases").at("headers").as_array().empty());
}

TEST_CASE("Exports: XLSX has a sheet per table with the values") {
  auto e = OpenSqlite();
  Load(e.get());
  std::string dir = TempDir("exp");
  auto r = RunExport(e.get(), Def(R"({"kind":"form","domain":"demo","format":"xlsx",
      "filters":{"xmlns":"http://example.org/hh"}})"),
                     dir + "/f.xlsx");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(r->file == dir + "/f.xlsx");
  std::string book = Unzip(r->file, "xl/workbook.xml");
  CHECK(book.find("name=\"Forms\"") != std::string::npos);
  CHECK(book.find("name=\"Repeat- child\"") != std::string::npos);
  std::string s1 = Unzip(r->file, "xl/worksheets/sheet1.xml");
  std::string s2 = Unzip(r->file, "xl/worksheets/sheet2.xml");
  CHECK(s1.find("form.grp.q2") != std::string::npos);
  CHECK(s1.find("Smith, ") != std::string::npos);
  CHECK(s1.find(">---<") != std::string::npos);
  CHECK(s2.find(">0.1<") != std::string::npos);
  CHECK(s2.find(">kid1<") != std::string::npos);
  // number__1 of row 0.1 is a numeric cell (HQ's writer gets an int): <c r="C3"><v>1</v></c>
  CHECK(s2.find("<c r=\"C3\"><v>1</v></c>") != std::string::npos);
  r = RunExport(e.get(), Def(R"({"kind":"case","domain":"demo","format":"xlsx"})"),
                dir + "/c.xlsx");
  REQUIRE(r.ok());
  CHECK(Unzip(r->file, "xl/worksheets/sheet1.xml").find(">V1<") != std::string::npos);
}

TEST_CASE("Exports: a bad definition is InvalidArgument naming the field or column") {
  auto bad = [](const std::string& j, const std::string& names) {
    auto d = ExportDefinition::FromJson(j);
    REQUIRE(!d.ok());
    CHECK(d.status().code() == StatusCode::kInvalidArgument);
    CHECK_MESSAGE(d.status().message().find(names) != std::string::npos, d.status().message());
  };
  bad(R"({"kind":"case","domain":"d","filterz":{}})", "filterz");
  bad(R"({"kind":"case","domain":"d","filters":{"colour":"x"}})", "filters.colour");
  bad(R"({"kind":"case"})", "domain");
  bad(R"({"kind":"form","domain":"d"})", "xmlns");
  bad(R"({"kind":"case","domain":"d","format":"pdf"})", "format");
  bad(R"({"kind":"form","domain":"d","filters":{"xmlns":"x"},"columns":["bogus"]})", "bogus");
  bad(R"({"kind":"case","domain":"d","filters":{"xmlns":"x"}})", "filters.xmlns");
  auto e = OpenSqlite();
  Load(e.get());
  auto r = RunExport(e.get(), Def(R"({"kind":"form","domain":"demo",
      "filters":{"xmlns":"http://example.org/hh"},"columns":["form.nope"]})"),
                     TempDir("exp") + "/n.csv");
  REQUIRE(!r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find("form.nope") != std::string::npos);
  // Round trip.
  ExportDefinition d = Def(R"({"kind":"case","domain":"demo","name":"n","filters":{"closed":false,
      "case_type":"t"},"columns":[{"path":"a","label":"A","split":["x"]},"b"],"format":"xlsx"})");
  ExportDefinition d2 = Def(d.ToJson());
  CHECK(d2.ToJson() == d.ToJson());
}

namespace {

// A host on a fresh data directory with the test forms loaded and one worker running.
struct ExportHost {
  std::string dir;
  std::unique_ptr<Host> host;
  TaskQueue* q = nullptr;
  std::unique_ptr<TaskWorkers> workers;
  explicit ExportHost(const char* name) : host(NewHost(name, &dir)) {
    Load(host->engine());
    auto tq = host->Tasks();
    REQUIRE(tq.ok());
    q = *tq;
    TaskWorkersOptions wo;
    wo.workers = 1;
    auto w = host->NewTaskWorkers(wo);
    REQUIRE(w.ok());
    workers = std::move(*w);
    REQUIRE(workers->Start().ok());
  }
  ~ExportHost() { workers->Stop(); }
  // Runs a task of type with payload in domain demo to its end.
  TaskInfo Run(const std::string& payload, const std::string& type = "export.run") {
    TaskSpec s;
    s.type = type;
    s.domain = "demo";
    s.payload = payload;
    auto id = q->Enqueue(s);
    REQUIRE(id.ok());
    auto t = q->Wait(*id, std::chrono::seconds(30));
    REQUIRE(t.ok());
    return *t;
  }
};

// A blob's bytes, read a MiB at a time as the download does.
std::string ReadBlob(storage::BlobStore* b, const std::string& key) {
  std::string out;
  while (true) {
    auto piece = b->ReadRange(key, out.size(), 1u << 20);
    REQUIRE_MESSAGE(piece.ok(), piece.status().ToString());
    out += *piece;
    if (piece->size() < (1u << 20)) return out;
  }
}

}  // namespace

TEST_CASE("Exports: export.run stores the file in the blob store with an expiry") {
  ExportHost h("exphost");
  const int64_t before = util::NowMicros();
  TaskInfo t = h.Run(R"({"kind":"case","domain":"demo","filters":{"case_type":"household"}})");
  REQUIRE_MESSAGE(t.state == TaskState::kSucceeded, t.last_error);
  auto stored = StoredExport::FromJson(t.result);
  REQUIRE_MESSAGE(stored.ok(), t.result);
  CHECK(stored->key == fmt::format("exports/demo/{}.csv", t.id));
  CHECK(stored->file_name == fmt::format("{}.csv", t.id));
  CHECK(t.result.find("\"rows\":2") != std::string::npos);
  CHECK(t.progress_done == 2);
  // Expires in 7 days by default; the temp file in <data>/exports is gone.
  CHECK(stored->expires_at >= before + 7LL * 24 * 3600 * 1'000'000);
  CHECK(stored->expires_at <= util::NowMicros() + 7LL * 24 * 3600 * 1'000'000);
  CHECK_FALSE(std::filesystem::exists(fmt::format("{}/exports/{}.csv", h.dir, t.id)));
  // The stored bytes are what RunExport writes locally.
  auto blobs = ExportBlobStore(h.dir);
  REQUIRE(blobs.ok());
  auto local =
      RunExport(h.host->engine(),
                Def(R"({"kind":"case","domain":"demo","filters":{"case_type":"household"}})"),
                h.dir + "/local.csv");
  REQUIRE(local.ok());
  const std::string bytes = ReadBlob(blobs->get(), stored->key);
  CHECK(bytes == ReadFile(h.dir + "/local.csv"));
  CHECK(stored->size == static_cast<int64_t>(bytes.size()));
  CHECK(ParseCsv(bytes).size() == 3);

  // Another domain's definition is refused; a missing saved one is NotFound (dead at once).
  CHECK(h.Run(R"({"kind":"case","domain":"other"})").state == TaskState::kDead);
  CHECK(h.Run(R"({"saved":"nope"})").state == TaskState::kDead);
}

TEST_CASE("Exports: expired files and the files of pruned tasks are deleted from the blob store") {
  ExportHost h("expprune");
  TaskInfo quick = h.Run(R"({"kind":"case","domain":"demo","expiry_seconds":1})");
  REQUIRE_MESSAGE(quick.state == TaskState::kSucceeded, quick.last_error);
  TaskInfo kept = h.Run(R"({"kind":"case","domain":"demo"})");
  REQUIRE_MESSAGE(kept.state == TaskState::kSucceeded, kept.last_error);
  auto blobs = ExportBlobStore(h.dir);
  REQUIRE(blobs.ok());
  auto q = *StoredExport::FromJson(quick.result), k = *StoredExport::FromJson(kept.result);
  CHECK(q.expires_at - util::NowMicros() <= 1'000'000);
  CHECK(*(*blobs)->Exists(q.key));
  // Nothing has expired a second before its time.
  CHECK(*PruneExpiredExports(h.q, blobs->get(), q.expires_at - 1'000'000) == 0);
  CHECK(*PruneExpiredExports(h.q, blobs->get(), q.expires_at + 1) == 1);
  CHECK_FALSE(*(*blobs)->Exists(q.key));
  CHECK(*(*blobs)->Exists(k.key));
  CHECK(*PruneExpiredExports(h.q, blobs->get(), q.expires_at + 1) == 0);
  // commcare.prune_tasks with days 0 deletes the tasks, and the files first.
  TaskInfo p = h.Run(R"({"days":0})", "commcare.prune_tasks");
  REQUIRE_MESSAGE(p.state == TaskState::kSucceeded, p.last_error);
  CHECK(p.result.find("\"exports_deleted\":1") != std::string::npos);
  CHECK_FALSE(*(*blobs)->Exists(k.key));
  CHECK(h.q->Get(kept.id).status().IsNotFound());
}

TEST_CASE("Exports: saved definitions with schedules and their latest file") {
  ExportHost h("expsaved");
  auto schedule = [&](const std::string& name) -> std::optional<Schedule> {
    auto all = h.q->Schedules();  // kept: a loop over *h.q->Schedules() would dangle
    REQUIRE(all.ok());
    for (const auto& s : *all)
      if (s.name == name) return s;
    return std::nullopt;
  };
  ExportDefinition d = Def(R"({"kind":"case","domain":"demo","name":"members",
      "filters":{"case_type":"member"},"format":"xlsx",
      "schedule":{"cron":"0 6 * * *","time_zone":"Africa/Nairobi"}})");
  Status put = PutSavedExport(h.dir, h.q, d);
  REQUIRE_MESSAGE(put.ok(), put.ToString());
  CHECK(*ListExportDefinitions(h.dir, "demo") == std::vector<std::string>{"members"});
  CHECK(SavedExportScheduleName("demo", "members") == "export:demo:members");
  auto s = schedule("export:demo:members");
  REQUIRE(s);
  CHECK(s->cron == "0 6 * * *");
  CHECK(s->time_zone == "Africa/Nairobi");
  CHECK(s->task.type == "export.run");
  CHECK(s->task.domain == "demo");
  CHECK(s->task.payload == R"({"saved":"members"})");
  CHECK(LoadExportDefinition(h.dir, "demo", "members")->ToJson() == d.ToJson());

  // A run of the saved export becomes its latest file.
  auto blobs = ExportBlobStore(h.dir);
  REQUIRE(blobs.ok());
  CHECK(LatestSavedExport(blobs->get(), "demo", "members").status().IsNotFound());
  TaskInfo t = h.Run(s->task.payload);
  REQUIRE_MESSAGE(t.state == TaskState::kSucceeded, t.last_error);
  auto latest = LatestSavedExport(blobs->get(), "demo", "members");
  REQUIRE_MESSAGE(latest.ok(), latest.status().ToString());
  CHECK(latest->task_id == t.id);
  CHECK(latest->key == fmt::format("exports/demo/{}.xlsx", t.id));
  CHECK(*(*blobs)->Exists(latest->key));

  // Saved again without a schedule: the schedule goes.
  d.cron.clear();
  REQUIRE(PutSavedExport(h.dir, h.q, d).ok());
  CHECK_FALSE(schedule("export:demo:members"));
  d.cron = "@daily";
  REQUIRE(PutSavedExport(h.dir, h.q, d).ok());
  CHECK(schedule("export:demo:members"));

  // A bad cron line or zone is InvalidArgument naming it, and nothing is stored.
  auto bad = ExportDefinition::FromJson(
      R"({"domain":"demo","name":"x","schedule":{"cron":"61 * * * *"}})");
  CHECK(bad.status().IsInvalidArgument());
  CHECK(bad.status().message().find("schedule.cron") != std::string::npos);
  bad = ExportDefinition::FromJson(
      R"({"domain":"demo","name":"x","schedule":{"cron":"@daily","time_zone":"Mars/Base"}})");
  CHECK(bad.status().message().find("schedule.time_zone") != std::string::npos);
  ExportDefinition direct = d;
  direct.name = "direct";
  direct.time_zone = "Mars/Base";
  CHECK(PutSavedExport(h.dir, h.q, direct).IsInvalidArgument());
  CHECK(LoadExportDefinition(h.dir, "demo", "direct").status().IsNotFound());
  CHECK(ExportDefinition::FromJson(R"({"domain":"demo","expiry_seconds":0})")
            .status()
            .message()
            .find("expiry_seconds") != std::string::npos);

  // Deleting removes the definition, its schedule and its pointer (not the file: it expires).
  REQUIRE(DeleteSavedExport(h.dir, h.q, blobs->get(), "demo", "members").ok());
  CHECK_FALSE(schedule("export:demo:members"));
  CHECK(LatestSavedExport(blobs->get(), "demo", "members").status().IsNotFound());
  CHECK(DeleteSavedExport(h.dir, h.q, blobs->get(), "demo", "members").IsNotFound());
  CHECK(*PruneExportFiles(h.dir, std::chrono::hours(24)) == 0);
}
