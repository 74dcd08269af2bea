// MetaStore (CouchDB's role): domains, users (PBKDF2 passwords, API keys), roles, groups,
// locations and apps, in <data>/meta.sqlite or, shared by every process of a deployment, in a
// PostgreSQL database (jsonb documents). Documents carry revisions; a stale write is refused
// (Aborted), across processes too. Every write queues a change record in the same transaction;
// Relay moves them into the change log (topics domain, commcare-user, web-user, role, group,
// location, app).
#pragma once

#include <boost/json.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"
#include "commcare/sync.h"

namespace commcare::storage {
class ChangeLog;
}

namespace commcare::meta {

// Permissions a user can hold in a domain (CommCare's role permissions).
inline constexpr std::string_view kEditData = "edit_data";
inline constexpr std::string_view kAccessApi = "access_api";
inline constexpr std::string_view kMobileEndpoints = "access_mobile_endpoints";
inline constexpr std::string_view kManageUsers = "manage_users";

// The realm of Digest challenges and of the partial digests stored with users.
inline constexpr std::string_view kDigestRealm = "commcare";

// Lower-case hex SHA-256 of s.
std::string Sha256Hex(std::string_view s);

struct Domain {
  std::string name;
  bool secure_submissions = true;  // unauthenticated submissions refused
  // HQ's ASYNC_RESTORE toggle: restores of OpenRosa >= 2.0 clients run as tasks, answered 202
  // with progress until the payload is ready (docs/sync.md).
  bool async_restore = false;
  // HQ's MM_CASE_PROPERTIES toggle: restores carry case attachments (<attachment> with
  // from="remote" URLs). Off by default, as in HQ: commcare-core's bulk case parser
  // (BulkProcessingCaseXmlParser) rejects the whole restore when a case block has one.
  bool case_attachments_in_restore = false;
  int64_t rev = 0;
};

struct User {
  std::string username;
  std::string user_id;               // 32 hex digits
  bool web_user = false;             // web users may belong to several domains
  std::vector<std::string> domains;  // a mobile worker has exactly one
  bool is_superuser = false;         // every domain, every permission
  bool is_active = true;
  // Granted directly, per domain membership (a grant in one domain counts in no other).
  std::map<std::string, std::vector<std::string>> permissions;
  std::map<std::string, std::string> role_ids;  // domain -> role id
  std::vector<std::string> location_ids;        // assigned locations (case ownership)
  boost::json::object user_data;                // custom fields (restore's user_data)
  // HQ's CouchUser first_name, last_name and phone_numbers (the first is the default number,
  // default_phone_number): the restore's commcare_first_name, _last_name and _phone_number.
  std::string first_name, last_name;
  std::vector<std::string> phone_numbers;
  // µs; when the user was first stored (HQ's date_joined, the restore's Registration <date>).
  // PutUser keeps the stored value; a new user gets the one given, or now.
  int64_t date_joined = 0;
  // Not stored: each role's permissions, by domain, as read with the user.
  std::map<std::string, std::vector<std::string>> role_permissions;
  std::string password_hash;  // Django's "pbkdf2_sha256$<iterations>$<salt>$<base64>"
  // HTTP Digest (RFC 7616) needs H(username:realm:password), kept per algorithm as
  // django_digest's partial digests are: hex MD5 and hex SHA-256, realm kDigestRealm.
  std::string digest_md5, digest_sha256;
  int64_t rev = 0;  // 0 for a new user; a put must name the stored rev
  bool InDomain(std::string_view domain) const;
  bool Can(std::string_view domain, std::string_view permission) const;
};

// A domain-scoped document that is not a user or a domain. kind is one of kDocKinds; the fields
// are in body (validated per kind: PutDoc names the bad field). Ids are generated when empty.
struct Doc {
  std::string kind, id, domain;
  boost::json::object body;
  int64_t rev = 0;
};
// role: name, permissions[]. group: name, users[] (user ids), case_sharing, reporting, metadata.
// location: name, site_code, location_type, parent_id, shares_cases, view_descendants, metadata.
// app: name and any other fields, kept as given.
// lookup_table (HQ's lookup table, FixtureDataType): tag, fields[] ({field_name, properties[],
// is_indexed} or a name), item_attributes[], is_global, is_indexed, description.
// lookup_item (a row, FixtureDataItem): table_id, fields {name: value or [{value,
// properties{}}]}, item_attributes {}, sort_key, owners {users[], groups[], locations[]}.
// meta_lookup.cc validates both and writes them as item-list fixtures.
inline constexpr std::string_view kDocKinds[] = {"role", "group",        "location",
                                                 "app",  "lookup_table", "lookup_item"};

// A user as stored but for the credentials and the revision ("permissions" by domain).
boost::json::object UserProfile(const User& u);

// UserProfile plus "_rev" (what a client must send back to update the user). With a domain,
// as a member of that domain sees it: "permissions" is the list granted in that domain.
boost::json::object UserJson(const User& u, std::string_view domain = "");

// Applies the admin API's user fields from o to u: password (into *password, at least 4
// characters), is_active, web_user, role_id and permissions (both for domain; a null role_id
// removes it), location_ids, user_data, first_name, last_name, phone_numbers (strings; the
// first is the default), domains (the caller decides who may set it). "username", "_rev" and
// "revoke_api_keys" are skipped; InvalidArgument names a field that is unknown, of the wrong
// type or not settable (date_joined).
Status ApplyUserFields(const boost::json::object& o, std::string_view domain, User* u,
                       std::string* password);

// An API key as listed: never the key itself.
struct ApiKeyInfo {
  std::string id;       // the first 16 hex digits of the key's SHA-256 (names it for revoking)
  int64_t created = 0;  // seconds since the epoch
  int64_t expires = 0;  // seconds since the epoch; 0: never
};

// PBKDF2-HMAC-SHA256 with a fresh random salt, in Django's format.
std::string HashPassword(std::string_view password, int iterations = 260'000);
// Whether password matches a HashPassword result (constant-time compare).
bool VerifyPassword(std::string_view password, std::string_view hash);

// Where a data directory's users and domains (file "meta.sqlite") or sync logs (file
// "synclogs.sqlite") live: that file in it, or "postgres:<connection string>" when its
// commcare.json names a shared "meta" database. For MetaStore::Open and Sync::Open.
std::string StoreAt(const std::string& data_dir, std::string_view file);

// A web console session (meta_sessions.cc): who signed in, the token the console must send
// back in X-CSRF-Token with every state-changing request, and when it ends.
struct Session {
  std::string username;
  std::string csrf_token;  // 64 hex digits
  int64_t created = 0;     // seconds since the epoch
  int64_t expires = 0;     // seconds since the epoch
};

class MetaStore;

// A restore request for a user of the domain: owner ids, registration data and fixtures from
// the MetaStore.
Result<RestoreRequest> MakeRestoreRequest(MetaStore* meta, const User& user,
                                          const std::string& domain);

class MetaStore {
 public:
  // Opens (and migrates) the store at where: a SQLite file path, or "postgres:<libpq
  // connection string>" (tables in the schema commcare_meta).
  static Result<std::unique_ptr<MetaStore>> Open(const std::string& where);
  ~MetaStore();

  // Creates or updates a domain (rev must match the stored one; 0 to create).
  Result<Domain> PutDomain(Domain d);
  Result<Domain> GetDomain(std::string_view name);
  Result<std::vector<Domain>> ListDomains();

  // Creates or updates a user; a non-empty password is hashed into password_hash. Stale rev:
  // Aborted; unknown domain: NotFound.
  Result<User> PutUser(User u, std::string_view password = "");
  Result<User> GetUser(std::string_view username);
  Result<std::vector<User>> ListUsers(std::string_view domain);

  // Creates (rev 0) or updates a document; Aborted for a stale rev, InvalidArgument naming the
  // field that does not fit, NotFound for an unknown domain.
  Result<Doc> PutDoc(Doc d);
  // A live document of the domain; NotFound otherwise.
  Result<Doc> GetDoc(std::string_view kind, std::string_view domain, std::string_view id);
  // The live documents of a kind in the domain, by id.
  Result<std::vector<Doc>> ListDocs(std::string_view kind, std::string_view domain);
  // Deletes a document at revision rev (Aborted if stale; FailedPrecondition for a location
  // with children or a role still assigned).
  Status DeleteDoc(std::string_view kind, std::string_view domain, std::string_view id,
                   int64_t rev);
  // A group the user shares cases through: a case-sharing group they are in, or one of their
  // case-sharing locations as HQ fakes a group of it (SQLLocation.case_sharing_group_object:
  // id = the location id, name = "<path>-Cases", metadata commcare_location_type and
  // commcare_location_<key> of the location's metadata).
  struct SharingGroup {
    std::string id, name;
    boost::json::object metadata;
  };
  // The domain's locations and groups, read once for what a restore derives from them.
  struct Directory {
    std::vector<Doc> locations, groups;
  };
  Result<Directory> ReadDirectory(std::string_view domain);
  // The user's case-sharing groups in a domain as HQ's CommCareUser.get_case_sharing_groups
  // lists them: the locations' first (with their descendants where view_descendants is set),
  // then the groups.
  static std::vector<SharingGroup> CaseSharingGroups(const User& user, const Directory& dir);
  // CommCare's owner ids of a user in a domain: the user id, then the ids of
  // CaseSharingGroups, sorted.
  static std::vector<std::string> OwnerIds(const User& user, const Directory& dir);
  Result<std::vector<std::string>> OwnerIds(const User& user, std::string_view domain);

  // The restore fixtures of a user, in HQ's order: "user-groups" (CaseSharingGroups with their
  // group_data, as HQ's UserGroupsFixtureProvider: the phone takes its owner ids from it), the
  // lookup tables ("item-list:<tag>", meta_lookup.cc) and "locations" (HQ's flat fixture).
  Result<std::string> Fixtures(const User& user, std::string_view domain, const Directory& dir);
  Result<std::string> Fixtures(const User& user, std::string_view domain);
  // The "item-list:<tag>" fixtures (with their schemas) of the lookup tables the user sees.
  Result<std::string> LookupFixtures(const User& user, std::string_view domain,
                                     const Directory& dir);

  // From now on every write relays its change records into log right after committing; also
  // relays what earlier writes left queued. log must outlive the store.
  Status SetChangeLog(storage::ChangeLog* log);
  // Appends queued change records to the change log with this store's producer mark in the
  // same batch (a crash between append and dequeue never appends twice). Ok without a log.
  Status Relay();
  // The producer mark's name: "relay-meta-<random id>" kept in the store, so several stores
  // (one per server process) relay into one change log without mistaking each other's marks.
  const std::string& RelayProducer() const;

  // The active user with this username and password (Unauthenticated otherwise; Unavailable
  // when the store cannot be read, a cached login included). A repeat of a
  // verified credential is answered from memory; any PutUser of that user forgets it.
  Result<User> Authenticate(std::string_view username, std::string_view password);
  // A new API key for the user (returned once; stored as a hash), valid until expires
  // (seconds since the epoch; 0: no expiry). *id names it for ListApiKeys/RevokeApiKey.
  Result<std::string> CreateApiKey(std::string_view username, int64_t expires = 0,
                                   std::string* id = nullptr);
  // The user's keys, oldest first.
  Result<std::vector<ApiKeyInfo>> ListApiKeys(std::string_view username);
  // Revokes one key of the user (NotFound if it has no such key), or all ("" as id).
  Status RevokeApiKey(std::string_view username, std::string_view id);
  // The active user owning this key, if it has not expired.
  Result<User> AuthenticateApiKey(std::string_view username, std::string_view key);

  // Console sessions, kept here (not in a server's memory) so every server of a deployment
  // sharing this store knows them. Only the SHA-256 of a session id is stored.
  // A new session of the user lasting ttl_seconds: its id (64 hex digits, 256 random bits),
  // returned once; *session receives what is stored. Expired sessions are deleted on the way.
  Result<std::string> CreateSession(std::string_view username, int64_t ttl_seconds,
                                    Session* session);
  // The live session with this id; Unauthenticated when there is none or it has expired.
  Result<Session> GetSession(std::string_view id);
  // Ends the session with this id (Ok when there was none).
  Status DeleteSession(std::string_view id);

 private:
  struct Impl;
  Status CheckLookupDoc(const Doc& d);  // a lookup_table or lookup_item's fields (PutDoc)
  void RelayAfterWrite();               // Relay, logging a failure (the changes stay queued)
  explicit MetaStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace commcare::meta
