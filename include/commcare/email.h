// Email: SMTP delivery (libcurl) of MIME messages with a text part, an HTML part and
// attachments, and the scheduled reports that use it. The task types "email.send" and
// "report.send" (src/host/task_types.cc) run these; docs/email-and-reports.md has the contract.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"

namespace commcare {

// Where mail goes. From a URL: smtp://[user[:password]@]host[:port][?starttls=none|
// opportunistic|required&timeout_ms=N], the user and password percent-encoded.
struct SmtpOptions {
  std::string host;
  int port = 25;
  enum class StartTls { kNone, kOpportunistic, kRequired };
  StartTls starttls = StartTls::kOpportunistic;
  std::string username, password;            // "" username: no AUTH
  std::string from;                          // the envelope and From: address
  std::chrono::milliseconds timeout{30000};  // the whole exchange, connection included
  static Result<SmtpOptions> FromUrl(std::string_view url, std::string_view from);
  // The process's settings: $COMMCARE_SMTP_URL and $COMMCARE_SMTP_FROM. FailedPrecondition
  // when the URL is not set.
  static Result<SmtpOptions> FromEnvironment();
  // For logs: the URL without the password.
  std::string Describe() const;
};

struct EmailAttachment {
  std::string name;
  std::string content_type = "application/octet-stream";
  std::string data;  // the bytes
};

struct EmailMessage {
  std::vector<std::string> to;
  std::string subject;
  std::string text;  // the text/plain part ("" none)
  std::string html;  // the text/html part ("" none)
  std::vector<EmailAttachment> attachments;
};

// The message as MIME text (CRLF lines): multipart/mixed around multipart/alternative,
// attachments base64-encoded, non-ASCII headers RFC 2047-encoded. `message_id` is its Message-ID.
std::string RenderMime(const SmtpOptions& smtp, const EmailMessage& message,
                       std::string_view message_id);

// Sends a message. A refused recipient, a rejected login or any other 5xx reply is
// InvalidArgument (permanent); a connection failure, a timeout or a 4xx reply is Unavailable
// (retry later). The password never appears in a status or a log.
Status SendEmail(const SmtpOptions& smtp, const EmailMessage& message);

// Parses an "email.send" payload: {"to":[...], "subject", "text", "html",
// "attachments":[{"name", "content_type", "path" | "base64"}]}. InvalidArgument names the field.
Result<EmailMessage> ParseEmailPayload(std::string_view payload_json);

// Standard base64 (no line breaks), e.g. for an attachment in an email.send payload.
std::string EncodeBase64(std::string_view data);

}  // namespace commcare
