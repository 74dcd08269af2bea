// The PostgreSQL floor of submit_bench (issue 21): the least work PostgreSQL must do for the
// engine's rows of n forms.
#pragma once

#include <string>

namespace bench {

// Expat parse of each form + its rows (form, case upsert, case transaction, 2 outbox rows) as
// one multi-row INSERT per table per 1,000-form transaction, over one connection to conninfo,
// in a fresh schema "bench_floor" (dropped after); returns seconds. Exits on a server error.
double RunPgFloor(const std::string& conninfo, long n, long ncases);

}  // namespace bench
