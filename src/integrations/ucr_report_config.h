// HQ's UCR report configurations (ReportConfiguration, corehq/apps/userreports/reports/
// specs.py and factory.py): columns with an aggregation, expanded columns, aggregation_columns,
// date / choice-list / numeric filters and a sort, run over a UCR data source's rows (internal;
// docs/email-and-reports.md).
#pragma once

#include <boost/json.hpp>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare::reports {

struct UcrReportColumn {
  std::string type = "field";  // field or expanded
  std::string column_id, field, display;
  std::string aggregation = "simple";  // simple, sum, count, count_unique, avg, min, max
  int max_expansion = 10;              // expanded: at most this many values get a column
};

struct UcrReportFilter {
  std::string type;  // date, choice_list or numeric
  std::string slug, field, display;
};

struct UcrReportConfiguration {
  std::string config_id;  // the data source (table id)
  std::string title, description;
  std::vector<std::string> aggregation_columns;  // empty or ["doc_id"]: one row per table row
  std::vector<UcrReportColumn> columns;
  std::vector<UcrReportFilter> filters;
  std::vector<std::pair<std::string, bool>> sort;  // (column_id or field, descending)
  // Parses HQ's JSON; InvalidArgument names the bad field (unknown keys are refused).
  static Result<UcrReportConfiguration> FromJson(std::string_view text);
};

// A report's output: HQ's ConfigurableReportDataResource shape.
struct UcrReportData {
  struct Column {
    std::string slug, header;
  };
  std::vector<Column> columns;
  std::vector<boost::json::object> rows;  // slug -> value, every row (paging is the caller's)
  // {"columns": [{"slug", "header"}], "data": rows[offset, offset+limit), "total_records",
  // "next_page" ("" on the last page; link is the URL without offset)}
  std::string ToJson(size_t offset, size_t limit, const std::string& link) const;
  std::string ToCsv() const;  // a header row of headers, then every row
};

// Runs config over rows (the data source's rows as UcrRows gives them) with the filter values
// of params (date: {slug}-start/{slug}-end, YYYY-MM-DD, inclusive; choice_list: {slug},
// repeated for several, "_all" for any; numeric: {slug}-operator (= != < <= > >=) with
// {slug}-operand). A parameter in `ignore` is skipped; any other unknown one is
// InvalidArgument.
Result<UcrReportData> RunUcrReport(const UcrReportConfiguration& config,
                                   const std::vector<std::string>& rows,
                                   const std::multimap<std::string, std::string>& params,
                                   const std::vector<std::string>& ignore);

}  // namespace commcare::reports
