// Export definitions: JSON in and out, validation, saved definitions as files.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commcare/exports.h"
#include "commcare/tasks.h"
#include "util/time.h"

namespace commcare {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

Status Bad(std::string_view field, std::string_view what) {
  return Status::InvalidArgument(fmt::format("export definition: \"{}\" {}", field, what));
}

Status Str(const json::value& v, std::string_view field, std::string* out) {
  if (!v.is_string()) return Bad(field, "must be a string");
  *out = std::string(v.get_string());
  return Status::Ok();
}

Status Time(const json::value& v, std::string_view field, int64_t* out) {
  std::string s;
  CC_RETURN_IF_ERROR(Str(v, field, &s));
  if (s.size() == 10) s += "T00:00:00Z";  // a date: its midnight UTC
  if (!util::ParseIsoTime(s, out)) return Bad(field, "must be an ISO 8601 date or time");
  return Status::Ok();
}

std::string Iso(int64_t t) { return util::FormatIsoTime(t); }

// A saved definition's name: letters, digits, '-', '_', '.' (a file name).
bool GoodName(std::string_view n) {
  if (n.empty() || n.size() > 100 || n[0] == '.' || n.find("..") != std::string_view::npos)
    return false;
  for (char c : n)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

// "schedule": {"cron": "...", "time_zone": "..."} (time_zone defaults to UTC).
Status ParseSchedule(const json::value& v, ExportDefinition* d) {
  if (!v.is_object()) return Bad("schedule", "must be an object {\"cron\", \"time_zone\"}");
  for (const auto& [k, val] : v.get_object()) {
    std::string field = "schedule." + std::string(k);
    if (k == "cron")
      CC_RETURN_IF_ERROR(Str(val, field, &d->cron));
    else if (k == "time_zone")
      CC_RETURN_IF_ERROR(Str(val, field, &d->time_zone));
    else
      return Bad(field, "is not a schedule field (cron, time_zone)");
  }
  if (d->cron.empty()) return Bad("schedule.cron", "is required");
  return Status::Ok();  // Validate checks the line and the zone
}

}  // namespace

Result<ExportDefinition> ExportDefinition::FromJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return Status::InvalidArgument("export definition: must be a JSON object");
  ExportDefinition d;
  for (const auto& [k, val] : v.get_object()) {
    if (k == "kind") {
      std::string s;
      CC_RETURN_IF_ERROR(Str(val, k, &s));
      if (s == "case")
        d.kind = Kind::kCase;
      else if (s == "form")
        d.kind = Kind::kForm;
      else
        return Bad(k, "must be \"case\" or \"form\"");
    } else if (k == "format") {
      std::string s;
      CC_RETURN_IF_ERROR(Str(val, k, &s));
      if (s == "csv")
        d.format = Format::kCsv;
      else if (s == "xlsx")
        d.format = Format::kXlsx;
      else if (s == "html")
        d.format = Format::kHtml;
      else if (s == "json")
        d.format = Format::kJson;
      else
        return Bad(k, "must be \"csv\", \"xlsx\", \"html\" or \"json\"");
    } else if (k == "name") {
      CC_RETURN_IF_ERROR(Str(val, k, &d.name));
    } else if (k == "domain") {
      CC_RETURN_IF_ERROR(Str(val, k, &d.domain));
    } else if (k == "filters") {
      if (!val.is_object()) return Bad(k, "must be an object");
      for (const auto& [f, fv] : val.get_object()) {
        std::string field = "filters." + std::string(f);
        if (f == "case_type")
          CC_RETURN_IF_ERROR(Str(fv, field, &d.case_type));
        else if (f == "xmlns")
          CC_RETURN_IF_ERROR(Str(fv, field, &d.xmlns));
        else if (f == "owner_id")
          CC_RETURN_IF_ERROR(Str(fv, field, &d.owner_id));
        else if (f == "user_id")
          CC_RETURN_IF_ERROR(Str(fv, field, &d.user_id));
        else if (f == "closed") {
          if (!fv.is_bool()) return Bad(field, "must be true or false");
          d.closed = fv.get_bool();
        } else if (f == "modified_from")
          CC_RETURN_IF_ERROR(Time(fv, field, &d.modified_from));
        else if (f == "modified_to")
          CC_RETURN_IF_ERROR(Time(fv, field, &d.modified_to));
        else if (f == "received_from")
          CC_RETURN_IF_ERROR(Time(fv, field, &d.received_from));
        else if (f == "received_to")
          CC_RETURN_IF_ERROR(Time(fv, field, &d.received_to));
        else
          return Bad(field,
                     "is not a filter (case_type, xmlns, owner_id, user_id, closed, "
                     "modified_from, modified_to, received_from, received_to)");
      }
    } else if (k == "columns") {
      if (!val.is_array()) return Bad(k, "must be an array");
      for (const auto& c : val.get_array()) {
        ExportColumn col;
        if (c.is_string()) {
          col.path = c.get_string();
        } else if (c.is_object()) {
          for (const auto& [ck, cv] : c.get_object()) {
            std::string field = "columns[]." + std::string(ck);
            if (ck == "path")
              CC_RETURN_IF_ERROR(Str(cv, field, &col.path));
            else if (ck == "label")
              CC_RETURN_IF_ERROR(Str(cv, field, &col.label));
            else if (ck == "split") {
              if (!cv.is_array()) return Bad(field, "must be an array of options");
              for (const auto& o : cv.get_array()) {
                if (!o.is_string()) return Bad(field, "must be an array of strings");
                col.split.emplace_back(o.get_string());
              }
            } else {
              return Bad(field, "is not a column field (path, label, split)");
            }
          }
        } else {
          return Bad(k, "must hold paths or {\"path\", \"label\", \"split\"} objects");
        }
        d.columns.push_back(std::move(col));
      }
    } else if (k == "expiry_seconds") {
      if (!val.is_int64() || val.get_int64() < 1 || val.get_int64() > 366LL * 24 * 3600)
        return Bad(k, "must be a whole number of seconds from 1 to 31622400 (366 days)");
      d.expiry_seconds = val.get_int64();
    } else if (k == "schedule") {
      CC_RETURN_IF_ERROR(ParseSchedule(val, &d));
    } else {
      return Bad(k,
                 "is not a field (kind, name, domain, filters, columns, format, expiry_seconds, "
                 "schedule)");
    }
  }
  CC_RETURN_IF_ERROR(d.Validate());
  return d;
}

Status ExportDefinition::Validate() const {
  if (domain.empty()) return Bad("domain", "is required");
  if (kind == Kind::kCase) {
    if (!xmlns.empty()) return Bad("filters.xmlns", "applies to form exports only");
    if (!user_id.empty()) return Bad("filters.user_id", "applies to form exports only");
    if (received_from || received_to)
      return Bad("filters.received_from", "applies to form exports only");
  } else {
    if (xmlns.empty()) return Bad("filters.xmlns", "is required for a form export");
    if (!case_type.empty()) return Bad("filters.case_type", "applies to case exports only");
    if (!owner_id.empty()) return Bad("filters.owner_id", "applies to case exports only");
    if (closed) return Bad("filters.closed", "applies to case exports only");
    if (modified_from || modified_to)
      return Bad("filters.modified_from", "applies to case exports only");
  }
  if (!cron.empty()) {
    if (Status s = CheckSchedule(cron, "UTC"); !s.ok())
      return Bad("schedule.cron", "is not valid: " + s.message());
    if (Status s = CheckSchedule(cron, time_zone); !s.ok())
      return Bad("schedule.time_zone", "is not valid: " + s.message());
  }
  if (expiry_seconds < 1) return Bad("expiry_seconds", "must be at least 1");
  for (const auto& c : columns) {
    if (c.path.empty()) return Bad("columns[].path", "is required");
    if (kind == Kind::kForm && c.path.rfind("form.", 0) != 0 &&
        !(c.path == "number" || c.path == "form_id" || c.path == "received_on" ||
          c.path == "username" || c.path == "user_id" || c.path == "xmlns" || c.path == "app_id" ||
          c.path == "started_time" || c.path == "completed_time"))
      return Status::InvalidArgument(fmt::format(
          "export definition: unknown column \"{}\" (form columns are form.<question path> or "
          "a system column)",
          c.path));
  }
  return Status::Ok();
}

std::string ExportDefinition::ToJson() const {
  json::object f;
  if (!case_type.empty()) f["case_type"] = case_type;
  if (!xmlns.empty()) f["xmlns"] = xmlns;
  if (!owner_id.empty()) f["owner_id"] = owner_id;
  if (!user_id.empty()) f["user_id"] = user_id;
  if (closed) f["closed"] = *closed;
  if (modified_from) f["modified_from"] = Iso(modified_from);
  if (modified_to) f["modified_to"] = Iso(modified_to);
  if (received_from) f["received_from"] = Iso(received_from);
  if (received_to) f["received_to"] = Iso(received_to);
  json::array cols;
  for (const auto& c : columns) {
    if (c.label.empty() && c.split.empty()) {
      cols.emplace_back(c.path);
      continue;
    }
    json::object o{{"path", c.path}};
    if (!c.label.empty()) o["label"] = c.label;
    if (!c.split.empty()) {
      json::array s;
      for (const auto& x : c.split) s.emplace_back(x);
      o["split"] = std::move(s);
    }
    cols.emplace_back(std::move(o));
  }
  json::object o{{"kind", kind == Kind::kCase ? "case" : "form"},
                 {"domain", domain},
                 {"filters", std::move(f)},
                 {"columns", std::move(cols)},
                 {"format", ExportExtension(*this)}};
  if (!name.empty()) o["name"] = name;
  if (expiry_seconds != ExportDefinition{}.expiry_seconds) o["expiry_seconds"] = expiry_seconds;
  if (!cron.empty()) o["schedule"] = json::object{{"cron", cron}, {"time_zone", time_zone}};
  return json::serialize(o);
}

std::string ExportExtension(const ExportDefinition& def) {
  switch (def.format) {
    case ExportDefinition::Format::kXlsx:
      return "xlsx";
    case ExportDefinition::Format::kHtml:
      return "html";
    case ExportDefinition::Format::kJson:
      return "json";
    case ExportDefinition::Format::kCsv:
      break;
  }
  return "csv";
}

namespace {
fs::path SavedDir(const std::string& data_dir, std::string_view domain) {
  return fs::path(data_dir) / "exports" / "saved" / std::string(domain);
}
}  // namespace

Status SaveExportDefinition(const std::string& data_dir, const ExportDefinition& def) {
  CC_RETURN_IF_ERROR(def.Validate());
  if (!GoodName(def.name) || !GoodName(def.domain))
    return Bad("name", "must be letters, digits, '-', '_' or '.' to be saved");
  std::error_code ec;
  fs::path dir = SavedDir(data_dir, def.domain);
  fs::create_directories(dir, ec);
  if (ec) return Status::Internal(fmt::format("cannot create {}: {}", dir.string(), ec.message()));
  fs::path tmp = dir / (def.name + ".json.tmp"), dst = dir / (def.name + ".json");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << def.ToJson();
    if (!out.good()) return Status::Internal("cannot write " + tmp.string());
  }
  fs::rename(tmp, dst, ec);
  if (ec) return Status::Internal(fmt::format("cannot write {}: {}", dst.string(), ec.message()));
  return Status::Ok();
}

Result<ExportDefinition> LoadExportDefinition(const std::string& data_dir, std::string_view domain,
                                              std::string_view name) {
  if (!GoodName(name) || !GoodName(domain))
    return Status::NotFound(fmt::format("no saved export \"{}\"", name));
  std::ifstream in(SavedDir(data_dir, domain) / (std::string(name) + ".json"), std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("no saved export \"{}\"", name));
  std::stringstream ss;
  ss << in.rdbuf();
  return ExportDefinition::FromJson(ss.str());
}

Result<std::vector<std::string>> ListExportDefinitions(const std::string& data_dir,
                                                       std::string_view domain) {
  std::vector<std::string> out;
  if (!GoodName(domain)) return out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(SavedDir(data_dir, domain), ec))
    if (e.path().extension() == ".json") out.push_back(e.path().stem().string());
  std::sort(out.begin(), out.end());
  return out;
}

Status DeleteExportDefinition(const std::string& data_dir, std::string_view domain,
                              std::string_view name) {
  std::error_code ec;
  if (!GoodName(name) || !GoodName(domain) ||
      !fs::remove(SavedDir(data_dir, domain) / (std::string(name) + ".json"), ec))
    return Status::NotFound(fmt::format("no saved export \"{}\"", name));
  return Status::Ok();
}

Result<int64_t> PruneExportFiles(const std::string& data_dir, std::chrono::seconds max_age) {
  int64_t n = 0;
  std::error_code ec;
  auto cutoff = fs::file_time_type::clock::now() - max_age;
  for (const auto& e : fs::directory_iterator(fs::path(data_dir) / "exports", ec)) {
    if (!e.is_regular_file()) continue;
    std::error_code ec2;
    if (e.last_write_time(ec2) < cutoff && !ec2 && fs::remove(e.path(), ec2)) ++n;
  }
  return n;
}

}  // namespace commcare
