#include <commcare/pillows.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "../flaky_http.h"
#include "../private_postgres.h"
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

TEST_CASE("Engine: bad input gets a clear error and writes nothing") {
  auto e = OpenMemory();
  auto bad_version = Submit(e.get(), CaseForm("b1", "c", "<update/>"), "9.9");
  CHECK(bad_version.http_status == 400);
  CHECK(bad_version.message.find("X-OpenRosa-Version '9.9'") != std::string::npos);
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

TEST_CASE("S3: forms and attachments go to the bucket, and a failing bucket fails the submission") {
  const std::string ep = cctest::TestServer("COMMCARE_TEST_S3");
  if (ep.empty()) return;
  auto open = [](const std::string& blob_store) {
    std::string dir = cctest::TempDir("s3");
    commcare::InitOptions io;
    io.data_dir = dir;
    io.shards = 16;
    io.blob_store = blob_store;
    auto st = commcare::Engine::Init(io);
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    commcare::EngineOptions eo;
    eo.data_dir = dir;
    auto e = commcare::Engine::Open(eo);
    REQUIRE_MESSAGE(e.ok(), e.status().ToString());
    return std::move(e).value();
  };
  {
    auto e = open(fmt::format(
        R"({{"kind": "s3", "endpoint": "{}", "bucket": "blobs", "access_key": "S3RVER",
            "secret_key": "S3RVER", "prefix": "engine-{}-{}/"}})",
        ep, ::getpid(), std::rand()));
    std::string xml =
        cctest::CaseForm("s3-f1", "s3-c1", "<create><case_type>t</case_type></create>");
    commcare::SubmitRequest r;
    r.domain = "demo";
    r.content_type = "multipart/form-data; boundary=BB";
    r.body = cctest::MultipartBody(xml, "photo.jpg", "image/jpeg", "JPEGDATA");
    auto resp = e->Submit(r);
    REQUIRE_MESSAGE(resp.http_status == 201, resp.message);
    CHECK(*e->GetFormXml("demo", "s3-f1") == xml);
    CHECK(*e->GetFormAttachment("demo", "s3-f1", "photo.jpg") == "JPEGDATA");
    CHECK(*e->Database(0)->MaxStagedBlobSeq() == 0);  // S3 puts are durable: no journal copy
    auto check = e->Check();
    REQUIRE(check.ok());
    CHECK(check->problems.empty());
  }
  {
    cctest::FlakyHttp s3(false);
    auto e = open(fmt::format(
        R"({{"kind": "s3", "endpoint": "http://127.0.0.1:{}", "bucket": "blobs",
            "access_key": "k", "secret_key": "k", "max_attempts": 2}})",
        s3.port));
    auto resp = cctest::Submit(
        e.get(), cctest::CaseForm("s3-f2", "s3-c2", "<create><case_type>t</case_type></create>"));
    CHECK(resp.http_status == 503);
    CHECK(resp.message.find("InternalError") != std::string::npos);
    CHECK(e->GetForm("demo", "s3-f2").status().IsNotFound());
    CHECK(e->GetCase("demo", "s3-c2").status().IsNotFound());
  }
  InitOptions bad;
  bad.data_dir = cctest::TempDir("s3bad");
  bad.blob_store = R"({"kind": "s3", "endpoint": "http://x"})";
  CHECK(Engine::Init(bad).message().find("bucket") != std::string::npos);
}

TEST_CASE("Postgres: the engine on two PostgreSQL databases, across a reopen") {
  const std::vector<std::string> dsns = cctest::NewPostgresDatabases(2);
  if (dsns.empty()) return;
  std::string dir = cctest::TempDir("pg");
  InitOptions io;
  io.data_dir = dir;
  io.shards = 16;
  io.databases = 2;
  io.primary =
      fmt::format(R"({{"kind": "postgres", "databases": ["{}", "{}"]}})", dsns[0], dsns[1]);
  auto st = Engine::Init(io);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  InitOptions bad = io;
  bad.data_dir = dir + "-bad";
  bad.primary = fmt::format(R"({{"kind": "postgres", "databases": ["{}"]}})", dsns[0]);
  CHECK(Engine::Init(bad).message().find("1 connection strings for 2 databases") !=
        std::string::npos);
  EngineOptions eo;
  eo.data_dir = dir;
  {
    auto e = Engine::Open(eo);
    REQUIRE_MESSAGE(e.ok(), e.status().ToString());
    for (int i = 0; i < 20; ++i)
      REQUIRE(Submit(e->get(), CaseForm(fmt::format("pf{}", i), fmt::format("pc{}", i),
                                        "<create><case_type>t</case_type><owner_id>o</owner_id>"
                                        "</create><update><n>1</n></update>"))
                  .http_status == 201);
    // Updates: each goes to its case's database, whichever database holds the form.
    for (int i = 0; i < 20; ++i)
      REQUIRE(Submit(e->get(), CaseForm(fmt::format("pu{}", i), fmt::format("pc{}", i),
                                        "<update><n>2</n></update>", "u1", "2020-01-02T00:00:00Z"))
                  .http_status == 201);
    REQUIRE((*e)->ArchiveForm("demo", "pu3").ok());
    auto check = (*e)->Check();
    REQUIRE_MESSAGE(check.ok(), check.status().ToString());
    CHECK(check->problems.empty());
    CHECK(check->forms == 40);
    CHECK(check->cases == 20);
  }
  auto e = Engine::Open(eo);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  CHECK((*e)->GetCase("demo", "pc5")->properties.at("n") == "2");
  CHECK((*e)->GetCase("demo", "pc3")->properties.at("n") == "1");  // its update is archived
  CHECK((*e)->GetForm("demo", "pu3")->state == FormState::kArchived);
  int n = 0;
  storage::CaseFilter f;
  f.domain = "demo";
  REQUIRE((*e)->ListCases(f, [&](const CaseRecord&) { return ++n > 0; }).ok());
  CHECK(n == 20);
  REQUIRE((*e)->RelayChanges().ok());
  CHECK((*e)->Database(0)->ReadOutbox(0, 100)->empty());
}

TEST_CASE("Postgres: a restart mid-load fails submissions cleanly with 503, then they succeed") {
  if (cctest::TestServer("COMMCARE_TEST_PG").empty()) return;
  cctest::PrivatePostgres pg;
  std::string dir = cctest::TempDir("pgrestart");
  InitOptions io;
  io.data_dir = dir;
  io.shards = 16;
  io.primary =
      fmt::format(R"({{"kind": "postgres", "databases": ["{} dbname=postgres"]}})", pg.dsn);
  auto st = Engine::Init(io);
  REQUIRE_MESSAGE(st.ok(), st.ToString());
  EngineOptions eo;
  eo.data_dir = dir;
  auto e = Engine::Open(eo);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  auto form = [](int i) {
    return CaseForm(fmt::format("rf{}", i), fmt::format("rc{}", i),
                    "<create><case_type>t</case_type></create>");
  };
  for (int i = 0; i < 5; ++i) REQUIRE(Submit(e->get(), form(i)).http_status == 201);
  pg.Stop();
  auto down = Submit(e->get(), form(5));
  CHECK(down.http_status == 503);
  CHECK(down.message.find("postgres") != std::string::npos);
  pg.Start();
  SubmitResponse up;
  for (int attempt = 0; attempt < 20; ++attempt) {  // the pool reconnects on the next request
    up = Submit(e->get(), form(5));
    if (up.http_status == 201) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  CHECK(up.http_status == 201);
  CHECK(up.state == FormState::kNormal);  // not a duplicate: nothing of the failed try was kept
  auto check = (*e)->Check();
  REQUIRE_MESSAGE(check.ok(), check.status().ToString());
  CHECK(check->problems.empty());
  CHECK(check->forms == 6);
  CHECK(check->cases == 6);
}

TEST_CASE("Postgres: two engines on one store lose no update and relay each change once") {
  // Two processes' worth of engines (own data directories) on the same two databases and one
  // Kafka log, both relaying: concurrent updates of the same cases, one new form sent to both.
  const std::vector<std::string> dsns = cctest::NewPostgresDatabases(2);
  const std::string boot = cctest::TestServer("COMMCARE_TEST_KAFKA");
  if (boot.empty() || dsns.empty()) return;
  const char* control = std::getenv("COMMCARE_TEST_KAFKA_CONTROL");
  const std::string base = cctest::TempDir("pgtwo");
  std::unique_ptr<Engine> engines[2];
  for (int k = 0; k < 2; ++k) {
    InitOptions io;
    io.data_dir = fmt::format("{}/server{}", base, k);
    io.shards = 16;
    io.databases = 2;
    io.primary =
        fmt::format(R"({{"kind": "postgres", "databases": ["{}", "{}"]}})", dsns[0], dsns[1]);
    io.change_log = fmt::format(
        R"({{"kind": "kafka", "bootstrap_servers": "{}", "topic_control": "{}",
            "topic_prefix": "two{:x}.", "partitions": 8}})",
        boot, control ? control : "", std::hash<std::string>{}(base));
    auto st = Engine::Init(io);  // the second applies the schema again: a no-op
    REQUIRE_MESSAGE(st.ok(), st.ToString());
    EngineOptions eo;
    eo.data_dir = io.data_dir;
    auto e = Engine::Open(eo);
    REQUIRE_MESSAGE(e.ok(), e.status().ToString());
    engines[k] = std::move(e).value();
  }
  constexpr int kThreads = 4, kForms = 25, kCases = 5;
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kForms; ++i) {
        std::string blocks;
        for (int c = 0; c < kCases; ++c)
          blocks += fmt::format(
              R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="shared-{}" date_modified="2020-01-01T00:00:00Z" user_id="u1"><update><f{}_{}>1</f{}_{}></update></case>)",
              c, t, i, t, i);
        std::string xml = CaseForm(fmt::format("two-{}-{}", t, i), "own-" + std::to_string(t),
                                   "<update><n>1</n></update>");
        xml.insert(xml.find("</data>"), blocks);
        auto r = Submit(engines[t % 2].get(), xml);
        if (r.http_status != 201 && failures++ == 0) MESSAGE(r.http_status << " " << r.message);
        // And a form living in shared-0's own database that updates only it (its locks are
        // taken inside the commit, against the other forms' session locks).
        std::string id;
        for (int n = 0;
             id.empty() || engines[0]->DatabaseFor(id) != engines[0]->DatabaseFor("shared-0"); ++n)
          id = fmt::format("one-{}-{}-{}", t, i, n);
        auto one = Submit(engines[t % 2].get(),
                          CaseForm(id, "shared-0",
                                   fmt::format("<update><s{}_{}>1</s{}_{}></update>", t, i, t, i)));
        if (one.http_status != 201 && failures++ == 0)
          MESSAGE(one.http_status << " " << one.message);
      }
    });
  // One new form reaches both servers at once: one stores it, the other a duplicate of it.
  const std::string twin = CaseForm("twin", "twin-case", "<update><n>1</n></update>");
  std::thread a([&] { CHECK(Submit(engines[0].get(), twin).http_status == 201); });
  std::thread b([&] { CHECK(Submit(engines[1].get(), twin).http_status == 201); });
  for (auto& t : ts) t.join();
  a.join();
  b.join();
  CHECK(failures == 0);
  // Every update of every thread is on its case: f<t>_<i> on each shared case, s<t>_<i> (the
  // single-database forms) on shared-0.
  auto updates_on = [&](int c, const char* prefix) {
    auto got = engines[c % 2]->GetCase("demo", fmt::format("shared-{}", c));
    REQUIRE(got.ok());
    int n = 0;
    for (int t = 0; t < kThreads; ++t)
      for (int i = 0; i < kForms; ++i)
        n += static_cast<int>(got->properties.count(fmt::format("{}{}_{}", prefix, t, i)));
    return n;
  };
  for (int c = 0; c < kCases; ++c) CHECK(updates_on(c, "f") == kThreads * kForms);
  CHECK(updates_on(0, "s") == kThreads * kForms);
  auto original = engines[1]->GetForm("demo", "twin");
  REQUIRE(original.ok());
  CHECK(original->state == FormState::kNormal);
  // Both relay loops run; the lease lets one relay. Wait for the outboxes to empty.
  int64_t left = -1;
  for (int i = 0; i < 300 && left != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = 0;
    for (int d = 0; d < 2; ++d)
      left += static_cast<int64_t>(engines[0]->Database(d)->ReadOutbox(0, 100000)->size());
  }
  REQUIRE(left == 0);
  // Each change exactly once: a form record per form (the twin's duplicate has its own id),
  // a case record per case per form that touched it.
  std::map<std::string, int> per_doc;
  int forms = 0, cases = 0;
  for (const char* topic : {"form-sql", "case-sql"}) {
    auto parts = engines[0]->Changes()->Partitions(topic);
    REQUIRE(parts.ok());
    for (int p = 0; p < *parts; ++p) {
      auto recs = engines[0]->Changes()->Read(topic, p, 0, 1000000);
      REQUIRE(recs.ok());
      for (const auto& r : *recs) {
        ++per_doc[r.key];
        ++(std::string_view(topic) == "form-sql" ? forms : cases);
      }
    }
  }
  CHECK(forms == 2 * kThreads * kForms + 2);
  CHECK(cases == kThreads * kForms * (kCases + 2) + 1);  // + the twin's case
  for (int c = 0; c < kCases; ++c)
    CHECK(per_doc[fmt::format("shared-{}", c)] == (c == 0 ? 2 : 1) * kThreads * kForms);
  CHECK(per_doc["twin"] == 1);
  // The relaying engine goes (its lease with it); the other takes the relay over, fences the
  // old producer, reads the marks, and appends only what is new.
  auto lead0 = engines[0]->Database(0)->HoldRelayLease();
  REQUIRE(lead0.ok());
  const int leader = *lead0 ? 0 : 1, other = 1 - leader;
  CHECK_FALSE(*engines[other]->Database(0)->HoldRelayLease());  // one holder at a time
  engines[leader].reset();
  for (int i = 0; i < 10; ++i)
    REQUIRE(Submit(engines[other].get(),
                   CaseForm(fmt::format("after-{}", i), "shared-0",
                            fmt::format("<update><after_{}>1</after_{}></update>", i, i)))
                .http_status == 201);
  int64_t after_left = -1, after_forms = 0;
  for (int i = 0; i < 300 && (after_left != 0 || after_forms != forms + 10); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after_left = 0;
    for (int d = 0; d < 2; ++d)
      after_left +=
          static_cast<int64_t>(engines[other]->Database(d)->ReadOutbox(0, 100000)->size());
    after_forms = 0;
    auto parts = engines[other]->Changes()->Partitions("form-sql");
    REQUIRE(parts.ok());
    for (int p = 0; p < *parts; ++p)
      after_forms +=
          static_cast<int64_t>(engines[other]->Changes()->Read("form-sql", p, 0, 1000000)->size());
  }
  CHECK(after_left == 0);
  CHECK(after_forms == forms + 10);  // the ten new forms, nothing appended twice
}

TEST_CASE(
    "init refuses a meta or pillows setting that is not a PostgreSQL database, naming the key") {
  for (std::string key : {"meta", "pillows"}) {
    CAPTURE(key);
    auto init = [&](const char* value) {
      InitOptions o;
      o.data_dir = cctest::TempDir("badmeta");
      (key == "meta" ? o.meta : o.pillows) = value;
      return Engine::Init(o);
    };
    CHECK(init(R"({"kind": "mysql", "database": "x"})").message().find(key + ".kind") !=
          std::string::npos);
    CHECK(init(R"({"kind": "postgres"})").message().find(key + ".database") != std::string::npos);
    CHECK(init(R"({"kind": "postgres", "database": "x", "colour": 1})").message().find("colour") !=
          std::string::npos);
    CHECK(init("[1]").message().find(key + " must be a JSON object") != std::string::npos);
    CHECK(init(R"({"kind": "postgres", "database": "dbname=m"})").ok());
  }
  // A data directory whose commcare.json names a pillows database: its pillows live there.
  InitOptions o;
  o.data_dir = cctest::TempDir("pillowsat");
  CHECK(PillowStoreAt(o.data_dir) == o.data_dir + "/pillows");
  o.pillows = R"({"kind": "postgres", "database": "host=h dbname=p"})";
  REQUIRE(Engine::Init(o).ok());
  CHECK(PillowStoreAt(o.data_dir) == "postgres:host=h dbname=p");
}
