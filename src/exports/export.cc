// RunExport: case and form exports, streamed from the engine into a table writer. Form exports
// flatten the form JSON (CommCare's xml2json) into question columns, with each repeat group a
// table of its own whose `number` joins it to the parent row ("0.1"), as HQ's exports do.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "commcare/engine.h"
#include "commcare/exports.h"
#include "commcare/storage/primary_store.h"
#include "exports/stream.h"
#include "exports/writer.h"
#include "util/time.h"
#include "xform/xml2json.h"

namespace commcare {

namespace json = boost::json;
using exports::ExportSink;
using exports::TableSpec;
using exports::TableWriter;

namespace {

constexpr std::string_view kMissing = "---";  // HQ's MISSING_VALUE
constexpr int64_t kProgressEvery = 1000;

std::string Time(int64_t t) { return t ? util::FormatIsoTime(t) : std::string(kMissing); }
std::string OrMissing(const std::string& s) { return s.empty() ? std::string(kMissing) : s; }

Result<std::unique_ptr<TableWriter>> NewWriter(const ExportDefinition& def,
                                               const std::string& out_path,
                                               std::vector<TableSpec> tables) {
  switch (def.format) {
    case ExportDefinition::Format::kXlsx:
      return exports::NewXlsxWriter(out_path, std::move(tables));
    case ExportDefinition::Format::kHtml:
      return exports::NewHtmlWriter(out_path, std::move(tables));
    case ExportDefinition::Format::kJson:
      return exports::NewJsonWriter(out_path, std::move(tables));
    case ExportDefinition::Format::kCsv:
      break;
  }
  return exports::NewCsvWriter(out_path, std::move(tables));
}

// One output column of a table: where its value comes from and, for a split multi-select, the
// options (one cell each, then "extra").
struct OutColumn {
  std::string source;
  std::string label;
  std::vector<std::string> split;
};

void Headers(const std::vector<OutColumn>& cols, std::vector<std::string>* out) {
  for (const auto& c : cols) {
    if (c.split.empty()) {
      out->push_back(c.label);
      continue;
    }
    for (const auto& o : c.split) out->push_back(c.label + " | " + o);
    out->push_back(c.label + " | extra");
  }
}

// Appends a column's cells for value v (nullptr: missing).
void Cells(const OutColumn& c, const std::string* v, std::vector<std::string>* out) {
  if (c.split.empty()) {
    out->push_back(v ? *v : std::string(kMissing));
    return;
  }
  if (!v) {
    for (size_t i = 0; i <= c.split.size(); ++i) out->emplace_back(kMissing);
    return;
  }
  std::vector<std::string_view> chosen;
  for (size_t b = 0, e; b < v->size(); b = e + 1) {
    e = v->find(' ', b);
    if (e == std::string::npos) e = v->size();
    if (e > b) chosen.emplace_back(std::string_view(*v).substr(b, e - b));
  }
  std::string extra;
  for (const auto& o : c.split)
    out->push_back(std::find(chosen.begin(), chosen.end(), o) != chosen.end() ? "1" : "");
  for (auto ch : chosen)
    if (std::find(c.split.begin(), c.split.end(), ch) == c.split.end()) {
      if (!extra.empty()) extra.push_back(' ');
      extra.append(ch);
    }
  out->push_back(extra);
}

OutColumn FromDef(const ExportColumn& c) {
  return {c.path, c.label.empty() ? c.path : c.label, c.split};
}

// ---- Cases ----

const std::vector<std::string>& CaseSystemColumns() {
  static const std::vector<std::string> k = {
      "case_id",   "case_type", "name",        "owner_id",      "external_id",
      "opened_on", "opened_by", "modified_on", "modified_by",   "server_modified_on",
      "closed",    "closed_on", "closed_by",   "parent_case_id"};
  return k;
}

bool IsCaseSystem(std::string_view name) {
  for (const auto& s : CaseSystemColumns())
    if (s == name) return true;
  return false;
}

// A stored case document (the codec's JSON, parsed) as the export reads it.
class CaseDoc {
 public:
  explicit CaseDoc(const json::object& o) : o_(o) {
    const auto* p = o.if_contains("properties");
    props_ = p && p->is_object() ? &p->get_object() : nullptr;
  }
  std::string_view Str(std::string_view key) const {
    const auto* v = o_.if_contains(key);
    return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view();
  }
  int64_t Int(std::string_view key) const {
    const auto* v = o_.if_contains(key);
    return v && v->is_int64() ? v->get_int64() : 0;
  }
  bool Closed() const {
    const auto* v = o_.if_contains("closed");
    return v && v->is_bool() && v->get_bool();
  }
  // A dynamic property's value, or nullptr when the case has none.
  const json::string* Property(std::string_view key) const {
    const auto* v = props_ ? props_->if_contains(key) : nullptr;
    return v && v->is_string() ? &v->get_string() : nullptr;
  }
  const json::object* Properties() const { return props_; }
  std::string_view ParentId() const {
    const auto* ix = o_.if_contains("indices");
    if (ix && ix->is_array())
      for (const auto& i : ix->get_array())
        if (i.is_object()) {
          const auto& io = i.get_object();
          const auto* id = io.if_contains("identifier");
          const auto* ref = io.if_contains("referenced_id");
          if (id && id->is_string() && id->get_string() == "parent" && ref && ref->is_string())
            return ref->get_string();
        }
    return {};
  }

 private:
  const json::object& o_;
  const json::object* props_;
};

std::string_view Or(std::string_view v) { return v.empty() ? kMissing : v; }

// A system column's cell (CaseSystemColumns()[s]); times are formatted into scratch.
std::string_view CaseSystemCell(const CaseDoc& c, size_t s, std::string* scratch) {
  auto time = [&](std::string_view key) -> std::string_view {
    int64_t t = c.Int(key);
    if (!t) return kMissing;
    *scratch = util::FormatIsoTime(t);
    return *scratch;
  };
  switch (s) {
    case 0:
      return c.Str("case_id");
    case 1:
      return c.Str("type");
    case 2:
      return c.Str("name");
    case 3:
      return Or(c.Str("owner_id"));
    case 4:
      return Or(c.Str("external_id"));
    case 5:
      return time("opened_on");
    case 6:
      return Or(c.Str("opened_by"));
    case 7:
      return time("modified_on");
    case 8:
      return Or(c.Str("modified_by"));
    case 9:
      return time("server_modified_on");
    case 10:
      return c.Closed() ? "True" : "False";
    case 11:
      return c.Closed() ? time("closed_on") : kMissing;
    case 12:
      return Or(c.Str("closed_by"));
    default:
      return Or(c.ParentId());
  }
}

bool CaseMatches(const ExportDefinition& d, const CaseDoc& c) {
  if (!d.modified_from && !d.modified_to) return true;
  const int64_t m = c.Int("modified_on");
  if (d.modified_from && m < d.modified_from) return false;
  if (d.modified_to && m >= d.modified_to) return false;
  return true;
}

// Parses each stored case document of the filter and passes the matching ones to fn.
Status ScanCases(Engine* engine, const ExportDefinition& def,
                 const std::function<Status(const CaseDoc&)>& fn) {
  storage::CaseFilter f;
  f.domain = def.domain;
  f.type = def.case_type;
  f.owner_id = def.owner_id;
  f.closed = def.closed;
  Status st;
  json::parser p;
  CC_RETURN_IF_ERROR(engine->ListCaseDocuments(f, [&](std::string_view text) {
    unsigned char buf[16384];
    json::monotonic_resource mr(buf, sizeof buf);
    p.reset(&mr);
    boost::system::error_code ec;
    p.write(text.data(), text.size(), ec);
    if (ec) {
      st = Status::DataLoss("export: a stored case is not valid JSON");
      return false;
    }
    json::value v = p.release();
    if (!v.is_object()) {
      st = Status::DataLoss("export: a stored case is not a JSON object");
      return false;
    }
    CaseDoc c(v.get_object());
    if (!CaseMatches(def, c)) return true;
    st = fn(c);
    return st.ok();
  }));
  return st;
}

Result<ExportResult> RunCaseExport(Engine* engine, const ExportDefinition& def,
                                   const ExportSink& sink, const ExportProgress& progress) {
  std::vector<OutColumn> cols;
  int64_t total = 0;
  if (def.columns.empty()) {
    // First pass: the union of the exported cases' properties (sorted), and the count.
    std::set<std::string, std::less<>> props;
    CC_RETURN_IF_ERROR(ScanCases(engine, def, [&](const CaseDoc& c) {
      ++total;
      if (const auto* p = c.Properties())
        for (const auto& kv : *p)
          if (props.find(std::string_view(kv.key())) == props.end()) props.emplace(kv.key());
      return Status::Ok();
    }));
    for (const auto& s : CaseSystemColumns()) cols.push_back({s, s, {}});
    for (const auto& p : props)
      if (!IsCaseSystem(p)) cols.push_back({p, p, {}});
  } else {
    for (const auto& c : def.columns) cols.push_back(FromDef(c));
  }
  // Resolve each column once: a system column's index, or a property (-1).
  std::vector<int> system(cols.size(), -1);
  for (size_t i = 0; i < cols.size(); ++i)
    for (size_t s = 0; s < CaseSystemColumns().size(); ++s)
      if (cols[i].source == CaseSystemColumns()[s]) system[i] = int(s);
  std::vector<std::string> headers;
  Headers(cols, &headers);
  std::vector<TableSpec> tables{{"Cases", headers}};
  CC_ASSIGN_OR_RETURN(auto w, sink.make(std::move(tables)));
  int64_t rows = 0;
  if (progress && !progress(0, total)) return Status::Aborted("export cancelled");
  // A row's cells are views into the parsed document, or into per-column scratch strings
  // (formatted times, split multi-selects), which stay put for the row.
  std::vector<std::string_view> cells;
  std::vector<std::string> times(cols.size());
  std::vector<std::vector<std::string>> splits(cols.size());
  CC_RETURN_IF_ERROR(ScanCases(engine, def, [&](const CaseDoc& c) -> Status {
    cells.clear();
    for (size_t i = 0; i < cols.size(); ++i) {
      if (cols[i].split.empty()) {
        if (system[i] >= 0) {
          cells.push_back(CaseSystemCell(c, size_t(system[i]), &times[i]));
        } else {
          const json::string* v = c.Property(cols[i].source);
          cells.push_back(v ? std::string_view(*v) : kMissing);
        }
        continue;
      }
      std::string value;
      const json::string* p = nullptr;
      if (system[i] >= 0) {
        value = CaseSystemCell(c, size_t(system[i]), &times[i]);
      } else if ((p = c.Property(cols[i].source))) {
        value = *p;
      }
      const bool have = system[i] >= 0 || p;
      splits[i].clear();
      Cells(cols[i], have ? &value : nullptr, &splits[i]);
      cells.insert(cells.end(), splits[i].begin(), splits[i].end());
    }
    CC_RETURN_IF_ERROR(w->WriteRow(0, cells));
    ++rows;
    if (progress && rows % kProgressEvery == 0 && !progress(rows, std::max(total, rows)))
      return Status::Aborted("export cancelled");
    return Status::Ok();
  }));
  CC_ASSIGN_OR_RETURN(std::string file, w->Finish());
  if (progress) progress(rows, rows);
  return ExportResult{file, rows, {"Cases"}};
}

// ---- Forms ----

// A table of a form export: the main table ("form") or a repeat group's (its path).
struct FormTable {
  std::string path;
  size_t depth = 0;                    // repeat groups from the form down to this table (set
                                       // once every form has been discovered)
  std::vector<std::string> questions;  // in first-seen order
  std::unordered_set<std::string> seen;
  std::vector<OutColumn> cols;                    // the output columns (after selection)
  std::unordered_map<std::string, size_t> index;  // question path -> cols index
  size_t out = 0;                                 // index among the written tables
  bool written = false;
};

struct FormSchema {
  std::vector<FormTable> tables;                    // [0] is the main table
  std::unordered_map<std::string, size_t> by_path;  // table path -> index
  size_t Table(const std::string& path) {
    auto it = by_path.find(path);
    if (it != by_path.end()) return it->second;
    by_path[path] = tables.size();
    tables.push_back(FormTable{path, 0, {}, {}, {}, {}, 0, false});
    return tables.size() - 1;
  }
};

const std::vector<std::string>& FormSystemColumns() {
  static const std::vector<std::string> k = {"form_id",      "received_on",   "username",
                                             "user_id",      "xmlns",         "app_id",
                                             "started_time", "completed_time"};
  return k;
}

std::string FormSystemValue(const FormRecord& f, std::string_view name) {
  if (name == "form_id") return f.form_id;
  if (name == "received_on") return Time(f.received_on);
  if (name == "username") return OrMissing(f.username);
  if (name == "user_id") return OrMissing(f.user_id);
  if (name == "xmlns") return f.xmlns;
  if (name == "app_id") return OrMissing(f.app_id);
  if (name == "started_time") return Time(f.time_start);
  if (name == "completed_time") return Time(f.time_end);
  return std::string(kMissing);
}

// Whether a key of a form element is data (not an attribute, the root's "#type", the meta
// block or a case block).
bool IsQuestion(std::string_view key, const json::value& v, bool top) {
  if (key.empty() || key[0] == '@' || key[0] == '#') return false;
  if (top && key == "meta") return false;
  if (key == "case" && v.is_object() && v.get_object().contains("@case_id")) return false;
  return true;
}

// A leaf's text: a string, or an element with attributes and "#text".
const json::string* LeafText(const json::value& v) {
  if (v.is_string()) return &v.get_string();
  if (!v.is_object()) return nullptr;
  const auto& o = v.get_object();
  for (const auto& [k, x] : o)
    if (!k.empty() && k[0] != '@' && k != "#text") return nullptr;
  if (const auto* t = o.if_contains("#text"); t && t->is_string()) return &t->get_string();
  static const json::string empty;
  return &empty;
}

// Pass 1: records the questions and repeat groups under obj (table t, path prefix).
void Discover(FormSchema* s, size_t t, const json::object& obj, const std::string& prefix,
              bool top) {
  for (const auto& [k, v] : obj) {
    if (!IsQuestion(k, v, top)) continue;
    std::string path = prefix + "." + std::string(k);
    if (v.is_array() || s->by_path.count(path)) {
      size_t rt = s->Table(path);
      if (v.is_array()) {
        for (const auto& item : v.get_array())
          if (item.is_object()) Discover(s, rt, item.get_object(), path, false);
      } else if (v.is_object()) {
        Discover(s, rt, v.get_object(), path, false);
      }
      continue;
    }
    if (LeafText(v)) {
      FormTable& tab = s->tables[t];
      if (tab.seen.insert(path).second) tab.questions.push_back(path);
    } else if (v.is_object()) {
      Discover(s, t, v.get_object(), path, false);
    }
  }
}

// Pass 2 state for one form: each table's current row of values.
struct FormRows {
  FormSchema* schema;
  TableWriter* w;
  int64_t rows = 0;
  size_t root = 0;  // the length of the form's own number, which may hold dots (a form id)
};

void Collect(FormSchema* s, size_t t, const json::object& obj, const std::string& prefix, bool top,
             std::vector<const json::string*>* vals,
             std::vector<std::pair<size_t, std::vector<const json::value*>>>* repeats) {
  const FormTable& tab = s->tables[t];
  for (const auto& [k, v] : obj) {
    if (!IsQuestion(k, v, top)) continue;
    std::string path = prefix + "." + std::string(k);
    if (auto it = s->by_path.find(path); it != s->by_path.end() && it->second != 0) {
      std::vector<const json::value*> items;
      if (v.is_array())
        for (const auto& item : v.get_array()) items.push_back(&item);
      else
        items.push_back(&v);
      repeats->emplace_back(it->second, std::move(items));
      continue;
    }
    if (const json::string* text = LeafText(v)) {
      if (auto it = tab.index.find(path); it != tab.index.end()) (*vals)[it->second] = text;
    } else if (v.is_object()) {
      Collect(s, t, v.get_object(), path, false, vals, repeats);
    }
  }
}

// Writes obj's row to table t (number `number`, system values for the main table) and the
// rows of the repeat groups under it.
Status EmitRow(FormRows* r, size_t t, const json::object& obj, const std::string& number,
               const FormRecord* form, const std::vector<bool>& system_cols) {
  FormSchema* s = r->schema;
  const FormTable& tab = s->tables[t];
  std::vector<const json::string*> vals(tab.cols.size(), nullptr);
  std::vector<std::pair<size_t, std::vector<const json::value*>>> repeats;
  Collect(s, t, obj, tab.path, t == 0, &vals, &repeats);
  if (tab.written) {
    std::vector<std::string> cells;
    cells.push_back(number);
    // HQ's RowNumberColumn: a repeat table also has each index of the number on its own
    // (number__0 the form's, number__1 the outer repeat's, ...).
    for (size_t i = 0, b = 0; tab.depth > 0 && i <= tab.depth; ++i) {
      size_t e = i == 0 ? r->root : std::min(number.find('.', b), number.size());
      cells.push_back(b <= number.size() ? number.substr(b, e - b) : std::string());
      b = e + 1;
    }
    for (size_t i = 0; i < tab.cols.size(); ++i) {
      if (t == 0 && system_cols[i]) {
        std::string v = FormSystemValue(*form, tab.cols[i].source);
        Cells(tab.cols[i], &v, &cells);
      } else if (vals[i]) {
        std::string v(vals[i]->data(), vals[i]->size());
        Cells(tab.cols[i], &v, &cells);
      } else {
        Cells(tab.cols[i], nullptr, &cells);
      }
    }
    CC_RETURN_IF_ERROR(r->w->Row(tab.out, cells));
    ++r->rows;
  }
  for (const auto& [rt, items] : repeats)
    for (size_t i = 0; i < items.size(); ++i)
      if (items[i]->is_object())
        CC_RETURN_IF_ERROR(EmitRow(r, rt, items[i]->get_object(), fmt::format("{}.{}", number, i),
                                   nullptr, system_cols));
  return Status::Ok();
}

bool FormMatches(const ExportDefinition& d, const FormRecord& f) {
  return f.domain == d.domain && f.xmlns == d.xmlns && f.state == FormState::kNormal &&
         (d.user_id.empty() || f.user_id == d.user_id) &&
         (!d.received_from || f.received_on >= d.received_from) &&
         (!d.received_to || f.received_on < d.received_to);
}

// Calls fn(form, form JSON) for each matching form, database by database.
Status ScanMatchingForms(Engine* engine, const ExportDefinition& def,
                         const std::function<Status(const FormRecord&, const json::object&)>& fn) {
  Status st;
  for (int i = 0; i < engine->NumDatabases() && st.ok(); ++i) {
    CC_RETURN_IF_ERROR(engine->Database(i)->ScanForms([&](const FormRecord& f) {
      if (!FormMatches(def, f)) return true;
      auto xml = engine->GetFormXml(def.domain, f.form_id);
      if (!xml.ok()) {
        st = xml.status();
        return false;
      }
      auto doc = xform::FormXmlToJson(*xml);
      if (!doc.ok()) return true;  // a form that no longer parses is skipped
      // HQ exports the stored form JSON, whose zoned date-times are UTC (adjust_datetimes).
      json::value v(std::move(*doc));
      xform::AdjustDatetimes(v);
      st = fn(f, v.as_object());
      return st.ok();
    }));
  }
  return st;
}

// HQ's default table name (FormExportInstanceDefaults.get_default_table_name): the repeat's
// last path element, with its parent's for a model iteration's "item". HQ writes "Repeat: ",
// which a sheet name cannot hold. A name another table has already takes its path under the
// form (and a number after it if that is taken too), so table names stay distinct.
std::string TableName(const std::string& path, const std::vector<std::string>& taken) {
  if (path == "form") return "Forms";
  const std::string under = path.substr(5);
  size_t cut = under.rfind('.');
  if (cut != std::string::npos && under.substr(cut + 1) == "item")
    cut = cut == 0 ? std::string::npos : under.rfind('.', cut - 1);
  auto free = [&](const std::string& n) {
    return std::find(taken.begin(), taken.end(), n) == taken.end();
  };
  std::string name = "Repeat- " + (cut == std::string::npos ? under : under.substr(cut + 1));
  if (free(name)) return name;
  name = "Repeat- " + under;
  for (int n = 2; !free(name); ++n) name = fmt::format("Repeat- {} ({})", under, n);
  return name;
}

Result<ExportResult> RunFormExport(Engine* engine, const ExportDefinition& def,
                                   const ExportSink& sink, const ExportProgress& progress) {
  FormSchema schema;
  schema.Table("form");
  int64_t total = 0;
  CC_RETURN_IF_ERROR(
      ScanMatchingForms(engine, def, [&](const FormRecord&, const json::object& doc) {
        ++total;
        Discover(&schema, 0, doc, "form", true);
        return Status::Ok();
      }));
  // A path first seen as a group and later as a repeat belongs to the repeat's table only.
  for (auto& tab : schema.tables)
    std::erase_if(tab.questions, [&](const std::string& q) {
      for (const auto& other : schema.tables)
        if (other.path.size() > tab.path.size() && q.rfind(other.path + ".", 0) == 0) {
          tab.seen.erase(q);
          return true;
        }
      return false;
    });
  // The columns of each table: all (system columns first), or those the definition selects.
  std::vector<bool> system_cols;
  if (def.columns.empty()) {
    for (auto& tab : schema.tables) {
      if (&tab == &schema.tables[0])
        for (const auto& sc : FormSystemColumns()) tab.cols.push_back({sc, sc, {}});
      for (const auto& q : tab.questions) tab.cols.push_back({q, q, {}});
      tab.written = true;
    }
  } else {
    for (const auto& c : def.columns) {
      if (c.path == "number") continue;
      bool sys = std::find(FormSystemColumns().begin(), FormSystemColumns().end(), c.path) !=
                 FormSystemColumns().end();
      size_t t = SIZE_MAX;
      if (sys) {
        t = 0;
      } else {
        for (size_t i = 0; i < schema.tables.size() && t == SIZE_MAX; ++i)
          if (schema.tables[i].seen.count(c.path)) t = i;
      }
      if (t == SIZE_MAX)
        return Status::InvalidArgument(fmt::format(
            "export definition: unknown column \"{}\" (no exported form has it)", c.path));
      schema.tables[t].cols.push_back(FromDef(c));
      schema.tables[t].written = true;
    }
    schema.tables[0].written = true;
  }
  for (const auto& c : schema.tables[0].cols)
    system_cols.push_back(std::find(FormSystemColumns().begin(), FormSystemColumns().end(),
                                    c.source) != FormSystemColumns().end());
  // A table's depth is its repeat ancestors (itself included) once every form is seen: a group
  // found a repeat only in a later form still numbers the rows under it.
  for (auto& tab : schema.tables) {
    tab.depth = 0;
    if (&tab == &schema.tables[0]) continue;
    for (const auto& other : schema.tables)
      if (&other != &schema.tables[0] &&
          (other.path == tab.path || tab.path.rfind(other.path + ".", 0) == 0))
        ++tab.depth;
  }
  std::vector<TableSpec> specs;
  std::vector<std::string> names;
  for (auto& tab : schema.tables) {
    for (size_t i = 0; i < tab.cols.size(); ++i) tab.index[tab.cols[i].source] = i;
    if (!tab.written) continue;
    tab.out = specs.size();
    std::vector<std::string> headers{"number"};
    for (size_t i = 0; tab.depth > 0 && i <= tab.depth; ++i)
      headers.push_back(fmt::format("number__{}", i));
    Headers(tab.cols, &headers);
    names.push_back(TableName(tab.path, names));
    // number__N are ints in HQ's RowNumberColumn (number itself is the dotted string).
    std::vector<bool> whole(headers.size(), false);
    for (size_t i = 1; tab.depth > 0 && i <= tab.depth + 1; ++i) whole[i] = true;
    specs.push_back({names.back(), std::move(headers), std::move(whole)});
  }
  CC_ASSIGN_OR_RETURN(auto w, sink.make(std::move(specs)));
  FormRows r{&schema, w.get()};
  int64_t done = 0;
  if (progress && !progress(0, total)) return Status::Aborted("export cancelled");
  CC_RETURN_IF_ERROR(
      ScanMatchingForms(engine, def, [&](const FormRecord& f, const json::object& doc) {
        const std::string number = sink.number_by_form_id ? f.form_id : std::to_string(done);
        r.root = number.size();
        CC_RETURN_IF_ERROR(EmitRow(&r, 0, doc, number, &f, system_cols));
        ++done;
        if (progress && done % kProgressEvery == 0 && !progress(done, std::max(total, done)))
          return Status::Aborted("export cancelled");
        return Status::Ok();
      }));
  CC_ASSIGN_OR_RETURN(std::string file, w->Finish());
  if (progress) progress(done, done);
  return ExportResult{file, r.rows, names};
}

}  // namespace

Result<ExportResult> exports::RunExportInto(Engine* engine, const ExportDefinition& def,
                                            const ExportSink& sink,
                                            const ExportProgress& progress) {
  CC_RETURN_IF_ERROR(def.Validate());
  if (def.kind == ExportDefinition::Kind::kCase) return RunCaseExport(engine, def, sink, progress);
  return RunFormExport(engine, def, sink, progress);
}

Result<ExportResult> RunExport(Engine* engine, const ExportDefinition& def,
                               const std::string& out_path, const ExportProgress& progress) {
  ExportSink sink;  // the definition is validated first, so a bad one creates no directory
  sink.make = [&](std::vector<TableSpec> tables) -> Result<std::unique_ptr<TableWriter>> {
    if (auto parent = std::filesystem::path(out_path).parent_path(); !parent.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(parent, ec);
      if (ec)
        return Status::Internal("export: cannot create " + parent.string() + ": " + ec.message());
    }
    return NewWriter(def, out_path, std::move(tables));
  };
  return exports::RunExportInto(engine, def, sink, progress);
}

}  // namespace commcare
