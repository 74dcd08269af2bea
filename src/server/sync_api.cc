// The reference server's mobile sync routes: the OTA restore, and the case attachments its
// payload points the phone at.
#include <fmt/format.h>

#include <cstdlib>

#include "commcare/sync.h"
#include "meta/restore_params.h"
#include "server/app.h"
#include "server/request_parse.h"
#include "server/responses.h"

namespace commcare::server {

using http::Request;
using http::Response;

namespace {

// HQ answers a refused `as` with a plain-text 401 (get_restore_response, corehq/apps/ota/
// views.py).
Response PlainUnauthorized(std::string message) {
  Response out;
  out.status = 401;
  out.content_type = "text/plain; charset=utf-8";
  out.body = std::move(message);
  return out;
}

// Whether the client speaks OpenRosa 2.0 or later (HQ's OPENROSA_VERSION_MAP['ASYNC_RESTORE']):
// the X-OpenRosa-Version header, else the openrosa_version parameter, as get_restore_params.
bool OpenRosaAtLeast2(const Request& r) {
  const std::string* h = r.Header("x-openrosa-version");
  const std::string v = h ? *h : r.Param("openrosa_version");
  return std::strtol(v.c_str(), nullptr, 10) >= 2;
}

}  // namespace

// GET /a/{domain}/phone/restore/[{app_id}/]: OTA restore, streamed. Parameters: since, version,
// state, items, device_id, as (restore as another user: needs manage_users), user_id (must
// name the authenticated user), overwrite_cache (ignore and replace a cached first sync),
// skip_fixtures. In a domain with async_restore, an OpenRosa 2.0 client's restore runs as a
// task (async_restore.cc).
Response App::RestoreApi(const Request& r, const std::string& domain, const std::string& app_id) {
  if (r.method != "GET") return Error(405, "restore is a GET");
  Response deny;
  auto user = Admit(r, domain, meta::kMobileEndpoints, &deny);
  if (!user) return deny;
  if (!sync_) return Error(503, "this server does not serve mobile sync");
  // As HQ's get_restore_response: user_id names the authenticated user (a phone of a user
  // deleted and made again under the same name must restore afresh).
  if (auto id = r.query.find("user_id"); id != r.query.end() && id->second != user->user_id)
    return OtaXml(412, RestoreErrorPayload("Attempt to sync with invalid user."));
  meta::User target = *user;
  // Any parameter other than those read here is ignored, as HQ's get_restore_params reads the
  // ones it knows and nothing else (case_sync, cache busters, ...).
  if (auto as = r.query.find("as"); as != r.query.end()) {
    const std::string& v = as->second;
    // The permission first (HQ looks the user up first): a caller who may not restore as
    // anyone learns nothing of which users exist.
    if (!user->Can(domain, meta::kManageUsers))
      return PlainUnauthorized(
          fmt::format("{} does not have permissions to restore as {}", user->username, v));
    std::string name = v.find('@') == std::string::npos ? v : v.substr(0, v.find('@'));
    auto t = meta_->GetUser(name);
    // As HQ: only a mobile worker of this domain can be restored as; 401 in plain text.
    if (!t.ok() || !t->InDomain(domain) || !t->is_active || t->is_superuser || t->web_user ||
        t->domains.size() != 1)
      return PlainUnauthorized(fmt::format("Invalid restore as user {}", v));
    target = *t;
  }
  auto parsed = RestoreParamsFromRequest(r, app_id);
  if (!parsed.ok()) return OtaXml(412, RestoreErrorPayload(parsed.status().message()));
  meta::RestoreParams p = std::move(*parsed);
  p.username = target.username;
  p.hide_password = target.username != user->username;
  if (tasks_ && OpenRosaAtLeast2(r))
    if (auto d = meta_->GetDomain(domain); d.ok() && d->async_restore)
      return AsyncRestore(domain, target, p);
  auto q = meta::MakeRestoreRequest(meta_, target, domain, p);
  if (!q.ok()) return OtaXml(500, RestoreErrorPayload(q.status().message()));
  auto slot = TakeSlot(&streams_, user->username, limits_.streams_per_user, limits_.streams);
  if (!slot) {
    Response busy = OtaXml(
        429, RestoreErrorPayload("too many restores in progress for this user or the server"));
    busy.headers.emplace_back("Retry-After", "5");
    return busy;
  }
  Response out = OtaXml(200, "");
  out.stream = [this, q = std::move(*q), slot](const http::ChunkWriter& write) {
    auto res = sync_->Restore(q, write);
    return res.ok() ? Status::Ok() : res.status();
  };
  return out;
}

// GET /a/{domain}/api/case/attachment/{case_id}/{name} (and HQ's newer
// .../api/case_attachment/v1/{case_id}/{name}): a case attachment's bytes, the URL a restore
// writes as the attachment's src (HQ's CaseAttachmentAPI, corehq/apps/api/urls.py
// api_case_attachment). A phone fetches it with its own credentials, so a mobile worker of the
// domain may, as may an API user.
Response App::CaseAttachment(const Request& r, const std::string& domain, const std::string& rest) {
  if (r.method != "GET" && r.method != "HEAD") return Error(405, "use GET");
  Response deny;
  auto user = Admit(r, domain, "", &deny);
  if (!user) return deny;
  if (!user->Can(domain, meta::kMobileEndpoints) && !user->Can(domain, meta::kAccessApi))
    return Error(403, fmt::format("user {} may not read case attachments of domain {}",
                                  user->username, domain));
  const auto slash = rest.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == rest.size())
    return Error(404, "name a case and an attachment: .../attachment/{case_id}/{name}");
  const std::string case_id = rest.substr(0, slash), name = rest.substr(slash + 1);
  auto c = engine_->GetCase(domain, case_id);
  if (!c.ok()) return Error(StatusFor(c.status()), c.status().message());
  const commcare::CaseAttachment* att = nullptr;
  for (const auto& a : c->attachments)
    if (a.name == name) att = &a;
  if (!att || c->deleted)
    return Error(404, fmt::format("case '{}' has no attachment '{}'", case_id, name));
  // The bytes are the form attachment the case's attachment came from: the newest form of the
  // case holding that blob.
  auto history = engine_->CaseHistory(domain, case_id);
  if (!history.ok()) return Error(StatusFor(history.status()), history.status().message());
  for (auto t = history->rbegin(); t != history->rend(); ++t) {
    if (t->form_id.empty() || t->revoked) continue;
    auto f = engine_->GetForm(domain, t->form_id);
    if (!f.ok()) continue;
    for (const auto& fa : f->attachments) {
      if (att->blob_key.empty() ? fa.name != att->src : fa.blob_key != att->blob_key) continue;
      auto data = engine_->GetFormAttachment(domain, t->form_id, fa.name);
      if (!data.ok()) return Error(StatusFor(data.status()), data.status().message());
      Response out;
      out.content_type = !att->content_type.empty() ? att->content_type
                         : !fa.content_type.empty() ? fa.content_type
                                                    : "application/octet-stream";
      out.body = std::move(*data);
      return out;
    }
  }
  return Error(404,
               fmt::format("the content of attachment '{}' of case '{}' is gone", name, case_id));
}

}  // namespace commcare::server
