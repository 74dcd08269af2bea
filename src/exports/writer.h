// Table writers for exports: rows stream to disk (CSV files, zipped when there are several
// tables; HTML and JSON documents; XLSX through libxlsxwriter's constant_memory mode), so memory
// stays flat.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare::exports {

// One output table: its name (file or sheet) and header row.
struct TableSpec {
  std::string name;
  std::vector<std::string> headers;
  // Per column: its cells are whole numbers HQ's writers keep as numbers (number__N), so JSON
  // writes them unquoted and XLSX as numeric cells. Empty: every cell is text.
  std::vector<bool> whole_numbers = {};
};

class TableWriter {
 public:
  virtual ~TableWriter() = default;
  // Appends a row to table t (rows of one table in order; tables may interleave).
  virtual Status WriteRow(size_t t, std::span<const std::string_view> cells) = 0;
  Status Row(size_t t, const std::vector<std::string>& cells) {
    views_.assign(cells.begin(), cells.end());
    return WriteRow(t, views_);
  }
  // Closes the output and moves it to its final path; returns that path.
  virtual Result<std::string> Finish() = 0;

 private:
  std::vector<std::string_view> views_;
};

// CSV (RFC 4180: CRLF line ends, fields with , " CR LF quoted, quotes doubled). One table:
// out_path itself; several: out_path with its extension replaced by .zip, one <name>.csv each.
Result<std::unique_ptr<TableWriter>> NewCsvWriter(const std::string& out_path,
                                                  std::vector<TableSpec> tables);
// HQ's HTML export: one page, each table an <h2> of its name and a <table> (cells escaped).
Result<std::unique_ptr<TableWriter>> NewHtmlWriter(const std::string& out_path,
                                                   std::vector<TableSpec> tables);
// HQ's JSON export: {"<table>": {"headers": [...], "rows": [[...], ...]}, ...}, cells as strings.
Result<std::unique_ptr<TableWriter>> NewJsonWriter(const std::string& out_path,
                                                   std::vector<TableSpec> tables);
// XLSX: one sheet per table (names cut to 31 characters and made unique).
Result<std::unique_ptr<TableWriter>> NewXlsxWriter(const std::string& out_path,
                                                   std::vector<TableSpec> tables);

// Appends one RFC 4180 field (quoted when needed) to out.
void AppendCsvField(std::string* out, std::string_view v);
// Appends v with & < > " ' escaped for HTML.
void AppendHtmlText(std::string* out, std::string_view v);

}  // namespace commcare::exports
