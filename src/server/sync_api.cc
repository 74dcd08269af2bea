// The reference server's mobile sync routes: the OTA restore, and the case attachments its
// payload points the phone at.
#include <fmt/format.h>

#include "commcare/sync.h"
#include "server/app.h"
#include "server/responses.h"

namespace commcare::server {

using http::Request;
using http::Response;

// GET /a/{domain}/phone/restore/[{app_id}/]: OTA restore, streamed. Parameters: since, version,
// state, items, device_id, as (restore as another user: needs manage_users), user_id (must
// name the user restored), overwrite_cache (ignore and replace a cached first sync).
Response App::RestoreApi(const Request& r, const std::string& domain, const std::string& app_id) {
  if (r.method != "GET") return Error(405, "restore is a GET");
  Response deny;
  auto user = Admit(r, domain, meta::kMobileEndpoints, &deny);
  if (!user) return deny;
  if (!sync_) return Error(503, "this server does not serve mobile sync");
  auto ota_error = [](int status, std::string_view msg) {
    Response out;
    out.status = status;
    out.content_type = "text/xml; charset=utf-8";
    out.body = RestoreErrorPayload(msg);
    return out;
  };
  meta::User target = *user;
  for (const auto& [k, v] : r.query) {
    if (k == "as") {
      if (!user->Can(domain, meta::kManageUsers))
        return ota_error(403,
                         fmt::format("user {} may not restore as another user", user->username));
      std::string name = v.find('@') == std::string::npos ? v : v.substr(0, v.find('@'));
      auto t = meta_->GetUser(name);
      // As HQ: only a mobile worker of this domain can be restored as.
      if (!t.ok() || !t->InDomain(domain) || !t->is_active || t->is_superuser || t->web_user ||
          t->domains.size() != 1)
        return ota_error(404, fmt::format("no active mobile worker {} in domain {}", name, domain));
      target = *t;
    }
    // Any other parameter is ignored, as HQ's get_restore_params (corehq/apps/ota/views.py)
    // reads the ones it knows and nothing else (case_sync, cache busters, ...).
  }
  if (auto id = r.query.find("user_id"); id != r.query.end() && id->second != target.user_id)
    return ota_error(
        412, fmt::format("user_id {} is not the user restored ({})", id->second, target.username));
  const std::string state = r.Param("state");
  // "ccsh:" is the empty footprint's hash (what a phone without cases sends).
  if (!state.empty() &&
      ((state.size() != 37 && state.size() != 5) || state.rfind("ccsh:", 0) != 0 ||
       state.find_first_not_of("0123456789abcdef", 5) != std::string::npos))
    return ota_error(412,
                     fmt::format("state '{}' is not a case state hash (ccsh:[32 hex])", state));
  auto q = meta::MakeRestoreRequest(meta_, target, domain);
  if (!q.ok()) return ota_error(500, q.status().message());
  if (target.username != user->username) q->user.password_hash.clear();  // never another's
  auto slot = TakeSlot(&streams_, user->username, limits_.streams_per_user, limits_.streams);
  if (!slot) {
    Response busy = ota_error(429, "too many restores in progress for this user or the server");
    busy.headers.emplace_back("Retry-After", "5");
    return busy;
  }
  q->since = r.Param("since");
  q->version = r.Param("version", "2.0");
  q->state = state;
  q->items = r.Param("items") == "true";
  q->device_id = r.Param("device_id");
  q->app_id = app_id;
  if (const auto* host = r.Header("host"))  // where the phone fetches case attachments
    q->url_base = fmt::format("{}://{}", r.tls ? "https" : "http", *host);
  q->overwrite_cache = r.Param("overwrite_cache") == "true";
  if (r.Param("skip_fixtures") == "true" && !q->since.empty()) q->fixtures.clear();
  Response out;
  out.content_type = "text/xml; charset=utf-8";
  out.headers.emplace_back("X-OpenRosa-Version", "1.0");
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
