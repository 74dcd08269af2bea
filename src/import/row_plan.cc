// Header and row planning of the case importer, after HQ's do_import.py (_CaseImportRow):
// reserved columns, search id normalisation, owners, parents, close, blank cells.
#include "import/row_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "import/system_form.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare::importer {

namespace {

using util::XmlEscape;

// Columns the importer reads itself (HQ's RESERVED_FIELDS it pops from a row).
const std::set<std::string> kReserved = {"name",
                                         "external_id",
                                         "parent_id",
                                         "parent_external_id",
                                         "parent_type",
                                         "parent_relationship_type",
                                         "parent_identifier",
                                         "close",
                                         "owner_name",
                                         "owner_id",
                                         "date_opened"};
// Names no column may map to: CommCare's own case fields.
const std::set<std::string> kForbidden = {"type",    "closed",        "case_type", "case_name",
                                          "user_id", "date_modified", "case_id",   "index",
                                          "indices", "attachment"};

std::string Trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(s.find_last_not_of(ws) + 1);
  s.erase(0, s.find_first_not_of(ws) == std::string::npos ? s.size() : s.find_first_not_of(ws));
  return s;
}

// HQ: int(float(x)) when the search id reads as a number ("12.0" -> "12").
std::string NormaliseSearchId(const std::string& raw) {
  std::string t = Trim(raw);
  if (t.empty()) return raw;
  char* end = nullptr;
  double v = std::strtod(t.c_str(), &end);
  if (*end || !std::isfinite(v) || std::fabs(v) >= 9.2e18) return raw;
  return fmt::format("{}", static_cast<int64_t>(v));
}

}  // namespace

std::string NewCaseId(const std::string& import_id, int64_t row) {
  return DerivedId(fmt::format("{}/case/{}", import_id, row));
}

Result<Header> ReadHeader(const std::vector<std::string>& cells, const CaseImportOptions& o) {
  Header h;
  const std::string search_col = o.search_column.empty() ? o.search_field : o.search_column;
  std::map<std::string, int> seen, fields;
  for (int i = 0; i < static_cast<int>(cells.size()); ++i) {
    const std::string name = Trim(cells[i]);
    if (name.empty()) continue;  // a column without a header is not imported (as HQ)
    if (auto [it, fresh] = seen.emplace(name, i); !fresh)
      return Status::InvalidArgument(
          fmt::format("bad header: column '{}' appears twice (columns {} and {})", name,
                      it->second + 1, i + 1));
    if (name == search_col) {
      h.search_col = i;
      if (o.search_field == "external_id") h.fields.emplace_back(i, "external_id");
      continue;
    }
    std::string field = name;
    if (auto m = o.columns.find(name); m != o.columns.end()) field = Trim(m->second);
    if (field.empty()) continue;
    if (field == "parent_ref")
      return Status::InvalidArgument(
          "bad header: 'parent_ref' is deprecated; use parent_id or parent_external_id (and "
          "parent_identifier)");
    if (kForbidden.count(field))
      return Status::InvalidArgument(
          fmt::format("bad header: column '{}' maps to '{}', a reserved name", name, field));
    if (!kReserved.count(field) && !util::IsCasePropertyName(field))
      return Status::InvalidArgument(fmt::format(
          "bad header: column '{}' is not a valid case property name (letters, digits, _ - .; "
          "starting with a letter or _)",
          name));
    if (auto [it, fresh] = fields.emplace(field, i); !fresh)
      return Status::InvalidArgument(fmt::format("bad header: columns {} and {} both map to '{}'",
                                                 it->second + 1, i + 1, field));
    h.fields.emplace_back(i, field);
  }
  for (const auto& [col, prop] : o.columns)
    if (!seen.count(col))
      return Status::InvalidArgument(fmt::format("bad header: the file has no column '{}'", col));
  if (h.search_col < 0 && (o.search_field == "external_id" || !o.create_new))
    return Status::InvalidArgument(
        fmt::format("bad header: no column '{}' to find cases by", search_col));
  if (h.fields.empty() && h.search_col < 0)
    return Status::InvalidArgument("bad header: the first row names no column");
  return h;
}

namespace {

struct Row {
  std::map<std::string, std::string> f;  // field -> value ("---" already blank)
  bool Has(const std::string& k) const { return f.count(k) > 0; }
  std::string Get(const std::string& k) const {
    auto it = f.find(k);
    return it == f.end() ? std::string() : it->second;
  }
};

// The <index> element of a row's parent columns ("" for none).
Result<std::string> ParentIndex(const PlanContext& c, const Row& r, RowPlan* p) {
  const std::string rel =
      r.Has("parent_relationship_type") && !r.Get("parent_relationship_type").empty()
          ? r.Get("parent_relationship_type")
          : "child";
  const std::string ident = r.Get("parent_identifier");
  std::string parent_type = r.Get("parent_type");
  if (parent_type.empty()) parent_type = c.options->case_type;
  for (const char* col : {"parent_id", "parent_external_id"}) {
    const std::string id = r.Get(col);
    if (id.empty()) continue;
    p->lookup_ids.push_back(id);
    std::string parent;
    if (std::string(col) == "parent_id") {
      CC_ASSIGN_OR_RETURN(auto found, c.cases->ById(id, parent_type));
      if (found) parent = found->case_id;
    } else {
      CC_ASSIGN_OR_RETURN(auto ids, c.cases->ByExternalId(id, parent_type));
      if (ids.size() > 1) {
        p->errors.push_back({col, "Too Many Matches",
                             fmt::format("{} cases of type {} have external id '{}'", ids.size(),
                                         parent_type, id)});
        return std::string();
      }
      if (!ids.empty()) parent = ids[0];
    }
    if (parent.empty()) {
      p->errors.push_back(
          {col, "Invalid Parent ID",
           fmt::format("no case of type {} has {} '{}'", parent_type,
                       std::string(col) == "parent_id" ? "id" : "external id", id)});
      return std::string();
    }
    if (rel != "child" && rel != "extension") {
      p->errors.push_back({"parent_relationship_type", "Invalid Parent ID",
                           "parent_relationship_type must be child or extension"});
      return std::string();
    }
    if (rel == "extension" && ident.empty()) {
      p->errors.push_back({"parent_identifier", "Invalid Parent ID",
                           "'parent_identifier' must be given when 'parent_relationship_type' "
                           "is extension"});
      return std::string();
    }
    const std::string name = ident.empty() ? "parent" : ident;
    if (!util::IsCasePropertyName(name)) {
      p->errors.push_back({"parent_identifier", "Invalid Parent ID",
                           fmt::format("'{}' is not a valid index name", name)});
      return std::string();
    }
    return fmt::format(R"(<index><{0} case_type="{1}" relationship="{2}">{3}</{0}></index>)", name,
                       XmlEscape(parent_type), rel, XmlEscape(parent));
  }
  return std::string();
}

// The owner a row names (owner_name first, as HQ), "" when it names none.
std::string RowOwner(const PlanContext& c, const Row& r, RowPlan* p) {
  RowError err;
  if (const std::string name = r.Get("owner_name"); !name.empty()) {
    auto id = c.owners->IdFromName(name, &err);
    if (!id.ok()) p->errors.push_back(err);
    return id.ok() ? *id : std::string();
  }
  const std::string id = r.Get("owner_id");
  if (!id.empty() && !c.owners->CheckId(id, &err)) p->errors.push_back(err);
  return id;
}

// Checks the row's typed reserved columns: close, date_opened, lengths.
void CheckTypes(const Row& r, RowPlan* p, bool* close, std::string* date_opened) {
  std::string cl = r.Get("close");
  std::transform(cl.begin(), cl.end(), cl.begin(),
                 [](unsigned char ch) { return std::tolower(ch); });
  if (cl == "yes" || cl == "true")
    *close = true;
  else if (!cl.empty() && cl != "no" && cl != "false")
    p->errors.push_back({"close", "Invalid Value", "close must be yes or no"});
  if (std::string d = r.Get("date_opened"); !d.empty()) {
    std::string iso = d.size() == 10 ? d + "T00:00:00Z" : d;
    if (iso.size() > 10 && iso[10] == ' ') iso[10] = 'T';
    int64_t t;
    if (!util::ParseIsoTime(iso, &t) && !util::ParseIsoTime(iso + "Z", &t))
      p->errors.push_back(
          {"date_opened", "Invalid Date", fmt::format("'{}' is not a date (YYYY-MM-DD)", d)});
    else
      *date_opened = d;
  }
  for (const char* col : {"name", "external_id"})
    if (r.Get(col).size() > 255)
      p->errors.push_back(
          {col, "Value Too Long", fmt::format("{} is at most 255 characters", col)});
}

}  // namespace

Result<RowPlan> PlanRow(const PlanContext& c, int64_t row, const std::vector<std::string>& cells) {
  const CaseImportOptions& o = *c.options;
  RowPlan p;
  p.row = row;
  Row r;
  bool any = false;
  for (const auto& [col, field] : c.header->fields) {
    std::string v = col < static_cast<int>(cells.size()) ? cells[col] : std::string();
    if (Trim(v) == "---") v.clear();  // HQ's blank marker (what exports write for missing)
    any |= !v.empty();
    r.f[field] = std::move(v);
  }
  std::string search_id;
  if (c.header->search_col >= 0 && c.header->search_col < static_cast<int>(cells.size()))
    search_id = NormaliseSearchId(cells[c.header->search_col]);
  any |= !Trim(search_id).empty();
  if (!any) {
    p.action = RowPlan::Action::kBlank;
    return p;
  }
  if (o.search_field == "external_id") r.f["external_id"] = search_id;
  if (o.search_field == "external_id" && Trim(search_id).empty()) {
    p.errors.push_back({c.header->search_col >= 0 ? "external_id" : "", "Blank External ID",
                        "the external id to find the case by is blank"});
    return p;
  }
  // The existing case.
  std::string existing;
  if (!Trim(search_id).empty()) {
    p.lookup_ids.push_back(search_id);
    if (o.search_field == "case_id") {
      CC_ASSIGN_OR_RETURN(auto found, c.cases->ById(search_id, o.case_type));
      if (found) existing = found->case_id;
    } else {
      CC_ASSIGN_OR_RETURN(auto ids, c.cases->ByExternalId(search_id, o.case_type));
      if (ids.size() > 1) {
        p.errors.push_back({"external_id", "Too Many Matches",
                            fmt::format("{} cases of type {} have external id '{}'", ids.size(),
                                        o.case_type, search_id)});
        return p;
      }
      // A case this import created in an earlier run is this row's own creation again.
      if (!ids.empty() && ids[0] != NewCaseId(c.import_id, row)) existing = ids[0];
    }
  }
  const bool create = existing.empty();
  if (create && !o.create_new) {
    p.action = RowPlan::Action::kSkip;
    return p;
  }
  bool close = false;
  std::string date_opened;
  CheckTypes(r, &p, &close, &date_opened);
  const std::string owner = RowOwner(c, r, &p);
  CC_ASSIGN_OR_RETURN(std::string index, ParentIndex(c, r, &p));
  if (!p.errors.empty()) return p;

  p.case_id = create ? NewCaseId(c.import_id, row) : existing;
  std::string& b = p.block;
  b = fmt::format(
      R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{}" date_modified="{}" user_id="{}">)",
      p.case_id, util::FormatIsoTime(c.time), XmlEscape(o.user_id));
  std::string update;
  if (create) {
    b += fmt::format(
        "<create><case_type>{}</case_type><case_name>{}</case_name><owner_id>{}</"
        "owner_id></create>",
        XmlEscape(o.case_type), XmlEscape(r.Get("name")),
        XmlEscape(owner.empty() ? o.user_id : owner));
    p.external_id = r.Get("external_id");
  } else {
    if (r.Has("name")) update += "<case_name>" + XmlEscape(r.Get("name")) + "</case_name>";
    if (!owner.empty()) update += "<owner_id>" + XmlEscape(owner) + "</owner_id>";
  }
  if (!r.Get("external_id").empty())
    update += "<external_id>" + XmlEscape(r.Get("external_id")) + "</external_id>";
  if (!date_opened.empty()) update += "<date_opened>" + XmlEscape(date_opened) + "</date_opened>";
  for (const auto& [field, value] : r.f)
    if (!kReserved.count(field)) update += fmt::format("<{0}>{1}</{0}>", field, XmlEscape(value));
  if (!update.empty()) b += "<update>" + update + "</update>";
  b += index;
  if (close && !create) b += "<close/>";
  b += "</case>";
  p.action = create ? RowPlan::Action::kCreate : RowPlan::Action::kUpdate;
  return p;
}

}  // namespace commcare::importer
