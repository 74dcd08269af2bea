// Scheduled reports over a UCR data source's table: their definition, rendering (CSV and an
// HTML table) and the email.send payload that delivers them. A saved report is a task-queue
// Schedule named ScheduleName(domain, name) whose task is "report.send" with the report's JSON
// as payload (docs/email-and-reports.md).
#pragma once

#include <boost/json.hpp>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/email.h"
#include "commcare/status.h"
#include "commcare/tasks.h"

namespace commcare {
namespace meta {
class MetaStore;
}
namespace reports {

struct ReportFilter {
  std::string column;
  enum class Op { kEquals, kIn, kRange } op = Op::kEquals;
  std::vector<boost::json::value> values;  // equals: one; in: several
  boost::json::value min, max;             // range: inclusive bounds (null: open)
};

struct Aggregation {
  std::string fn;      // count, sum, avg
  std::string column;  // "" for count
  std::string Header() const { return column.empty() ? fn : fn + "_" + column; }
};

struct Report {
  std::string name, domain, table_id;
  std::string subject;                    // "" : "Report: <name>"
  std::vector<std::string> columns;       // without group_by: the columns shown ("": all)
  std::vector<ReportFilter> filters;      // all must hold
  std::vector<std::string> group_by;      // with aggregations: one row per group
  std::vector<Aggregation> aggregations;  // default with group_by: count
  std::vector<std::string> recipients;    // addresses, or usernames whose user_data has "email"
  std::string cron, time_zone = "UTC";    // the schedule ("" cron: only sent on demand)
  enum class Format { kCsv, kXlsx } format = Format::kCsv;  // the attachment's
  std::string json;                                         // the definition as given
};

// Parses and checks a definition; InvalidArgument names the field.
Result<Report> ParseReport(std::string_view json_text);

struct Rendered {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // cells as text
  std::vector<std::string> totals;             // with group_by: the totals row (else empty)
  int64_t source_rows = 0;                     // table rows that passed the filters
  std::string csv, html;
};

// Renders the report from the table's rows (UcrRows' JSON objects).
Result<Rendered> Render(const Report& report, const std::vector<std::string>& rows);

// The rendered table as an XLSX workbook's bytes (one sheet named after the report, a bold
// header row, aggregation and total cells as numbers), built with libxlsxwriter in a temp file.
Result<std::string> RenderXlsx(const Report& report, const Rendered& r);

// The attachment's file name: the report's name with characters other than letters, digits,
// '-' and '_' replaced by '_', and ".csv" or ".xlsx".
std::string AttachmentName(const Report& report);

// The recipients' addresses: addresses as given, usernames through the MetaStore (members of
// the report's domain with user_data "email"). InvalidArgument when none is left.
Result<std::vector<std::string>> ResolveRecipients(const Report& report, meta::MetaStore* meta);

// The email.send payload (the CSV or XLSX attached, the HTML table in the body).
Result<std::string> EmailPayload(const Report& report, const Rendered& r,
                                 const std::vector<std::string>& to);

std::string ScheduleName(std::string_view domain, std::string_view name);
// The schedule that saves a report (cron required).
Result<Schedule> ToSchedule(const Report& report);

// The "email.send" handler; smtp gives the settings at each run (e.g.
// SmtpOptions::FromEnvironment).
TaskHandler EmailSendHandler(std::function<Result<SmtpOptions>()> smtp);

// The "report.send" handler's work: renders the report in the payload from the UCR table in
// pillows_dir, resolves its recipients (meta may be null: addresses only) and enqueues one
// email.send task on queue q (unique per report.send task). Returns {"rows", "email_task"}.
Result<std::string> SendReport(TaskContext& c, const std::string& pillows_dir,
                               meta::MetaStore* meta, TaskQueue* q);

std::string HtmlEscape(std::string_view s);
std::string CsvField(std::string_view s);

}  // namespace reports
}  // namespace commcare
