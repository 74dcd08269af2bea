#include <commcare/pillows.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "engine_helpers.h"

using namespace commcare;
using namespace cctest;

namespace {
std::vector<std::pair<const char*, std::function<std::unique_ptr<Engine>()>>> Engines() {
  return {{"memory", [] { return OpenMemory(); }},
          {"memory-4db", [] { return OpenMemory(4); }},
          {"sqlite-3db", [] { return OpenSqlite(3); }},
          {"sqlite-2db-durable", [] { return OpenSqlite(2, nullptr, false, true); }}};
}
}  // namespace

TEST_CASE("Engine: create, update, index and close a case across forms") {
  for (auto& [name, make] : Engines()) {
    CAPTURE(name);
    auto e = make();
    auto r = Submit(e.get(), CaseForm("f1", "h1",
                                      "<create><case_type>household</case_type><case_name>H</"
                                      "case_name><owner_id>o1</owner_id></create>"));
    CHECK(r.http_status == 201);
    CHECK(r.nature == "submit_success");
    CHECK(r.content_type == "text/xml; charset=utf-8");
    CHECK(r.body.find("<message nature=\"submit_success\">") != std::string::npos);
    r = Submit(
        e.get(),
        CaseForm(
            "f2", "p1",
            "<create><case_type>person</case_type><case_name>P</case_name></create><update><age>4</"
            "age></update><index><parent case_type=\"household\">h1</parent></index>"));
    REQUIRE(r.nature == "submit_success");
    r = Submit(e.get(), CaseForm("f3", "p1",
                                 "<update><age>5</age><case_name>Pat</case_name></update><close/>",
                                 "u2", "2020-02-01T00:00:00Z"));
    REQUIRE(r.nature == "submit_success");
    auto c = e->GetCase("demo", "p1");
    REQUIRE(c.ok());
    CHECK(c->name == "Pat");
    CHECK(c->properties.at("age") == "5");
    CHECK(c->closed);
    CHECK(c->closed_by == "u2");
    CHECK(c->owner_id == "u1");
    CHECK(c->opened_by == "u1");
    CHECK(c->indices.at(0).referenced_id == "h1");
    auto h = e->CaseHistory("demo", "p1");
    REQUIRE(h->size() == 2);
    CHECK((*h)[0].type == (kTxForm | kTxCaseCreate | kTxCaseIndex));
    CHECK((*h)[1].type == (kTxForm | kTxCaseClose));
    CHECK(e->GetCase("other", "p1").status().IsNotFound());
    auto f = e->GetForm("demo", "f3");
    REQUIRE(f.ok());
    CHECK(f->state == FormState::kNormal);
    CHECK(f->user_id == "u2");
    CHECK(*e->GetFormXml("demo", "f3") ==
          CaseForm("f3", "p1", "<update><age>5</age><case_name>Pat</case_name></update><close/>",
                   "u2", "2020-02-01T00:00:00Z"));
    auto check = e->Check();
    REQUIRE(check.ok());
    CHECK(check->problems.empty());
    CHECK(check->forms == 3);
  }
}

TEST_CASE("Engine: duplicates answer per OpenRosa version and store a DUPLICATE record") {
  auto e = OpenMemory();
  std::string xml =
      CaseForm("dup1", "c1", "<create><case_type>t</case_type><case_name>n</case_name></create>");
  REQUIRE(Submit(e.get(), xml).nature == "submit_success");
  auto r2 = Submit(e.get(), xml);
  CHECK(r2.http_status == 201);
  CHECK(r2.nature == "submit_error");
  CHECK(r2.message == "Form is a duplicate of another! (dup1)");
  CHECK(r2.state == FormState::kDuplicate);
  auto d = e->GetForm("demo", r2.form_id);
  REQUIRE(d.ok());
  CHECK(d->orig_id == "dup1");
  auto r3 = Submit(e.get(), xml, "3.0");
  CHECK(r3.http_status == 201);
  CHECK(r3.nature == "submit_success");
  CHECK(e->CaseHistory("demo", "c1")->size() == 1);  // duplicates do not touch cases
}

TEST_CASE("Engine: an edit deprecates the old version and rebuilds its cases") {
  for (auto& [name, make] : Engines()) {
    CAPTURE(name);
    auto e = make();
    REQUIRE(Submit(e.get(), CaseForm("e1", "a",
                                     "<create><case_type>t</case_type><case_name>A</case_name></"
                                     "create><update><x>1</x></update>"))
                .nature == "submit_success");
    REQUIRE(Submit(e.get(), CaseForm("e2", "a", "<update><y>2</y></update>")).nature ==
            "submit_success");
    // The edit of e1 drops x, sets z, and now creates case b instead of nothing.
    std::string edited = CaseForm("e1", "a",
                                  "<create><case_type>t</case_type><case_name>A2</case_name></"
                                  "create><update><z>3</z></update>");
    edited.replace(edited.find("</data>"), 7,
                   "<case xmlns=\"http://commcarehq.org/case/transaction/v2\" "
                   "case_id=\"b\"><create><case_type>t</case_type><case_name>B</case_name></"
                   "create></case></data>");
    auto r = Submit(e.get(), edited);
    REQUIRE(r.nature == "submit_success");
    CHECK(r.form_id == "e1");
    auto f = e->GetForm("demo", "e1");
    REQUIRE(f.ok());
    CHECK_FALSE(f->deprecated_form_id.empty());
    CHECK(f->edited_on != 0);
    auto old = e->GetForm("demo", f->deprecated_form_id);
    REQUIRE(old.ok());
    CHECK(old->state == FormState::kDeprecated);
    CHECK(old->orig_id == "e1");
    CHECK(old->received_on == f->received_on);
    auto a = e->GetCase("demo", "a");
    CHECK(a->name == "A2");
    CHECK(a->properties.count("x") == 0);
    CHECK(a->properties.at("y") == "2");
    CHECK(a->properties.at("z") == "3");
    CHECK(e->GetCase("demo", "b")->name == "B");
    // An edit that no longer touches b leaves b with no live transaction: deleted.
    auto r3 = Submit(e.get(), CaseForm("e1", "a", "<update><w>9</w></update>"));
    REQUIRE(r3.nature == "submit_success");
    CHECK(e->GetCase("demo", "b")->deleted);
    CHECK(e->GetCase("demo", "a")->properties.at("w") == "9");
    CHECK(e->Check()->problems.empty());
  }
}

TEST_CASE("Engine: archive revokes a form's changes and unarchive restores them") {
  for (auto& [name, make] : Engines()) {
    CAPTURE(name);
    auto e = make();
    REQUIRE(Submit(e.get(), CaseForm("a1", "c",
                                     "<create><case_type>t</case_type><case_name>C</case_name></"
                                     "create><update><p>1</p></update>"))
                .nature == "submit_success");
    REQUIRE(Submit(e.get(), CaseForm("a2", "c", "<update><p>2</p></update><close/>")).nature ==
            "submit_success");
    REQUIRE(e->ArchiveForm("demo", "a2").ok());
    CHECK(e->GetForm("demo", "a2")->state == FormState::kArchived);
    auto c = e->GetCase("demo", "c");
    CHECK(c->properties.at("p") == "1");
    CHECK_FALSE(c->closed);
    CHECK(e->ArchiveForm("demo", "a2").code() == StatusCode::kFailedPrecondition);
    REQUIRE(e->UnarchiveForm("demo", "a2").ok());
    c = e->GetCase("demo", "c");
    CHECK(c->properties.at("p") == "2");
    CHECK(c->closed);
    REQUIRE(e->ArchiveForm("demo", "a1").ok());
    CHECK(e->GetCase("demo", "c")->properties.at("p") == "2");
    CHECK(e->ArchiveForm("demo", "missing").IsNotFound());
    REQUIRE(e->RebuildCase("demo", "c").ok());
    CHECK(e->GetCase("demo", "c")->closed);
  }
}

TEST_CASE("Engine: ledger balances and transfers, rebuilt on archive") {
  auto e = OpenSqlite(2);
  REQUIRE(
      Submit(
          e.get(),
          CaseForm("l0", "store",
                   "<create><case_type>supply-point</case_type><case_name>S</case_name></create>"))
          .nature == "submit_success");
  REQUIRE(
      Submit(
          e.get(),
          CaseForm("l0b", "clinic",
                   "<create><case_type>supply-point</case_type><case_name>C</case_name></create>"))
          .nature == "submit_success");
  std::string bal =
      R"(<data xmlns="http://example.org/l"><meta><instanceID>l1</instanceID></meta><balance xmlns="http://commcarehq.org/ledger/v1" entity-id="store" date="2020-01-01" section-id="stock"><entry id="amox" quantity="100"/><entry id="ors" quantity="20"/></balance></data>)";
  REQUIRE(Submit(e.get(), bal).nature == "submit_success");
  std::string tr =
      R"(<data xmlns="http://example.org/l"><meta><instanceID>l2</instanceID></meta><transfer xmlns="http://commcarehq.org/ledger/v1" src="store" dest="clinic" date="2020-01-02" section-id="stock" type="ship"><entry id="amox" quantity="30"/></transfer></data>)";
  REQUIRE(Submit(e.get(), tr).nature == "submit_success");
  auto store = e->GetLedger("demo", "store");
  REQUIRE(store->size() == 2);
  CHECK((*store)[0].entry_id == "amox");
  CHECK((*store)[0].balance == 70);
  CHECK((*e->GetLedger("demo", "clinic"))[0].balance == 30);
  auto h = e->CaseHistory("demo", "clinic");
  CHECK(h->back().type == (kTxForm | kTxLedger));
  REQUIRE(e->ArchiveForm("demo", "l2").ok());
  CHECK((*e->GetLedger("demo", "store"))[0].balance == 100);
  CHECK((*e->GetLedger("demo", "clinic"))[0].balance == 0);
  std::string missing =
      R"(<data xmlns="http://example.org/l"><meta><instanceID>l3</instanceID></meta><balance xmlns="http://commcarehq.org/ledger/v1" entity-id="nope" section-id="stock"><entry id="amox" quantity="1"/></balance></data>)";
  auto r = Submit(e.get(), missing);
  CHECK(r.nature == "submit_error");
  CHECK(r.message.find("IllegalCaseId") == 0);
}

TEST_CASE("Engine: known case errors save an ERROR form, 201 or 422 by OpenRosa version") {
  auto e = OpenMemory(2);
  auto r =
      Submit(e.get(), CaseForm("x1", "c", "<index><parent case_type=\"t\">ghost</parent></index>"));
  CHECK(r.http_status == 201);
  CHECK(r.nature == "submit_error");
  CHECK(r.message == "InvalidCaseIndex: Case 'c' references non-existent case 'ghost'");
  CHECK(e->GetForm("demo", "x1")->state == FormState::kError);
  CHECK(e->GetCase("demo", "c").status().IsNotFound());  // no half-written case
  auto r3 = Submit(e.get(),
                   CaseForm("x2", "c",
                            "<create><case_type>t</case_type><case_name>" + std::string(300, 'n') +
                                "</case_name></create>"),
                   "3.0");
  CHECK(r3.http_status == 422);
  CHECK(r3.nature == "processing_failure");
  CHECK(r3.message.find("CaseValueError") == 0);
  // Resubmitting a fixed version of an ERROR form replaces it.
  auto fixed = Submit(
      e.get(),
      CaseForm("x2", "c", "<create><case_type>t</case_type><case_name>ok</case_name></create>"));
  CHECK(fixed.nature == "submit_success");
  CHECK(e->GetForm("demo", "x2")->state == FormState::kNormal);
  CHECK(e->GetCase("demo", "c")->name == "ok");
  // A case of another domain cannot be touched.
  auto other = Submit(e.get(), CaseForm("x3", "c", "<update><p>1</p></update>"), "", "elsewhere");
  CHECK(other.message.find("IllegalCaseId") == 0);
  CHECK(e->GetCase("demo", "c")->properties.count("p") == 0);
}

TEST_CASE("Engine: lenient implicit create by default, strict mode refuses") {
  auto lenient = OpenMemory();
  REQUIRE(Submit(lenient.get(), CaseForm("s1", "new", "<update><p>1</p></update>", "u7")).nature ==
          "submit_success");
  auto c = lenient->GetCase("demo", "new");
  CHECK(c->owner_id == "u7");
  CHECK(c->opened_on != 0);
  auto strict = OpenSqlite(1, nullptr, true);
  auto r = Submit(strict.get(), CaseForm("s1", "new", "<update><p>1</p></update>"));
  CHECK(r.nature == "submit_error");
  CHECK(r.message.find("IllegalCaseId") == 0);
}

// A version newer than any known is kept as sent, as HQ's OpenRosaMiddleware keeps the header
// (corehq/middleware.py): a phone updated before its server still submits.
TEST_CASE("Engine: a newer X-OpenRosa-Version is accepted and kept") {
  auto e = OpenMemory();
  auto newer = Submit(
      e.get(),
      CaseForm("b0", "c0", "<create><case_type>t</case_type><case_name>n</case_name></create>"),
      "9.9");
  CHECK(newer.http_status == 201);
  CHECK(e->GetForm("demo", "b0")->openrosa_version == "9.9");
}

TEST_CASE("Engine: bad input gets a clear error and writes nothing") {
  auto e = OpenMemory();
  auto bad_version = Submit(e.get(), CaseForm("b1", "c", "<update/>"), "three");
  CHECK(bad_version.http_status == 400);
  CHECK(bad_version.message.find("X-OpenRosa-Version 'three' is not a version number") !=
        std::string::npos);
  CHECK(Submit(e.get(), CaseForm("b1", "c", "<update/>"), "3..0").http_status == 400);
  auto empty = Submit(e.get(), "");
  CHECK(empty.http_status == 400);
  auto bad_xml = Submit(e.get(), "<data xmlns='x'><a></data>");
  CHECK(bad_xml.http_status == 500);
  CHECK(bad_xml.message.find("There was an error processing the form: Invalid XML") == 0);
  CHECK(bad_xml.state == FormState::kSubmissionErrorLog);
  auto no_ns = Submit(e.get(), "<data><a/></data>");
  CHECK(no_ns.message ==
        "There was an error processing the form: Form is missing a required field: XMLNS");
  SubmitRequest big;
  big.domain = "demo";
  big.body = "<data xmlns='x'>" + std::string(11 * 1024 * 1024, ' ') + "</data>";
  auto r = e->Submit(big);
  CHECK(r.http_status == 413);
  CHECK(r.form_id.empty());
  SubmitRequest no_part;
  no_part.domain = "demo";
  no_part.content_type = "multipart/form-data; boundary=XX";
  no_part.body =
      "--XX\r\nContent-Disposition: form-data; name=\"other.jpg\"; "
      "filename=\"other.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nJ\r\n--XX--\r\n";
  auto np = e->Submit(no_part);
  CHECK(np.http_status == 400);
  CHECK(np.message.find("xml_submission_file") != std::string::npos);
  SubmitRequest field = no_part;
  field.body = "--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XX--\r\n";
  CHECK(e->Submit(field).http_status == 400);
  SubmitRequest badname = no_part;
  badname.body =
      "--XX\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; "
      "filename=\"f.txt\"\r\n\r\n<a xmlns='x'/>\r\n--XX--\r\n";
  CHECK(e->Submit(badname).http_status == 422);
  SubmitRequest badatt = no_part;
  badatt.body =
      "--XX\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; "
      "filename=\"f.xml\"\r\n\r\n<a xmlns='x'/>\r\n--XX\r\nContent-Disposition: form-data; "
      "name=\"evil.exe\"; filename=\"evil.exe\"\r\nContent-Type: "
      "application/x-msdownload\r\n\r\nMZ\r\n--XX--\r\n";
  auto ba = e->Submit(badatt);
  CHECK(ba.http_status == 422);
  CHECK(ba.message.find("evil.exe") != std::string::npos);
  SubmitRequest truncated = no_part;
  truncated.body =
      "--XX\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; "
      "filename=\"f.xml\"\r\n\r\n<a xmlns='x'/>";
  CHECK(e->Submit(truncated).http_status == 400);
  SubmitRequest bad_domain;
  bad_domain.domain = "no spaces/allowed";
  bad_domain.body = "<a xmlns='x'/>";
  CHECK(e->Submit(bad_domain).http_status == 400);
  auto empty_id = Submit(e.get(), CaseForm("b9", "", "<update/>"));
  CHECK(empty_id.message == "IllegalCaseId: case_id must not be empty");
  auto report = e->Check();
  CHECK(report->cases == 0);
  CHECK(report->problems.empty());
}

TEST_CASE("Engine: multipart submissions store attachments and case attachments point at them") {
  auto e = OpenSqlite(1);
  std::string xml =
      CaseForm("m1", "c",
               "<create><case_type>t</case_type><case_name>n</case_name></"
               "create><attachment><photo src=\"photo.jpg\" from=\"local\"/></attachment>");
  SubmitRequest r;
  r.domain = "demo";
  r.content_type = "multipart/form-data; boundary=BB";
  r.body = MultipartBody(xml, "photo.jpg", "image/jpeg", "\xff\xd8JPEGDATA");
  auto resp = e->Submit(r);
  REQUIRE(resp.nature == "submit_success");
  auto f = e->GetForm("demo", "m1");
  REQUIRE(f->attachments.size() == 2);
  CHECK(f->attachments[1].name == "photo.jpg");
  CHECK(f->attachments[1].length == 10);
  CHECK(*e->GetFormXml("demo", "m1") == xml);
  auto c = e->GetCase("demo", "c");
  REQUIRE(c->attachments.size() == 1);
  CHECK(c->attachments[0].blob_key == f->attachments[1].blob_key);
  CHECK(e->Check()->problems.empty());
}

TEST_CASE("Engine: concurrent updates of one case lose nothing") {
  for (auto [dbs, durable] :
       {std::pair{1, false}, std::pair{3, false}, std::pair{1, true}, std::pair{2, true}}) {
    CAPTURE(dbs);
    CAPTURE(durable);
    auto e = OpenSqlite(dbs, nullptr, false, durable);
    REQUIRE(Submit(e.get(),
                   CaseForm("base", "shared",
                            "<create><case_type>t</case_type><case_name>s</case_name></create>"))
                .nature == "submit_success");
    constexpr int kThreads = 8, kPerThread = 25;
    std::vector<std::thread> ts;
    std::atomic<int> failures{0};
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          auto r = Submit(e.get(),
                          CaseForm(fmt::format("t{}-{}", t, i), "shared",
                                   fmt::format("<update><p{}_{}>v</p{}_{}></update>", t, i, t, i)));
          if (r.nature != "submit_success") ++failures;
          auto own =
              Submit(e.get(),
                     CaseForm(fmt::format("o{}-{}", t, i), fmt::format("own{}-{}", t, i),
                              "<create><case_type>t</case_type><case_name>o</case_name></create>"));
          if (own.nature != "submit_success") ++failures;
        }
      });
    for (auto& t : ts) t.join();
    CHECK(failures == 0);
    auto c = e->GetCase("demo", "shared");
    CHECK(c->properties.size() == kThreads * kPerThread);
    CHECK(e->CaseHistory("demo", "shared")->size() == kThreads * kPerThread + 1);
    CHECK(c->rev == kThreads * kPerThread + 1);
    CHECK(e->Check()->problems.empty());
  }
}

TEST_CASE("Engine: a second writer is refused while read-only opens succeed") {
  std::string dir;
  auto e = OpenSqlite(1, &dir);
  EngineOptions o;
  o.data_dir = dir;
  auto second = Engine::Open(o);
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == StatusCode::kFailedPrecondition);
  CHECK(second.status().message().find("locked by another writing process (pid") !=
        std::string::npos);
  o.read_only = true;
  auto reader = Engine::Open(o);
  REQUIRE(reader.ok());
  REQUIRE(
      Submit(e.get(), CaseForm("r1", "c",
                               "<create><case_type>t</case_type><case_name>n</case_name></create>"))
          .nature == "submit_success");
  CHECK((*reader)->GetCase("demo", "c")->name == "n");
  CHECK((*reader)->Submit(SubmitRequest{.domain = "demo", .body = "<a xmlns='x'/>"}).http_status ==
        503);
  e.reset();
  o.read_only = false;
  CHECK(Engine::Open(o).ok());  // the lock is released with the writer
}

TEST_CASE("Engine: Init validates its options and refuses to re-initialise") {
  InitOptions io;
  io.data_dir = TempDir("init");
  io.shards = 100;
  CHECK(Engine::Init(io).IsInvalidArgument());
  io.shards = 16;
  io.databases = 32;
  CHECK(Engine::Init(io).IsInvalidArgument());
  io.databases = 2;
  REQUIRE(Engine::Init(io).ok());
  CHECK(Engine::Init(io).code() == StatusCode::kAlreadyExists);
  EngineOptions o;
  o.data_dir = TempDir("notinit");
  CHECK(Engine::Open(o).status().IsNotFound());
}

TEST_CASE("Engine: a blob lost in a crash is restored from the journal kept with the rows") {
  for (int wait_ms : {0, 600}) {  // before and after the SQLite transaction is sealed
    CAPTURE(wait_ms);
    // Snapshot a running engine's directory before its blobs are synced (as a power cut would),
    // damage the form's blob in the snapshot, and open the snapshot: the redo log replays the
    // rows and the blob journal rewrites the blob.
    std::string dir = TempDir("journal");
    InitOptions io;
    io.data_dir = dir;
    io.shards = 16;
    REQUIRE(Engine::Init(io).ok());
    EngineOptions o;
    o.data_dir = dir;
    o.blob_flush_interval_ms = 3600 * 1000;  // no background blob sync during the test
    auto e = Engine::Open(o);
    REQUIRE(e.ok());
    std::string xml =
        CaseForm("j1", "jc", "<create><case_type>t</case_type><case_name>n</case_name></create>");
    REQUIRE(Submit(e->get(), xml).nature == "submit_success");
    auto form = (*e)->GetForm("demo", "j1");
    REQUIRE(form.ok());
    std::string key = form->attachments.at(0).blob_key;
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    std::string snap = TempDir("journal-snap");
    std::filesystem::copy(dir, snap, std::filesystem::copy_options::recursive);
    std::filesystem::remove(snap + "/LOCK");
    e->reset();
    // Damage the blob in the snapshot: zero its record (pack/<volume>/<offset>/<length>).
    unsigned vol = 0;
    unsigned long long off = 0, len = 0;
    REQUIRE(std::sscanf(key.c_str(), "pack/%u/%llu/%llu", &vol, &off, &len) == 3);
    {
      std::fstream f(fmt::format("{}/blobs/vol-{:06}.pack", snap, vol),
                     std::ios::in | std::ios::out | std::ios::binary);
      REQUIRE(f.good());
      f.seekp(static_cast<std::streamoff>(off));
      std::string zeros(32 + len, '\0');
      f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
    }
    EngineOptions so;
    so.data_dir = snap;
    auto restored = Engine::Open(so);
    REQUIRE_MESSAGE(restored.ok(), restored.status().ToString());
    CHECK(*(*restored)->GetFormXml("demo", "j1") == xml);
    CHECK((*restored)->GetCase("demo", "jc")->name == "n");
    CHECK((*restored)->Check()->problems.empty());
  }
}
