// Helpers shared by the test programs.
#pragma once

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "storage/backends.h"

namespace cctest {

// The test server named by an environment variable (scripts/with-test-servers exports
// COMMCARE_TEST_PG, _S3, _KAFKA): its value, or "" when it is unset, in which case the caller
// skips — except under CI=true, where every server is there and a missing one fails the test.
// "" too when this libcommcare was built without the server's backend (COMMCARE_WITH_<X>=OFF):
// the suites that run on every backend then leave that one out.
inline std::string TestServer(const char* var) {
  const std::string_view name(var);
  const commcare::Status built = name == "COMMCARE_TEST_PG" ? commcare::storage::PostgresBuilt()
                                 : name == "COMMCARE_TEST_KAFKA" ? commcare::storage::KafkaBuilt()
                                 : name == "COMMCARE_TEST_S3"    ? commcare::storage::S3Built()
                                                                 : commcare::Status::Ok();
  if (!built.ok()) return "";
  const char* v = std::getenv(var);
  if (v && *v) return v;
  const char* ci = std::getenv("CI");
  if (ci && std::string_view(ci) == "true")
    FAIL("CI=true but " << std::string(var) << " is not set");
  return "";
}

// n new databases on the shared test cluster (COMMCARE_TEST_PG), as libpq connection strings;
// none when it is not set outside CI (under CI=true that fails the test).
inline std::vector<std::string> NewPostgresDatabases(int n) {
  const std::string base = TestServer("COMMCARE_TEST_PG");
  if (base.empty()) return {};
  std::vector<std::string> dsns;
  for (int i = 0; i < n; ++i) {
    std::string db = fmt::format("t_{}_{}_{}", ::getpid(), i, std::rand() % 1000000);
    REQUIRE(
        std::system(fmt::format("psql -q \"{} dbname=postgres\" -c 'CREATE DATABASE {}'", base, db)
                        .c_str()) == 0);
    dsns.push_back(fmt::format("{} dbname={}", base, db));
  }
  return dsns;
}

// A fresh, empty directory under the temp dir, removed when the test process exits.
inline std::string FreshTempDir(const char* prefix, const char* tag) {
  static int n = 0;
  static struct Cleaner {
    std::vector<std::filesystem::path> dirs;
    ~Cleaner() {
      std::error_code ec;
      for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
    }
  } cleaner;
  auto p = std::filesystem::temp_directory_path() /
           fmt::format("{}-{}-{}-{}-{}", prefix, tag, ::getpid(), n++, std::rand());
  std::filesystem::remove_all(p);
  cleaner.dirs.push_back(p);
  return p.string();
}

}  // namespace cctest
