// Reading an uploaded table row by row: CSV (RFC 4180, UTF-8, an optional BOM) streamed from
// the file, or one sheet of an XLSX workbook (minizip + Expat: the first sheet or one named in
// workbook.xml, sharedStrings and the styles that say which numbers are dates). Cells come back as
// HQ's importer sees them: strings; whole numbers without ".0"; date-formatted numbers as ISO
// dates.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "commcare/status.h"

namespace commcare::importer {

class TableReader {
 public:
  virtual ~TableReader() = default;
  // The next row's cells into *cells; false at the end. InvalidArgument names a malformed row.
  virtual Result<bool> Next(std::vector<std::string>* cells) = 0;
  // The 1-based number of the row Next returned last (the header is row 1).
  virtual int64_t RowNumber() const = 0;
  // An estimate of the number of rows (for progress); exact for XLSX.
  virtual int64_t EstimatedRows() const = 0;
};

// Opens path as CSV or XLSX by its contents (a zip signature means XLSX). InvalidArgument when
// it is neither; NotFound when the file does not exist.
Result<std::unique_ptr<TableReader>> OpenTable(const std::string& path);

// The sheet names of an XLSX workbook in their order (xl/workbook.xml). NotFound when the file
// does not exist; InvalidArgument when it is no XLSX workbook.
Result<std::vector<std::string>> SheetNames(const std::string& path);

// Opens the sheet of an XLSX workbook with this name (its part found through
// xl/_rels/workbook.xml.rels). NotFound when the file or the sheet does not exist.
Result<std::unique_ptr<TableReader>> OpenSheet(const std::string& path, const std::string& sheet);

// Shortest decimal text of a number as HQ shows a spreadsheet number: 3.0 -> "3", 2.5 -> "2.5".
std::string NumberText(double v);

}  // namespace commcare::importer
