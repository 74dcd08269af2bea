// Uploading lookup tables from an Excel workbook, as CommCare HQ's fixture upload does
// (corehq/apps/fixtures/upload/: workbook.py, run_upload.py, validation.py). The workbook has
// a "types" sheet (Delete(Y/N), table_id, is_global?, field N, field N: property M,
// field N: is_indexed?, property N) and one sheet per table named by its table_id (UID,
// Delete(Y/N), field: <name>, or field: <name> <n> with <name>: <property> <n>,
// property: <attribute>, user N, group N, location N). The tables and rows become the
// MetaStore's lookup_table and lookup_item documents. docs/sync.md has the contract.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "commcare/status.h"

namespace commcare::meta {
class MetaStore;
}

namespace commcare::importer {

// What an upload changed.
struct LookupUploadResult {
  int tables = 0;  // rows of the types sheet
  int tables_created = 0, tables_updated = 0, tables_deleted = 0, tables_unchanged = 0;
  int64_t rows_created = 0, rows_updated = 0, rows_deleted = 0, rows_unchanged = 0;
  std::string Message() const;  // one sentence with the counts
};

// Applies the workbook at path to the domain's lookup tables. Every sheet is read and checked
// first; nothing is written unless all of it is good (then InvalidArgument carrying every
// problem, one a line, each naming the sheet, row and column; also into *problems). A table is
// matched by its table_id, a row by its UID, else by its field values (so uploading the same
// workbook again changes nothing). Rows marked Delete(Y/N) = Y are deleted, a table so marked
// with all its rows; with replace, the rows of an uploaded table that the sheet does not name
// are deleted too. Tables the workbook does not name are left alone.
Result<LookupUploadResult> UploadLookupTables(meta::MetaStore* meta, const std::string& domain,
                                              const std::string& path, bool replace,
                                              std::vector<std::string>* problems = nullptr);

}  // namespace commcare::importer
