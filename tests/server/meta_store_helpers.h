// Helpers shared by the MetaStore tests (meta_store_test.cc, and meta_store_postgres_test.cc).
#pragma once

#include <commcare/engine.h>
#include <commcare/storage/change_log.h>
#include <doctest/doctest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "../test_util.h"
#include "meta/meta_store.h"

namespace cctest {

using commcare::meta::Doc;
using commcare::meta::MetaStore;
using commcare::meta::User;

// Opens the store at where (a SQLite file or "postgres:<conninfo>").
inline std::unique_ptr<MetaStore> Open(const std::string& where) {
  auto m = MetaStore::Open(where);
  REQUIRE_MESSAGE(m.ok(), m.status().ToString());
  return std::move(m).value();
}

// Where a new, empty store goes: a SQLite file, or a new database on the test PostgreSQL
// cluster ("" when there is none outside CI).
inline std::string NewStore(bool postgres) {
  if (postgres) {
    auto dsns = NewPostgresDatabases(1);
    return dsns.empty() ? "" : "postgres:" + dsns[0];
  }
  std::string dir = FreshTempDir("cc-meta", "t");
  std::filesystem::create_directories(dir);
  return dir + "/meta.sqlite";
}

// A document of kind in domain.
inline Doc MakeDoc(std::string kind, std::string domain, boost::json::object body,
                   std::string id = "") {
  Doc d;
  d.kind = std::move(kind);
  d.domain = std::move(domain);
  d.body = std::move(body);
  d.id = std::move(id);
  return d;
}

// The changes of a topic in the log, each checked to be ChangeMeta keyed by its document.
inline std::vector<commcare::ChangeMeta> Changes(commcare::storage::ChangeLog* log,
                                                 const std::string& topic) {
  std::vector<commcare::ChangeMeta> out;
  auto parts = log->Partitions(topic);
  if (!parts.ok()) return out;
  for (int p = 0; p < *parts; ++p) {
    auto recs = log->Read(topic, p, 0, 100000);
    REQUIRE(recs.ok());
    for (const auto& r : *recs) {
      auto m = commcare::ChangeMetaFromJson(r.value);
      REQUIRE_MESSAGE(m.ok(), r.value);
      CHECK(r.key == m->document_id);
      out.push_back(*m);
    }
  }
  return out;
}

// A store with domains demo and other and a user w (pw-w) in demo; m is null when postgres is
// asked for and there is no server outside CI.
struct Fixture {
  std::string where;
  std::unique_ptr<MetaStore> m;
  User worker;
  explicit Fixture(bool postgres) : Fixture(NewStore(postgres)) {}
  explicit Fixture(std::string store) : where(std::move(store)) {
    if (where.empty()) return;  // no PostgreSQL outside CI
    m = Open(where);
    commcare::meta::Domain d;
    d.name = "demo";
    REQUIRE(m->PutDomain(d).ok());
    d.name = "other";
    REQUIRE(m->PutDomain(d).ok());
    User u;
    u.username = "w";
    u.domains = {"demo"};
    worker = m->PutUser(u, "pw-w").value();
  }
};

}  // namespace cctest
