// CSV, zip (minizip), HTML, JSON and XLSX (libxlsxwriter, constant_memory) table writers.
#include <fmt/format.h>
#include <minizip/zip.h>
#include <xlsxwriter.h>

#include <boost/json/serialize.hpp>
#include <cstdio>
#include <filesystem>
#include <set>

#include "exports/writer.h"

namespace commcare::exports {

namespace fs = std::filesystem;

constexpr size_t kXlsxStrMax = 32767;  // characters in an XLSX cell

void AppendCsvField(std::string* out, std::string_view v) {
  bool plain = true;
  for (char c : v)
    if (c == ',' || c == '"' || c == '\r' || c == '\n') {
      plain = false;
      break;
    }
  if (plain) {
    out->append(v);
    return;
  }
  out->push_back('"');
  for (char c : v) {
    if (c == '"') out->push_back('"');
    out->push_back(c);
  }
  out->push_back('"');
}

void AppendHtmlText(std::string* out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '&':
        out->append("&amp;");
        break;
      case '<':
        out->append("&lt;");
        break;
      case '>':
        out->append("&gt;");
        break;
      case '"':
        out->append("&quot;");
        break;
      case '\'':
        out->append("&#x27;");
        break;
      default:
        out->push_back(c);
    }
  }
}

namespace {

// Digits only, at most 15 of them (exact as a double), no leading zero but "0".
bool IsWholeNumber(std::string_view v) {
  if (v.empty() || v.size() > 15 || (v.size() > 1 && v[0] == '0')) return false;
  for (char c : v)
    if (c < '0' || c > '9') return false;
  return true;
}

Status IoError(const std::string& what, const std::string& path) {
  return Status::Internal(fmt::format("export: cannot {} {}: {}", what, path, strerror(errno)));
}

// A file name for a table: path separators and the like become '_'.
std::string SafeName(std::string_view n) {
  std::string out;
  for (char c : n)
    out.push_back(c == '/' || c == '\\' || c == ':' || c == '*' || c == '?' || c == '[' ||
                          c == ']' || c == '"'
                      ? '_'
                      : c);
  return out.empty() ? std::string("table") : out;
}

// CSV, HTML and JSON: each table's rows are spooled to a file of their own (tables interleave),
// then joined: CSV into a zip when there are several tables, HTML and JSON into one document.
class SpoolWriter : public TableWriter {
 public:
  enum class Kind { kCsv, kHtml, kJson };
  SpoolWriter(Kind kind, std::string out_path, std::vector<TableSpec> tables)
      : kind_(kind), out_path_(std::move(out_path)), tables_(std::move(tables)) {}
  ~SpoolWriter() override {
    for (size_t i = 0; i < files_.size(); ++i) {
      if (files_[i]) fclose(files_[i]);
      std::error_code ec;
      fs::remove(TmpPath(i), ec);
    }
  }

  Status Open() {
    for (size_t i = 0; i < tables_.size(); ++i) {
      FILE* f = fopen(TmpPath(i).c_str(), "wb");
      if (!f) return IoError("create", TmpPath(i));
      files_.push_back(f);
      bufs_.emplace_back().reserve(kFlushAt + 4096);
      rows_.push_back(0);
      // HTML and JSON write the headers apart from the rows, when the tables are joined.
      if (kind_ == Kind::kCsv) CC_RETURN_IF_ERROR(Row(i, tables_[i].headers));
    }
    return Status::Ok();
  }

  // Rows are gathered in a buffer per table and written 256 KiB at a time.
  Status WriteRow(size_t t, std::span<const std::string_view> cells) override {
    std::string& out = bufs_[t];
    switch (kind_) {
      case Kind::kCsv:
        for (size_t i = 0; i < cells.size(); ++i) {
          if (i) out.push_back(',');
          AppendCsvField(&out, cells[i]);
        }
        out.append("\r\n");
        break;
      case Kind::kHtml:
        HtmlRow(&out, "td", cells);
        break;
      case Kind::kJson:
        out.append(rows_[t] ? ",\n" : "\n");
        JsonArray(&out, cells, tables_[t].whole_numbers);
        break;
    }
    ++rows_[t];
    return out.size() >= kFlushAt ? Flush(t) : Status::Ok();
  }

  Result<std::string> Finish() override {
    for (size_t i = 0; i < files_.size(); ++i) {
      CC_RETURN_IF_ERROR(Flush(i));
      int rc = fclose(files_[i]);
      files_[i] = nullptr;
      if (rc != 0) return IoError("write", TmpPath(i));
    }
    std::error_code ec;
    if (kind_ != Kind::kCsv) {
      std::string tmp = out_path_ + ".tmp";
      CC_RETURN_IF_ERROR(Join(tmp));
      fs::rename(tmp, out_path_, ec);
      if (ec) return IoError("rename to", out_path_);
      return out_path_;
    }
    if (tables_.size() == 1) {
      fs::rename(TmpPath(0), out_path_, ec);
      if (ec) return IoError("rename to", out_path_);
      return out_path_;
    }
    std::string zip_path = fs::path(out_path_).replace_extension(".zip").string();
    std::string tmp = zip_path + ".tmp";
    CC_RETURN_IF_ERROR(Zip(tmp));
    fs::rename(tmp, zip_path, ec);
    if (ec) return IoError("rename to", zip_path);
    return zip_path;
  }

 private:
  static constexpr size_t kFlushAt = 1 << 18;

  std::string TmpPath(size_t i) const { return fmt::format("{}.tmp{}", out_path_, i); }

  Status Flush(size_t t) {
    std::string& b = bufs_[t];
    if (!b.empty() && fwrite(b.data(), 1, b.size(), files_[t]) != b.size())
      return IoError("write", TmpPath(t));
    b.clear();
    return Status::Ok();
  }

  // ["a","b",...]: the cells as JSON strings, or numbers where whole_numbers says so.
  static void JsonArray(std::string* out, std::span<const std::string_view> cells,
                        const std::vector<bool>& whole_numbers = {}) {
    out->push_back('[');
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i) out->push_back(',');
      if (i < whole_numbers.size() && whole_numbers[i] && IsWholeNumber(cells[i]))
        out->append(cells[i]);
      else
        out->append(boost::json::serialize(boost::json::string_view(cells[i])));
    }
    out->push_back(']');
  }

  static void HtmlRow(std::string* out, std::string_view tag,
                      std::span<const std::string_view> cells) {
    out->append("<tr>");
    for (auto c : cells) {
      out->append("<").append(tag).append(">");
      AppendHtmlText(out, c);
      out->append("</").append(tag).append(">");
    }
    out->append("</tr>\n");
  }

  // HQ's HTML export (a table per sheet under an <h2> of its name) or JSON export
  // ({"<table>": {"headers": [...], "rows": [[...], ...]}, ...}) of every table, into path.
  Status Join(const std::string& path) {
    FILE* out = fopen(path.c_str(), "wb");
    if (!out) return IoError("create", path);
    std::string head;
    if (kind_ == Kind::kHtml)
      head =
          "<!DOCTYPE HTML>\n<html>\n<head>\n<meta http-equiv=\"Content-Type\" "
          "content=\"text/html; charset=UTF-8\">\n<title>Dashboard</title>\n</head>\n<body>\n";
    else
      head = "{";
    Status st;
    std::vector<char> buf(1 << 16);
    for (size_t i = 0; i < tables_.size() && st.ok(); ++i) {
      const auto& h = tables_[i].headers;
      std::vector<std::string_view> hv(h.begin(), h.end());
      if (kind_ == Kind::kHtml) {
        head.append("<h2>");
        AppendHtmlText(&head, tables_[i].name);
        head.append("</h2>\n<table>\n<thead>\n");
        HtmlRow(&head, "th", hv);
        head.append("</thead>\n<tbody>\n");
      } else {
        if (i) head.push_back(',');
        head.append("\n").append(boost::json::serialize(boost::json::string_view(tables_[i].name)));
        head.append(": {\"headers\": ");
        JsonArray(&head, hv);
        head.append(", \"rows\": [");
      }
      if (fwrite(head.data(), 1, head.size(), out) != head.size()) st = IoError("write", path);
      head.clear();
      FILE* f = st.ok() ? fopen(TmpPath(i).c_str(), "rb") : nullptr;
      if (st.ok() && !f) st = IoError("read", TmpPath(i));
      for (size_t n; st.ok() && (n = fread(buf.data(), 1, buf.size(), f)) > 0;)
        if (fwrite(buf.data(), 1, n, out) != n) st = IoError("write", path);
      if (f) fclose(f);
      head = kind_ == Kind::kHtml ? "</tbody>\n</table>\n" : "]}";
    }
    head.append(kind_ == Kind::kHtml ? "</body>\n</html>\n" : "\n}\n");
    if (st.ok() && fwrite(head.data(), 1, head.size(), out) != head.size())
      st = IoError("write", path);
    if (fclose(out) != 0 && st.ok()) st = IoError("write", path);
    return st;
  }

  Status Zip(const std::string& path) {
    zipFile z = zipOpen64(path.c_str(), APPEND_STATUS_CREATE);
    if (!z) return IoError("create", path);
    std::set<std::string> used;
    std::vector<char> buf(1 << 16);
    Status st;
    for (size_t i = 0; i < tables_.size() && st.ok(); ++i) {
      std::string name = SafeName(tables_[i].name);
      for (int n = 2; !used.insert(name).second; ++n)
        name = fmt::format("{} ({})", SafeName(tables_[i].name), n);
      name += ".csv";
      zip_fileinfo zi = {};
      if (zipOpenNewFileInZip64(z, name.c_str(), &zi, nullptr, 0, nullptr, 0, nullptr, Z_DEFLATED,
                                Z_DEFAULT_COMPRESSION, 1) != ZIP_OK) {
        st = IoError("add to zip", name);
        break;
      }
      FILE* f = fopen(TmpPath(i).c_str(), "rb");
      if (!f) st = IoError("read", TmpPath(i));
      size_t n = 0;
      while (st.ok() && (n = fread(buf.data(), 1, buf.size(), f)) > 0)
        if (zipWriteInFileInZip(z, buf.data(), unsigned(n)) != ZIP_OK) st = IoError("write", path);
      if (f) fclose(f);
      zipCloseFileInZip(z);
    }
    if (zipClose(z, nullptr) != ZIP_OK && st.ok()) st = IoError("write", path);
    return st;
  }

  Kind kind_;
  std::string out_path_;
  std::vector<TableSpec> tables_;
  std::vector<FILE*> files_;
  std::vector<std::string> bufs_;
  std::vector<int64_t> rows_;  // rows written per table
};

// A sheet name: at most 31 characters, none of []:*?/\, unique in the workbook.
std::string SheetName(std::string_view n, std::set<std::string>* used) {
  std::string base = SafeName(n);
  if (base.size() > 31) base = base.substr(base.size() - 31);
  std::string name = base;
  for (int i = 2; !used->insert(name).second; ++i) {
    std::string suffix = fmt::format("~{}", i);
    name = base.substr(0, 31 - suffix.size()) + suffix;
  }
  return name;
}

class XlsxWriter : public TableWriter {
 public:
  XlsxWriter(std::string out_path, std::vector<TableSpec> tables)
      : out_path_(std::move(out_path)), tmp_(out_path_ + ".tmp"), tables_(std::move(tables)) {}
  ~XlsxWriter() override {
    if (wb_) workbook_close(wb_);
    std::error_code ec;
    fs::remove(tmp_, ec);
  }

  Status Open() {
    tmpdir_ = fs::path(out_path_).parent_path().string();
    if (tmpdir_.empty()) tmpdir_ = ".";
    lxw_workbook_options o = {};
    o.constant_memory = LXW_TRUE;
    o.tmpdir = tmpdir_.data();
    o.use_zip64 = LXW_TRUE;
    wb_ = workbook_new_opt(tmp_.c_str(), &o);
    if (!wb_) return IoError("create", tmp_);
    std::set<std::string> used;
    for (size_t i = 0; i < tables_.size(); ++i) {
      lxw_worksheet* ws = workbook_add_worksheet(wb_, SheetName(tables_[i].name, &used).c_str());
      if (!ws) return Status::Internal("export: cannot add a sheet for " + tables_[i].name);
      sheets_.push_back(ws);
      rows_.push_back(0);
      CC_RETURN_IF_ERROR(Row(i, tables_[i].headers));
    }
    return Status::Ok();
  }

  Status WriteRow(size_t t, std::span<const std::string_view> cells) override {
    lxw_row_t r = rows_[t];
    if (r >= LXW_ROW_MAX)
      return Status::FailedPrecondition(
          fmt::format("export: table {} has more rows than an XLSX sheet holds ({}); use csv",
                      tables_[t].name, LXW_ROW_MAX));
    for (size_t c = 0; c < cells.size(); ++c) {
      if (cells[c].empty()) continue;
      const auto& whole = tables_[t].whole_numbers;
      lxw_error e;
      if (c < whole.size() && whole[c] && IsWholeNumber(cells[c])) {
        e = worksheet_write_number(sheets_[t], r, lxw_col_t(c), std::stod(std::string(cells[c])),
                                   nullptr);
      } else {
        cell_.assign(cells[c].substr(0, kXlsxStrMax));  // NUL-terminated, cut to the cell limit
        e = worksheet_write_string(sheets_[t], r, lxw_col_t(c), cell_.c_str(), nullptr);
      }
      if (e != LXW_NO_ERROR)
        return Status::Internal(fmt::format("export: xlsx: {}", lxw_strerror(e)));
    }
    rows_[t] = r + 1;
    return Status::Ok();
  }

  Result<std::string> Finish() override {
    lxw_error e = workbook_close(wb_);
    wb_ = nullptr;
    if (e != LXW_NO_ERROR)
      return Status::Internal(fmt::format("export: xlsx: {}", lxw_strerror(e)));
    std::error_code ec;
    fs::rename(tmp_, out_path_, ec);
    if (ec) return IoError("rename to", out_path_);
    return out_path_;
  }

 private:
  std::string out_path_, tmp_, tmpdir_;
  std::vector<TableSpec> tables_;
  lxw_workbook* wb_ = nullptr;
  std::vector<lxw_worksheet*> sheets_;
  std::vector<lxw_row_t> rows_;
  std::string cell_;
};

}  // namespace

Result<std::unique_ptr<TableWriter>> NewCsvWriter(const std::string& out_path,
                                                  std::vector<TableSpec> tables) {
  auto w = std::make_unique<SpoolWriter>(SpoolWriter::Kind::kCsv, out_path, std::move(tables));
  CC_RETURN_IF_ERROR(w->Open());
  return std::unique_ptr<TableWriter>(std::move(w));
}

Result<std::unique_ptr<TableWriter>> NewHtmlWriter(const std::string& out_path,
                                                   std::vector<TableSpec> tables) {
  auto w = std::make_unique<SpoolWriter>(SpoolWriter::Kind::kHtml, out_path, std::move(tables));
  CC_RETURN_IF_ERROR(w->Open());
  return std::unique_ptr<TableWriter>(std::move(w));
}

Result<std::unique_ptr<TableWriter>> NewJsonWriter(const std::string& out_path,
                                                   std::vector<TableSpec> tables) {
  auto w = std::make_unique<SpoolWriter>(SpoolWriter::Kind::kJson, out_path, std::move(tables));
  CC_RETURN_IF_ERROR(w->Open());
  return std::unique_ptr<TableWriter>(std::move(w));
}

Result<std::unique_ptr<TableWriter>> NewXlsxWriter(const std::string& out_path,
                                                   std::vector<TableSpec> tables) {
  auto w = std::make_unique<XlsxWriter>(out_path, std::move(tables));
  CC_RETURN_IF_ERROR(w->Open());
  return std::unique_ptr<TableWriter>(std::move(w));
}

}  // namespace commcare::exports
