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

#include "commcare/deployment.h"

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

Result<std::unique_ptr<Engine>> OpenEngine(const Args& a, bool read_only) {
  if (!a.Has("--data")) return Status::InvalidArgument("--data DIR is required");
  EngineOptions o;
  o.data_dir = a.Get("--data");
  o.read_only = read_only;
  return Engine::Open(o);
}

bool NeedDomain(const Args& a, std::string* domain) {
  *domain = a.Get("--domain");
  return !domain->empty();
}

// Opens the writer when nobody else holds it (so pending changes are relayed first), else a
// read-only engine beside the running writer.
Result<std::unique_ptr<Engine>> OpenWriterOrReader(const Args& a) {
  auto eng = OpenEngine(a, false);
  if (!eng.ok() && eng.status().code() == commcare::StatusCode::kFailedPrecondition)
    eng = OpenEngine(a, true);
  return eng;
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

Result<std::unique_ptr<meta::MetaStore>> OpenMeta(const std::string& data) {
  return meta::MetaStore::Open(meta::StoreAt(data, "meta.sqlite"));
}

std::string Env(const char* name, const std::string& def) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : def;
}

// The sync logs of the data directory (a file in it, or its shared "meta" database).
Result<std::unique_ptr<Sync>> OpenSync(Engine* eng, const std::string& data,
                                       const std::string& cache_dir) {
  return Sync::Open(eng, meta::StoreAt(data, "synclogs.sqlite"), cache_dir);
}

// A host file (--config): what every process of a deployment shares, and optionally
// "data_dir": this process's own directory (its lock, users, sync logs and pillow state).
Status ReadHostFile(const std::string& path, Deployment* d, std::string* data_dir) {
  std::string text;
  if (!ReadFile(path, &text)) return Status::NotFound("--config: cannot read " + path);
  CC_ASSIGN_OR_RETURN(*d, Deployment::FromJson(text, "--config " + path, data_dir));
  return Status::Ok();
}

// The Deployment as InitOptions (whose backends are JSON texts).
InitOptions InitOptionsOf(const Deployment& d) {
  InitOptions o;
  json::object j = json::parse(d.ToJson()).as_object();
  o.shards = d.shards;
  o.databases = d.databases;
  const json::value& b = j["blob_store"];
  o.blob_store = b.is_string() ? std::string(b.get_string()) : json::serialize(b);
  for (auto [key, to] : {std::pair<const char*, std::string*>{"primary", &o.primary},
                         {"change_log", &o.change_log},
                         {"meta", &o.meta},
                         {"pillows", &o.pillows}})
    if (const auto* v = j.if_contains(key)) *to = json::serialize(*v);
  return o;
}

Status UseHostFile(Args* a) {
  Deployment want;
  std::string dir;
  CC_RETURN_IF_ERROR(ReadHostFile(a->Get("--config"), &want, &dir));
  if (a->Has("--data")) dir = a->Get("--data");
  if (dir.empty())
    return Status::InvalidArgument("--config: give --data DIR or \"data_dir\" in the file");
  a->opts["--data"] = dir;
  auto have = Deployment::Load(dir);
  if (have.status().IsNotFound()) {
    InitOptions o = InitOptionsOf(want);
    o.data_dir = dir;
    return Engine::Init(o);
  }
  if (!have.ok()) return have.status();
  const json::object h = json::parse(have->ToJson()).as_object();
  const json::object w = json::parse(want.ToJson()).as_object();
  for (const auto& [key, value] : w) {
    const json::value* got = h.if_contains(key);
    if (!got || *got != value)
      return Status::FailedPrecondition(
          fmt::format("{} was set up with another \"{}\" than {} has (use a new --data "
                      "directory for a new deployment)",
                      dir, std::string_view(key), a->Get("--config")));
  }
  return Status::Ok();
}

}  // namespace commcare::cli
