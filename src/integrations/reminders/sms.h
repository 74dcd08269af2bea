// SMS through a generic HTTP gateway (HQ's "HTTP" SMS backend): a URL template and optional body
// template with {to} and {message} placeholders (URL-encoded in the URL, JSON- or form-encoded
// in the body as its content type asks), a method, basic or bearer auth, headers, and what
// counts as sent (a status, optionally a text in the answer). The sms.send task type delivers
// one message; a refused send (4xx, or an answer that does not say sent) is permanent, a
// network error or a 5xx is retried by the task queue.
#pragma once

#include <boost/json.hpp>
#include <map>
#include <string>
#include <string_view>

#include "commcare/status.h"
#include "commcare/tasks.h"

namespace commcare::reminders {

struct SmsGateway {
  std::string url;             // "http://host/send?to={to}&text={message}"
  std::string method = "GET";  // GET or POST
  std::string body;            // POST body template ("" : none)
  std::string content_type = "application/x-www-form-urlencoded";
  std::map<std::string, std::string> headers;
  std::string auth;  // "", "basic" or "bearer"
  std::string username, password, token;
  int success_status = 0;        // 0: any 2xx
  std::string success_contains;  // "": any answer
  int timeout_ms = 10000;
};

// Parses {"url", "method", "body", "content_type", "headers", "auth": {"type", "username",
// "password", "token"}, "success": {"status", "contains"}, "timeout_ms"}; InvalidArgument
// names the field under `at` ("gateway.").
Result<SmsGateway> ParseGateway(const boost::json::value& v, const std::string& at);
boost::json::object GatewayJson(const SmsGateway& g);

// Sends one message; Ok when the gateway's answer counts as sent.
Status SendSms(const SmsGateway& g, std::string_view to, std::string_view message);

// sms.send: payload {"to", "message", "gateway": {...}}; result {"to", "status"}.
TaskHandler SmsSendHandler();

}  // namespace commcare::reminders
