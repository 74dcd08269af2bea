// The MetaStore's console sessions (meta_store.h): random ids stored as SHA-256 hashes, each
// with its CSRF token and expiry, in the same database as users so that several servers
// sharing the store share the sessions.
#include <openssl/rand.h>

#include <mutex>
#include <string>
#include <string_view>

#include "meta/meta_store.h"
#include "meta/meta_store_internal.h"
#include "util/hash.h"
#include "util/sql_db.h"
#include "util/time.h"

namespace commcare::meta {
namespace {

// n random bytes as 2n hex digits.
Result<std::string> RandomHex(size_t n) {
  std::string raw(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(n)) != 1)
    return Status::Internal("no randomness for a session id");
  return util::HexEncode(raw.data(), raw.size());
}

bool WellFormedId(std::string_view id) {
  return id.size() == 64 && id.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

int64_t NowSeconds() { return util::NowMicros() / 1'000'000; }

}  // namespace

Result<std::string> MetaStore::CreateSession(std::string_view username, int64_t ttl_seconds,
                                             Session* session) {
  CC_ASSIGN_OR_RETURN(User u, GetUser(username));
  if (!u.is_active) return Status::Unauthenticated("the user is inactive");
  CC_ASSIGN_OR_RETURN(std::string id, RandomHex(32));
  Session s;
  CC_ASSIGN_OR_RETURN(s.csrf_token, RandomHex(32));
  s.username = std::string(username);
  s.created = NowSeconds();
  s.expires = s.created + ttl_seconds;
  std::lock_guard l(impl_->mu);
  CC_RETURN_IF_ERROR(impl_->db
                         ->Run("deleting expired sessions",
                               "DELETE FROM console_sessions WHERE expires<=?", {s.created})
                         .status());
  CC_RETURN_IF_ERROR(
      impl_->db
          ->Run("storing a session",
                "INSERT INTO console_sessions(id_hash, username, csrf, created, expires) "
                "VALUES(?,?,?,?,?)",
                {Sha256Hex(id), s.username, s.csrf_token, s.created, s.expires})
          .status());
  if (session) *session = s;
  return id;
}

Result<Session> MetaStore::GetSession(std::string_view id) {
  if (!WellFormedId(id)) return Status::Unauthenticated("no such session");
  Session s;
  {
    std::lock_guard l(impl_->mu);
    CC_ASSIGN_OR_RETURN(auto r, impl_->db->Run("reading a session",
                                               "SELECT username, csrf, created, expires FROM "
                                               "console_sessions WHERE id_hash=?",
                                               {Sha256Hex(id)}));
    if (r.empty()) return Status::Unauthenticated("no such session (signed out or expired)");
    s.username = std::string(r.Str(0, 0));
    s.csrf_token = std::string(r.Str(0, 1));
    s.created = r.Int(0, 2);
    s.expires = r.Int(0, 3);
  }
  if (NowSeconds() >= s.expires) return Status::Unauthenticated("the session has expired");
  return s;
}

Status MetaStore::DeleteSession(std::string_view id) {
  if (!WellFormedId(id)) return Status::Ok();
  std::lock_guard l(impl_->mu);
  return impl_->db
      ->Run("deleting a session", "DELETE FROM console_sessions WHERE id_hash=?", {Sha256Hex(id)})
      .status();
}

}  // namespace commcare::meta
