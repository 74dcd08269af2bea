// Host: a data directory set up from a Deployment and held to it afterwards, and a second
// process beside a writer (refused, or a reader with reader_if_locked).
#include <commcare/deployment.h>
#include <commcare/host.h>

#include <boost/json.hpp>
#include <chrono>
#include <thread>

#include "engine_helpers.h"
#include "integrations/forwarding/forwarding.h"

using namespace commcare;
using cctest::CaseForm;
using cctest::Submit;

namespace {

HostOptions At(const std::string& dir, std::optional<Deployment> d) {
  HostOptions o;
  o.engine.data_dir = dir;
  o.deployment = std::move(d);
  return o;
}

Deployment Small() {
  Deployment d;
  d.shards = 64;
  d.databases = 2;
  d.blobs = Deployment::Blobs::kFiles;
  return d;
}

}  // namespace

TEST_CASE("Host: a fresh directory is set up from the Deployment and must match it afterwards") {
  const std::string dir = cctest::TempDir("host");
  const Deployment d = Small();
  {
    auto h = Host::Open(At(dir, d));
    REQUIRE_MESSAGE(h.ok(), h.status().ToString());
    CHECK_FALSE((*h)->read_only());
  }
  // commcare.json records the deployment, shards included.
  const std::string text = cctest::ReadFile(dir + "/commcare.json");
  CHECK(text.find("\"shards\":64") != std::string::npos);
  auto written = Deployment::FromJson(text, "commcare.json");
  REQUIRE_MESSAGE(written.ok(), written.status().ToString());
  CHECK(written->shards == 64);
  CHECK(written->databases == 2);
  CHECK(written->blobs == Deployment::Blobs::kFiles);
  CHECK(*written == d);

  // Another deployment is refused, naming the first key that differs.
  struct Change {
    const char* key;
    void (*apply)(Deployment*);
  };
  for (const Change& c : {
           Change{"shards", [](Deployment* x) { x->shards = 128; }},
           Change{"databases", [](Deployment* x) { x->databases = 1; }},
           Change{"blob_store", [](Deployment* x) { x->blobs = Deployment::Blobs::kPack; }},
           Change{"meta", [](Deployment* x) { x->meta = "host=db.example dbname=meta"; }},
       }) {
    CAPTURE(c.key);
    Deployment other = d;
    c.apply(&other);
    auto h = Host::Open(At(dir, other));
    REQUIRE_FALSE(h.ok());
    CHECK(h.status().code() == StatusCode::kFailedPrecondition);
    CHECK(h.status().message().find(fmt::format("\"{}\"", c.key)) != std::string::npos);
  }
  CHECK(cctest::ReadFile(dir + "/commcare.json") == text);  // left as it was

  // No deployment: the directory's own is used.
  auto h = Host::Open(At(dir, std::nullopt));
  REQUIRE_MESSAGE(h.ok(), h.status().ToString());
  CHECK_FALSE((*h)->read_only());
  h->reset();
  // Nor may a host leave out what the directory was set up with.
  const std::string pg_dir = cctest::TempDir("host-meta");
  std::filesystem::create_directories(pg_dir);
  Deployment with_meta = d;
  with_meta.meta = "host=db.example dbname=meta";
  REQUIRE(with_meta.Save(pg_dir).ok());
  auto missing = Host::Open(At(pg_dir, d));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == StatusCode::kFailedPrecondition);
  CHECK(missing.status().message().find("\"meta\"") != std::string::npos);
  // A directory never set up needs a deployment.
  auto fresh = Host::Open(At(cctest::TempDir("host-none"), std::nullopt));
  CHECK(fresh.status().IsNotFound());
}

TEST_CASE("Deployment: base_url (HQ's BASE_ADDRESS) starts forwarded attachment urls") {
  auto d = Deployment::FromJson(R"({"shards": 64, "base_url": "https://hq.example.org:8443/"})",
                                "commcare.json");
  REQUIRE_MESSAGE(d.ok(), d.status().ToString());
  CHECK(d->base_url == "https://hq.example.org:8443");  // the trailing slash is dropped
  CHECK(d->ToJson().find("\"base_url\":\"https://hq.example.org:8443\"") != std::string::npos);
  for (const char* bad :
       {"hq.example.org", "ftp://hq", "https://", "https:///a", "https://hq/a?b=1", "https://h q",
        "https://:8080", "https://u:pw@hq", "https://hq\\t"}) {
    CAPTURE(bad);
    auto b = Deployment::FromJson(fmt::format(R"({{"base_url": "{}"}})", bad), "commcare.json");
    REQUIRE_FALSE(b.ok());
    CHECK(b.status().message().find("base_url") != std::string::npos);
  }
  const std::string dir = cctest::TempDir("baseurl");
  auto h = Host::Open(At(dir, *d));
  REQUIRE_MESSAGE(h.ok(), h.status().ToString());
  CHECK((*h)->BaseUrl() == "https://hq.example.org:8443");
  // The case_json payload's attachment urls (HQ: get_url_base() + api_case_attachment).
  CaseRecord c;
  c.domain = "demo";
  c.case_id = "c1";
  c.attachments.push_back({});
  c.attachments.back().name = "photo";
  c.attachments.back().content_type = "image/jpeg";
  auto url = [&](std::string_view base) {
    auto v = boost::json::parse(forwarding::CaseToLiteApiJson(c, {}, base));
    return std::string(v.at("attachments").at("photo").at("url").as_string());
  };
  CHECK(url((*h)->BaseUrl()) == "https://hq.example.org:8443/a/demo/api/case/attachment/c1/photo");
  CHECK(url("") == "/a/demo/api/case/attachment/c1/photo");
}

TEST_CASE("Host: beside an open writer a second Host is refused, or reads with reader_if_locked") {
  const std::string dir = cctest::TempDir("host-lock");
  auto writer = Host::Open(At(dir, Small()));
  REQUIRE_MESSAGE(writer.ok(), writer.status().ToString());
  CHECK_FALSE((*writer)->read_only());

  auto second = Host::Open(At(dir, Small()));
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == StatusCode::kFailedPrecondition);
  CHECK(second.status().message().find("locked") != std::string::npos);

  HostOptions ro = At(dir, std::nullopt);
  ro.reader_if_locked = true;
  auto reader = Host::Open(ro);
  REQUIRE_MESSAGE(reader.ok(), reader.status().ToString());
  CHECK((*reader)->read_only());

  // The reader sees what the writer commits (SQLite: once sealed, within 250 ms).
  REQUIRE(Submit((*writer)->engine(),
                 CaseForm("f-1", "c-1",
                          "<create><case_type>t</case_type><case_name>seen</case_name>"
                          "<owner_id>u1</owner_id></create>"))
              .http_status == 201);
  Result<CaseRecord> got = Status::NotFound("not yet");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    got = (*reader)->engine()->GetCase("demo", "c-1");
    if (got.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE_MESSAGE(got.ok(), got.status().ToString());
  CHECK(got->name == "seen");

  // With the writer gone, reader_if_locked opens a writer.
  reader->reset();
  writer->reset();
  auto next = Host::Open(ro);
  REQUIRE_MESSAGE(next.ok(), next.status().ToString());
  CHECK_FALSE((*next)->read_only());
}

TEST_CASE("Host: processes starting on one fresh directory together: one sets it up") {
  // The CLI's `pillows run` members, or servers, started at once on a new --data directory.
  for (int round = 0; round < 10; ++round) {
    CAPTURE(round);
    const std::string dir = cctest::TempDir("host-race");
    HostOptions o = At(dir, Small());
    o.reader_if_locked = true;
    Result<std::unique_ptr<Host>> hosts[2] = {Status::Internal(""), Status::Internal("")};
    std::thread t([&] { hosts[1] = Host::Open(o); });
    hosts[0] = Host::Open(o);
    t.join();
    int writers = 0;
    for (auto& h : hosts) {
      REQUIRE_MESSAGE(h.ok(), h.status().ToString());
      writers += !(*h)->read_only();
    }
    CHECK(writers == 1);
    CHECK(*Deployment::Load(dir) == Small());
  }
}
