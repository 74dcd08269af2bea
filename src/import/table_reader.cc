// CSV and XLSX readers for the case importer and the lookup-table upload (table_reader.h).
#include "import/table_reader.h"

#include <expat.h>
#include <fmt/format.h>
#include <minizip/unzip.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <set>

namespace commcare::importer {

std::string NumberText(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15)
    return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);  // the shortest text that reads back as v
}

namespace {

// ---- CSV -------------------------------------------------------------------------------------

class CsvReader : public TableReader {
 public:
  CsvReader(std::ifstream in, int64_t estimate) : in_(std::move(in)), estimate_(estimate) {}

  Result<bool> Next(std::vector<std::string>* cells) override {
    cells->clear();
    int c = Get();
    if (c == EOF) return false;
    if (row_ == 0 && c == 0xEF) {  // a UTF-8 byte order mark
      if (Get() != 0xBB || Get() != 0xBF) return Status::InvalidArgument("row 1: not UTF-8 text");
      c = Get();
      if (c == EOF) return false;
    }
    ++row_;
    std::string cell;
    bool quoted = false, was_quoted = false;
    for (;; c = Get()) {
      if (c == EOF) {
        if (quoted)
          return Status::InvalidArgument(fmt::format("row {}: a quoted cell is not closed", row_));
        cells->push_back(std::move(cell));
        return true;
      }
      if (quoted) {
        if (c == '"') {
          if (Peek() == '"') {
            Get();
            cell.push_back('"');
          } else {
            quoted = false;
          }
        } else {
          if (c == '\n') ++extra_lines_;
          cell.push_back(static_cast<char>(c));
        }
        continue;
      }
      if (c == '"' && cell.empty() && !was_quoted) {
        quoted = was_quoted = true;
      } else if (c == ',') {
        cells->push_back(std::move(cell));
        cell.clear();
        was_quoted = false;
      } else if (c == '\r' || c == '\n') {
        if (c == '\r' && Peek() == '\n') Get();
        cells->push_back(std::move(cell));
        return true;
      } else if (was_quoted) {
        return Status::InvalidArgument(
            fmt::format("row {}: text after a quoted cell (cell {})", row_, cells->size() + 1));
      } else {
        cell.push_back(static_cast<char>(c));
      }
    }
  }
  int64_t RowNumber() const override { return row_; }
  int64_t EstimatedRows() const override { return std::max(estimate_ - extra_lines_, row_); }

 private:
  int Get() {
    if (pos_ == len_) {
      in_.read(buf_, sizeof buf_);
      len_ = static_cast<size_t>(in_.gcount());
      pos_ = 0;
      if (len_ == 0) return EOF;
    }
    return static_cast<unsigned char>(buf_[pos_++]);
  }
  int Peek() {
    int c = Get();
    if (c != EOF) --pos_;
    return c;
  }
  std::ifstream in_;
  char buf_[1 << 16];
  size_t pos_ = 0, len_ = 0;
  int64_t row_ = 0, estimate_ = 0, extra_lines_ = 0;
};

// Lines in a file (the progress total of a CSV import).
int64_t CountLines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char buf[1 << 16];
  int64_t n = 0;
  char last = '\n';
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    const auto got = in.gcount();
    for (std::streamsize i = 0; i < got; ++i) n += buf[i] == '\n';
    last = buf[got - 1];
  }
  return n + (last != '\n');
}

// ---- XLSX ------------------------------------------------------------------------------------

// Reads one member of the zip whole (shared strings, styles).
Result<std::string> ReadMember(unzFile z, const char* name, bool required) {
  if (unzLocateFile(z, name, 0) != UNZ_OK) {
    if (required) return Status::InvalidArgument(fmt::format("the workbook has no {}", name));
    return std::string();
  }
  if (unzOpenCurrentFile(z) != UNZ_OK)
    return Status::InvalidArgument(fmt::format("cannot read {} in the workbook", name));
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = unzReadCurrentFile(z, buf, sizeof buf)) > 0) out.append(buf, n);
  unzCloseCurrentFile(z);
  if (n < 0) return Status::InvalidArgument(fmt::format("{} in the workbook is corrupt", name));
  return out;
}

std::string_view LocalName(const char* name) {
  std::string_view n(name);
  auto colon = n.rfind(':');
  return colon == std::string_view::npos ? n : n.substr(colon + 1);
}

const char* Attr(const char** attrs, std::string_view name) {
  for (int i = 0; attrs[i]; i += 2)
    if (LocalName(attrs[i]) == name) return attrs[i + 1];
  return nullptr;
}

// Parses a whole XML text with start/end/text callbacks.
template <typename Handler>
Status ParseXml(const std::string& text, Handler* h, const char* what) {
  XML_Parser p = XML_ParserCreate("UTF-8");
  XML_SetUserData(p, h);
  XML_SetElementHandler(
      p, [](void* u, const char* n, const char** a) { static_cast<Handler*>(u)->Start(n, a); },
      [](void* u, const char* n) { static_cast<Handler*>(u)->End(n); });
  XML_SetCharacterDataHandler(
      p, [](void* u, const char* s, int len) { static_cast<Handler*>(u)->Text(s, len); });
  const bool ok = XML_Parse(p, text.data(), static_cast<int>(text.size()), 1) == XML_STATUS_OK;
  std::string err = ok ? "" : XML_ErrorString(XML_GetErrorCode(p));
  XML_ParserFree(p);
  if (!ok) return Status::InvalidArgument(fmt::format("{} in the workbook: {}", what, err));
  return Status::Ok();
}

struct SharedStrings {
  std::vector<std::string> items;
  int depth_t = 0, in_rph = 0;
  void Start(const char* n, const char**) {
    auto l = LocalName(n);
    if (l == "si") items.emplace_back();
    if (l == "rPh") ++in_rph;  // phonetic hints are not the text
    if (l == "t") ++depth_t;
  }
  void End(const char* n) {
    auto l = LocalName(n);
    if (l == "t") --depth_t;
    if (l == "rPh") --in_rph;
  }
  void Text(const char* s, int len) {
    if (depth_t > 0 && in_rph == 0 && !items.empty()) items.back().append(s, len);
  }
};

// Which cell styles (cellXfs indexes) show numbers as dates.
struct Styles {
  std::set<int> custom_date_formats;
  std::vector<int> xf_formats;
  bool in_cell_xfs = false;
  void Start(const char* n, const char** a) {
    auto l = LocalName(n);
    if (l == "numFmt") {
      const char* id = Attr(a, "numFmtId");
      const char* code = Attr(a, "formatCode");
      if (id && code && IsDateCode(code)) custom_date_formats.insert(std::atoi(id));
    } else if (l == "cellXfs") {
      in_cell_xfs = true;
    } else if (l == "xf" && in_cell_xfs) {
      const char* id = Attr(a, "numFmtId");
      xf_formats.push_back(id ? std::atoi(id) : 0);
    }
  }
  void End(const char* n) {
    if (LocalName(n) == "cellXfs") in_cell_xfs = false;
  }
  void Text(const char*, int) {}
  static bool IsDateCode(std::string_view code) {
    bool quoted = false;
    for (size_t i = 0; i < code.size(); ++i) {
      char c = code[i];
      if (c == '"') quoted = !quoted;
      if (quoted) continue;
      if (c == '[') {  // [Red], [$-409]: not date letters
        auto e = code.find(']', i);
        if (e == std::string_view::npos) break;
        i = e;
        continue;
      }
      if (c == '\\' || c == '_') {
        ++i;
        continue;
      }
      if (c == 'd' || c == 'D' || c == 'y' || c == 'Y' || c == 'm' || c == 'M' || c == 'h' ||
          c == 'H')
        return true;
    }
    return false;
  }
  bool IsDate(int style) const {
    if (style < 0 || style >= static_cast<int>(xf_formats.size())) return false;
    int f = xf_formats[style];
    return (f >= 14 && f <= 22) || (f >= 45 && f <= 47) || custom_date_formats.count(f);
  }
};

// An Excel serial date (1900 system) as HQ prints it: "2026-03-01", or with a time
// "2026-03-01 10:30:00".
std::string SerialDate(double serial) {
  int64_t secs = std::llround(serial * 86400.0);
  int64_t days = secs / 86400 - 25569;  // 1899-12-30 .. 1970-01-01
  int64_t tod = secs % 86400;
  // civil_from_days (Howard Hinnant)
  int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100),
          mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
  y += m <= 2;
  std::string out = fmt::format("{:04}-{:02}-{:02}", y, m, d);
  if (tod) out += fmt::format(" {:02}:{:02}:{:02}", tod / 3600, tod / 60 % 60, tod % 60);
  return out;
}

int ColumnIndex(const char* ref) {
  int col = 0;
  for (; ref && *ref >= 'A' && *ref <= 'Z'; ++ref) col = col * 26 + (*ref - 'A' + 1);
  return col - 1;
}

// A sheet of the workbook: its name (xl/workbook.xml) and its zip member (the target of its
// relationship in xl/_rels/workbook.xml.rels).
struct SheetRef {
  std::string name, rel_id, member;
};

struct WorkbookSheets {
  std::vector<SheetRef> sheets;
  void Start(const char* n, const char** a) {
    if (LocalName(n) != "sheet") return;
    const char* name = Attr(a, "name");
    const char* id = Attr(a, "id");  // r:id
    if (name && id) sheets.push_back({name, id, ""});
  }
  void End(const char*) {}
  void Text(const char*, int) {}
};

struct Relationships {
  std::map<std::string, std::string> target_by_id;
  void Start(const char* n, const char** a) {
    if (LocalName(n) != "Relationship") return;
    const char* id = Attr(a, "Id");
    const char* target = Attr(a, "Target");
    if (id && target) target_by_id[id] = target;
  }
  void End(const char*) {}
  void Text(const char*, int) {}
};

// The workbook's sheets in their order, each with its part ("worksheets/sheet2.xml" relative
// to xl/, or "/xl/worksheets/sheet2.xml" absolute, as the relationship says).
Result<std::vector<SheetRef>> ListSheets(unzFile z) {
  CC_ASSIGN_OR_RETURN(std::string wb, ReadMember(z, "xl/workbook.xml", true));
  WorkbookSheets names;
  CC_RETURN_IF_ERROR(ParseXml(wb, &names, "xl/workbook.xml"));
  CC_ASSIGN_OR_RETURN(std::string rels, ReadMember(z, "xl/_rels/workbook.xml.rels", true));
  Relationships r;
  CC_RETURN_IF_ERROR(ParseXml(rels, &r, "xl/_rels/workbook.xml.rels"));
  for (auto& s : names.sheets) {
    auto t = r.target_by_id.find(s.rel_id);
    if (t == r.target_by_id.end())
      return Status::InvalidArgument(
          fmt::format("the workbook's sheet '{}' has no relationship {}", s.name, s.rel_id));
    s.member = t->second.starts_with('/') ? t->second.substr(1) : "xl/" + t->second;
  }
  return std::move(names.sheets);
}

class XlsxReader : public TableReader {
 public:
  ~XlsxReader() override {
    if (parser_) XML_ParserFree(parser_);
    if (zip_) {
      unzCloseCurrentFile(zip_);
      unzClose(zip_);
    }
  }

  // Opens the sheet named sheet ("": the first sheet, xl/worksheets/sheet1.xml).
  Status Open(const std::string& path, const std::string& sheet) {
    zip_ = unzOpen64(path.c_str());
    if (!zip_) return Status::InvalidArgument(path + ": not a zip file (XLSX)");
    std::string member = "xl/worksheets/sheet1.xml";
    if (!sheet.empty()) {
      CC_ASSIGN_OR_RETURN(auto sheets, ListSheets(zip_));
      auto it = std::find_if(sheets.begin(), sheets.end(),
                             [&](const SheetRef& s) { return s.name == sheet; });
      if (it == sheets.end())
        return Status::NotFound(fmt::format("the workbook has no sheet named '{}'", sheet));
      member = it->member;
    }
    CC_ASSIGN_OR_RETURN(std::string ss, ReadMember(zip_, "xl/sharedStrings.xml", false));
    if (!ss.empty()) CC_RETURN_IF_ERROR(ParseXml(ss, &strings_, "xl/sharedStrings.xml"));
    CC_ASSIGN_OR_RETURN(std::string st, ReadMember(zip_, "xl/styles.xml", false));
    if (!st.empty()) CC_RETURN_IF_ERROR(ParseXml(st, &styles_, "xl/styles.xml"));
    if (unzLocateFile(zip_, member.c_str(), 0) != UNZ_OK || unzOpenCurrentFile(zip_) != UNZ_OK)
      return Status::InvalidArgument(
          sheet.empty()
              ? path + ": the workbook has no first sheet"
              : fmt::format("{}: the workbook has no part {} for sheet '{}'", path, member, sheet));
    parser_ = XML_ParserCreate("UTF-8");
    XML_SetUserData(parser_, this);
    XML_SetElementHandler(
        parser_,
        [](void* u, const char* n, const char** a) { static_cast<XlsxReader*>(u)->Start(n, a); },
        [](void* u, const char* n) { static_cast<XlsxReader*>(u)->End(n); });
    XML_SetCharacterDataHandler(parser_, [](void* u, const char* s, int len) {
      auto* r = static_cast<XlsxReader*>(u);
      if (r->in_value_) r->value_.append(s, len);
    });
    return Status::Ok();
  }

  Result<bool> Next(std::vector<std::string>* cells) override {
    while (rows_.empty() && !done_) CC_RETURN_IF_ERROR(Feed());
    if (rows_.empty()) return false;
    row_ = rows_.front().first;
    *cells = std::move(rows_.front().second);
    rows_.pop_front();
    return true;
  }
  int64_t RowNumber() const override { return row_; }
  int64_t EstimatedRows() const override { return std::max(dimension_rows_, row_); }

 private:
  Status Feed() {
    char buf[1 << 16];
    int n = unzReadCurrentFile(zip_, buf, sizeof buf);
    if (n < 0) return Status::InvalidArgument("the workbook's first sheet is corrupt");
    done_ = n == 0;
    if (XML_Parse(parser_, buf, n, done_) != XML_STATUS_OK)
      return Status::InvalidArgument(fmt::format("the workbook's first sheet: {} (line {})",
                                                 XML_ErrorString(XML_GetErrorCode(parser_)),
                                                 XML_GetCurrentLineNumber(parser_)));
    return Status::Ok();
  }
  void Start(const char* n, const char** a) {
    auto l = LocalName(n);
    if (l == "dimension") {  // ref="A1:F100": the progress total
      if (const char* ref = Attr(a, "ref"); ref && std::strchr(ref, ':')) {
        const char* p = std::strchr(ref, ':') + 1;
        while (*p && !std::isdigit(static_cast<unsigned char>(*p))) ++p;
        dimension_rows_ = std::atoll(p);
      }
    } else if (l == "row") {
      const char* r = Attr(a, "r");
      cur_row_ = r ? std::atoll(r) : cur_row_ + 1;
      cells_.clear();
      next_col_ = 0;
    } else if (l == "c") {
      const char* r = Attr(a, "r");
      col_ = r ? ColumnIndex(r) : next_col_;
      const char* t = Attr(a, "t");
      type_ = t ? t : "n";
      const char* s = Attr(a, "s");
      style_ = s ? std::atoi(s) : -1;
      value_.clear();
    } else if (l == "v" || l == "t") {
      in_value_ = true;
    }
  }
  void End(const char* n) {
    auto l = LocalName(n);
    if (l == "v" || l == "t") {
      in_value_ = false;
    } else if (l == "c") {
      if (col_ < 0 || col_ > 16384) return;
      if (static_cast<int>(cells_.size()) <= col_) cells_.resize(col_ + 1);
      cells_[col_] = CellText();
      next_col_ = col_ + 1;
    } else if (l == "row") {
      rows_.emplace_back(cur_row_, std::move(cells_));
      cells_.clear();
    }
  }
  std::string CellText() const {
    if (type_ == "s") {
      size_t i = static_cast<size_t>(std::atoll(value_.c_str()));
      return i < strings_.items.size() ? strings_.items[i] : std::string();
    }
    if (type_ == "b") return value_ == "1" ? "TRUE" : "FALSE";
    if (type_ == "n" && !value_.empty()) {
      char* end = nullptr;
      double v = std::strtod(value_.c_str(), &end);
      if (end && !*end) return styles_.IsDate(style_) ? SerialDate(v) : NumberText(v);
    }
    return value_;  // str, inlineStr, e (the error text, e.g. #N/A), d (ISO text)
  }

  unzFile zip_ = nullptr;
  XML_Parser parser_ = nullptr;
  SharedStrings strings_;
  Styles styles_;
  std::deque<std::pair<int64_t, std::vector<std::string>>> rows_;
  std::vector<std::string> cells_;
  std::string type_, value_;
  int col_ = 0, next_col_ = 0, style_ = -1;
  bool in_value_ = false, done_ = false;
  int64_t cur_row_ = 0, row_ = 0, dimension_rows_ = 0;
};

}  // namespace

Result<std::unique_ptr<TableReader>> OpenTable(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(fmt::format("{}: no such file", path));
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  if (in.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4) {
    auto x = std::make_unique<XlsxReader>();
    CC_RETURN_IF_ERROR(x->Open(path, ""));
    return std::unique_ptr<TableReader>(std::move(x));
  }
  in.clear();
  in.seekg(0);
  return std::unique_ptr<TableReader>(std::make_unique<CsvReader>(std::move(in), CountLines(path)));
}

Result<std::vector<std::string>> SheetNames(const std::string& path) {
  if (!std::ifstream(path)) return Status::NotFound(fmt::format("{}: no such file", path));
  unzFile z = unzOpen64(path.c_str());
  if (!z) return Status::InvalidArgument(path + ": not an XLSX workbook (not a zip file)");
  auto sheets = ListSheets(z);
  unzClose(z);
  if (!sheets.ok()) return sheets.status();
  std::vector<std::string> out;
  for (const auto& s : *sheets) out.push_back(s.name);
  return out;
}

Result<std::unique_ptr<TableReader>> OpenSheet(const std::string& path, const std::string& sheet) {
  if (!std::ifstream(path)) return Status::NotFound(fmt::format("{}: no such file", path));
  if (sheet.empty()) return Status::InvalidArgument("name the sheet to read");
  auto x = std::make_unique<XlsxReader>();
  CC_RETURN_IF_ERROR(x->Open(path, sheet));
  return std::unique_ptr<TableReader>(std::move(x));
}

}  // namespace commcare::importer
