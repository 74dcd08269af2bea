// The Case API's query=<xpath> (HQ's build_filter_from_xpath, corehq/apps/case_search/
// filter_dsl.py), a documented subset turned into CaseSearchQuery conditions (internal).
#pragma once

#include <string_view>

#include "commcare/pillows.h"
#include "commcare/status.h"

namespace commcare::server {

// Adds xpath's conditions to q. The subset: `name op value` with op one of = > >= < <=, value a
// quoted string or a number, name a case property or @case_type, @owner_id, @status ('open' or
// 'closed'), name, external_id; `and` between conditions, parentheses, and `or` between
// equalities of one name. InvalidArgument names what else the query holds.
Status AddXPathQuery(std::string_view xpath, CaseSearchQuery* q);

}  // namespace commcare::server
