// The `commcare` tool's shared helpers: JSON errors and exit codes, reading arguments, opening
// a data directory (or a deployment's host file).
#include "common.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

namespace commcare::cli {

namespace json = boost::json;

int Fail(const std::string& msg, int code) {
  std::cout << json::serialize(json::object{{"error", msg}}) << std::endl;
  return code;
}

int FailStatus(const Status& s) {
  int code = s.IsNotFound() ? kNotFound
             : s.code() == StatusCode::kFailedPrecondition || s.code() == StatusCode::kAborted
                 ? kPrecondition
                 : kFailed;
  return Fail(s.message(), code);
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

bool NeedDomain(const Args& a, std::string* domain) {
  *domain = a.Get("--domain");
  return !domain->empty();
}

bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ','))
    if (!part.empty()) out.push_back(part);
  return out;
}

std::string Env(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : def;
}

Result<HostOptions> HostOptionsOf(const Args& a, Access access) {
  HostOptions o;
  if (a.Has("--config")) {
    CC_ASSIGN_OR_RETURN(o, HostOptions::FromHostFile(a.Get("--config"), a.Get("--data")));
  } else {
    if (!a.Has("--data")) return Status::InvalidArgument("--data DIR is required");
    o.engine.data_dir = a.Get("--data");
  }
  o.engine.read_only = access == Access::kReader;
  o.reader_if_locked = access == Access::kWriterOrReader;
  return o;
}

Result<std::unique_ptr<Host>> OpenHost(const Args& a, Access access) {
  CC_ASSIGN_OR_RETURN(HostOptions o, HostOptionsOf(a, access));
  return Host::Open(std::move(o));
}

Status UseHostFile(Args* a) {
  CC_ASSIGN_OR_RETURN(HostOptions o,
                      HostOptions::FromHostFile(a->Get("--config"), a->Get("--data")));
  a->opts["--data"] = o.engine.data_dir;
  return Status::Ok();
}

}  // namespace commcare::cli
