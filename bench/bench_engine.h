// Shared by the benchmarks that need an engine full of cases: the load and the open-or-reuse.
#pragma once

#include <commcare/engine.h>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "bench_util.h"

namespace bench {

// Submits n person cases "case-<i>" of domain "bench", 50 to a form; update(i) is the XML
// inside case i's <update>.
inline commcare::Status LoadCases(commcare::Engine* e, long n,
                                  const std::function<std::string(long)>& update) {
  const long per_form = 50;
  for (long f = 0; f * per_form < n; ++f) {
    std::string cases;
    for (long c = f * per_form; c < std::min(n, (f + 1) * per_form); ++c)
      cases += fmt::format(
          R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="case-{0}" date_modified="2020-01-01T00:00:00Z" user_id="u1"><create><case_type>person</case_type><case_name>Person {0}</case_name><owner_id>o1</owner_id></create><update>{1}</update></case>)",
          c, update(c));
    commcare::SubmitRequest r;
    r.domain = "bench";
    r.body = fmt::format(
        R"(<?xml version="1.0"?><data xmlns="http://example.org/bench"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>form-{}</instanceID><userID>u1</userID></meta>{}</data>)",
        f, cases);
    auto resp = e->Submit(r);
    if (resp.http_status != 201) return commcare::Status::Internal("submit: " + resp.message);
  }
  return commcare::Status::Ok();
}

// The engine over <dir>/data: with reuse and an existing deployment, opened as it is; otherwise
// made afresh and loaded with LoadCases(n, update), printing how long that took.
inline commcare::Result<std::unique_ptr<commcare::Engine>> OpenLoaded(
    const std::string& dir, bool reuse, long n, const std::function<std::string(long)>& update) {
  const std::string data = dir + "/data";
  const bool load = !reuse || !std::filesystem::exists(data + "/commcare.json");
  if (load) {
    std::filesystem::remove_all(dir);
    commcare::InitOptions io;
    io.data_dir = data;
    CC_RETURN_IF_ERROR(commcare::Engine::Init(io));
  }
  commcare::EngineOptions eo;
  eo.data_dir = data;
  CC_ASSIGN_OR_RETURN(auto e, commcare::Engine::Open(eo));
  if (load) {
    auto t0 = Clock::now();
    CC_RETURN_IF_ERROR(LoadCases(e.get(), n, update));
    fmt::print("loaded {} cases in {:.1f} s\n", n, Seconds(t0, Clock::now()));
  }
  return e;
}

}  // namespace bench
