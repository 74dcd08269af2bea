// Email and scheduled reports against the loopback SMTP sink (scripts/with-test-servers:
// COMMCARE_TEST_SMTP, COMMCARE_TEST_SMTP_DIR): delivery of a MIME message with both parts and an
// attachment, permanent and temporary failures through the task queue, timeouts, and a UCR
// report's CSV and HTML group-by totals.
#include <arpa/inet.h>
#include <commcare/email.h>
#include <commcare/log.h>
#include <commcare/pillows.h>
#include <commcare/tasks.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "engine_helpers.h"
#include "integrations/reports.h"

using namespace commcare;
namespace json = boost::json;
namespace fs = std::filesystem;
using cctest::CaseForm;
using cctest::OpenMemory;
using cctest::Submit;

namespace {

// The sink's settings, or nullopt (the test skips; under CI=true it fails).
std::optional<SmtpOptions> Sink(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  std::string hp = cctest::TestServer("COMMCARE_TEST_SMTP");
  if (hp.empty()) return std::nullopt;
  auto o = SmtpOptions::FromUrl(
      fmt::format("smtp://{}?starttls=opportunistic&timeout_ms={}", hp, timeout.count()),
      "reports@commcare.test");
  REQUIRE_MESSAGE(o.ok(), o.status().ToString());
  return *o;
}

std::set<std::string> Messages() {
  std::set<std::string> out;
  const char* dir = std::getenv("COMMCARE_TEST_SMTP_DIR");
  if (!dir) return out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".eml") out.insert(e.path().string());
  return out;
}

std::string ReadFile(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// The message that arrived since `before` and is addressed to `to` (waits up to 5 s).
std::string Arrived(const std::set<std::string>& before, const std::string& to) {
  for (int i = 0; i < 100; ++i) {
    for (const auto& m : Messages())
      if (!before.count(m) &&
          ReadFile(fs::path(m).replace_extension(".json").string()).find(to) != std::string::npos)
        return ReadFile(m);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return "";
}

std::string NoLineBreaks(std::string s) {
  std::string out;
  for (char c : s)
    if (c != '\r' && c != '\n') out += c;
  return out;
}

// A port with nothing listening.
int ClosedPort() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t n = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(s);
  return ntohs(a.sin_port);
}

struct CapturingLogger : Logger {
  std::mutex mu;
  std::vector<std::string> lines;
  void Log(LogLevel level, std::string_view message, std::span<const LogField> fields) override {
    std::string l(message);
    for (const auto& f : fields) l += fmt::format(" {}={}", f.key, f.value);
    std::lock_guard<std::mutex> g(mu);
    lines.push_back(l);
  }
};

struct Workers {
  std::unique_ptr<TaskQueue> q;
  std::unique_ptr<TaskWorkers> w;
  explicit Workers(std::function<Result<SmtpOptions>()> smtp, std::string pillows_dir = "") {
    auto opened = OpenTaskQueue("");
    REQUIRE(opened.ok());
    q = std::move(opened).value();
    TaskWorkersOptions o;
    o.poll = std::chrono::milliseconds(20);
    w = NewTaskWorkers(q.get(), o);
    TaskTypeOptions fast;
    fast.backoff_base = std::chrono::milliseconds(20);
    fast.backoff_max = std::chrono::milliseconds(50);
    w->Register("email.send", reports::EmailSendHandler(smtp), fast);
    TaskQueue* qp = q.get();
    w->Register("report.send", [pillows_dir, qp](TaskContext& c) {
      return reports::SendReport(c, pillows_dir, nullptr, qp);
    });
    REQUIRE(w->Start().ok());
  }
  ~Workers() { w->Stop(); }
  TaskInfo Run(const std::string& type, const std::string& payload, int max_attempts = 5) {
    TaskSpec s;
    s.type = type;
    s.payload = payload;
    s.max_attempts = max_attempts;
    auto id = q->Enqueue(s);
    REQUIRE(id.ok());
    auto t = q->Wait(*id, std::chrono::seconds(30));
    REQUIRE(t.ok());
    return *t;
  }
};

}  // namespace

TEST_CASE("Email: SmtpOptions from a URL, and Describe hides the password") {
  auto o = SmtpOptions::FromUrl(
      "smtp://me%40x.org:s3cr%3At@mail.example.org:587?starttls=required&timeout_ms=2500",
      "hq@example.org");
  REQUIRE(o.ok());
  CHECK(o->host == "mail.example.org");
  CHECK(o->port == 587);
  CHECK(o->username == "me@x.org");
  CHECK(o->password == "s3cr:t");
  CHECK(o->starttls == SmtpOptions::StartTls::kRequired);
  CHECK(o->timeout == std::chrono::milliseconds(2500));
  CHECK(o->Describe().find("s3cr") == std::string::npos);
  CHECK(SmtpOptions::FromUrl("http://x", "a@b").status().IsInvalidArgument());
  CHECK(SmtpOptions::FromUrl("smtp://x?starttls=maybe", "a@b").status().IsInvalidArgument());
  CHECK(ParseEmailPayload(R"({"subject":"x"})").status().message() == "to: is required");
}

TEST_CASE("Email: a message arrives with its subject, text and HTML parts and an attachment") {
  auto smtp = Sink();
  if (!smtp) return;
  auto before = Messages();
  Workers w([smtp] { return Result<SmtpOptions>(*smtp); });
  const std::string payload = json::serialize(json::object{
      {"to", json::array{"ana@example.org", "ben@example.org"}},
      {"subject", "Weekly visits"},
      {"text", "plain body"},
      {"html", "<p>html body</p>"},
      {"attachments", json::array{json::object{{"name", "visits.csv"},
                                               {"content_type", "text/csv"},
                                               {"base64", EncodeBase64("a,b\r\n1,2\r\n")}}}}});
  TaskInfo t = w.Run("email.send", payload);
  REQUIRE_MESSAGE(t.state == TaskState::kSucceeded, t.last_error);
  const std::string m = Arrived(before, "ben@example.org");
  REQUIRE(!m.empty());
  CHECK(m.find("Subject: Weekly visits\r\n") != std::string::npos);
  CHECK(m.find("From: reports@commcare.test") != std::string::npos);
  CHECK(m.find("Content-Type: text/plain; charset=utf-8") != std::string::npos);
  CHECK(m.find("Content-Type: text/html; charset=utf-8") != std::string::npos);
  CHECK(m.find(EncodeBase64("plain body")) != std::string::npos);
  CHECK(m.find(EncodeBase64("<p>html body</p>")) != std::string::npos);
  CHECK(m.find("Content-Disposition: attachment; filename=\"visits.csv\"") != std::string::npos);
  CHECK(m.find(EncodeBase64("a,b\r\n1,2\r\n")) != std::string::npos);
}

TEST_CASE("Email: a refused recipient is dead-lettered at once") {
  auto smtp = Sink();
  if (!smtp) return;
  Workers w([smtp] { return Result<SmtpOptions>(*smtp); });
  TaskInfo t = w.Run("email.send", R"({"to":["refused@example.org"],"subject":"x","text":"y"})");
  CHECK(t.state == TaskState::kDead);
  CHECK(t.attempts == 1);
  CHECK(t.last_error.find("550") != std::string::npos);
  // A 4xx is temporary: retried until max_attempts.
  TaskInfo busy = w.Run("email.send", R"({"to":["busy@example.org"],"text":"y"})", 2);
  CHECK(busy.state == TaskState::kDead);
  CHECK(busy.attempts == 2);
}

TEST_CASE("Email: a server that is down is retried (Unavailable) and logged") {
  auto smtp = SmtpOptions::FromUrl(fmt::format("smtp://127.0.0.1:{}?timeout_ms=2000", ClosedPort()),
                                   "reports@commcare.test");
  REQUIRE(smtp.ok());
  smtp->username = "u";
  smtp->password = "hunter2-secret";
  auto logger = std::make_shared<CapturingLogger>();
  SetLogger(logger);
  Status st = SendEmail(*smtp, EmailMessage{{"a@example.org"}, "s", "t", "", {}});
  CHECK(st.code() == StatusCode::kUnavailable);
  CHECK(st.message().find("hunter2") == std::string::npos);
  {
    Workers w([o = *smtp] { return Result<SmtpOptions>(o); });
    TaskInfo t = w.Run("email.send", R"({"to":["a@example.org"],"text":"y"})", 3);
    CHECK(t.state == TaskState::kDead);
    CHECK(t.attempts == 3);  // retried, not dead-lettered at the first failure
  }
  SetLogger(nullptr);
  bool logged = false;
  for (const auto& l : logger->lines) {
    CHECK(l.find("hunter2") == std::string::npos);
    if (l.find("email not sent") != std::string::npos) logged = true;
  }
  CHECK(logged);
}

TEST_CASE("Email: a server that never answers times out within the configured timeout") {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(s, 8) == 0);  // connections complete in the backlog; no greeting ever comes
  socklen_t n = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &n);
  auto smtp =
      SmtpOptions::FromUrl(fmt::format("smtp://127.0.0.1:{}?timeout_ms=700", ntohs(a.sin_port)),
                           "reports@commcare.test");
  REQUIRE(smtp.ok());
  auto t0 = std::chrono::steady_clock::now();
  Status st = SendEmail(*smtp, EmailMessage{{"a@example.org"}, "s", "t", "", {}});
  auto took = std::chrono::steady_clock::now() - t0;
  ::close(s);
  CHECK(st.code() == StatusCode::kUnavailable);
  CHECK(took >= std::chrono::milliseconds(600));
  CHECK(took < std::chrono::milliseconds(3000));
}

TEST_CASE("Reports: filters, group-by sums, CSV quoting and HTML escaping") {
  auto r = reports::ParseReport(R"({"name":"r","domain":"d","table_id":"t","recipients":["a@b.c"],
    "filters":[{"column":"age","min":10},{"column":"kind","in":["x","<y>"]}],
    "group_by":["kind"],"aggregations":[{"fn":"count"},{"fn":"sum","column":"age"},{"fn":"avg","column":"age"}]})");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  auto out = reports::Render(
      *r, {R"({"kind":"x","age":10})", R"({"kind":"x","age":20})", R"({"kind":"<y>","age":"15"})",
           R"({"kind":"x","age":5})", R"({"kind":"z","age":50})"});
  REQUIRE(out.ok());
  CHECK(out->source_rows == 3);
  CHECK(out->csv == "kind,count,sum_age,avg_age\r\n<y>,1,15,15\r\nx,2,30,15\r\nTotal,3,45,15\r\n");
  CHECK(out->html.find("<td>&lt;y&gt;</td>") != std::string::npos);
  CHECK(out->html.find("<y>") == std::string::npos);
  CHECK(reports::CsvField("a,\"b\"") == "\"a,\"\"b\"\"\"");
  CHECK(reports::ParseReport(R"({"name":"r","domain":"d","table_id":"t"})").status().message() ==
        "recipients: is required");
  CHECK(
      reports::ParseReport(
          R"({"name":"r","domain":"d","table_id":"t","recipients":["a@b.c"],"schedule":{"cron":"0 8 * * *","time_zone":"Mars/Base"}})")
          .status()
          .IsInvalidArgument());
}

TEST_CASE("Reports: report.send renders a UCR table and mails its CSV and HTML totals") {
  auto smtp = Sink();
  if (!smtp) return;
  const std::string dir = cctest::TempDir("report");
  auto e = OpenMemory();
  PillowHostOptions o;
  o.dir = dir;
  auto h = PillowHost::Open(e.get(), o);
  REQUIRE(h.ok());
  // Six patients: owners u1 (ages 0, 20, 40) and u2 (10, 30, 50).
  for (int i = 0; i < 6; ++i)
    REQUIRE(
        Submit(e.get(), CaseForm(fmt::format("f{}", i), fmt::format("c{}", i),
                                 fmt::format("<create><case_type>patient</case_type>"
                                             "<case_name>P{}</case_name><owner_id>u{}</owner_id>"
                                             "</create><update><age>{}</age></update>",
                                             i, 1 + i % 2, 10 * i)))
            .http_status == 201);
  auto loaded =
      (*h)->UcrLoad(R"({"domain":"demo","table_id":"patients","referenced_doc_type":"CommCareCase",
    "configured_indicators":[{"type":"raw","column_id":"owner","property_name":"owner_id"},
      {"type":"expression","column_id":"age","datatype":"integer","expression":{"type":"property_name","property_name":"age"}}]})");
  REQUIRE_MESSAGE(loaded.ok(), loaded.status().ToString());
  CHECK(*loaded == 6);

  auto before = Messages();
  Workers w([smtp] { return Result<SmtpOptions>(*smtp); }, dir);
  const std::string report = R"({"name":"ages","domain":"demo","table_id":"patients",
    "subject":"Ages by owner","recipients":["lead@example.org"],"filters":[{"column":"age","min":10}],
    "group_by":["owner"],"aggregations":[{"fn":"count"},{"fn":"sum","column":"age"}]})";
  TaskInfo t = w.Run("report.send", report);
  REQUIRE_MESSAGE(t.state == TaskState::kSucceeded, t.last_error);
  auto res = json::parse(t.result);
  CHECK(res.at("rows") == 5);
  auto email = w.q->Wait(res.at("email_task").as_int64(), std::chrono::seconds(30));
  REQUIRE(email.ok());
  REQUIRE_MESSAGE(email->state == TaskState::kSucceeded, email->last_error);
  const std::string m = NoLineBreaks(Arrived(before, "lead@example.org"));
  REQUIRE(!m.empty());
  CHECK(m.find("Subject: Ages by owner") != std::string::npos);
  CHECK(m.find("filename=\"ages.csv\"") != std::string::npos);
  const std::string csv = "owner,count,sum_age\r\nu1,2,60\r\nu2,3,90\r\nTotal,5,150\r\n";
  CHECK(m.find(EncodeBase64(csv)) != std::string::npos);
  auto rendered = reports::Render(*reports::ParseReport(report), *UcrRows(dir, "demo", "patients"));
  REQUIRE(rendered.ok());
  CHECK(rendered->csv == csv);
  CHECK(rendered->html.find("<tfoot><tr><th>Total</th><th>5</th><th>150</th></tr></tfoot>") !=
        std::string::npos);
  CHECK(m.find(EncodeBase64(rendered->html)) != std::string::npos);
}

namespace {

// One member of a zip archive's bytes (unzip -p), "" if it cannot be read.
std::string ZipMember(const std::string& bytes, const std::string& member) {
  const std::string dir = cctest::TempDir("xlsx");
  fs::create_directories(dir);
  const std::string path = dir + "/book.xlsx";
  std::ofstream(path, std::ios::binary) << bytes;
  std::string out;
  if (FILE* p = ::popen(("unzip -p '" + path + "' '" + member + "'").c_str(), "r")) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ::pclose(p);
  }
  return out;
}

}  // namespace

TEST_CASE("Reports: format xlsx attaches a workbook whose sheet holds the table") {
  auto r = reports::ParseReport(R"({"name":"ages by owner","domain":"d","table_id":"t",
    "recipients":["a@b.c"],"format":"xlsx","group_by":["owner"],
    "aggregations":[{"fn":"count"},{"fn":"sum","column":"age"}]})");
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  CHECK(reports::AttachmentName(*r) == "ages_by_owner.xlsx");
  auto out = reports::Render(*r, {R"({"owner":"u1","age":20})", R"({"owner":"u1","age":40})",
                                  R"({"owner":"<u2>","age":"30"})"});
  REQUIRE(out.ok());
  auto xlsx = reports::RenderXlsx(*r, *out);
  REQUIRE_MESSAGE(xlsx.ok(), xlsx.status().ToString());
  CHECK(xlsx->substr(0, 2) == "PK");
  const std::string sheet = ZipMember(*xlsx, "xl/worksheets/sheet1.xml");
  const std::string strings = ZipMember(*xlsx, "xl/sharedStrings.xml");
  const std::string book = ZipMember(*xlsx, "xl/workbook.xml");
  CHECK(book.find("name=\"ages_by_owner\"") != std::string::npos);
  for (const char* s : {"owner", "count", "sum_age", "u1", "&lt;u2&gt;", "Total"})
    CHECK_MESSAGE(strings.find(fmt::format("<t>{}</t>", s)) != std::string::npos, s);
  // Counts and sums are numbers: u1 2 60, <u2> 1 30, Total 3 90.
  // The header and totals rows are bold (style 1); text cells are shared strings (t="s").
  for (const char* v : {"<c r=\"A1\" s=\"1\" t=\"s\">", "<c r=\"B3\"><v>2</v>",
                        "<c r=\"C3\"><v>60</v>", "<c r=\"C4\" s=\"1\"><v>90</v>"})
    CHECK_MESSAGE(sheet.find(v) != std::string::npos, v);
  auto payload = reports::EmailPayload(*r, *out, {"a@b.c"});
  REQUIRE(payload.ok());
  auto m = ParseEmailPayload(*payload);
  REQUIRE(m.ok());
  REQUIRE(m->attachments.size() == 1);
  CHECK(m->attachments[0].name == "ages_by_owner.xlsx");
  CHECK(m->attachments[0].content_type ==
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet");
  CHECK(m->attachments[0].data.substr(0, 2) == "PK");
  CHECK(m->html == out->html);
  CHECK(reports::ParseReport(R"({"name":"r","domain":"d","table_id":"t","recipients":["a@b.c"],
    "format":"pdf"})")
            .status()
            .message() == "format: must be csv or xlsx");
}
