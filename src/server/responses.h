// Answers the reference server's route files share: JSON bodies, errors, and the HTTP status
// of a Status. Internal to src/server.
#pragma once

#include <boost/json.hpp>
#include <string>
#include <string_view>

#include "commcare/status.h"
#include "http/server.h"

namespace commcare::server {

// A JSON answer.
http::Response Json(int status, const boost::json::value& v);
// A JSON answer with every object's keys sorted, at every depth, as HQ's tastypie serializer
// writes them (json.dumps(sort_keys=True): code-point order, bytewise on UTF-8).
http::Response SortedJson(int status, boost::json::value v);
// {"error": message} with status.
http::Response Error(int status, std::string_view message);
// An OTA restore route's answer: CommCare's OpenRosaResponse XML body with status.
http::Response OtaXml(int status, std::string body);
// The HTTP status for a Status (404, 400, 401, 403, 409, 412, 503, else 500).
int StatusFor(const Status& s);
// 429 with Retry-After: the whole seconds of wait, rounded up, also named in the message.
http::Response TooManyRequests(double wait, std::string_view message);
// s percent-encoded for a URL's query (unreserved characters and ':' kept).
std::string UrlEncode(std::string_view s);

// The console's sign-in route, and its session cookie's value in a request ("" if none).
inline constexpr std::string_view kConsoleLoginPath = "/console/api/login";
std::string SessionCookie(const http::Request& r);

}  // namespace commcare::server
