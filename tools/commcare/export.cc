// The `commcare` tool's export commands: export cases|forms, run in this process, with a
// progress bar on stderr when it is a terminal. Output is one JSON line: rows, file, tables.
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
  d.format = a.Get("--format", "csv") == "xlsx" ? ExportDefinition::Format::kXlsx
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

}  // namespace

void RegisterExportCommands(Cli* cli) {
  CLI::App* g = cli->Group(nullptr, "export", "export cases or forms to CSV or XLSX");
  cli->Add(g, "cases", "export a domain's cases", CmdCases)
      .Str("--domain", "the domain", true)
      .Str("--type", "only this case type")
      .Str("--owner", "only this owner id")
      .Choice("--closed", "only closed (true) or open (false) cases", {"true", "false"})
      .Str("--columns", "these columns only (a,b,...; default system columns + properties)")
      .Choice("--format", "csv (default) or xlsx", {"csv", "xlsx"})
      .Str("--out", "the output file (several CSV tables: a .zip beside it)", true);
  cli->Add(g, "forms", "export a domain's forms of one xmlns", CmdForms)
      .Str("--domain", "the domain", true)
      .Str("--xmlns", "the form's xmlns", true)
      .Str("--user", "only this user id's forms")
      .Str("--received-since", "only forms received at or after this ISO 8601 date or time")
      .Str("--columns", "these columns only (form.q,...; default system columns + questions)")
      .Choice("--format", "csv (default) or xlsx", {"csv", "xlsx"})
      .Str("--out", "the output file (several CSV tables: a .zip beside it)", true);
}

}  // namespace commcare::cli
