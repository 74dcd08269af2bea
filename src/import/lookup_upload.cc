// The lookup-table workbook upload (lookup_upload.h): read and check every sheet, then plan
// the writes against the stored tables and rows, then write them through the MetaStore.
#include "import/lookup_upload.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>

#include "import/table_reader.h"
#include "meta/meta_store.h"
#include "util/codec.h"
#include "util/xml.h"

namespace commcare::importer {
namespace {

namespace json = boost::json;
using codec::GetStr;

constexpr std::string_view kDelete = "Delete(Y/N)";  // HQ's DELETE_HEADER (upload/const.py)

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// "field 3" with prefix "field ": 3; 0 when s is not the prefix and a number.
int Numbered(std::string_view s, std::string_view prefix) {
  if (!s.starts_with(prefix) || s.size() == prefix.size() || s.size() > prefix.size() + 6) return 0;
  s.remove_prefix(prefix.size());
  if (!std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit((unsigned char)c); }))
    return 0;
  return std::atoi(std::string(s).c_str());
}

bool IsNumber(const std::string& s) {
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return !s.empty() && end && !*end;
}

// Every problem, each naming where it is.
struct Problems {
  std::vector<std::string> list;
  void Add(const std::string& sheet, int64_t row, const std::string& column,
           const std::string& why) {
    list.push_back(fmt::format("sheet '{}', row {}, column '{}': {}", sheet, row, column, why));
  }
  void AddSheet(const std::string& sheet, const std::string& why) {
    list.push_back(fmt::format("sheet '{}': {}", sheet, why));
  }
};

// A sheet read whole: its header (row 1) and its non-blank rows with their numbers.
struct Sheet {
  std::string name;
  std::vector<std::string> header;
  std::vector<std::pair<int64_t, std::vector<std::string>>> rows;
  static const std::string& Cell(const std::vector<std::string>& row, int col) {
    static const std::string kEmpty;
    return col >= 0 && col < static_cast<int>(row.size()) ? row[col] : kEmpty;
  }
};

Result<Sheet> ReadSheet(const std::string& path, const std::string& name) {
  CC_ASSIGN_OR_RETURN(auto reader, OpenSheet(path, name));
  Sheet s;
  s.name = name;
  std::vector<std::string> cells;
  for (;;) {
    CC_ASSIGN_OR_RETURN(bool more, reader->Next(&cells));
    if (!more) break;
    for (auto& c : cells) c = Trim(c);
    if (reader->RowNumber() == 1) {
      s.header = cells;
      continue;
    }
    if (std::any_of(cells.begin(), cells.end(), [](const std::string& c) { return !c.empty(); }))
      s.rows.emplace_back(reader->RowNumber(), cells);
  }
  return s;
}

// Y/N (HQ's Delete(Y/N)): empty is N.
std::optional<bool> YesNo(const std::string& v) {
  const std::string l = Lower(v);
  if (l.empty() || l == "n") return false;
  if (l == "y") return true;
  return std::nullopt;
}

// A "?" column (is_global?, is_indexed?): yes/no as HQ's workbook reader takes them.
std::optional<bool> Flag(const std::string& v) {
  const std::string l = Lower(v);
  if (l.empty() || l == "no" || l == "n" || l == "false" || l == "0") return false;
  if (l == "yes" || l == "y" || l == "true" || l == "1") return true;
  return std::nullopt;
}

// ---- the types sheet -------------------------------------------------------------------------

struct FieldDef {
  std::string name;
  std::vector<std::string> properties;
  bool indexed = false;
};

struct TableDef {
  int64_t row = 0;
  std::string tag;
  bool is_global = false, del = false;
  std::vector<FieldDef> fields;
  std::vector<std::string> attributes;
};

// The types sheet's columns.
struct TypesColumns {
  int del = -1, tag = -1, global = -1;
  std::map<int, int> field;                      // N -> column of "field N"
  std::map<int, std::map<int, int>> field_prop;  // N -> M -> column of "field N: property M"
  std::map<int, int> field_indexed;              // N -> column of "field N: is_indexed?"
  std::map<int, int> attribute;                  // N -> column of "property N"
};

TypesColumns ReadTypesHeader(const Sheet& s, Problems* p) {
  TypesColumns c;
  for (int i = 0; i < static_cast<int>(s.header.size()); ++i) {
    const std::string& h = s.header[i];
    const auto colon = h.find(':');
    const std::string left = Trim(h.substr(0, colon));
    const std::string right = colon == std::string::npos ? "" : Trim(h.substr(colon + 1));
    if (h.empty() || h == "UID") continue;
    if (h == kDelete) {
      c.del = i;
    } else if (h == "table_id" || h == "tag") {
      c.tag = i;
    } else if (h == "is_global?" || h == "is_global") {
      c.global = i;
    } else if (colon == std::string::npos && Numbered(h, "field ")) {
      c.field[Numbered(h, "field ")] = i;
    } else if (colon == std::string::npos && Numbered(h, "property ")) {
      c.attribute[Numbered(h, "property ")] = i;
    } else if (Numbered(left, "field ") && Numbered(right, "property ")) {
      c.field_prop[Numbered(left, "field ")][Numbered(right, "property ")] = i;
    } else if (Numbered(left, "field ") && (right == "is_indexed?" || right == "is_indexed")) {
      c.field_indexed[Numbered(left, "field ")] = i;
    } else {
      p->Add(s.name, 1, h,
             "unknown column (the types sheet has Delete(Y/N), table_id, is_global?, field N, "
             "field N: property M, field N: is_indexed? and property N)");
    }
  }
  if (c.tag < 0) p->Add(s.name, 1, "table_id", "Workbook 'types' has no column 'table_id'.");
  return c;
}

// A name that must be an XML name; false (with a problem) otherwise.
bool CheckXmlName(const std::string& v, const std::string& sheet, int64_t row,
                  const std::string& col, const char* what, Problems* p) {
  if (util::IsXmlName(v)) return true;
  p->Add(sheet, row, col,
         fmt::format("{} '{}' must be a valid XML name: letters, digits, _, - or ., starting "
                     "with a letter or _ and not with \"xml\"",
                     what, v));
  return false;
}

void ReadTableFields(const Sheet& s, const TypesColumns& c, int64_t rn,
                     const std::vector<std::string>& row, TableDef* t, Problems* p) {
  std::set<std::string> seen;
  for (const auto& [n, col] : c.field) {
    const std::string& name = Sheet::Cell(row, col);
    const std::string at = fmt::format("field {}", n);
    if (name.empty()) continue;
    if (IsNumber(name)) {
      p->Add(s.name, rn, at,
             fmt::format("Error in 'types' sheet for 'field {}', '{}'. Field names should be "
                         "strings, not numbers",
                         n, name));
      continue;
    }
    if (!CheckXmlName(name, s.name, rn, at, "field", p)) continue;
    if (!seen.insert(name).second) p->Add(s.name, rn, at, fmt::format("{} is named twice", name));
    FieldDef f{name, {}, false};
    if (auto props = c.field_prop.find(n); props != c.field_prop.end())
      for (const auto& [m, pcol] : props->second)
        if (const std::string& prop = Sheet::Cell(row, pcol); !prop.empty())
          if (CheckXmlName(prop, s.name, rn, fmt::format("{}: property {}", at, m), "property", p))
            f.properties.push_back(prop);
    if (auto ix = c.field_indexed.find(n); ix != c.field_indexed.end()) {
      auto v = Flag(Sheet::Cell(row, ix->second));
      if (!v)
        p->Add(s.name, rn, at + ": is_indexed?", "must be yes or no");
      else
        f.indexed = *v;
    }
    t->fields.push_back(std::move(f));
  }
  for (const auto& [n, col] : c.attribute)
    if (const std::string& a = Sheet::Cell(row, col); !a.empty())
      if (CheckXmlName(a, s.name, rn, fmt::format("property {}", n), "property", p))
        t->attributes.push_back(a);
}

std::vector<TableDef> ReadTypes(const Sheet& s, Problems* p) {
  const TypesColumns c = ReadTypesHeader(s, p);
  std::vector<TableDef> out;
  if (c.tag < 0) return out;
  std::set<std::string> tags;
  for (const auto& [rn, row] : s.rows) {
    TableDef t;
    t.row = rn;
    t.tag = Sheet::Cell(row, c.tag);
    if (t.tag.empty()) {
      p->Add(s.name, rn, s.header[c.tag], "the table_id is empty");
      continue;
    }
    if (!CheckXmlName(t.tag, s.name, rn, s.header[c.tag], "table_id", p)) continue;
    if (!tags.insert(t.tag).second)
      p->Add(s.name, rn, s.header[c.tag],
             fmt::format("Lookup-tables should have unique 'table_id'. There are two rows with "
                         "table_id '{}' in 'types' sheet.",
                         t.tag));
    if (auto d = YesNo(Sheet::Cell(row, c.del)); d)
      t.del = *d;
    else
      p->Add(s.name, rn, std::string(kDelete), "must be Y or N");
    if (auto g = Flag(Sheet::Cell(row, c.global)); g)
      t.is_global = *g;
    else
      p->Add(s.name, rn, "is_global?", "must be yes or no");
    ReadTableFields(s, c, rn, row, &t, p);
    if (t.fields.empty() && !t.del)
      p->Add(s.name, rn, "field 1", fmt::format("table_id '{}' has no fields", t.tag));
    out.push_back(std::move(t));
  }
  return out;
}

// ---- a table's sheet -------------------------------------------------------------------------

struct RowDef {
  int64_t row = 0;
  std::string uid;
  bool del = false;
  json::object fields, attributes, owners;
};

// A table sheet's columns.
struct TableColumns {
  int uid = -1, del = -1;
  std::map<std::string, int> value;                 // field (no properties) -> column
  std::map<std::string, std::map<int, int>> combo;  // field -> n -> "field: <f> <n>"
  std::map<std::string, std::map<int, std::map<std::string, int>>> combo_prop;  // f -> n -> p
  std::map<std::string, int> attribute;                                         // "property: <a>"
  std::map<std::string, std::vector<int>> owner;  // user/group/location -> columns
};

// "<name> <n>": name and n (0 when s has no " <n>" ending).
std::pair<std::string, int> SplitNumber(const std::string& s) {
  const auto sp = s.rfind(' ');
  if (sp == std::string::npos) return {s, 0};
  const int n = Numbered(s.substr(sp), " ");
  return n ? std::pair{Trim(s.substr(0, sp)), n} : std::pair{s, 0};
}

// One header cell of a table sheet into c; false when it is no column of the table.
bool TableHeaderCell(const TableDef& t, const std::string& h, int i, TableColumns* c,
                     std::string* why) {
  auto field = [&](const std::string& n) {
    return std::find_if(t.fields.begin(), t.fields.end(),
                        [&](const FieldDef& f) { return f.name == n; });
  };
  const auto colon = h.find(':');
  const std::string left = Trim(h.substr(0, colon));
  const std::string right = colon == std::string::npos ? "" : Trim(h.substr(colon + 1));
  for (const char* kind : {"user", "group", "location"})
    if (colon == std::string::npos && Numbered(h, std::string(kind) + " "))
      return c->owner[kind].push_back(i), true;
  if (h == "UID") return c->uid = i, true;
  if (h == kDelete) return c->del = i, true;
  if (colon == std::string::npos) return *why = "unknown column", false;
  if (left == "field") {
    if (auto f = field(right); f != t.fields.end() && f->properties.empty())
      return c->value[right] = i, true;
    auto [name, n] = SplitNumber(right);
    if (auto f = field(name); n && f != t.fields.end() && !f->properties.empty())
      return c->combo[name][n] = i, true;
    *why = fmt::format(
        "Excel-sheet '{}' has an extra column 'field: {}' that's not defined in "
        "its 'types' definition",
        t.tag, right);
    return false;
  }
  if (left == "property") {
    if (std::count(t.attributes.begin(), t.attributes.end(), right))
      return c->attribute[right] = i, true;
    *why = fmt::format("property '{}' is not in the 'types' definition of {}", right, t.tag);
    return false;
  }
  auto [prop, n] = SplitNumber(right);
  if (auto f = field(left);
      f != t.fields.end() && n && std::count(f->properties.begin(), f->properties.end(), prop))
    return c->combo_prop[left][n][prop] = i, true;
  *why = fmt::format(
      "Excel-sheet '{}' has an extra property '{}' for the field '{}' that's not "
      "defined in its 'types' definition",
      t.tag, right, left);
  return false;
}

TableColumns ReadTableHeader(const TableDef& t, const Sheet& s, Problems* p) {
  TableColumns c;
  for (int i = 0; i < static_cast<int>(s.header.size()); ++i) {
    std::string why;
    if (!s.header[i].empty() && !TableHeaderCell(t, s.header[i], i, &c, &why))
      p->Add(s.name, 1, s.header[i], why);
  }
  for (const auto& f : t.fields) {
    const bool found = f.properties.empty() ? c.value.count(f.name) : c.combo.count(f.name);
    if (!found)
      p->Add(s.name, 1, f.properties.empty() ? "field: " + f.name : "field: " + f.name + " 1",
             fmt::format("Excel-sheet '{}' does not contain the column 'field: {}' as specified "
                         "in its 'types' definition",
                         t.tag, f.name));
  }
  for (const auto& a : t.attributes)
    if (!c.attribute.count(a))
      p->Add(s.name, 1, "property: " + a,
             fmt::format("the column 'property: {}' of the 'types' definition is missing", a));
  return c;
}

// Names of users (lower-case, plain and name@<domain>.commcarehq.org), groups and locations
// (lower-case name or site code) to their ids; several ids for a name make it ambiguous.
struct Owners {
  std::map<std::string, std::set<std::string>> by_kind_name[3];
  static int Kind(const std::string& k) { return k == "user" ? 0 : k == "group" ? 1 : 2; }
  Status Load(meta::MetaStore* meta, const std::string& domain) {
    CC_ASSIGN_OR_RETURN(auto users, meta->ListUsers(domain));
    for (const auto& u : users) by_kind_name[0][Lower(u.username)].insert(u.user_id);
    CC_ASSIGN_OR_RETURN(auto groups, meta->ListDocs("group", domain));
    for (const auto& g : groups) by_kind_name[1][GetStr(g.body, "name")].insert(g.id);
    CC_ASSIGN_OR_RETURN(auto locs, meta->ListDocs("location", domain));
    for (const auto& l : locs) {
      by_kind_name[2][Lower(GetStr(l.body, "name"))].insert(l.id);
      if (std::string code = GetStr(l.body, "site_code"); !code.empty())
        by_kind_name[2][Lower(code)].insert(l.id);
    }
    return Status::Ok();
  }
  // The id for a name; "" with *why set when there is none or more than one.
  std::string Find(const std::string& kind, const std::string& name, const std::string& domain,
                   std::string* why) const {
    const auto& m = by_kind_name[Kind(kind)];
    std::string key = kind == "group" ? name : Lower(name);
    auto it = m.find(key);
    if (it == m.end() && kind == "user" && key.find('@') == std::string::npos)
      it = m.find(fmt::format("{}@{}.commcarehq.org", key, Lower(domain)));
    if (it == m.end()) return *why = fmt::format("Unknown {}: '{}'", kind, name), "";
    if (it->second.size() > 1)
      return *why = fmt::format("Multiple {}s found with the name: '{}'", kind, name), "";
    return *it->second.begin();
  }
};

RowDef ReadRow(const TableDef& t, const Sheet& s, const TableColumns& c, int64_t rn,
               const std::vector<std::string>& row, const Owners& owners, const std::string& domain,
               Problems* p) {
  RowDef r;
  r.row = rn;
  r.uid = Sheet::Cell(row, c.uid);
  if (auto d = YesNo(Sheet::Cell(row, c.del)); d)
    r.del = *d;
  else
    p->Add(s.name, rn, std::string(kDelete), "must be Y or N");
  if (r.del) return r;
  for (const auto& f : t.fields) {
    if (f.properties.empty()) {
      auto col = c.value.find(f.name);
      r.fields[f.name] = col == c.value.end() ? "" : Sheet::Cell(row, col->second);
      continue;
    }
    json::array combos;  // one {value, properties} per numbered column that has anything
    auto cs = c.combo.find(f.name);
    for (const auto& [n, vcol] : cs == c.combo.end() ? std::map<int, int>{} : cs->second) {
      json::object props;
      bool any = !Sheet::Cell(row, vcol).empty();
      for (const auto& prop : f.properties) {
        std::string v;
        if (auto fp = c.combo_prop.find(f.name); fp != c.combo_prop.end())
          if (auto at = fp->second.find(n); at != fp->second.end())
            if (auto pc = at->second.find(prop); pc != at->second.end())
              v = Sheet::Cell(row, pc->second);
        any |= !v.empty();
        props[prop] = v;
      }
      if (any)
        combos.push_back(json::object{{"value", Sheet::Cell(row, vcol)}, {"properties", props}});
    }
    r.fields[f.name] = std::move(combos);
  }
  for (const auto& [a, col] : c.attribute) r.attributes[a] = Sheet::Cell(row, col);
  for (const auto& [kind, cols] : c.owner) {
    json::array ids;
    for (int col : cols) {
      const std::string& name = Sheet::Cell(row, col);
      if (name.empty()) continue;
      std::string why, id = owners.Find(kind, name, domain, &why);
      if (id.empty())
        p->Add(s.name, rn, s.header[col], why);
      else if (std::find(ids.begin(), ids.end(), json::value(id)) == ids.end())
        ids.push_back(json::value(id));
    }
    if (!ids.empty()) r.owners[kind + "s"] = std::move(ids);
  }
  return r;
}

// ---- planning and writing --------------------------------------------------------------------

json::object TableBody(const TableDef& t, const meta::Doc* old) {
  json::array fields;
  bool indexed = false;
  for (const auto& f : t.fields) {
    indexed |= f.indexed;
    if (f.properties.empty() && !f.indexed) {
      fields.push_back(json::value(f.name));
      continue;
    }
    json::array props;
    for (const auto& p : f.properties) props.push_back(json::value(p));
    fields.push_back(
        json::object{{"field_name", f.name}, {"properties", props}, {"is_indexed", f.indexed}});
  }
  json::array attrs;
  for (const auto& a : t.attributes) attrs.push_back(json::value(a));
  json::object b{{"tag", t.tag}, {"fields", fields}, {"is_global", t.is_global}};
  if (!attrs.empty()) b["item_attributes"] = attrs;
  if (indexed) b["is_indexed"] = true;
  if (old)
    if (const json::value* d = old->body.if_contains("description")) b["description"] = *d;
  return b;
}

json::object ItemBody(const RowDef& r, const std::string& table_id, int64_t sort_key) {
  json::object b{{"table_id", table_id}, {"fields", r.fields}, {"sort_key", sort_key}};
  if (!r.attributes.empty()) b["item_attributes"] = r.attributes;
  if (!r.owners.empty()) b["owners"] = r.owners;
  return b;
}

// The writes an upload makes: rows of a table whose id is not known yet name it by tag.
struct Plan {
  std::vector<meta::Doc> delete_items, delete_tables, put_tables;
  std::vector<std::pair<std::string, meta::Doc>> put_items;  // tag, item (table_id set later)
};

// Plans one uploaded table's rows against the stored ones.
void PlanRows(const TableDef& t, const meta::Doc* table, const std::vector<RowDef>& rows,
              const std::map<std::string, const meta::Doc*>& items_by_id,
              std::vector<const meta::Doc*> old, bool replace, const std::string& sheet, Plan* plan,
              LookupUploadResult* res, Problems* p) {
  const std::string table_id = table ? table->id : "";
  std::set<const meta::Doc*> claimed;
  std::set<std::string> uids;  // a row the sheet names by UID is not matched by its values
  for (const RowDef& r : rows)
    if (!r.uid.empty() && !uids.insert(r.uid).second)
      p->Add(sheet, r.row, "UID", fmt::format("'{}' names two rows of the sheet", r.uid));
  int64_t sort_key = 0;
  for (const RowDef& r : rows) {
    const meta::Doc* match = nullptr;
    if (!r.uid.empty()) {
      auto it = items_by_id.find(r.uid);
      if (it != items_by_id.end() && GetStr(it->second->body, "table_id") != table_id) {
        p->Add(sheet, r.row, "UID", fmt::format("'{}' is a row of another table", r.uid));
        continue;
      }
      if (it != items_by_id.end()) match = it->second;
    } else if (!r.del) {  // HQ's row_key: a row without a UID is its field values
      for (const meta::Doc* o : old)
        if (!claimed.count(o) && !uids.count(o->id) && o->body.if_contains("fields") &&
            o->body.at("fields") == json::value(r.fields)) {
          match = o;
          break;
        }
    }
    if (match) claimed.insert(match);
    if (r.del) {
      if (match) plan->delete_items.push_back(*match), ++res->rows_deleted;
      continue;
    }
    meta::Doc d;
    d.kind = "lookup_item";
    d.body = ItemBody(r, table_id, sort_key++);
    if (match) {
      if (match->body == d.body) {
        ++res->rows_unchanged;
        continue;
      }
      d.id = match->id, d.rev = match->rev, ++res->rows_updated;
    } else {
      d.id = r.uid, ++res->rows_created;
    }
    plan->put_items.emplace_back(t.tag, std::move(d));
  }
  if (replace)
    for (const meta::Doc* o : old)
      if (!claimed.count(o)) plan->delete_items.push_back(*o), ++res->rows_deleted;
}

Status Write(meta::MetaStore* meta, const std::string& domain, Plan* plan) {
  for (const auto& d : plan->delete_items)
    CC_RETURN_IF_ERROR(meta->DeleteDoc("lookup_item", domain, d.id, d.rev));
  for (const auto& d : plan->delete_tables)
    CC_RETURN_IF_ERROR(meta->DeleteDoc("lookup_table", domain, d.id, d.rev));
  std::map<std::string, std::string> id_by_tag;
  for (auto& d : plan->put_tables) {
    d.domain = domain;
    CC_ASSIGN_OR_RETURN(meta::Doc put, meta->PutDoc(d));
    id_by_tag[GetStr(put.body, "tag")] = put.id;
  }
  for (auto& [tag, d] : plan->put_items) {
    d.domain = domain;
    if (GetStr(d.body, "table_id").empty()) d.body["table_id"] = id_by_tag[tag];
    CC_RETURN_IF_ERROR(meta->PutDoc(d).status());
  }
  return Status::Ok();
}

}  // namespace

std::string LookupUploadResult::Message() const {
  return fmt::format(
      "{} lookup tables uploaded: {} created, {} updated, {} deleted, {} unchanged; rows: {} "
      "created, {} updated, {} deleted, {} unchanged",
      tables, tables_created, tables_updated, tables_deleted, tables_unchanged, rows_created,
      rows_updated, rows_deleted, rows_unchanged);
}

namespace {

// Every sheet read and checked: the tables of the types sheet with their rows.
Status ReadWorkbook(meta::MetaStore* meta, const std::string& domain, const std::string& path,
                    std::vector<TableDef>* tables, std::map<std::string, std::vector<RowDef>>* rows,
                    Problems* p) {
  auto names = SheetNames(path);
  if (names.status().code() == StatusCode::kInvalidArgument)
    return Status::InvalidArgument("Invalid file-format. Please upload a valid xlsx file.");
  CC_RETURN_IF_ERROR(names.status());
  if (std::find(names->begin(), names->end(), "types") == names->end()) {
    p->AddSheet("types", "Workbook does not contain a sheet called types");
    return Status::Ok();
  }
  CC_ASSIGN_OR_RETURN(Sheet types, ReadSheet(path, "types"));
  *tables = ReadTypes(types, p);
  Owners owners;
  CC_RETURN_IF_ERROR(owners.Load(meta, domain));
  for (const TableDef& t : *tables) {
    if (t.del) continue;
    if (std::find(names->begin(), names->end(), t.tag) == names->end()) {
      p->AddSheet(t.tag, fmt::format("There's no sheet for type '{}' in 'types' sheet. There "
                                     "must be one sheet per row in the 'types' sheet.",
                                     t.tag));
      continue;
    }
    CC_ASSIGN_OR_RETURN(Sheet s, ReadSheet(path, t.tag));
    const TableColumns c = ReadTableHeader(t, s, p);
    auto& out = (*rows)[t.tag];
    for (const auto& [rn, row] : s.rows)
      out.push_back(ReadRow(t, s, c, rn, row, owners, domain, p));
  }
  return Status::Ok();
}

Status Refuse(const Problems& p, std::vector<std::string>* problems) {
  if (problems) *problems = p.list;
  std::string msg;
  for (const auto& x : p.list) msg += (msg.empty() ? "" : "\n") + x;
  return Status::InvalidArgument(msg);
}

}  // namespace

Result<LookupUploadResult> UploadLookupTables(meta::MetaStore* meta, const std::string& domain,
                                              const std::string& path, bool replace,
                                              std::vector<std::string>* problems) {
  if (problems) problems->clear();
  Problems p;
  std::vector<TableDef> defs;
  std::map<std::string, std::vector<RowDef>> rows;
  CC_RETURN_IF_ERROR(ReadWorkbook(meta, domain, path, &defs, &rows, &p));
  if (!p.list.empty()) return Refuse(p, problems);

  CC_ASSIGN_OR_RETURN(auto tables, meta->ListDocs("lookup_table", domain));
  CC_ASSIGN_OR_RETURN(auto items, meta->ListDocs("lookup_item", domain));
  std::map<std::string, const meta::Doc*> table_by_tag, item_by_id;
  std::map<std::string, std::vector<const meta::Doc*>> items_of;  // table id -> rows
  for (const auto& t : tables) table_by_tag[GetStr(t.body, "tag")] = &t;
  for (const auto& i : items) {
    item_by_id[i.id] = &i;
    items_of[GetStr(i.body, "table_id")].push_back(&i);
  }
  LookupUploadResult res;
  res.tables = static_cast<int>(defs.size());
  Plan plan;
  for (const TableDef& t : defs) {
    auto found = table_by_tag.find(t.tag);
    const meta::Doc* old = found == table_by_tag.end() ? nullptr : found->second;
    if (t.del) {
      if (!old) continue;
      for (const meta::Doc* i : items_of[old->id]) plan.delete_items.push_back(*i);
      res.rows_deleted += static_cast<int64_t>(items_of[old->id].size());
      plan.delete_tables.push_back(*old);
      ++res.tables_deleted;
      continue;
    }
    meta::Doc d;
    d.kind = "lookup_table";
    d.body = TableBody(t, old);
    if (old && old->body == d.body) {
      ++res.tables_unchanged;
    } else {
      if (old) d.id = old->id, d.rev = old->rev;
      ++(old ? res.tables_updated : res.tables_created);
      plan.put_tables.push_back(std::move(d));
    }
    PlanRows(t, old, rows[t.tag], item_by_id,
             old ? items_of[old->id] : std::vector<const meta::Doc*>{}, replace, t.tag, &plan, &res,
             &p);
  }
  if (!p.list.empty()) return Refuse(p, problems);
  CC_RETURN_IF_ERROR(Write(meta, domain, &plan));
  return res;
}

}  // namespace commcare::importer
