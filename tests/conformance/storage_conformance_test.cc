// One conformance suite that every PrimaryStore and BlobStore implementation runs.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "../flaky_http.h"
#include "../test_util.h"
#include "commcare/storage/blob_store.h"
#include "commcare/storage/primary_store.h"
#include "conformance_helpers.h"
#include "util/codec.h"

using namespace commcare;
using namespace commcare::storage;
using cctest::S3ForTests;

namespace {

std::string TempDir(const char* tag) {
  std::string d = cctest::FreshTempDir("cc-conf", tag);
  std::filesystem::create_directories(d);
  return d;
}

struct StoreFactory {
  const char* name;
  std::function<std::unique_ptr<PrimaryStore>()> make;
};

// The PostgreSQL server the suite runs against: COMMCARE_TEST_PG is a libpq connection string
// without a database (scripts/with-test-servers starts a throw-away cluster). Each call makes
// a fresh database and returns its connection string. Under CI=true a missing server fails.
std::optional<std::string> FreshPostgresDb() {
  const std::string base = cctest::TestServer("COMMCARE_TEST_PG");
  if (base.empty()) return std::nullopt;
  static int n = 0;
  std::string db = fmt::format("cc_{}_{}_{}", ::getpid(), n++, std::rand() % 100000);
  std::string cmd =
      fmt::format("psql -q \"{} dbname=postgres\" -c 'CREATE DATABASE {}' 2>&1", base, db);
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[512];
  std::string out;
  while (size_t k = fread(buf, 1, sizeof buf, p)) out.append(buf, k);
  REQUIRE_MESSAGE(::pclose(p) == 0, out);
  return fmt::format("{} dbname={}", base, db);
}

std::vector<StoreFactory> StoreFactories() {
  std::vector<StoreFactory> out = {
      {"memory", [] { return NewMemoryPrimaryStore(); }},
      {"sqlite",
       [] {
         auto r = OpenSqlitePrimaryStore(TempDir("sqlite") + "/p0.sqlite", false, false);
         REQUIRE(r.ok());
         return std::move(r).value();
       }},
  };
  if (!cctest::TestServer("COMMCARE_TEST_PG").empty())
    out.push_back({"postgres", [] {
                     auto dsn = FreshPostgresDb();
                     REQUIRE(dsn);
                     auto r = OpenPostgresPrimaryStore(*dsn);
                     REQUIRE_MESSAGE(r.ok(), r.status().ToString());
                     return std::move(r).value();
                   }});
  return out;
}

struct BlobFactory {
  const char* name;
  std::function<std::unique_ptr<BlobStore>()> make;
};

std::vector<BlobFactory> BlobFactories() {
  std::vector<BlobFactory> out = {
      {"memory", [] { return NewMemoryBlobStore(); }},
      {"files",
       [] {
         auto r = OpenFsBlobStore(TempDir("fs"));
         REQUIRE(r.ok());
         return std::move(r).value();
       }},
      {"pack",
       [] {
         auto r = OpenPackBlobStore(TempDir("pack"));
         REQUIRE(r.ok());
         return std::move(r).value();
       }},
  };
  if (S3ForTests())
    out.push_back({"s3", [] {
                     auto r = OpenS3BlobStore(*S3ForTests());
                     REQUIRE_MESSAGE(r.ok(), r.status().ToString());
                     return std::move(r).value();
                   }});
  return out;
}

Status CommitOne(PrimaryStore* s, WriteBatch* b) {
  std::vector<Status> results;
  WriteBatch* arr[] = {b};
  CC_RETURN_IF_ERROR(s->CommitGroup(arr, &results));
  return results[0];
}

CaseRecord MakeCase(const std::string& id, int64_t rev) {
  CaseRecord c;
  c.case_id = id;
  c.domain = "demo";
  c.type = "person";
  c.owner_id = "u1";
  c.name = "N" + id;
  c.properties["age"] = "3";
  c.indices.push_back({"parent", "household", "h1", "child"});
  c.rev = rev;
  return c;
}

}  // namespace

TEST_CASE("PrimaryStore: forms and cases round-trip") {
  for (const auto& f : StoreFactories()) {
    CAPTURE(f.name);
    auto s = f.make();
    FormRecord form;
    form.form_id = "f1";
    form.domain = "demo";
    form.xmlns = "x";
    form.received_on = 123;
    form.attachments.push_back({"form.xml", "text/xml", 4, "m", "k"});
    WriteBatch b;
    b.ops.emplace_back(PutForm{form});
    b.ops.emplace_back(PutCase{MakeCase("c1", 1), 0});
    REQUIRE(CommitOne(s.get(), &b).ok());
    auto got = s->GetForm("f1");
    REQUIRE(got.ok());
    REQUIRE(got->has_value());
    CHECK((*got)->received_on == 123);
    CHECK((*got)->attachments.at(0).blob_key == "k");
    CHECK_FALSE(s->GetForm("nope")->has_value());
    auto c = s->GetCase("c1");
    REQUIRE(c->has_value());
    CHECK((*c)->properties.at("age") == "3");
    CHECK((*c)->indices.at(0).referenced_id == "h1");
    CHECK((*c)->rev == 1);
  }
}

TEST_CASE("PrimaryStore: a failed rev check aborts only its own batch") {
  for (const auto& f : StoreFactories()) {
    CAPTURE(f.name);
    auto s = f.make();
    WriteBatch first;
    first.ops.emplace_back(PutCase{MakeCase("c1", 1), 0});
    REQUIRE(CommitOne(s.get(), &first).ok());
    WriteBatch stale, fresh;
    stale.ops.emplace_back(PutForm{FormRecord{.form_id = "stale", .domain = "d"}});
    stale.ops.emplace_back(PutCase{MakeCase("c1", 2), 0});  // expects a new case: stale
    fresh.ops.emplace_back(PutCase{MakeCase("c2", 1), 0});
    std::vector<Status> results;
    WriteBatch* arr[] = {&stale, &fresh};
    REQUIRE(s->CommitGroup(arr, &results).ok());
    CHECK(results[0].IsAborted());
    CHECK(results[1].ok());
    CHECK_FALSE(s->GetForm("stale")->has_value());  // nothing of the aborted batch
    CHECK((*s->GetCase("c1"))->rev == 1);
    CHECK(s->GetCase("c2")->has_value());
    // A form that must be new: refused once it exists (and its batch writes nothing), while
    // an ordinary put replaces it.
    WriteBatch first_form, again, replace;
    first_form.ops.emplace_back(PutForm{FormRecord{.form_id = "f", .domain = "d"}, true});
    REQUIRE(CommitOne(s.get(), &first_form).ok());
    again.ops.emplace_back(PutCase{MakeCase("c3", 1), 0});
    again.ops.emplace_back(PutForm{FormRecord{.form_id = "f", .domain = "other"}, true});
    CHECK(CommitOne(s.get(), &again).IsAborted());
    CHECK((*s->GetForm("f"))->domain == "d");
    CHECK_FALSE(s->GetCase("c3")->has_value());
    replace.ops.emplace_back(PutForm{FormRecord{.form_id = "f", .domain = "other"}});
    REQUIRE(CommitOne(s.get(), &replace).ok());
    CHECK((*s->GetForm("f"))->domain == "other");
  }
}

TEST_CASE("PrimaryStore: case transactions upsert by form and keep order") {
  for (const auto& f : StoreFactories()) {
    CAPTURE(f.name);
    auto s = f.make();
    WriteBatch b;
    b.ops.emplace_back(
        PutCaseTransaction{CaseTransaction{.case_id = "c", .form_id = "f1", .type = 1}});
    b.ops.emplace_back(
        PutCaseTransaction{CaseTransaction{.case_id = "c", .form_id = "f2", .type = 1}});
    b.ops.emplace_back(PutCaseTransaction{
        CaseTransaction{.case_id = "c", .form_id = "f1", .type = 129, .revoked = true}});
    b.ops.emplace_back(
        PutCaseTransaction{CaseTransaction{.case_id = "c", .type = 2, .reason = "r"}});
    REQUIRE(CommitOne(s.get(), &b).ok());
    auto txs = s->GetCaseTransactions("c");
    REQUIRE(txs.ok());
    REQUIRE(txs->size() == 3);
    CHECK((*txs)[0].form_id == "f1");
    CHECK((*txs)[0].type == 129);
    CHECK((*txs)[0].revoked);
    CHECK((*txs)[1].form_id == "f2");
    CHECK((*txs)[2].reason == "r");
    CHECK((*txs)[0].seq < (*txs)[1].seq);
  }
}

TEST_CASE("PrimaryStore: ledgers, outbox order and scans") {
  for (const auto& f : StoreFactories()) {
    CAPTURE(f.name);
    auto s = f.make();
    WriteBatch b;
    b.ops.emplace_back(PutLedgerValue{
        LedgerValue{.case_id = "c", .section_id = "s", .entry_id = "p", .balance = 4}});
    b.ops.emplace_back(ReplaceLedgerTransactions{"f1",
                                                 "c",
                                                 {LedgerTransaction{.form_id = "f1",
                                                                    .case_id = "c",
                                                                    .section_id = "s",
                                                                    .entry_id = "p",
                                                                    .report_date = 2,
                                                                    .delta = 4,
                                                                    .seq = 1}}});
    for (int i = 0; i < 5; ++i) {
      ChangeMeta m;
      m.topic = "case-sql";
      m.document_id = fmt::format("doc{}", i);
      b.ops.emplace_back(AddOutbox{m});
    }
    CaseRecord closed = MakeCase("z", 1);
    closed.closed = true;
    b.ops.emplace_back(PutCase{MakeCase("a", 1), 0});
    b.ops.emplace_back(PutCase{closed, 0});
    REQUIRE(CommitOne(s.get(), &b).ok());
    CHECK(b.outbox_seqs.size() == 5);
    CHECK((*s->GetLedgerValues("c")).at(0).balance == 4);
    CHECK((*s->GetLedgerTransactions("c")).size() == 1);
    WriteBatch replace;
    replace.ops.emplace_back(ReplaceLedgerTransactions{"f1", "c", {}});
    REQUIRE(CommitOne(s.get(), &replace).ok());
    CHECK((*s->GetLedgerTransactions("c")).empty());
    auto rows = s->ReadOutbox(0, 3);
    REQUIRE(rows->size() == 3);
    CHECK((*rows)[0].meta.document_id == "doc0");
    auto rest = s->ReadOutbox((*rows)[2].seq, 100);
    REQUIRE(rest->size() == 2);
    CHECK((*rest)[1].meta.document_id == "doc4");
    std::vector<std::string> open;
    CaseFilter filter;
    filter.domain = "demo";
    filter.closed = false;
    REQUIRE(s->ScanCases(filter, [&](const CaseRecord& c) {
               open.push_back(c.case_id);
               return true;
             }).ok());
    CHECK(open == std::vector<std::string>{"a"});
  }
}

TEST_CASE("PrimaryStore: scans cross page boundaries in case_id order and stop when asked") {
  for (const auto& f : StoreFactories()) {
    CAPTURE(f.name);
    auto s = f.make();
    WriteBatch b;
    for (int i = 0; i < 2500; ++i) {
      CaseRecord c = MakeCase(fmt::format("c{:05}", 2499 - i), 1);
      c.owner_id = i % 2 ? "u1" : "u2";
      b.ops.emplace_back(PutCase{c, 0});
    }
    REQUIRE(CommitOne(s.get(), &b).ok());
    CaseFilter mine;
    mine.domain = "demo";
    mine.owner_id = "u1";
    std::vector<std::string> ids;
    REQUIRE(s->ScanCaseDocs(mine, [&](std::string_view doc) {
               auto v = boost::json::parse(doc);
               ids.push_back(std::string(v.at("case_id").as_string()));
               CHECK(v.at("owner_id").as_string() == "u1");
               return true;
             }).ok());
    CHECK(ids.size() == 1250);
    CHECK(std::is_sorted(ids.begin(), ids.end()));
    CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
    int seen = 0;
    CaseFilter all;
    REQUIRE(s->ScanCases(all, [&](const CaseRecord& c) {
               CHECK(c.properties.at("age") == "3");
               return ++seen < 1500;
             }).ok());
    CHECK(seen == 1500);
  }
}

TEST_CASE("PrimaryStore: a marked batch applies at most once, intents list until deleted") {
  for (const auto& f : StoreFactories()) {
    CAPTURE(f.name);
    auto s = f.make();
    WriteBatch b;
    b.applied_marker = "intent-1";
    ChangeMeta m;
    m.document_id = "d";
    b.ops.emplace_back(AddOutbox{m});
    b.ops.emplace_back(PutIntent{"i9", "payload"});
    REQUIRE(CommitOne(s.get(), &b).ok());
    WriteBatch again = b;
    REQUIRE(CommitOne(s.get(), &again).ok());
    CHECK(s->ReadOutbox(0, 10)->size() == 1);
    REQUIRE(s->PendingIntents()->size() == 1);
    CHECK((*s->PendingIntents())[0].payload == "payload");
    WriteBatch del;
    del.ops.emplace_back(DeleteIntent{"i9"});
    REQUIRE(CommitOne(s.get(), &del).ok());
    CHECK(s->PendingIntents()->empty());
    REQUIRE(*s->AppliedMarkers() == std::vector<std::string>{"intent-1"});
    const std::vector<std::string> gone = {"intent-0", "intent-1"};  // an absent one is ignored
    REQUIRE(s->DeleteAppliedMarkers(gone).ok());
    CHECK(s->AppliedMarkers()->empty());
    WriteBatch third = b;
    third.ops.pop_back();
    REQUIRE(CommitOne(s.get(), &third).ok());
    CHECK(s->ReadOutbox(0, 10)->size() == 2);  // the marker was pruned, so it applied again
  }
}

TEST_CASE("PrimaryStore: mobile sync's graph reads") {
  for (const auto& f : StoreFactories()) {
    CAPTURE(f.name);
    auto s = f.make();
    auto put = [&](CaseRecord c, int64_t expected_rev) {
      WriteBatch b;
      b.ops.emplace_back(PutCase{std::move(c), expected_rev});
      REQUIRE(CommitOne(s.get(), &b).ok());
    };
    CaseRecord host = MakeCase("host", 1);
    host.indices.clear();
    put(host, 0);
    CaseRecord ext = MakeCase("ext", 1);
    ext.indices = {{"host", "person", "host", "extension"}};
    put(ext, 0);
    CaseRecord kid = MakeCase("kid", 1);  // child of h1
    put(kid, 0);
    CaseRecord closed = MakeCase("closed", 1);
    closed.closed = true;
    put(closed, 0);
    CaseRecord other = MakeCase("other", 1);
    other.owner_id = "u2";
    put(other, 0);
    auto owned = s->OpenCasesByOwner("demo", "u1");
    REQUIRE(owned.ok());
    std::map<std::string, bool> got;
    for (const auto& n : *owned) got[n.case_id] = n.has_indices;
    CHECK(got == std::map<std::string, bool>{{"ext", true}, {"host", false}, {"kid", true}});
    CHECK(s->OpenCasesByOwner("other-domain", "u1")->empty());
    std::vector<std::string> ids = {"closed", "host", "missing"};
    auto nodes = s->CaseNodes(ids);
    REQUIRE(nodes->size() == 2);
    CHECK((*nodes)[0].case_id == "closed");
    CHECK((*nodes)[0].closed);
    CHECK_FALSE((*nodes)[1].closed);
    std::vector<std::string> holders = {"ext", "kid", "host"};
    auto edges = s->IndicesOf(holders);
    REQUIRE(edges->size() == 2);
    std::vector<std::string> hosts = {"host", "h1"};
    auto exts = s->ExtensionsOf(hosts);
    REQUIRE(exts->size() == 1);  // kid's child index to h1 is not an extension
    CHECK((*exts)[0].case_id == "ext");
    CHECK((*exts)[0].index.identifier == "host");
    CHECK((*exts)[0].index.referenced_type == "person");
    // Every relationship, closed cases' too, by the pointing case's id: closed, kid and other
    // are children of h1, ext is host's extension.
    auto pointing = s->IndicesPointingAt(hosts);
    REQUIRE(pointing.ok());
    std::vector<std::string> pointers;
    for (const auto& e : *pointing) pointers.push_back(e.case_id + ">" + e.index.referenced_id);
    CHECK(pointers == std::vector<std::string>{"closed>h1", "ext>host", "kid>h1", "other>h1"});
    CHECK((*pointing)[1].index.relationship == "extension");
    std::vector<std::string> nobody = {"kid", "missing"};
    CHECK(s->IndicesPointingAt(nobody)->empty());
    // The stored documents, in the order asked, absent ids skipped, decoding to the cases.
    std::vector<std::string> docs_of = {"kid", "missing", "ext"};
    std::vector<CaseRecord> decoded;
    REQUIRE(s->ReadCaseDocs(docs_of, [&](std::string_view doc) -> Status {
               auto v = codec::ParseJson(doc);
               CC_RETURN_IF_ERROR(v.status());
               decoded.emplace_back();
               return codec::DecodeCase(*v, &decoded.back());
             }).ok());
    REQUIRE(decoded.size() == 2);
    CHECK(decoded[0].case_id == "kid");
    REQUIRE(decoded[0].indices.size() == 1);
    CHECK(decoded[0].indices[0].referenced_id == kid.indices[0].referenced_id);
    CHECK(decoded[1].case_id == "ext");
    REQUIRE(decoded[1].indices.size() == 1);
    CHECK(decoded[1].indices[0].relationship == "extension");
    CHECK(decoded[1].properties == ext.properties);
    CHECK(s->ReadCaseDocs(docs_of, [](std::string_view) {
             return Status::Aborted("stop");
           }).IsAborted());  // fn's failure ends the read and is returned
    // Modified since: by the server's clock at the write.
    auto before = s->CasesModifiedSince("demo", 0);
    CHECK(before->size() == 5);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const int64_t t = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    CaseRecord again = host;
    again.rev = 2;
    again.closed = true;
    put(again, 1);
    auto since = s->CasesModifiedSince("demo", t);
    CHECK(*since == std::vector<std::string>{"host"});
    CHECK(s->OpenCasesByOwner("demo", "u1")->size() == 2);
  }
}

TEST_CASE("SqlitePrimaryStore: a database from before mobile sync gains its columns") {
  const std::string path = TempDir("migrate") + "/p0.sqlite";
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    const char* old_schema =
        "CREATE TABLE cases(id INTEGER PRIMARY KEY, case_id TEXT NOT NULL, domain TEXT NOT NULL,"
        " type TEXT, owner_id TEXT, closed INTEGER, deleted INTEGER, rev INTEGER NOT NULL,"
        " doc TEXT NOT NULL);"
        "CREATE TABLE case_indices(case_id TEXT NOT NULL, identifier TEXT NOT NULL,"
        " referenced_id TEXT NOT NULL, referenced_type TEXT, relationship TEXT,"
        " PRIMARY KEY(case_id, identifier)) WITHOUT ROWID;"
        "INSERT INTO cases(case_id, domain, type, owner_id, closed, deleted, rev, doc) VALUES"
        " ('a','demo','t','u1',0,0,1,'{}'), ('b','demo','t','u1',0,0,1,'{}');"
        "INSERT INTO case_indices VALUES('b','parent','a','t','child');";
    REQUIRE(sqlite3_exec(db, old_schema, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  auto s = OpenSqlitePrimaryStore(path, false, false);
  REQUIRE_MESSAGE(s.ok(), s.status().ToString());
  auto owned = (*s)->OpenCasesByOwner("demo", "u1");
  REQUIRE(owned.ok());
  REQUIRE(owned->size() == 2);
  CHECK_FALSE((*owned)[0].has_indices);
  CHECK((*owned)[1].has_indices);
  CHECK((*s)->CasesModifiedSince("demo", 1)->empty());
}

TEST_CASE("BlobStore: put returns a key to get, check and delete the blob by") {
  for (const auto& f : BlobFactories()) {
    CAPTURE(f.name);
    auto b = f.make();
    auto k1 = b->Put("form/abc/form.xml", "<x/>", false);
    REQUIRE(k1.ok());
    REQUIRE(b->Sync().ok());
    CHECK(*b->Get(*k1) == "<x/>");
    auto k2 = b->Put("form/def/photo.jpg", std::string(100000, 'z'), true);
    REQUIRE(k2.ok());
    CHECK(*k2 != *k1);
    CHECK(b->Get(*k2)->size() == 100000);
    CHECK(*b->Get(*k1) == "<x/>");
    auto empty = b->Put("form/ghi/empty", "", false);
    REQUIRE(empty.ok());
    CHECK(b->Get(*empty)->empty());
    CHECK(*b->Exists(*k2));
    REQUIRE(b->Delete(*k2).ok());
    REQUIRE(b->Delete(*k2).ok());
    CHECK_FALSE(*b->Exists(*k2));
    CHECK(b->Get(*k2).status().IsNotFound());
    CHECK(*b->Get(*k1) == "<x/>");
  }
}

TEST_CASE("BlobStore: PutFile stores a file and ReadRange reads pieces of a blob") {
  const std::string dir = TempDir("putfile");
  std::string data(3'000'001, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 7919) >> 5);
  const std::string path = dir + "/big.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << data;
  }
  for (const auto& f : BlobFactories()) {
    CAPTURE(std::string(f.name));
    auto b = f.make();
    auto k = b->PutFile("exports/demo/1.csv", path);
    REQUIRE_MESSAGE(k.ok(), k.status().ToString());
    CHECK(*b->Get(*k) == data);
    std::string back;
    for (uint64_t off = 0;;) {
      auto piece = b->ReadRange(*k, off, 1u << 20);
      REQUIRE_MESSAGE(piece.ok(), piece.status().ToString());
      back += *piece;
      off += piece->size();
      if (piece->size() < (1u << 20)) break;
    }
    CHECK(back == data);
    CHECK(*b->ReadRange(*k, 10, 5) == data.substr(10, 5));
    CHECK(b->ReadRange(*k, data.size(), 10)->empty());
    CHECK(b->ReadRange(*k, data.size() + 100, 10)->empty());
    auto empty = b->Put("exports/demo/empty", "", true);
    REQUIRE(empty.ok());
    auto none = b->ReadRange(*empty, 0, 10);
    REQUIRE_MESSAGE(none.ok(), none.status().ToString());
    CHECK(none->empty());
    REQUIRE(b->Delete(*k).ok());
    CHECK(b->ReadRange(*k, 0, 10).status().IsNotFound());
    CHECK(b->PutFile("exports/demo/2.csv", dir + "/missing").status().IsNotFound());
  }
}

TEST_CASE("BlobStore: many concurrent puts all read back") {
  for (const auto& f : BlobFactories()) {
    CAPTURE(f.name);
    auto b = f.make();
    std::vector<std::vector<std::string>> keys(4);
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < 300; ++i) {
          auto k = b->Put(fmt::format("k/{}/{}", t, i), fmt::format("blob {} {}", t, i), false);
          if (k.ok()) keys[t].push_back(*k);
        }
      });
    for (auto& t : ts) t.join();
    REQUIRE(b->Sync().ok());
    for (int t = 0; t < 4; ++t) {
      REQUIRE(keys[t].size() == 300);
      for (int i = 0; i < 300; ++i) CHECK(*b->Get(keys[t][i]) == fmt::format("blob {} {}", t, i));
    }
  }
}

TEST_CASE(
    "PackBlobStore: blobs survive a reopen, a new writer starts a new volume, damage is found") {
  std::string dir = TempDir("pack-reopen");
  std::string k1, k2;
  {
    auto b = OpenPackBlobStore(dir);
    REQUIRE(b.ok());
    k1 = *(*b)->Put("a", "first", true);
  }
  {
    auto b = OpenPackBlobStore(dir);
    REQUIRE(b.ok());
    k2 = *(*b)->Put("b", "second", true);
    CHECK(k1.substr(0, 7) != k2.substr(0, 7));  // another volume
    CHECK(*(*b)->Get(k1) == "first");
  }
  auto ro = OpenPackBlobStore(dir, true);
  REQUIRE(ro.ok());
  CHECK(*(*ro)->Get(k2) == "second");
  CHECK((*ro)->Put("c", "x", false).status().code() == StatusCode::kFailedPrecondition);
  CHECK((*ro)->Get("pack/1/0/99").status().code() == StatusCode::kDataLoss);
  CHECK((*ro)->Get("nonsense").status().IsInvalidArgument());
  CHECK((*ro)->Get("pack/99/0/5").status().IsNotFound());
  // Flip a byte of the first blob's data: the checksum catches it.
  {
    std::fstream f(dir + "/vol-000001.pack", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(32);
    f.put('F');
  }
  CHECK((*ro)->Get(k1).status().code() == StatusCode::kDataLoss);
}

TEST_CASE("FsBlobStore refuses keys that escape its directory") {
  auto b = OpenFsBlobStore(TempDir("fsbad"));
  REQUIRE(b.ok());
  CHECK((*b)->Put("../etc/passwd", "x", false).status().IsInvalidArgument());
  CHECK((*b)->Put("", "x", false).status().IsInvalidArgument());
}
