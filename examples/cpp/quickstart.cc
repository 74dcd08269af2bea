// libcommcare from C++: open an engine on a temporary SQLite data directory, submit a form that
// creates a case, read it back, and run a change processor over the change log.
#include <commcare/engine.h>
#include <commcare/pillows.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

namespace {

// Exits with the status's message when it is not ok.
void check(const commcare::Status& s, const char* what) {
  if (!s.ok()) {
    std::cerr << what << " failed: " << s.ToString() << "\n";
    std::exit(1);
  }
}

const char* kForm = R"(<?xml version="1.0"?>
<data xmlns="http://example.org/registration">
  <meta xmlns="http://openrosa.org/jr/xforms"><instanceID>form-1</instanceID>
    <userID>u1</userID></meta>
  <case xmlns="http://commcarehq.org/case/transaction/v2" case_id="case-1"
        date_modified="2024-05-01T10:00:00Z" user_id="u1">
    <create><case_type>patient</case_type><case_name>Ana</case_name><owner_id>u1</owner_id></create>
    <update><village>Kisumu</village></update>
  </case>
</data>)";

// Counts the cases it is told about, re-reading each (notice, then re-read).
class Counter : public commcare::ChangeProcessor {
 public:
  int seen = 0;
  commcare::Status Process(commcare::Engine& engine, const commcare::Change& change) override {
    auto c = engine.GetCase(change.meta.domain, change.meta.document_id);
    if (!c.ok()) return c.status();
    std::cout << "processed " << c->case_id << " (" << c->name << ")\n";
    ++seen;
    return commcare::Status::Ok();
  }
};

}  // namespace

int main() {
  auto dir = std::filesystem::temp_directory_path() / "commcare-cpp-quickstart";
  std::filesystem::remove_all(dir);
  commcare::InitOptions init;
  init.data_dir = dir.string();
  init.shards = 16;
  check(commcare::Engine::Init(init), "init");

  commcare::EngineOptions options;
  options.data_dir = dir.string();
  auto engine = commcare::Engine::Open(options);
  check(engine.status(), "open");

  commcare::SubmitRequest request;
  request.domain = "demo";
  request.body = kForm;
  commcare::SubmitResponse response = (*engine)->Submit(request);
  std::cout << "submitted: " << response.http_status << " " << response.nature << "\n";
  if (response.http_status != 201) return 1;

  auto c = (*engine)->GetCase("demo", "case-1");
  check(c.status(), "get case");
  std::cout << commcare::CaseToJson(*c) << "\n";

  commcare::PillowHostOptions host_options;
  host_options.builtin = false;
  auto host = commcare::PillowHost::Open(engine->get(), host_options);
  check(host.status(), "open pillows");
  auto counter = std::make_shared<Counter>();
  commcare::PillowConfig config;
  config.name = "counter";
  config.topics = {"case-sql"};
  check((*host)->AddPillow(config, counter), "add pillow");
  check((*engine)->RelayChanges(), "relay");
  check((*host)->RunUntilCaughtUp().status(), "run pillows");
  host->reset();
  engine->reset();
  std::filesystem::remove_all(dir);
  return counter->seen == 1 ? 0 : 1;
}
