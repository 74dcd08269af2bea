// Mobile sync (OTA restore): the cases a phone should hold, streamed as CommCare's restore
// payload, with sync logs for incremental sync.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commcare/engine.h"
#include "commcare/status.h"

namespace commcare {

// The user a restore is for, as the host's user directory knows them (the engine has none).
struct RestoreUser {
  std::string username;
  std::string user_id;
  std::string password_hash;  // sent in <Registration>
  int64_t date_joined = 0;    // µs; 0 = now
  std::vector<std::pair<std::string, std::string>> user_data;
  // CommCare's owner ids: the user id, case-sharing groups, case-sharing locations.
  std::vector<std::string> owner_ids;
};

// One restore request (GET /a/{domain}/phone/restore/).
struct RestoreRequest {
  std::string domain;
  RestoreUser user;
  std::string since;            // the phone's last restore_id; "" for a first sync
  std::string version = "2.0";  // "1.0", "2.0" or "3.0"
  std::string state;            // "ccsh:<32 hex>" the phone's case state hash ("" = unchecked)
  bool items = false;           // put items="N" on the root element
  std::string device_id;
  std::string app_id;
  std::string fixtures;  // <fixture> elements the host built, written after <Registration>
  // "<scheme>://<host>" the phone reaches the server at: case attachments are sent as
  // <url_base>/a/<domain>/api/case/attachment/<case_id>/<name> ("" = that path alone).
  std::string url_base;
  // Send case attachments (HQ's MM_CASE_PROPERTIES toggle; off as in HQ: commcare-core's bulk
  // case parser rejects a restore whose case blocks carry them).
  bool attachments = false;
  bool overwrite_cache = false;  // do not answer from (and do replace) a cached payload
  // Keep this first sync's payload in the cache however fast it was (HQ's force_cache, which
  // its restore-priming task sets); otherwise only one that took over a minute is kept.
  bool force_cache = false;
  // Called with (0, cases to send) before the first case and (sent, total) after each batch;
  // the asynchronous restore task reports it as its progress (unset: not called).
  std::function<void(int64_t done, int64_t total)> progress;
};

// What a restore did.
struct RestoreResult {
  int http_status = 200;    // 200, or 412 with an ota_restore_error payload, or 400
  std::string message;      // why, when not 200
  std::string sync_id;      // the new restore_id
  int64_t cases = 0;        // case blocks written
  int64_t ledgers = 0;      // balance blocks written
  int64_t footprint = 0;    // cases on the phone after this restore
  bool from_cache = false;  // a first sync answered from the payload cache
  bool cached = false;      // this first sync's payload was kept in the cache
  // Milliseconds per phase (changes since the token, livequery, ledgers, payload, log).
  std::vector<std::pair<std::string, double>> timings;
};

// A stored sync log.
struct SyncLogInfo {
  std::string sync_id;
  std::string domain;
  std::string user_id;
  std::string previous_id;
  std::string device_id;
  std::string app_id;
  int64_t date = 0;  // µs: changes at or after this are new to the phone
  std::vector<std::string> owner_ids;
  std::vector<std::string> case_ids;  // on the phone, sorted
  std::string state_hash;             // "ccsh:..." of case_ids
  // Those of case_ids that index other cases (lets the next sync skip the case graph when
  // nothing that changed can alter it), sorted.
  std::vector<std::string> indexed_case_ids;
};

// CommCare's restore error payload: an OpenRosaResponse whose message (nature
// ota_restore_error) is message.
std::string RestoreErrorPayload(std::string_view message);

// HQ's AsyncRestoreResponse body (casexml/apps/phone/restore.py): an OpenRosaResponse whose
// message (nature ota_restore_pending) says a restore for username is under way, then
// <Sync><progress done total retry-after/></Sync>.
std::string RestorePendingPayload(std::string_view username, int64_t done, int64_t total,
                                  int retry_after_seconds);

// CommCare's case state hash: "ccsh:" + hex of the XOR of md5(case_id) over the ids.
std::string CaseStateHash(const std::vector<std::string>& case_ids);

// Restores over an engine's data. Thread safety: every method may be called from any thread.
class Sync {
 public:
  virtual ~Sync() = default;
  // Sync logs at synclog_path for the engine's cases: a SQLite file ("" = in memory), or
  // "postgres:<libpq connection string>" shared by every server of a deployment. With a
  // cache_dir, a first sync that took over a minute to compute (or asked force_cache) is kept
  // there for an hour and answered again as it was (same restore_id) until the user submits
  // (InvalidateCache) or asks overwrite_cache; a fast one is never kept, as in HQ.
  static Result<std::unique_ptr<Sync>> Open(Engine* engine, const std::string& synclog_path,
                                            const std::string& cache_dir = "");

  // Writes the payload, or the error payload.
  using Writer = std::function<Status(int http_status, std::string_view chunk)>;
  // Streams the payload to write (chunks of at most a batch of 1,000 cases, each with the
  // outcome's HTTP status, which is decided before the first) and stores the new sync log. A token
  // that is unknown or another user's, or a state hash that differs from the token's footprint,
  // gives a 412 and an ota_restore_error payload; a bad version 400. An error from write (the
  // client went away) is returned as is, and the new log is then not stored.
  virtual Result<RestoreResult> Restore(const RestoreRequest& request, const Writer& write) = 0;
  // Forgets the user's cached payloads: call it when the user submits.
  virtual void InvalidateCache(std::string_view domain, std::string_view user_id) = 0;
  // A stored sync log; NotFound if there is none.
  virtual Result<SyncLogInfo> GetSyncLog(std::string_view sync_id) = 0;
  // Deletes logs older than max_age_us and, per (user, device, app), all but the newest two
  // (a phone that missed the newest answer retries with the one before); returns how many.
  virtual Result<int64_t> Prune(int64_t max_age_us) = 0;
};

}  // namespace commcare
