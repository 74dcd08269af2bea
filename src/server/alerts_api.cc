// Reminders (conditional alerts) over REST (include/commcare/reminders.h), under
// /a/{domain}/api/alerts/:
//   GET  ./                 the domain's alerts {"objects": [...]}; POST adds one (201)
//   GET|PUT|DELETE ./{name} one alert; PUT saves it (201 new, 200 replaced)
//   POST ./{name}/check     queues reminder.check now (202 with the task: api/tasks/{id}/)
//   GET  ./messages/        the message log, newest first: ?alert=&case_id=&outcome=&limit=
//                           &offset= → {"meta": {"limit", "offset", "next"}, "objects": [...]}
// "domain" (and "name" under .../{name}) default to the URL's. Reading needs API access,
// changing and checking edit-data. "messages" is the log's, never an alert's name.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstdlib>

#include "commcare/reminders.h"
#include "server/app.h"
#include "server/named_definitions.h"
#include "server/responses.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

Response Fail(const Status& s) { return Error(StatusFor(s), s.message()); }

// A whole number >= min from the query, or def when absent.
bool QueryInt(const Request& r, const char* name, int64_t def, int64_t min, int64_t* out) {
  const std::string text = r.Param(name);
  *out = def;
  if (text.empty()) return true;
  char* end = nullptr;
  *out = std::strtoll(text.c_str(), &end, 10);
  return !*end && *out >= min;
}

Response Messages(const Request& r, Host* host, const std::string& domain) {
  if (r.method != "GET") return Error(405, "GET .../alerts/messages/");
  ReminderMessageQuery m;
  m.domain = domain;
  m.alert = r.Param("alert");
  m.case_id = r.Param("case_id");
  m.outcome = r.Param("outcome");
  if (!QueryInt(r, "limit", 100, 1, &m.limit) || m.limit > 10'000)
    return Error(400, "limit: must be a whole number, 1..10000");
  if (!QueryInt(r, "offset", 0, 0, &m.offset))
    return Error(400, "offset: must be a whole number >= 0");
  auto rows = ListReminderMessages(host, m);
  if (!rows.ok()) return Fail(rows.status());
  json::array objects;
  for (const auto& line : *rows) objects.push_back(json::parse(line));
  json::value next = nullptr;
  if (static_cast<int64_t>(objects.size()) == m.limit)
    next = fmt::format("?alert={}&case_id={}&outcome={}&limit={}&offset={}", UrlEncode(m.alert),
                       UrlEncode(m.case_id), UrlEncode(m.outcome), m.limit, m.offset + m.limit);
  return Json(200,
              json::object{{"meta", {{"limit", m.limit}, {"offset", m.offset}, {"next", next}}},
                           {"objects", std::move(objects)}});
}

}  // namespace

Response App::AlertsApi(const Request& r, const std::string& domain, std::string rest) {
  if (auto stop = AdmitNamed(r, domain, "use GET, POST, PUT or DELETE")) return *stop;
  if (!host_) return Error(503, "this server has no reminders");
  const NamedPath path = SplitNamedPath(std::move(rest));
  if (path.name == "messages" && path.verb.empty()) return Messages(r, host_, domain);
  if (path.verb == "check") {
    if (r.method != "POST") return Error(405, "POST .../{name}/check");
    auto id = CheckAlertLater(host_, domain, path.name);
    if (!id.ok()) return Fail(id.status());
    auto t = tasks_->Get(*id);
    if (!t.ok()) return Fail(t.status());
    return Json(202, json::parse(t->ToJson()));
  }
  if (!path.verb.empty()) return Error(404, "no such route: .../alerts/{name}[/check]");
  NamedDefinitions d;
  d.list = [&] { return ListAlerts(host_, domain); };
  d.get = [&](const std::string& n) { return GetAlert(host_, domain, n); };
  d.save = [&](const std::string& def) { return SaveAlert(host_, def); };
  d.remove = [&](const std::string& n) { return DeleteAlert(host_, domain, n); };
  d.post_adds = true;
  d.texts = {"name: the body's name is not the URL's",
             "domain: the alert's domain is not this domain", "GET lists the alerts; POST adds one",
             "PUT .../alerts/{name} saves an alert"};
  return ServeNamedDefinitions(r, domain, path, d);
}

}  // namespace commcare::server
