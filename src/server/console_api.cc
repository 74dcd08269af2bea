// The console's data routes that the Case and Form APIs lack (docs/console.md):
//   GET  /a/{domain}/api/console/case/{id}/history  the case, its transactions (oldest first)
//        and the forms that touched it (who, when, state);
//   POST /a/{domain}/api/console/form/{id}/archive | unarchive  archives or restores a form
//        (its case changes are revoked or replayed), answering the form as it is now.
// API access to read; edit-data as well to archive. A console session's POST also needs its
// CSRF token (checked with the session in auth.cc).
#include <fmt/format.h>

#include <boost/json.hpp>
#include <set>

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

}  // namespace

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
