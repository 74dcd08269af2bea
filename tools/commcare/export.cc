// The `commcare` tool's export commands: export cases|forms, run in this process, with a
// progress bar on stderr when it is a terminal. Output is one JSON line: rows, file, tables.
// export saved list|show|set|delete: saved definitions and their schedules (JSON lines).
#include <commcare/exports.h>
#include <fmt/format.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <iostream>

#include "CLI/CLI.hpp"
#include "common.h"
#include "util/time.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

bool Iso(const std::string& s, int64_t* out) {
  std::string t = s.size() == 10 ? s + "T00:00:00Z" : s;
  return util::ParseIsoTime(t, out);
}

int RunIt(const Args& a, ExportDefinition d) {
  const std::string f = a.Get("--format", "csv");
  d.format = f == "xlsx"   ? ExportDefinition::Format::kXlsx
             : f == "html" ? ExportDefinition::Format::kHtml
             : f == "json" ? ExportDefinition::Format::kJson
                           : ExportDefinition::Format::kCsv;
  for (const auto& c : SplitCommas(a.Get("--columns"))) d.columns.push_back({c, "", {}});
  if (Status s = d.Validate(); !s.ok()) return Fail(s.message(), kUsage);
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  const bool tty = isatty(2);
  auto r = RunExport((*host)->engine(), d, a.Get("--out"), [tty](int64_t done, int64_t total) {
    if (tty) {
      int width = 30, fill = total > 0 ? int(width * std::min(done, total) / total) : 0;
      std::cerr << fmt::format("\r[{}{}] {}/{} rows", std::string(fill, '#'),
                               std::string(width - fill, ' '), done, total)
                << std::flush;
    }
    return true;
  });
  if (tty) std::cerr << std::endl;
  if (!r.ok()) return FailStatus(r.status());
  json::array tables;
  for (const auto& t : r->tables) tables.emplace_back(t);
  std::cout << json::serialize(json::object{
                   {"rows", r->rows}, {"file", r->file}, {"tables", std::move(tables)}})
            << std::endl;
  return kOk;
}

int CmdCases(const Args& a) {
  ExportDefinition d;
  d.kind = ExportDefinition::Kind::kCase;
  d.domain = a.Get("--domain");
  d.case_type = a.Get("--type");
  d.owner_id = a.Get("--owner");
  if (a.Has("--closed")) d.closed = a.Get("--closed") == "true";
  return RunIt(a, d);
}

int CmdForms(const Args& a) {
  ExportDefinition d;
  d.kind = ExportDefinition::Kind::kForm;
  d.domain = a.Get("--domain");
  d.xmlns = a.Get("--xmlns");
  d.user_id = a.Get("--user");
  if (a.Has("--received-since") && !Iso(a.Get("--received-since"), &d.received_from))
    return Fail("--received-since must be an ISO 8601 date or time", kUsage);
  return RunIt(a, d);
}

// A definition from --file or --json, with --domain and --name filling in what it lacks.
Result<ExportDefinition> DefinitionArg(const Args& a) {
  std::string text = a.Get("--json");
  if (a.Has("--file") && !ReadFile(a.Get("--file"), &text))
    return Status::InvalidArgument("cannot read " + a.Get("--file"));
  if (text.empty())
    return Status::InvalidArgument("give the definition as --file PATH or --json TEXT");
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("the definition must be a JSON object");
  for (const char* k : {"domain", "name"})
    if (a.Has(std::string("--") + k) && !v.get_object().contains(k))
      v.get_object()[k] = a.Get(std::string("--") + k);
  CC_ASSIGN_OR_RETURN(ExportDefinition d, ExportDefinition::FromJson(json::serialize(v)));
  if (d.name.empty()) return Status::InvalidArgument("export definition: \"name\" is required");
  return d;
}

int CmdSavedList(const Args& a) {
  auto host = OpenHost(a, Access::kReader);
  if (!host.ok()) return FailStatus(host.status());
  const std::string& dir = (*host)->options().engine.data_dir;
  auto names = ListExportDefinitions(dir, a.Get("--domain"));
  if (!names.ok()) return FailStatus(names.status());
  for (const auto& n : *names)
    if (auto d = LoadExportDefinition(dir, a.Get("--domain"), n); d.ok())
      std::cout << d->ToJson() << "\n";
  std::cout.flush();
  return kOk;
}

int CmdSavedShow(const Args& a) {
  auto host = OpenHost(a, Access::kReader);
  if (!host.ok()) return FailStatus(host.status());
  const std::string& dir = (*host)->options().engine.data_dir;
  auto d = LoadExportDefinition(dir, a.Get("--domain"), a.Get("--name"));
  if (!d.ok()) return FailStatus(d.status());
  json::value v = json::parse(d->ToJson());
  if (auto blobs = ExportBlobStore(dir); blobs.ok())
    if (auto latest = LatestSavedExport(blobs->get(), d->domain, d->name); latest.ok())
      v.get_object()["latest"] = json::parse(latest->ToJson());
  std::cout << json::serialize(v) << std::endl;
  return kOk;
}

int CmdSavedSet(const Args& a) {
  auto d = DefinitionArg(a);
  if (!d.ok()) return Fail(d.status().message(), kUsage);
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto q = (*host)->Tasks();
  if (!q.ok()) return FailStatus(q.status());
  Status s = PutSavedExport((*host)->options().engine.data_dir, *q, *d);
  if (s.IsInvalidArgument()) return Fail(s.message(), kUsage);
  if (!s.ok()) return FailStatus(s);
  json::value v = json::parse(d->ToJson());
  if (!d->cron.empty())
    v.get_object()["schedule_name"] = SavedExportScheduleName(d->domain, d->name);
  std::cout << json::serialize(v) << std::endl;
  return kOk;
}

int CmdSavedDelete(const Args& a) {
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto q = (*host)->Tasks();
  if (!q.ok()) return FailStatus(q.status());
  const std::string& dir = (*host)->options().engine.data_dir;
  auto blobs = ExportBlobStore(dir);
  if (!blobs.ok()) return FailStatus(blobs.status());
  Status s = DeleteSavedExport(dir, *q, blobs->get(), a.Get("--domain"), a.Get("--name"));
  if (!s.ok()) return FailStatus(s);
  std::cout << json::serialize(json::object{{"deleted", a.Get("--name")}}) << std::endl;
  return kOk;
}

}  // namespace

void RegisterExportCommands(Cli* cli) {
  CLI::App* g = cli->Group(nullptr, "export", "export cases or forms to CSV or XLSX");
  cli->Add(g, "cases", "export a domain's cases", CmdCases)
      .Str("--domain", "the domain", true)
      .Str("--type", "only this case type")
      .Str("--owner", "only this owner id")
      .Choice("--closed", "only closed (true) or open (false) cases", {"true", "false"})
      .Str("--columns", "these columns only (a,b,...; default system columns + properties)")
      .Choice("--format", "csv (default), xlsx, html or json", {"csv", "xlsx", "html", "json"})
      .Str("--out", "the output file (several CSV tables: a .zip beside it)", true);
  cli->Add(g, "forms", "export a domain's forms of one xmlns", CmdForms)
      .Str("--domain", "the domain", true)
      .Str("--xmlns", "the form's xmlns", true)
      .Str("--user", "only this user id's forms")
      .Str("--received-since", "only forms received at or after this ISO 8601 date or time")
      .Str("--columns", "these columns only (form.q,...; default system columns + questions)")
      .Choice("--format", "csv (default), xlsx, html or json", {"csv", "xlsx", "html", "json"})
      .Str("--out", "the output file (several CSV tables: a .zip beside it)", true);
  CLI::App* saved = cli->Group(g, "saved", "saved export definitions (and daily saved exports)");
  cli->Add(saved, "list", "a domain's saved definitions, one JSON line each", CmdSavedList)
      .Str("--domain", "the domain", true);
  cli->Add(saved, "show", "one saved definition, with its latest file", CmdSavedShow)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
  cli->Add(saved, "set", "add or replace a saved definition (and its schedule)", CmdSavedSet)
      .Str("--file", "the definition's JSON in a file")
      .Str("--json", "the definition's JSON")
      .Str("--domain", "its domain, when the JSON has none")
      .Str("--name", "its name, when the JSON has none");
  cli->Add(saved, "delete", "delete a saved definition and its schedule", CmdSavedDelete)
      .Str("--domain", "its domain", true)
      .Str("--name", "its name", true);
}

}  // namespace commcare::cli
