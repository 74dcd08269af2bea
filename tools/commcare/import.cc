// The `commcare` tool's import commands, run in this process: `import cases` (HQ's case importer
// over a CSV or XLSX file: one JSON line per problem row, then the summary) and `import edit`
// (a bulk case edit of the cases a Case API filter matches; --preview counts them); and
// `lookup-tables upload` (HQ's lookup-table Excel upload, src/import/lookup_upload.h).
#include <commcare/importer.h>
#include <fmt/format.h>

#include <boost/json.hpp>
#include <iostream>

#include "CLI/CLI.hpp"
#include "common.h"
#include "import/lookup_upload.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

// key=value options into a map; false names the malformed one.
bool Pairs(const Args& a, const std::string& opt, std::map<std::string, std::string>* out,
           std::string* bad) {
  auto [b, e] = a.multi.equal_range(opt);
  for (auto it = b; it != e; ++it) {
    auto eq = it->second.find('=');
    if (eq == std::string::npos || eq == 0) {
      *bad = fmt::format("{} {}: expected KEY=VALUE", opt, it->second);
      return false;
    }
    (*out)[it->second.substr(0, eq)] = it->second.substr(eq + 1);
  }
  return true;
}

// The acting user: --user USERNAME from the MetaStore, else CommCare's "system" user.
Status ActingUser(Host* host, const Args& a, std::string* user_id, std::string* username) {
  *user_id = *username = "system";
  if (!a.Has("--user")) return Status::Ok();
  CC_ASSIGN_OR_RETURN(meta::MetaStore * meta, host->Meta());
  CC_ASSIGN_OR_RETURN(meta::User u, meta->GetUser(a.Get("--user")));
  *user_id = u.user_id;
  *username = u.username;
  return Status::Ok();
}

int CmdImportCases(const Args& a) {
  CaseImportOptions o;
  o.domain = a.Get("--domain");
  o.case_type = a.Get("--case-type");
  o.search_field = a.Get("--search-field", "case_id");
  o.search_column = a.Get("--search-column");
  o.create_new = a.Has("--create-new");
  o.dry_run = a.Has("--dry-run");
  o.import_id = a.Get("--import-id");
  o.result_path = a.Get("--result");
  if (a.Has("--chunk-size")) o.chunk_size = std::stoi(a.Get("--chunk-size"));
  std::string bad;
  if (!Pairs(a, "--map", &o.columns, &bad)) return Fail(bad, kUsage);
  if (a.pos.empty()) return Fail("name the file to import (CSV or XLSX)", kUsage);
  auto host = OpenHost(a, o.dry_run ? Access::kWriterOrReader : Access::kWriter);
  if (!host.ok()) return FailStatus(host.status());
  if (Status s = ActingUser(host->get(), a, &o.user_id, &o.username); !s.ok()) return FailStatus(s);
  auto meta = (*host)->Meta();
  auto r = ImportCases((*host)->engine(), meta.ok() ? *meta : nullptr, o, a.pos[0], {},
                       [](const ImportProblem& p) { std::cout << p.ToJson() << '\n'; });
  if (!r.ok()) return FailStatus(r.status());
  std::cout << r->ToJson() << std::endl;
  return r->failed_count > 0 ? kProblems : kOk;
}

int CmdImportEdit(const Args& a) {
  BulkEditOptions o;
  o.domain = a.Get("--domain");
  o.close = a.Has("--close");
  o.preview = a.Has("--preview");
  o.edit_id = a.Get("--edit-id");
  std::string bad;
  std::map<std::string, std::string> where;
  if (!Pairs(a, "--set", &o.set, &bad) || !Pairs(a, "--where", &where, &bad))
    return Fail(bad, kUsage);
  json::object filter;
  if (a.Has("--filter")) {
    boost::system::error_code ec;
    json::value v = json::parse(a.Get("--filter"), ec);
    if (ec || !v.is_object()) return Fail("--filter: must be a JSON object", kUsage);
    filter = v.get_object();
  }
  for (const auto& [k, v] : where) filter[k] = v;
  o.filter_json = json::serialize(filter);
  if (Status s = CheckBulkEdit(o); !s.ok()) return Fail(s.message(), kUsage);
  auto host = OpenHost(a, o.preview ? Access::kWriterOrReader : Access::kWriter);
  if (!host.ok()) return FailStatus(host.status());
  if (Status s = ActingUser(host->get(), a, &o.user_id, &o.username); !s.ok()) return FailStatus(s);
  auto r = BulkEditCases((*host)->engine(), o);
  if (!r.ok()) return FailStatus(r.status());
  std::cout << r->ToJson() << std::endl;
  return kOk;
}

// The upload's summary as JSON; a bad workbook prints its problems ({"error", "problems"}).
int CmdLookupUpload(const Args& a) {
  if (a.pos.empty()) return Fail("name the workbook to upload (XLSX)", kUsage);
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto meta = (*host)->Meta();
  if (!meta.ok()) return FailStatus(meta.status());
  std::vector<std::string> problems;
  auto r = importer::UploadLookupTables(*meta, a.Get("--domain"), a.pos[0], a.Has("--replace"),
                                        &problems);
  if (!problems.empty()) {
    json::array list;
    for (const auto& p : problems) list.push_back(json::value(p));
    std::cout << json::serialize(json::object{{"error", "the workbook has problems"},
                                              {"problems", std::move(list)}})
              << std::endl;
    return kFailed;
  }
  if (!r.ok()) return FailStatus(r.status());
  std::cout << json::serialize(json::object{{"message", r->Message()},
                                            {"tables_created", r->tables_created},
                                            {"tables_updated", r->tables_updated},
                                            {"tables_deleted", r->tables_deleted},
                                            {"rows_created", r->rows_created},
                                            {"rows_updated", r->rows_updated},
                                            {"rows_deleted", r->rows_deleted},
                                            {"rows_unchanged", r->rows_unchanged}})
            << std::endl;
  return kOk;
}

}  // namespace

void RegisterImportCommands(Cli* cli) {
  CLI::App* g = cli->Group(nullptr, "import", "import cases from CSV or XLSX; bulk case edit");
  cli->Add(g, "cases", "import cases (HQ's case importer): problem rows, then a summary",
           CmdImportCases)
      .Positional("file", "the CSV or XLSX file (first sheet)")
      .Str("--domain", "the domain", true)
      .Str("--case-type", "the case type", true)
      .Choice("--search-field", "find cases by case_id (default) or external_id",
              {"case_id", "external_id"})
      .Str("--search-column", "the column holding it (default: the search field's name)")
      .Flag("--create-new", "create a case when none matches")
      .Flag("--dry-run", "check every row and write nothing")
      .Many("--map", "COLUMN=PROPERTY: import a column under another name (repeatable)")
      .Str("--user", "the importing user's username (default: system)")
      .Str("--import-id", "names the import's forms and cases (default: from file and options)")
      .Str("--result", "write one JSON line per row (what it did) to this file")
      .Int("--chunk-size", "case blocks per form (default 100)", 1);
  cli->Add(g, "edit", "bulk case edit: the cases a filter matches get the same changes",
           CmdImportEdit)
      .Str("--domain", "the domain", true)
      .Str("--filter", "Case API filters as a JSON object")
      .Many("--where",
            "FILTER=VALUE: case_type, owner_id, case_name, external_id, closed, "
            "properties.P (repeatable)")
      .Many("--set", "PROPERTY=VALUE to set (repeatable)")
      .Flag("--close", "close the cases")
      .Flag("--preview", "count the matching cases, change nothing")
      .Str("--user", "the editing user's username (default: system)")
      .Str("--edit-id", "names the edit's forms (default: from filter, changes and matches)");
  CLI::App* lt = cli->Group(nullptr, "lookup-tables", "lookup tables (HQ's fixtures)");
  cli->Add(lt, "upload", "upload lookup tables from an Excel workbook, as HQ's fixture upload",
           CmdLookupUpload)
      .Positional("file", "the XLSX workbook: a types sheet and a sheet per table")
      .Str("--domain", "the domain", true)
      .Flag("--replace", "delete the rows of an uploaded table that its sheet does not have");
}

}  // namespace commcare::cli
