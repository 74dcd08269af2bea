// Scheduled reports over a UCR data source's table, emailed as CSV or XLSX with an HTML table in
// the body (docs/email-and-reports.md has the definition's fields). A saved report is a task-queue
// schedule "report:<domain>:<name>" running "report.send" with the report's JSON; these functions
// are what the CLI (`commcare reports`), REST (/a/{domain}/api/reports/), the C ABI (cc_report_*)
// and Python (Engine.set_report, ...) call. All are thread-safe as the TaskQueue is.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare {

class TaskQueue;

// A report rendered as a table: what the email's HTML shows and the attachment holds.
struct ReportTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // cells as text
  std::vector<std::string> totals;             // with group_by: the "Total" row (else empty)
  int64_t source_rows = 0;                     // table rows that passed the filters
  // {"header": [...], "rows": [[...]], "totals": [...], "source_rows": N}
  std::string ToJson() const;
};

// Checks a report definition; InvalidArgument names the bad field.
Status ValidateReport(std::string_view report_json);

// Adds or replaces a saved report (its "schedule" is required) and returns it as saved:
// {"schedule": "report:<domain>:<name>", "report": {...}, "next_run_at", "last_run_at",
// "enabled"}. InvalidArgument names a bad field.
Result<std::string> SaveReport(TaskQueue* q, std::string_view report_json);

// The saved reports of a domain ("" : of every domain), each as SaveReport returns it, by name.
Result<std::vector<std::string>> ListReports(TaskQueue* q, std::string_view domain);

// One saved report as SaveReport returns it; NotFound when there is none.
Result<std::string> GetReport(TaskQueue* q, std::string_view domain, std::string_view name);

// Deletes a saved report; NotFound when there is none.
Status DeleteReport(TaskQueue* q, std::string_view domain, std::string_view name);

// Queues a report.send task for a saved report now (its schedule is untouched); returns the
// task's id. NotFound when there is no such report.
Result<int64_t> SendReportNow(TaskQueue* q, std::string_view domain, std::string_view name);

// Renders a report definition from its UCR table (pillows_dir: where the pillows keep their
// state, Host::PillowStore()). NotFound for a table that was never loaded; InvalidArgument for a
// bad definition or a column the table lacks.
Result<ReportTable> RenderReport(const std::string& pillows_dir, std::string_view report_json);

// Renders a saved report (as RenderReport); NotFound when there is none.
Result<ReportTable> PreviewReport(TaskQueue* q, const std::string& pillows_dir,
                                  std::string_view domain, std::string_view name);

}  // namespace commcare
