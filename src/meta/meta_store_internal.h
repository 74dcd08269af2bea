// What the MetaStore's files share (internal to src/meta): the store's state and the calls
// every part makes on it. meta_store.cc: open, schema, writes and the change relay, domains;
// meta_users.cc: users and what a user owns (owner ids, fixtures); meta_docs.cc: roles, groups,
// locations and apps; meta_auth.cc: passwords, logins and API keys.
#pragma once

#include <array>
#include <boost/json.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "meta/meta_store.h"
#include "util/sql_db.h"

namespace commcare::meta {

struct MetaStore::Impl {
  std::unique_ptr<util::SqlDb> db;
  std::mutex mu;
  std::string producer;  // the relay's producer mark name (see RelayProducer)
  // username -> (sha256 of the verified password, the user as verified)
  std::unordered_map<std::string, std::pair<std::string, User>> verified;
  // One PBKDF2 verification per user at a time: concurrent first requests of a user wait for
  // it and then hit the cache instead of each spending ~0.1 s of CPU. Striped by a hash of
  // the username, so names tried leave nothing behind.
  std::array<std::mutex, 64> verifying;
  // Bumped by every write through this store and when another process committed (the stored
  // generation changed): a verification that started before a bump is not cached.
  uint64_t generation = 0;
  std::string stored_generation;
  std::mutex relay_mu;  // one relay at a time; guards the two below
  storage::ChangeLog* log = nullptr;
  // The relay's own connection (none for an in-memory store: it then uses db under mu), so a
  // slow or unreachable change log never holds up logins and reads.
  std::unique_ptr<util::SqlDb> relay_db;
  std::string where;

  // Forgets every verified credential if any process wrote since the last look (mu held; a
  // CLI or another server deactivating a user counts at once for this one). meta_store.cc.
  void ForgetIfChangedElsewhere();
  // Forgets every verified credential after a write of this process (mu held). meta_store.cc.
  void Forget();
  // Runs write in one transaction that excludes every other writer, in any process, and bumps
  // the stored generation with it (mu held). meta_store.cc.
  Status Write(const char* what, const std::function<Status()>& write);
  // Queues the change record of a write (inside the write's transaction; mu held).
  // meta_store.cc.
  Status Queue(std::string_view topic, std::string_view document_type, std::string_view id,
               std::string_view domain, bool deletion);
  // A stored document (live or deleted) and its revision (mu held). meta_docs.cc.
  Result<std::optional<Doc>> LoadDoc(std::string_view kind, std::string_view id, bool* deleted);
  // The user with each role's permissions filled in (mu held). meta_users.cc.
  Result<std::optional<User>> LoadUser(std::string_view username);
};

}  // namespace commcare::meta
