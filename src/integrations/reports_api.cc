// The public face of scheduled reports (include/commcare/reports.h): saved reports as task-queue
// schedules, sending one now, and rendering one for a preview.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>

#include "commcare/pillows.h"
#include "commcare/reports.h"
#include "commcare/tasks.h"
#include "integrations/reports.h"

namespace commcare {

namespace json = boost::json;

namespace {

// One saved report: its definition plus the schedule's state.
std::string ReportLine(const Schedule& s) {
  boost::system::error_code ec;
  json::value def = json::parse(s.task.payload, ec);
  json::value sched = json::parse(s.ToJson(), ec);
  json::object o;
  o["schedule"] = s.name;
  o["report"] = def;
  if (sched.is_object()) {
    for (const char* k : {"next_run_at", "last_run_at", "enabled"})
      if (const auto* v = sched.get_object().if_contains(k)) o[k] = *v;
  }
  return json::serialize(o);
}

Result<Schedule> FindReport(TaskQueue* q, std::string_view domain, std::string_view name) {
  if (!q) return Status::InvalidArgument("no task queue");
  CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
  const std::string want = reports::ScheduleName(domain, name);
  for (auto& s : all)
    if (s.name == want && s.task.type == "report.send") return s;
  return Status::NotFound(fmt::format("no report '{}' in domain '{}'", name, domain));
}

json::array Cells(const std::vector<std::string>& cells) {
  json::array a;
  for (const auto& c : cells) a.emplace_back(c);
  return a;
}

}  // namespace

std::string ReportTable::ToJson() const {
  json::array rs;
  for (const auto& r : rows) rs.emplace_back(Cells(r));
  return json::serialize(json::object{{"header", Cells(header)},
                                      {"rows", std::move(rs)},
                                      {"totals", Cells(totals)},
                                      {"source_rows", source_rows}});
}

Status ValidateReport(std::string_view report_json) {
  return reports::ParseReport(report_json).status();
}

Result<std::string> SaveReport(TaskQueue* q, std::string_view report_json) {
  if (!q) return Status::InvalidArgument("no task queue");
  CC_ASSIGN_OR_RETURN(reports::Report r, reports::ParseReport(report_json));
  CC_ASSIGN_OR_RETURN(Schedule s, reports::ToSchedule(r));
  CC_RETURN_IF_ERROR(q->PutSchedule(s));
  CC_ASSIGN_OR_RETURN(Schedule saved, FindReport(q, r.domain, r.name));
  return ReportLine(saved);
}

Result<std::vector<std::string>> ListReports(TaskQueue* q, std::string_view domain) {
  if (!q) return Status::InvalidArgument("no task queue");
  CC_ASSIGN_OR_RETURN(auto all, q->Schedules());
  std::sort(all.begin(), all.end(),
            [](const Schedule& a, const Schedule& b) { return a.name < b.name; });
  const std::string prefix = domain.empty() ? "report:" : reports::ScheduleName(domain, "");
  std::vector<std::string> out;
  for (const auto& s : all)
    if (s.task.type == "report.send" && s.name.starts_with(prefix)) out.push_back(ReportLine(s));
  return out;
}

Result<std::string> GetReport(TaskQueue* q, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(Schedule s, FindReport(q, domain, name));
  return ReportLine(s);
}

Status DeleteReport(TaskQueue* q, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(Schedule s, FindReport(q, domain, name));
  return q->DeleteSchedule(s.name);
}

Result<int64_t> SendReportNow(TaskQueue* q, std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(Schedule s, FindReport(q, domain, name));
  TaskSpec t = s.task;
  t.run_at = 0;
  t.unique_key.clear();
  return q->Enqueue(t);
}

Result<ReportTable> RenderReport(const std::string& pillows_dir, std::string_view report_json) {
  CC_ASSIGN_OR_RETURN(reports::Report r, reports::ParseReport(report_json));
  CC_ASSIGN_OR_RETURN(auto rows, UcrRows(pillows_dir, r.domain, r.table_id, size_t(1) << 40, 0));
  CC_ASSIGN_OR_RETURN(reports::Rendered out, reports::Render(r, rows));
  ReportTable t;
  t.header = std::move(out.header);
  t.rows = std::move(out.rows);
  t.totals = std::move(out.totals);
  t.source_rows = out.source_rows;
  return t;
}

Result<ReportTable> PreviewReport(TaskQueue* q, const std::string& pillows_dir,
                                  std::string_view domain, std::string_view name) {
  CC_ASSIGN_OR_RETURN(Schedule s, FindReport(q, domain, name));
  return RenderReport(pillows_dir, s.task.payload);
}

}  // namespace commcare
