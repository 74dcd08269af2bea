// The `commcare` tool's administration commands: admin (domains, users, API keys), restore.
#include <commcare/engine.h>
#include <commcare/pillows.h>
#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "commcare/sync.h"
#include "common.h"
#include "meta/meta_store.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare::cli {

namespace json = boost::json;

namespace {

// commcare restore: the OTA restore payload of a user, to stdout (sync logs kept beside the
// data, so the printed restore_id works as --since next time).
int CmdRestore(const Args& a) {
  if (!a.Has("--domain") || !a.Has("--user")) return Fail("--domain and --user are required");
  auto host = OpenHost(a, Access::kReader);
  if (!host.ok()) return FailStatus(host.status());
  auto meta = (*host)->Meta();
  if (!meta.ok()) return FailStatus(meta.status());
  auto user = (*meta)->GetUser(a.Get("--user"));
  if (!user.ok()) return FailStatus(user.status());
  if (!user->InDomain(a.Get("--domain")))
    return Fail("user " + user->username + " is not in domain " + a.Get("--domain"), 2);
  auto q = commcare::meta::MakeRestoreRequest(*meta, *user, a.Get("--domain"));
  if (!q.ok()) return FailStatus(q.status());
  q->since = a.Get("--since");
  q->version = a.Get("--version", "2.0");
  q->state = a.Get("--state");
  q->device_id = a.Get("--device-id");
  q->items = true;
  auto sync = (*host)->Syncer();
  if (!sync.ok()) return FailStatus(sync.status());
  auto r = (*sync)->Restore(*q, [](int, std::string_view chunk) {
    std::cout.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    return std::cout ? commcare::Status::Ok() : commcare::Status::Unavailable("stdout closed");
  });
  std::cout << std::endl;
  if (!r.ok()) return FailStatus(r.status());
  std::cerr << json::serialize(json::object{{"status", r->http_status},
                                            {"restore_id", r->sync_id},
                                            {"cases", r->cases},
                                            {"footprint", r->footprint}})
            << std::endl;
  return r->http_status == 200 ? 0 : 3;
}

// commcare admin apikey create|list|revoke: a user's API keys (keys are shown once, at
// creation; a list shows ids, creation and expiry).
int CmdApiKey(const std::string& verb, commcare::meta::MetaStore* meta, const Args& a) {
  if (!a.Has("--username")) return Fail("--username is required");
  const std::string user = a.Get("--username");
  auto when = [](int64_t secs) -> json::value {
    return secs > 0 ? json::value(commcare::util::FormatIsoTime(secs * 1'000'000)) : nullptr;
  };
  if (verb == "create") {
    int64_t expires = 0;
    if (a.Has("--expires-days")) {
      int64_t days = 0;
      if (!ParseInt(a.Get("--expires-days"), &days) || days < 1 || days > 3650)
        return Fail("--expires-days must be a whole number of days, 1..3650");
      expires = commcare::util::NowMicros() / 1'000'000 + days * 86'400;
    }
    std::string id;
    auto k = meta->CreateApiKey(user, expires, &id);
    if (!k.ok()) return FailStatus(k.status());
    std::cout << json::serialize(json::object{
                     {"username", user}, {"key", *k}, {"id", id}, {"expires", when(expires)}})
              << std::endl;
    return 0;
  }
  if (verb == "list") {
    auto keys = meta->ListApiKeys(user);
    if (!keys.ok()) return FailStatus(keys.status());
    json::array out;
    for (const auto& k : *keys)
      out.push_back(
          json::object{{"id", k.id}, {"created", when(k.created)}, {"expires", when(k.expires)}});
    std::cout << json::serialize(json::object{{"username", user}, {"api_keys", out}}) << std::endl;
    return 0;
  }
  if (verb == "revoke") {
    if (a.Has("--id") == a.Has("--all")) return Fail("name a key with --id ID, or --all");
    if (Status s = meta->RevokeApiKey(user, a.Has("--all") ? "" : a.Get("--id")); !s.ok())
      return FailStatus(s);
    std::cout << json::serialize(json::object{{"username", user},
                                              {"revoked", a.Has("--all") ? "all" : a.Get("--id")}})
              << std::endl;
    return 0;
  }
  return Fail("unknown admin command 'apikey " + verb + "'");
}

int CmdAdmin(const std::string& verb, const Args& a) {
  // The writer when no server runs (its changes go to the change log now), else beside it (the
  // server relays them).
  auto host = OpenHost(a, Access::kWriterOrReader);
  if (!host.ok()) return FailStatus(host.status());
  auto meta = (*host)->Meta();
  if (!meta.ok()) return FailStatus(meta.status());
  if (verb == "domain create") {
    if (a.pos.size() != 1) return Fail("admin domain create takes one NAME");
    commcare::meta::Domain d;
    d.name = a.pos[0];
    d.secure_submissions = !a.Has("--open-submissions");
    d.async_restore = a.Has("--async-restore");
    d.case_attachments_in_restore = a.Has("--restore-attachments");
    auto r = (*meta)->PutDomain(d);
    if (!r.ok()) return FailStatus(r.status());
    std::cout << json::serialize(json::object{{"domain", r->name}, {"rev", r->rev}}) << std::endl;
    return 0;
  }
  if (verb == "user create") {
    if (!a.Has("--username") || !a.Has("--password") || !a.Has("--domain"))
      return Fail("--username, --password and --domain are required");
    commcare::meta::User u;
    u.username = a.Get("--username");
    u.domains = {a.Get("--domain")};
    u.web_user = a.Has("--web") || a.Has("--superuser");
    u.is_superuser = a.Has("--superuser");
    auto& granted = u.permissions[u.domains.front()];
    granted = {std::string(commcare::meta::kEditData),
               std::string(commcare::meta::kMobileEndpoints)};
    if (u.web_user) {
      granted.emplace_back(commcare::meta::kAccessApi);
      granted.emplace_back(commcare::meta::kManageUsers);
    }
    if (auto old = (*meta)->GetUser(u.username); old.ok()) {
      u.rev = old->rev;
      u.first_name = old->first_name;  // kept unless given again
      u.last_name = old->last_name;
      u.phone_numbers = old->phone_numbers;
    }
    if (a.Has("--first-name")) u.first_name = a.Get("--first-name");
    if (a.Has("--last-name")) u.last_name = a.Get("--last-name");
    if (a.Has("--phone")) {
      u.phone_numbers.clear();
      auto [lo, hi] = a.multi.equal_range("--phone");
      for (auto it = lo; it != hi; ++it) u.phone_numbers.push_back(it->second);
    }
    auto r = (*meta)->PutUser(u, a.Get("--password"));
    if (!r.ok()) return FailStatus(r.status());
    std::cout << json::serialize(json::object{
                     {"username", r->username}, {"user_id", r->user_id}, {"rev", r->rev}})
              << std::endl;
    return 0;
  }
  if (verb.rfind("apikey ", 0) == 0) return CmdApiKey(verb.substr(7), *meta, a);
  return Fail("unknown admin command '" + verb + "'");
}

}  // namespace

void RegisterAdminCommands(Cli* cli) {
  cli->Add(nullptr, "restore", "a user's OTA restore payload, to stdout", CmdRestore)
      .Str("--domain", "the domain", true)
      .Str("--user", "the username", true)
      .Str("--since", "the last restore_id (incremental sync)")
      .Str("--state", "ccsh:HASH, the phone's case state")
      .Choice("--version", "the restore format (default 2.0)", {"1.0", "2.0", "3.0"})
      .Str("--device-id", "the device id");
  CLI::App* admin = cli->Group(nullptr, "admin", "domains, users and API keys");
  CLI::App* domain = cli->Group(admin, "domain", "domains");
  cli->Add(domain, "create", "create a domain",
           [](const Args& a) { return CmdAdmin("domain create", a); })
      .Flag("--open-submissions", "accept submissions without credentials")
      .Flag("--async-restore", "restores run as tasks, 202 with progress (HQ's ASYNC_RESTORE)")
      .Flag("--restore-attachments", "restores carry case attachments (HQ's MM_CASE_PROPERTIES)")
      .Positional("NAME", "the domain's name");
  CLI::App* user = cli->Group(admin, "user", "users");
  cli->Add(user, "create", "create (or update) a user",
           [](const Args& a) { return CmdAdmin("user create", a); })
      .Str("--username", "the username", true)
      .Str("--password", "the password", true)
      .Str("--domain", "the user's domain", true)
      .Flag("--web", "a web user (API access, user management)")
      .Flag("--superuser", "a superuser")
      .Str("--first-name", "the user's first name (the restore's commcare_first_name)")
      .Str("--last-name", "the user's last name (commcare_last_name)")
      .Many("--phone", "a phone number (repeatable; the first is commcare_phone_number)");
  CLI::App* apikey = cli->Group(admin, "apikey", "a user's API keys");
  cli->Add(apikey, "create", "mint an API key (shown once)",
           [](const Args& a) { return CmdAdmin("apikey create", a); })
      .Str("--username", "the user", true)
      .Int("--expires-days", "days until it expires", 1);
  cli->Add(apikey, "list", "a user's API keys",
           [](const Args& a) { return CmdAdmin("apikey list", a); })
      .Str("--username", "the user", true);
  cli->Add(apikey, "revoke", "revoke one key (--id) or all (--all)",
           [](const Args& a) { return CmdAdmin("apikey revoke", a); })
      .Str("--username", "the user", true)
      .Str("--id", "the key's id")
      .Flag("--all", "every key of the user");
}

}  // namespace commcare::cli
