// A small HTTP/1.1 server (Boost.Beast over an Asio thread pool) for the reference host.
// Only server.cc sees Beast; handlers work on the plain Request/Response below.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commcare/status.h"

namespace commcare::http {

struct Request {
  std::string method;                                        // "GET", "POST", "HEAD", ...
  std::string target;                                        // as sent: path and query
  std::string path;                                          // percent-decoded path, no query
  std::multimap<std::string, std::string> query;             // decoded parameters (UTF-8)
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case
  std::string body;
  std::string remote;  // peer address
  bool tls = false;    // arrived over TLS
  // What the gate learnt from the headers (e.g. the authenticated user), for the handler,
  // and who that is by name, for the access log ("" if nobody).
  std::shared_ptr<const void> principal;
  std::string user;
  // The first header of that (lower-case) name, or nullptr.
  const std::string* Header(std::string_view name) const;
  // The first query parameter of that name, or def.
  std::string Param(std::string_view name, std::string_view def = "") const;
};

// Writes one chunk of a streamed answer with the answer's status (the same for every chunk,
// taken from the first) into the answer's spool; it does not wait for the client. An error:
// the client went away or stalled, or the spool could not be written.
using ChunkWriter = std::function<Status(int status, std::string_view chunk)>;

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Set instead of body to stream a large answer (chunked transfer encoding); called on a
  // worker thread after the handler returns. status applies if it writes nothing. Writes do
  // not wait for the client: they are spooled (memory, then a temporary file) and sent as
  // the client reads, so a slow reader holds no worker thread.
  std::function<Status(const ChunkWriter& write)> stream;
  // Set instead of body for a long-poll: called on a worker thread at once and then every
  // poll_interval_ms while it answers nullopt (no thread waits in between); `last` is true
  // once poll_timeout_ms have passed since the first call, and then it must answer.
  std::function<std::optional<Response>(bool last)> poll;
  int poll_interval_ms = 250;
  int poll_timeout_ms = 0;
};

using Handler = std::function<Response(const Request&)>;
// Runs on a worker thread when a request's headers have arrived, before its body is read:
// an answer refuses the request (the body is never read, the connection is closed); nullopt
// lets it through. It may set head.principal for the handler.
using Gate = std::function<std::optional<Response>(Request& head)>;

struct ServerOptions {
  std::string listen = "127.0.0.1:8000";  // host:port; port 0 picks a free one
  int io_threads = 0;                     // 0: one per core
  int worker_threads = 16;                // handlers run here (they block on durable commits)
  size_t max_body_bytes = 150 * 1024 * 1024;
  size_t max_header_bytes = 16 * 1024;
  int header_timeout_ms = 10'000;  // a client must send its headers within this
  int body_timeout_ms = 60'000;    // and its body within this
  int idle_timeout_ms = 60'000;    // keep-alive connections idle longer are closed
  int max_connections = 1024;      // more are closed at once (keep it below the fd limit)
  // Request bodies being read or handled at once, in bytes (a body's Content-Length, or
  // max_body_bytes when chunked); a request that does not fit is answered 503.
  size_t max_body_bytes_in_flight = 512 * 1024 * 1024;
  std::string access_log;         // a file for JSON-lines access records ("" = none, "-" = stderr)
  std::string tls_cert, tls_key;  // PEM files: serve HTTPS (TLS 1.2+) instead of HTTP
};

class Server {
 public:
  virtual ~Server() = default;
  // Binds and starts serving on background threads.
  static Result<std::unique_ptr<Server>> Start(const ServerOptions& options, Handler handler,
                                               Gate gate = nullptr);
  // The bound port.
  virtual int Port() const = 0;
  // Stops accepting, lets requests in flight finish (at most grace_ms), closes connections.
  virtual void Stop(int grace_ms = 10'000) = 0;
};

// Percent-decoding of a URL component ('+' as a space when form is true).
std::string UrlDecode(std::string_view s, bool form);

// Sets req's target as sent and, from it, its percent-decoded path and its query parameters
// (request.cc; what the server does with every request line). A decoded parameter that is not
// UTF-8 has each offending byte replaced by U+FFFD, as Django reads a query string.
void SetTarget(Request* req, std::string_view target);
// Appends a header with its name in lower case.
void AddHeader(Request* req, std::string_view name, std::string_view value);

}  // namespace commcare::http
