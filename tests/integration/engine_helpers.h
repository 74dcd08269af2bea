// Shared helpers for engine tests: temp data dirs and form builders.
#pragma once

#include <commcare/engine.h>
#include <commcare/host.h>
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../test_util.h"

namespace cctest {

inline std::string TempDir(const char* tag) { return FreshTempDir("cc-eng", tag); }

// Where a pillow test keeps its pillow databases: a fresh directory, and a fresh PostgreSQL
// database ("postgres:<conninfo>") when the test cluster is there (always under CI=true).
// A Host on a fresh data directory set up by Engine::Init (in *dir when given).
inline std::unique_ptr<commcare::Host> NewHost(const char* tag, std::string* dir = nullptr) {
  commcare::InitOptions io;
  io.data_dir = TempDir(tag);
  REQUIRE(commcare::Engine::Init(io).ok());
  commcare::HostOptions ho;
  ho.engine.data_dir = io.data_dir;
  auto h = commcare::Host::Open(ho);
  REQUIRE_MESSAGE(h.ok(), h.status().ToString());
  if (dir) *dir = io.data_dir;
  return std::move(*h);
}

inline std::vector<std::string> PillowStores(const char* tag) {
  std::vector<std::string> out = {TempDir(tag)};
  for (const auto& dsn : NewPostgresDatabases(1)) out.push_back("postgres:" + dsn);
  return out;
}

// An engine on SQLite files in a fresh directory (databases physical DBs, 64 shards).
inline std::unique_ptr<commcare::Engine> OpenSqlite(int databases = 1,
                                                    std::string* dir_out = nullptr,
                                                    bool strict = false, bool durable = false) {
  std::string dir = TempDir("sqlite");
  commcare::InitOptions io;
  io.data_dir = dir;
  io.shards = 64;
  io.databases = databases;
  REQUIRE(commcare::Engine::Init(io).ok());
  commcare::EngineOptions o;
  o.data_dir = dir;
  o.strict_case_updates = strict;
  o.durable = durable;  // durable: redo log, blob journal, sealing, as in production
  auto e = commcare::Engine::Open(o);
  REQUIRE_MESSAGE(e.ok(), e.status().ToString());
  if (dir_out) *dir_out = dir;
  return std::move(e).value();
}

inline std::unique_ptr<commcare::Engine> OpenMemory(int databases = 1) {
  commcare::EngineOptions o;
  o.in_memory = true;
  o.memory_databases = databases;
  o.memory_shards = 64;
  auto e = commcare::Engine::Open(o);
  REQUIRE(e.ok());
  return std::move(e).value();
}

inline commcare::SubmitResponse Submit(commcare::Engine* e, const std::string& xml,
                                       const std::string& openrosa = "",
                                       const std::string& domain = "demo") {
  commcare::SubmitRequest r;
  r.domain = domain;
  r.body = xml;
  r.openrosa_version = openrosa;
  return e->Submit(r);
}

// A form with meta and one v2 case block; `actions` is the inner XML of <case>.
inline std::string CaseForm(const std::string& form_id, const std::string& case_id,
                            const std::string& actions, const std::string& user = "u1",
                            const std::string& date = "2020-01-01T00:00:00Z") {
  return fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://example.org/form"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{}</instanceID><userID>{}</userID><timeStart>2020-01-01T00:00:00Z</timeStart><timeEnd>2020-01-01T00:01:00Z</timeEnd></meta><q>1</q><case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{}" date_modified="{}" user_id="{}">{}</case></data>)",
      form_id, user, case_id, date, user, actions);
}

// A multipart/form-data body (boundary "BB") with the form's XML and one attachment.
inline std::string MultipartBody(const std::string& xml, const std::string& name,
                                 const std::string& content_type, const std::string& data) {
  return "--BB\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; "
         "filename=\"form.xml\"\r\nContent-Type: text/xml\r\n\r\n" +
         xml + "\r\n--BB\r\nContent-Disposition: form-data; name=\"" + name + "\"; filename=\"" +
         name + "\"\r\nContent-Type: " + content_type + "\r\n\r\n" + data + "\r\n--BB--\r\n";
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace cctest
