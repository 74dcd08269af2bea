// The case importer's reading of a file: the header (which column is which field, checked
// before any row) and one row into a case block or the problems that keep it out (row_plan.cc).
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "commcare/importer.h"
#include "import/lookups.h"

namespace commcare::importer {

// Which column feeds which field.
struct Header {
  int search_col = -1;                              // -1: the file has no search column
  std::vector<std::pair<int, std::string>> fields;  // column -> reserved field or property
};

// Reads the header row; InvalidArgument names a duplicate, invalid or reserved column, a
// mapped column the file does not have, or a missing search column.
Result<Header> ReadHeader(const std::vector<std::string>& cells, const CaseImportOptions& o);

// One row's outcome before submission.
struct RowPlan {
  enum class Action { kCreate, kUpdate, kSkip, kFail, kBlank };
  Action action = Action::kFail;
  int64_t row = 0;
  std::string case_id, external_id;     // external_id: a case this row creates with it
  std::string block;                    // the <case> XML
  std::vector<std::string> lookup_ids;  // search / parent ids (a flush when created just now)
  std::vector<RowError> errors;
};

// What PlanRow reads besides the row.
struct PlanContext {
  const CaseImportOptions* options;
  const Header* header;
  std::string import_id;
  int64_t time = 0;
  OwnerLookup* owners;
  CaseLookup* cases;
};

// Plans one data row (deterministic: a rerun of the import plans it the same way).
Result<RowPlan> PlanRow(const PlanContext& c, int64_t row, const std::vector<std::string>& cells);

// The id a row's new case gets.
std::string NewCaseId(const std::string& import_id, int64_t row);

}  // namespace commcare::importer
