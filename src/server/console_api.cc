// The console's data routes that the Case and Form APIs lack (docs/console.md):
//   GET  /a/{domain}/api/console/case/{id}/history  the case, its transactions (oldest first)
//        and the forms that touched it (who, when, state);
//   POST /a/{domain}/api/console/form/{id}/archive | unarchive  archives or restores a form
//        (its case changes are revoked or replayed), answering the form as it is now.
// API access to read; edit-data as well to archive. A console session's POST also needs its
// CSRF token (checked with the session in auth.cc). And, for superusers (a pillow spans
// domains), a pillow's retry queue:
//   GET  /console/api/pillows/{name}/retries  {"retries": [entry...]} (dead letters included);
//   POST /console/api/pillows/{name}/requeue  {"doc_id": "" (all) or an id, "include_dead"}
//        makes those entries due now with their attempts reset: {"requeued": n}.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <set>

#include "commcare/pillows.h"
#include "server/app.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

// "case/{id}/history" -> ("case", id, "history"); false if rest has another shape.
bool SplitRest(std::string rest, std::string* kind, std::string* id, std::string* action) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  auto a = rest.find('/');
  auto b = rest.rfind('/');
  if (a == std::string::npos || a == b || a == 0 || b == a + 1) return false;
  *kind = rest.substr(0, a);
  *id = rest.substr(a + 1, b - a - 1);
  *action = rest.substr(b + 1);
  return id->find('/') == std::string::npos;
}

// The body of a requeue: {"doc_id": string, "include_dead": bool}, both optional.
Status RequeueFields(const std::string& body, std::string* doc_id, bool* include_dead) {
  if (body.empty()) return Status::Ok();
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("the body must be a JSON object");
  for (const auto& [k, val] : v.get_object()) {
    if (k == "doc_id" && val.is_string())
      *doc_id = std::string(val.get_string());
    else if (k == "include_dead" && val.is_bool())
      *include_dead = val.get_bool();
    else
      return Status::InvalidArgument(
          fmt::format("\"{}\": expected \"doc_id\" (a string) and \"include_dead\" (true or false)",
                      std::string(k)));
  }
  return Status::Ok();
}

}  // namespace

Response App::PillowQueue(const Request& r, const std::string& rest) {
  const auto slash = rest.find('/');
  const std::string name = http::UrlDecode(rest.substr(0, slash), false);
  const std::string action = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (name.empty() || (action != "retries" && action != "requeue"))
    return Error(404, "no such route: pillows/{name}/retries or pillows/{name}/requeue");
  if (r.method != (action == "retries" ? "GET" : "POST"))
    return Error(405, action == "retries" ? "use GET" : "requeue with POST");
  auto user = Authenticate(r);
  if (!user.ok()) return Unauthorized(user.status());
  if (!user->is_superuser)
    return Error(403,
                 "only superusers see and requeue a pillow's retries (a pillow spans domains)");
  if (!pillows_) return Error(404, "no pillows run beside this server");
  if (action == "retries") {
    auto list = pillows_->Retries(name);
    if (!list.ok()) return Error(StatusFor(list.status()), list.status().message());
    json::array out;
    for (const auto& e : *list) out.push_back(json::parse(RetryEntryToJson(e)));
    return Json(200, json::object{{"pillow", name}, {"retries", out}});
  }
  std::string doc_id;
  bool include_dead = false;
  if (Status st = RequeueFields(r.body, &doc_id, &include_dead); !st.ok())
    return Error(400, st.message());
  auto n = pillows_->Requeue(name, doc_id, include_dead);
  if (!n.ok()) return Error(StatusFor(n.status()), n.status().message());
  return Json(200, json::object{{"pillow", name}, {"requeued", *n}});
}

Response App::ConsoleApi(const Request& r, const std::string& domain, const std::string& rest) {
  std::string kind, id, action;
  if (!SplitRest(rest, &kind, &id, &action)) return Error(404, "no such console route");
  const bool history = kind == "case" && action == "history";
  const bool archive = kind == "form" && (action == "archive" || action == "unarchive");
  if (!history && !archive) return Error(404, "no such console route");
  if (r.method != (history ? "GET" : "POST"))
    return Error(405, history ? "use GET" : "archive and unarchive with POST");
  Response deny;
  auto user = Admit(r, domain, meta::kAccessApi, &deny);
  if (!user) return deny;
  if (history) {
    auto c = engine_->GetCase(domain, id);
    if (!c.ok()) return Error(StatusFor(c.status()), c.status().message());
    auto txs = engine_->CaseHistory(domain, id);
    if (!txs.ok()) return Error(StatusFor(txs.status()), txs.status().message());
    json::array transactions, forms;
    std::set<std::string> seen;
    for (const auto& t : *txs) {
      transactions.push_back(json::parse(CaseTransactionToJson(t)));
      if (t.form_id.empty() || !seen.insert(t.form_id).second) continue;
      auto f = engine_->GetForm(domain, t.form_id);
      if (f.ok()) forms.push_back(json::parse(FormToJson(*f)));
    }
    return Json(200, json::object{{"case", json::parse(CaseToJson(*c))},
                                  {"transactions", transactions},
                                  {"forms", forms}});
  }
  if (!user->Can(domain, meta::kEditData))
    return Error(403,
                 fmt::format("user {} may not edit data in domain {}", user->username, domain));
  Status st =
      action == "archive" ? engine_->ArchiveForm(domain, id) : engine_->UnarchiveForm(domain, id);
  if (!st.ok()) return Error(StatusFor(st), st.message());
  auto f = engine_->GetForm(domain, id);
  if (!f.ok()) return Error(StatusFor(f.status()), f.status().message());
  return Json(200, json::parse(FormToJson(*f)));
}

}  // namespace commcare::server
