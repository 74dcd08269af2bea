// Opens a Host for the benchmarks that drive the library (bench_util.h stays library-free for
// the HTTP load generator).
#pragma once

#include <fmt/format.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "commcare/host.h"

namespace bench {

// A Host on dir, set up (when fresh) from deployment_json, commcare.json's keys ("{}": the
// embedded default); exits with the error otherwise.
inline std::unique_ptr<commcare::Host> OpenHost(const std::string& dir,
                                                const std::string& deployment_json,
                                                commcare::EngineOptions o = {}) {
  commcare::HostOptions ho;
  auto d = commcare::Deployment::FromJson(deployment_json, "bench");
  if (!d.ok()) {
    fmt::print(stderr, "deployment: {}\n", d.status().ToString());
    std::exit(1);
  }
  if (!o.in_memory) ho.deployment = std::move(*d);
  o.data_dir = o.in_memory ? "" : dir;
  ho.engine = o;
  auto h = commcare::Host::Open(std::move(ho));
  if (!h.ok()) {
    fmt::print(stderr, "open {}: {}\n", dir, h.status().ToString());
    std::exit(1);
  }
  return std::move(h).value();
}

}  // namespace bench
