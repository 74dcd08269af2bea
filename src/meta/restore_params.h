// A restore's parameters apart from who asks (HQ's get_restore_params, corehq/apps/ota/views.py),
// as JSON so that an asynchronous restore task can carry them, and the request they make.
#pragma once

#include <string>
#include <string_view>

#include "commcare/status.h"
#include "commcare/sync.h"
#include "meta/meta_store.h"

namespace commcare::meta {

// The task type that runs an asynchronous restore (src/host/restore_task.cc) with a
// RestoreParams payload.
inline constexpr const char* kAsyncRestoreTask = "restore.async";

struct RestoreParams {
  std::string username;        // the user restored: the caller, or the `as` user
  bool hide_password = false;  // restoring as another user: their password hash is not sent
  std::string since, version = "2.0", state, device_id, app_id;
  std::string url_base;  // "<scheme>://<host>" the phone reached the server at
  bool items = false, overwrite_cache = false, skip_fixtures = false;
  std::string ToJson() const;
  // InvalidArgument names a missing or mistyped field.
  static Result<RestoreParams> FromJson(std::string_view text);
};

// The request params make for user (params.username) of domain: MakeRestoreRequest's owner
// ids, registration data and fixtures, with the route's parameters applied.
Result<RestoreRequest> MakeRestoreRequest(MetaStore* meta, const User& user,
                                          const std::string& domain, const RestoreParams& params);

}  // namespace commcare::meta
