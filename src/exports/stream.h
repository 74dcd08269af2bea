// Exports into writers of the caller's making instead of a file: what OData feeds read a page
// of rows from (src/server/odata_api.cc).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "commcare/exports.h"
#include "exports/writer.h"

namespace commcare::exports {

// Makes the writer for an export's tables (called once, after the columns are known).
using WriterFactory =
    std::function<Result<std::unique_ptr<TableWriter>>(std::vector<TableSpec> tables)>;

struct ExportSink {
  WriterFactory make;
  // A form's rows are numbered from its form id ("<id>", "<id>.0") instead of its position
  // ("0", "0.0"), as HQ's OData feeds number them: a page does not know its rows' positions.
  bool number_by_form_id = false;
};

// RunExport into sink.make's writer. A writer may stop the export early by returning an error
// from WriteRow; that error is returned.
Result<ExportResult> RunExportInto(Engine* engine, const ExportDefinition& def,
                                   const ExportSink& sink, const ExportProgress& progress = {});

}  // namespace commcare::exports
