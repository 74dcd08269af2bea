// Scheduled reports: definition, filters, group-by aggregation, CSV and HTML rendering.
#include "integrations/reports.h"

#include <fmt/format.h>
#include <unistd.h>
#include <xlsxwriter.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "commcare/email.h"
#include "commcare/log.h"
#include "commcare/pillows.h"
#include "meta/meta_store.h"

namespace commcare::reports {

namespace json = boost::json;

namespace {

Status Strings(const json::object& o, const char* key, std::vector<std::string>* out) {
  const auto* v = o.if_contains(key);
  if (!v) return Status::Ok();
  if (!v->is_array()) return Status::InvalidArgument(fmt::format("{}: not a list", key));
  for (const auto& x : v->get_array()) {
    if (!x.is_string() || x.get_string().empty())
      return Status::InvalidArgument(fmt::format("{}: not a list of names", key));
    out->emplace_back(x.get_string());
  }
  return Status::Ok();
}

Status Str(const json::object& o, const char* key, std::string* out, bool required) {
  const auto* v = o.if_contains(key);
  if (!v) {
    if (required) return Status::InvalidArgument(fmt::format("{}: is required", key));
    return Status::Ok();
  }
  if (!v->is_string()) return Status::InvalidArgument(fmt::format("{}: not a string", key));
  *out = std::string(v->get_string());
  if (required && out->empty()) return Status::InvalidArgument(fmt::format("{}: is required", key));
  return Status::Ok();
}

// A number from a cell (numbers, and strings holding one); false for anything else.
bool Number(const json::value& v, double* out) {
  if (v.is_int64()) return *out = double(v.get_int64()), true;
  if (v.is_uint64()) return *out = double(v.get_uint64()), true;
  if (v.is_double()) return *out = v.get_double(), true;
  if (v.is_string() && !v.get_string().empty()) {
    std::string s(v.get_string());
    char* end = nullptr;
    *out = std::strtod(s.c_str(), &end);
    return *end == 0;
  }
  return false;
}

std::string Text(const json::value& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return std::string(v.get_string());
  if (v.is_bool()) return v.get_bool() ? "true" : "false";
  return json::serialize(v);
}

std::string NumText(double d) {
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e15)
    return fmt::format("{}", int64_t(d));
  return fmt::format("{:.4g}", d);
}

// a == b for filters: equal JSON, or equal numbers, or equal text.
bool Same(const json::value& a, const json::value& b) {
  if (a == b) return true;
  double x, y;
  if (Number(a, &x) && Number(b, &y)) return x == y;
  return !a.is_null() && !b.is_null() && Text(a) == Text(b);
}

// a < b: numerically when both are numbers, else as text (ISO dates order as text).
bool Less(const json::value& a, const json::value& b) {
  double x, y;
  if (Number(a, &x) && Number(b, &y)) return x < y;
  return Text(a) < Text(b);
}

bool Passes(const ReportFilter& f, const json::value& v) {
  switch (f.op) {
    case ReportFilter::Op::kEquals:
    case ReportFilter::Op::kIn:
      for (const auto& x : f.values)
        if (Same(v, x)) return true;
      return false;
    case ReportFilter::Op::kRange:
      if (v.is_null()) return false;
      if (!f.min.is_null() && Less(v, f.min)) return false;
      if (!f.max.is_null() && Less(f.max, v)) return false;
      return true;
  }
  return false;
}

struct Acc {
  int64_t count = 0;
  std::vector<double> sum;
  std::vector<int64_t> n;  // numeric cells per aggregation
};

std::string Cell(const Aggregation& a, const Acc& acc, size_t i) {
  if (a.fn == "count") return fmt::format("{}", acc.count);
  if (a.fn == "sum") return NumText(acc.sum[i]);
  return acc.n[i] ? NumText(acc.sum[i] / double(acc.n[i])) : "";
}

}  // namespace

std::string HtmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  return out;
}

std::string CsvField(std::string_view s) {
  if (s.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

Result<Report> ParseReport(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("report: not a JSON object");
  const auto& o = v.get_object();
  Report r;
  r.json = json::serialize(v);
  CC_RETURN_IF_ERROR(Str(o, "name", &r.name, true));
  CC_RETURN_IF_ERROR(Str(o, "domain", &r.domain, true));
  CC_RETURN_IF_ERROR(Str(o, "table_id", &r.table_id, true));
  CC_RETURN_IF_ERROR(Str(o, "subject", &r.subject, false));
  CC_RETURN_IF_ERROR(Strings(o, "columns", &r.columns));
  CC_RETURN_IF_ERROR(Strings(o, "group_by", &r.group_by));
  CC_RETURN_IF_ERROR(Strings(o, "recipients", &r.recipients));
  if (r.recipients.empty()) return Status::InvalidArgument("recipients: is required");
  std::string format = "csv";
  CC_RETURN_IF_ERROR(Str(o, "format", &format, false));
  if (format != "csv" && format != "xlsx")
    return Status::InvalidArgument("format: must be csv or xlsx");
  r.format = format == "xlsx" ? Report::Format::kXlsx : Report::Format::kCsv;
  if (const auto* fs = o.if_contains("filters")) {
    if (!fs->is_array()) return Status::InvalidArgument("filters: not a list");
    size_t i = 0;
    for (const auto& fv : fs->get_array()) {
      const std::string at = fmt::format("filters[{}]", i++);
      if (!fv.is_object()) return Status::InvalidArgument(at + ": not an object");
      const auto& fo = fv.get_object();
      ReportFilter f;
      if (!Str(fo, "column", &f.column, true).ok())
        return Status::InvalidArgument(at + ".column: is required");
      if (const auto* eq = fo.if_contains("equals")) {
        f.op = ReportFilter::Op::kEquals;
        f.values.push_back(*eq);
      } else if (const auto* in = fo.if_contains("in")) {
        if (!in->is_array()) return Status::InvalidArgument(at + ".in: not a list");
        f.op = ReportFilter::Op::kIn;
        for (const auto& x : in->get_array()) f.values.push_back(x);
      } else if (fo.contains("min") || fo.contains("max")) {
        f.op = ReportFilter::Op::kRange;
        if (const auto* m = fo.if_contains("min")) f.min = *m;
        if (const auto* m = fo.if_contains("max")) f.max = *m;
      } else {
        return Status::InvalidArgument(at + ": needs equals, in, or min/max");
      }
      r.filters.push_back(std::move(f));
    }
  }
  if (const auto* as = o.if_contains("aggregations")) {
    if (!as->is_array()) return Status::InvalidArgument("aggregations: not a list");
    size_t i = 0;
    for (const auto& av : as->get_array()) {
      const std::string at = fmt::format("aggregations[{}]", i++);
      if (!av.is_object()) return Status::InvalidArgument(at + ": not an object");
      Aggregation a;
      if (!Str(av.get_object(), "fn", &a.fn, true).ok() ||
          (a.fn != "count" && a.fn != "sum" && a.fn != "avg"))
        return Status::InvalidArgument(at + ".fn: must be count, sum or avg");
      CC_RETURN_IF_ERROR(Str(av.get_object(), "column", &a.column, a.fn != "count"));
      if (a.fn == "count") a.column.clear();
      r.aggregations.push_back(std::move(a));
    }
  }
  if (!r.aggregations.empty() || !r.group_by.empty()) {
    if (r.aggregations.empty()) r.aggregations.push_back({"count", ""});
  }
  if (const auto* s = o.if_contains("schedule")) {
    if (!s->is_object()) return Status::InvalidArgument("schedule: not an object");
    CC_RETURN_IF_ERROR(Str(s->get_object(), "cron", &r.cron, true));
    std::string tz;
    CC_RETURN_IF_ERROR(Str(s->get_object(), "time_zone", &tz, false));
    if (!tz.empty()) r.time_zone = tz;
    if (Status st = CheckSchedule(r.cron, r.time_zone); !st.ok())
      return Status::InvalidArgument("schedule: " + st.message());
  }
  return r;
}

Result<Rendered> Render(const Report& report, const std::vector<std::string>& rows) {
  Rendered out;
  std::vector<json::object> kept;
  for (const auto& text : rows) {
    boost::system::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object()) return Status::DataLoss("ucr row: not a JSON object");
    bool pass = true;
    for (const auto& f : report.filters) {
      const json::value* c = v.get_object().if_contains(f.column);
      if (!c) return Status::InvalidArgument(fmt::format("filters: no column '{}'", f.column));
      if (!Passes(f, *c)) {
        pass = false;
        break;
      }
    }
    if (pass) kept.push_back(std::move(v.get_object()));
  }
  out.source_rows = int64_t(kept.size());
  auto cell = [&](const json::object& row, const std::string& col) -> Result<json::value> {
    const json::value* c = row.if_contains(col);
    if (!c)
      return Status::InvalidArgument(fmt::format("no column '{}' in {}", col, report.table_id));
    return *c;
  };
  if (report.aggregations.empty()) {
    out.header = report.columns;
    if (out.header.empty() && !kept.empty())
      for (const auto& kv : kept[0]) out.header.emplace_back(kv.key());
    for (const auto& row : kept) {
      std::vector<std::string> line;
      for (const auto& col : out.header) {
        CC_ASSIGN_OR_RETURN(json::value c, cell(row, col));
        line.push_back(Text(c));
      }
      out.rows.push_back(std::move(line));
    }
  } else {
    out.header = report.group_by;
    for (const auto& a : report.aggregations) out.header.push_back(a.Header());
    const size_t na = report.aggregations.size();
    std::map<std::vector<std::string>, Acc> groups;
    Acc total;
    total.sum.assign(na, 0);
    total.n.assign(na, 0);
    for (const auto& row : kept) {
      std::vector<std::string> key;
      for (const auto& g : report.group_by) {
        CC_ASSIGN_OR_RETURN(json::value c, cell(row, g));
        key.push_back(Text(c));
      }
      Acc& acc = groups[key];
      if (acc.sum.empty()) acc.sum.assign(na, 0), acc.n.assign(na, 0);
      ++acc.count;
      ++total.count;
      for (size_t i = 0; i < na; ++i) {
        const auto& a = report.aggregations[i];
        if (a.column.empty()) continue;
        CC_ASSIGN_OR_RETURN(json::value c, cell(row, a.column));
        double d;
        if (Number(c, &d)) {
          acc.sum[i] += d, ++acc.n[i];
          total.sum[i] += d, ++total.n[i];
        }
      }
    }
    for (const auto& [key, acc] : groups) {
      std::vector<std::string> line = key;
      for (size_t i = 0; i < na; ++i) line.push_back(Cell(report.aggregations[i], acc, i));
      out.rows.push_back(std::move(line));
    }
    if (!report.group_by.empty()) {
      out.totals.assign(report.group_by.size(), "");
      out.totals[0] = "Total";
      for (size_t i = 0; i < na; ++i) out.totals.push_back(Cell(report.aggregations[i], total, i));
    }
  }
  auto csv_line = [&](const std::vector<std::string>& cells) {
    for (size_t i = 0; i < cells.size(); ++i) out.csv += (i ? "," : "") + CsvField(cells[i]);
    out.csv += "\r\n";
  };
  csv_line(out.header);
  for (const auto& r : out.rows) csv_line(r);
  if (!out.totals.empty()) csv_line(out.totals);

  std::string& h = out.html;
  const std::string title = report.subject.empty() ? "Report: " + report.name : report.subject;
  h += "<!DOCTYPE html><html><body><h1>" + HtmlEscape(title) + "</h1>";
  h += fmt::format("<p>{} / {}: {} rows</p>", HtmlEscape(report.domain),
                   HtmlEscape(report.table_id), out.source_rows);
  h += "<table border=\"1\" cellpadding=\"4\"><thead><tr>";
  for (const auto& c : out.header) h += "<th>" + HtmlEscape(c) + "</th>";
  h += "</tr></thead><tbody>";
  for (const auto& r : out.rows) {
    h += "<tr>";
    for (const auto& c : r) h += "<td>" + HtmlEscape(c) + "</td>";
    h += "</tr>";
  }
  h += "</tbody>";
  if (!out.totals.empty()) {
    h += "<tfoot><tr>";
    for (const auto& c : out.totals) h += "<th>" + HtmlEscape(c) + "</th>";
    h += "</tr></tfoot>";
  }
  h += "</table></body></html>";
  return out;
}

Result<std::vector<std::string>> ResolveRecipients(const Report& report, meta::MetaStore* meta) {
  std::vector<std::string> to;
  for (const auto& r : report.recipients) {
    if (r.find('@') != std::string::npos) {
      to.push_back(r);
      continue;
    }
    if (!meta) return Status::InvalidArgument(fmt::format("recipients: '{}' is not an address", r));
    auto u = meta->GetUser(r);
    if (!u.ok() || !u->InDomain(report.domain) || !u->is_active) {
      Log(LogLevel::kWarning, "report recipient skipped: no such active user in the domain",
          {{"component", "reports"}, {"report", report.name}, {"user", r}});
      continue;
    }
    const auto* e = u->user_data.if_contains("email");
    if (!e || !e->is_string() || e->get_string().find('@') == json::string::npos) {
      Log(LogLevel::kWarning, "report recipient skipped: the user has no email",
          {{"component", "reports"}, {"report", report.name}, {"user", r}});
      continue;
    }
    to.emplace_back(e->get_string());
  }
  if (to.empty()) return Status::InvalidArgument("recipients: none has an email address");
  return to;
}

std::string AttachmentName(const Report& report) {
  std::string file = report.name;
  for (char& c : file)
    if (!std::isalnum(uint8_t(c)) && c != '-' && c != '_') c = '_';
  return file + (report.format == Report::Format::kXlsx ? ".xlsx" : ".csv");
}

namespace {

// Writes one row of cells; those at or after numeric_from that hold a number are numbers.
lxw_error XlsxRow(lxw_worksheet* ws, lxw_row_t row, const std::vector<std::string>& cells,
                  size_t numeric_from, lxw_format* f) {
  for (size_t c = 0; c < cells.size(); ++c) {
    double d;
    lxw_error e;
    if (c >= numeric_from && Number(json::value(cells[c]), &d))
      e = worksheet_write_number(ws, row, lxw_col_t(c), d, f);
    else
      e = worksheet_write_string(ws, row, lxw_col_t(c), cells[c].c_str(), f);
    if (e != LXW_NO_ERROR) return e;
  }
  return LXW_NO_ERROR;
}

}  // namespace

Result<std::string> RenderXlsx(const Report& report, const Rendered& r) {
  namespace fs = std::filesystem;
  std::error_code fe;
  std::string tmpl = (fs::temp_directory_path(fe) / "commcare-report-XXXXXX").string();
  int fd = ::mkstemp(tmpl.data());
  if (fd < 0) return Status::Internal("report: cannot create a temp file for the XLSX");
  ::close(fd);
  struct Remove {
    std::string path;
    ~Remove() {
      std::error_code ec;
      fs::remove(path, ec);
    }
  } remove{tmpl};
  lxw_workbook* wb = workbook_new(tmpl.c_str());
  if (!wb) return Status::Internal("report: cannot start an XLSX workbook");
  std::string sheet = AttachmentName(report);
  sheet = sheet.substr(0, std::min<size_t>(31, sheet.rfind('.')));
  lxw_worksheet* ws = workbook_add_worksheet(wb, sheet.c_str());
  lxw_format* bold = workbook_add_format(wb);
  format_set_bold(bold);
  // Aggregation columns (after the group-by ones) hold numbers; a plain listing holds text.
  const size_t numeric_from = report.aggregations.empty() ? SIZE_MAX : report.group_by.size();
  lxw_error e = ws ? XlsxRow(ws, 0, r.header, SIZE_MAX, bold) : LXW_ERROR_MEMORY_MALLOC_FAILED;
  lxw_row_t row = 1;
  for (size_t i = 0; e == LXW_NO_ERROR && i < r.rows.size(); ++i)
    e = XlsxRow(ws, row++, r.rows[i], numeric_from, nullptr);
  if (e == LXW_NO_ERROR && !r.totals.empty()) e = XlsxRow(ws, row, r.totals, numeric_from, bold);
  lxw_error closed = workbook_close(wb);
  if (e == LXW_NO_ERROR) e = closed;
  if (e != LXW_NO_ERROR) return Status::Internal(fmt::format("report: xlsx: {}", lxw_strerror(e)));
  std::ifstream in(tmpl, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) return Status::Internal("report: cannot read the XLSX back");
  return bytes;
}

Result<std::string> EmailPayload(const Report& report, const Rendered& r,
                                 const std::vector<std::string>& to) {
  json::array tos;
  for (const auto& t : to) tos.emplace_back(t);
  const bool xlsx = report.format == Report::Format::kXlsx;
  const std::string subject = report.subject.empty() ? "Report: " + report.name : report.subject;
  std::string text =
      fmt::format("{}\n{} / {}: {} rows; the table is attached as {}.\n", subject, report.domain,
                  report.table_id, r.source_rows, xlsx ? "XLSX" : "CSV");
  std::string data = r.csv;
  if (xlsx) {
    CC_ASSIGN_OR_RETURN(data, RenderXlsx(report, r));
  }
  const char* type =
      xlsx ? "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" : "text/csv";
  return json::serialize(
      json::object{{"to", tos},
                   {"subject", subject},
                   {"text", text},
                   {"html", r.html},
                   {"attachments", json::array{json::object{{"name", AttachmentName(report)},
                                                            {"content_type", type},
                                                            {"base64", EncodeBase64(data)}}}}});
}

std::string ScheduleName(std::string_view domain, std::string_view name) {
  return fmt::format("report:{}:{}", domain, name);
}

Result<Schedule> ToSchedule(const Report& report) {
  if (report.cron.empty()) return Status::InvalidArgument("schedule: is required");
  Schedule s;
  s.name = ScheduleName(report.domain, report.name);
  s.cron = report.cron;
  s.time_zone = report.time_zone;
  s.task.type = "report.send";
  s.task.payload = report.json;
  s.task.domain = report.domain;
  s.task.queue = "default";
  s.missed = Schedule::Missed::kOnce;
  return s;
}

TaskHandler EmailSendHandler(std::function<Result<SmtpOptions>()> smtp) {
  return [smtp](TaskContext& c) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(EmailMessage m, ParseEmailPayload(c.payload()));
    CC_ASSIGN_OR_RETURN(SmtpOptions o, smtp());
    CC_RETURN_IF_ERROR(SendEmail(o, m));
    c.Progress(1, 1, "sent");
    return json::serialize(json::object{{"sent", m.to.size()}});
  };
}

Result<std::string> SendReport(TaskContext& c, const std::string& pillows_dir,
                               meta::MetaStore* meta, TaskQueue* q) {
  CC_ASSIGN_OR_RETURN(Report r, ParseReport(c.payload()));
  auto rows = UcrRows(pillows_dir, r.domain, r.table_id, size_t(1) << 40, 0);
  if (!rows.ok()) {
    if (rows.status().IsNotFound()) return Status::NotFound(rows.status().message());
    return rows.status();
  }
  c.Progress(0, 2, "rendering");
  CC_ASSIGN_OR_RETURN(Rendered out, Render(r, *rows));
  CC_ASSIGN_OR_RETURN(std::vector<std::string> to, ResolveRecipients(r, meta));
  TaskSpec email;
  email.type = "email.send";
  CC_ASSIGN_OR_RETURN(email.payload, EmailPayload(r, out, to));
  email.domain = r.domain;
  email.queue = c.task().spec.queue;
  email.unique_key = fmt::format("report.send:{}", c.task().id);
  CC_ASSIGN_OR_RETURN(int64_t id, q->Enqueue(email));
  c.Progress(2, 2, "queued email");
  return json::serialize(json::object{{"rows", out.source_rows}, {"email_task", id}});
}

}  // namespace commcare::reports
