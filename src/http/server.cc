// The HTTP server: one Session per connection on an Asio io_context run by io_threads; request
// handlers run on a separate worker pool (they block on durable commits) and post their
// response back to the connection. Limits are enforced while reading: header size and time,
// body size and time, idle keep-alive time.
#include "http/server.h"

#include <fmt/format.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "http/spool.h"
#include "util/time.h"

namespace commcare::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

// The TLS 1.2 suites the server accepts: ECDHE (forward secrecy) with AES-GCM or ChaCha20.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

class ServerImpl;

std::string JsonEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", c);
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// A handler that threw: 500 naming what it threw.
Response InternalError(const std::exception& e) {
  Response r;
  r.status = 500;
  r.body = fmt::format(R"({{"error":"internal error: {}"}})", JsonEscape(e.what()));
  return r;
}

// Counters shared by the server and its sessions (which may outlive it briefly while the
// io_context is torn down).
struct Shared {
  std::atomic<int> connections{0};
  std::atomic<size_t> body_bytes{0};  // reserved by requests being read or handled
};

// A streamed answer in progress: the worker's writes and the connection's sends meet here.
struct StreamState {
  std::mutex mu;
  Spool spool;
  Response head;  // status, content type and headers (its stream is the maker, kept to the end)
  bool status_set = false;
  bool headers_sent = false;
  bool pumping = false;   // a send is in flight or posted
  bool finished = false;  // the maker returned
  bool broken = false;    // the connection failed
  bool completed = false;
  Status result;
  size_t bytes = 0;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, ServerImpl* server, std::shared_ptr<Shared> shared,
          asio::ssl::context* tls)
      : stream_(std::move(socket)), server_(server), shared_(std::move(shared)) {
    ++shared_->connections;
    if (tls) tls_ = std::make_unique<asio::ssl::stream<beast::tcp_stream&>>(stream_, *tls);
  }
  ~Session() {
    ReleaseBody();
    --shared_->connections;
  }
  void Start();
  void CloseIfIdle();

 private:
  // Runs f on the byte stream requests travel on: TLS over TCP, or TCP.
  template <typename F>
  void WithStream(F&& f) {
    if (tls_)
      f(*tls_);
    else
      f(stream_);
  }
  void ReadHeader();
  void OnHeader(beast::error_code ec);
  // The request as far as its headers go (no body yet).
  std::shared_ptr<Request> Head();
  // Reserves the body's bytes in the server's budget, then reads it.
  void ReadBody(std::shared_ptr<Request> req);
  void OnBody(beast::error_code ec, std::shared_ptr<Request> req);
  void Dispatch(std::shared_ptr<Request> req);
  // Answers a handled request (on a worker thread): streams, polls or sends r.
  void Answer(std::shared_ptr<Request> req, Response r, bool keep_alive,
              std::chrono::steady_clock::time_point poll_start);
  void Send(Response r, bool keep_alive, bool linger = false);
  // Runs the maker of a streamed answer on this (worker) thread into a spool the connection
  // sends from as the client reads.
  void Stream(std::shared_ptr<Request> req, Response r, bool keep_alive);
  void Pump(std::shared_ptr<StreamState> st, std::shared_ptr<Request> req, bool keep_alive);
  void Complete(std::shared_ptr<StreamState> st, std::shared_ptr<Request> req, bool go_on);
  void Fail(int status, const std::string& message);
  void Close();
  // After an early error answer: stop sending, read and drop what the client still sends (up
  // to 2 s), then close, so the client gets to read the answer instead of a reset.
  void Linger();
  void ReleaseBody() {
    if (reserved_) shared_->body_bytes -= reserved_;
    reserved_ = 0;
  }
  double Millis() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_)
        .count();
  }

  std::optional<asio::steady_timer> body_timer_;  // the body's deadline (ReadBody)
  bool body_timed_out_ = false;
  beast::tcp_stream stream_;  // the TCP connection (timeouts are set here)
  std::unique_ptr<asio::ssl::stream<beast::tcp_stream&>> tls_;  // with --tls-cert
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  ServerImpl* server_;
  std::shared_ptr<Shared> shared_;
  size_t reserved_ = 0;  // this request's share of the body budget
  bool first_ = true;
  bool busy_ = false;  // a request is being read past its header, handled or answered
  std::chrono::steady_clock::time_point started_;
  std::string remote_;
};

class ServerImpl final : public Server {
 public:
  ServerImpl(ServerOptions o, Handler h, Gate g)
      : opts_(std::move(o)),
        handler_(std::move(h)),
        gate_(std::move(g)),
        acceptor_(ioc_),
        accept_timer_(ioc_),
        workers_(static_cast<size_t>(std::max(1, opts_.worker_threads))) {}
  ~ServerImpl() override { Stop(0); }

  Status Listen() {
    auto colon = opts_.listen.rfind(':');
    if (colon == std::string::npos)
      return Status::InvalidArgument(
          fmt::format("--listen must be host:port (got '{}')", opts_.listen));
    std::string host = opts_.listen.substr(0, colon);
    int port = std::atoi(opts_.listen.c_str() + colon + 1);
    if (port < 0 || port > 65535)
      return Status::InvalidArgument(fmt::format("bad port in '{}'", opts_.listen));
    beast::error_code ec;
    auto addr = asio::ip::make_address(host.empty() ? "0.0.0.0" : host, ec);
    if (ec) return Status::InvalidArgument(fmt::format("bad address '{}': {}", host, ec.message()));
    tcp::endpoint ep(addr, static_cast<unsigned short>(port));
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
      return Status::Unavailable(
          fmt::format("cannot listen on {}: {}", opts_.listen, ec.message()));
    port_ = acceptor_.local_endpoint().port();
    if (!opts_.tls_cert.empty() || !opts_.tls_key.empty()) {
      if (opts_.tls_cert.empty() || opts_.tls_key.empty())
        return Status::InvalidArgument("TLS needs both a certificate and a key file");
      tls_.emplace(asio::ssl::context::tls_server);
      // TLS 1.2 and 1.3 only; for 1.2 only forward-secret AEAD suites (Mozilla's
      // "intermediate" list), the server's order, no compression, no renegotiation
      // (docs/security.md). TLS 1.3's suites are all AEAD and stay OpenSSL's.
      tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                        asio::ssl::context::no_tlsv1_1 | asio::ssl::context::no_compression);
      SSL_CTX_set_options(tls_->native_handle(),
                          SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
      if (SSL_CTX_set_cipher_list(tls_->native_handle(), kTls12Ciphers) != 1)
        return Status::Internal("TLS: OpenSSL accepts none of the TLS 1.2 cipher suites");
      tls_->use_certificate_chain_file(opts_.tls_cert, ec);
      if (ec)
        return Status::InvalidArgument(
            fmt::format("TLS certificate {}: {}", opts_.tls_cert, ec.message()));
      tls_->use_private_key_file(opts_.tls_key, asio::ssl::context::pem, ec);
      if (ec)
        return Status::InvalidArgument(fmt::format("TLS key {}: {}", opts_.tls_key, ec.message()));
    }
    if (opts_.access_log == "-") {
      log_ = stderr;
    } else if (!opts_.access_log.empty()) {
      log_ = std::fopen(opts_.access_log.c_str(), "a");
      if (!log_) return Status::Unavailable("cannot open access log " + opts_.access_log);
      own_log_ = true;
    }
    Accept();
    int n = opts_.io_threads > 0
                ? opts_.io_threads
                : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 0; i < n; ++i) threads_.emplace_back([this] { ioc_.run(); });
    return Status::Ok();
  }

  int Port() const override { return port_; }

  void Stop(int grace_ms) override {
    if (stopped_.exchange(true)) return;
    stopping_ = true;
    asio::post(ioc_, [this] {
      beast::error_code ec;
      acceptor_.close(ec);
      accept_timer_.cancel();
    });
    CloseIdle();
    {
      std::unique_lock l(mu_);
      cv_.wait_for(l, std::chrono::milliseconds(std::max(0, grace_ms)),
                   [&] { return in_flight_ == 0; });
    }
    ioc_.stop();
    for (auto& t : threads_) t.join();
    workers_.join();
    if (own_log_) std::fclose(log_);
  }

  // ---- used by sessions ----
  const ServerOptions& opts() const { return opts_; }
  bool stopping() const { return stopping_.load(); }
  void Register(const std::shared_ptr<Session>& s) {
    std::lock_guard l(mu_);
    sessions_.insert(s);
  }
  void Unregister(const std::weak_ptr<Session>& s) {
    std::lock_guard l(mu_);
    sessions_.erase(s);
  }
  void Begin() {
    std::lock_guard l(mu_);
    ++in_flight_;
  }
  void End() {
    {
      std::lock_guard l(mu_);
      --in_flight_;
    }
    cv_.notify_all();
  }
  template <typename F>
  void RunHandler(F f) {
    asio::post(workers_, std::move(f));
  }
  bool HasGate() const { return static_cast<bool>(gate_); }
  std::optional<Response> RunGate(Request& head) {
    try {
      return gate_(head);
    } catch (const std::exception& e) {
      return InternalError(e);
    }
  }
  Response Handle(const Request& r) {
    try {
      return handler_(r);
    } catch (const std::exception& e) {
      return InternalError(e);
    }
  }
  // Takes n bytes of the body budget; false if they do not fit.
  bool ReserveBody(size_t n) {
    size_t cur = shared_->body_bytes.load();
    do {
      if (cur + n > opts_.max_body_bytes_in_flight) return false;
    } while (!shared_->body_bytes.compare_exchange_weak(cur, cur + n));
    return true;
  }
  void Log(const std::string& remote, std::string_view method, std::string_view target, int status,
           size_t bytes, double ms, std::string_view user = "") {
    if (!log_) return;
    std::string line = fmt::format(
        R"({{"time":"{}","remote":"{}","user":"{}","method":"{}","target":"{}","status":{},"bytes":{},"ms":{:.2f}}})",
        util::FormatIsoTime(util::NowMicros()), remote, JsonEscape(user), method,
        JsonEscape(target), status, bytes, ms);
    std::lock_guard l(log_mu_);
    std::fprintf(log_, "%s\n", line.c_str());
    std::fflush(log_);
  }

 private:
  // Accepts connections; over max_connections a new one is closed at once. An accept error
  // (out of descriptors) is logged once and retried every 100 ms instead of at once, which
  // would spin a core while the pending connection stays in the backlog.
  void Accept() {
    acceptor_.async_accept(asio::make_strand(ioc_), [this](beast::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || stopping_) return;
      if (ec) {
        if (!accept_failing_)
          std::fprintf(stderr,
                       "commcare serve: cannot accept a connection: %s; retrying every 100 ms "
                       "(logged once until accepting works again)\n",
                       ec.message().c_str());
        accept_failing_ = true;
        accept_timer_.expires_after(std::chrono::milliseconds(100));
        accept_timer_.async_wait([this](beast::error_code e) {
          if (!e && !stopping_) Accept();
        });
        return;
      }
      if (accept_failing_) std::fprintf(stderr, "commcare serve: accepting connections again\n");
      accept_failing_ = false;
      if (shared_->connections.load() >= opts_.max_connections) {
        beast::error_code ignored;
        s.close(ignored);  // over the cap: refused before any byte is read
      } else {
        auto session =
            std::make_shared<Session>(std::move(s), this, shared_, tls_ ? &*tls_ : nullptr);
        Register(session);
        session->Start();
      }
      Accept();
    });
  }
  void CloseIdle() {
    std::vector<std::shared_ptr<Session>> live;
    {
      std::lock_guard l(mu_);
      for (const auto& w : sessions_)
        if (auto s = w.lock()) live.push_back(std::move(s));
    }
    for (auto& s : live) s->CloseIfIdle();
  }

  ServerOptions opts_;
  Handler handler_;
  Gate gate_;
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
  asio::io_context ioc_;
  std::optional<asio::ssl::context> tls_;
  tcp::acceptor acceptor_;
  asio::steady_timer accept_timer_;
  bool accept_failing_ = false;  // only touched by the one pending accept's handler
  asio::thread_pool workers_;
  std::vector<std::thread> threads_;
  int port_ = 0;
  std::atomic<bool> stopping_{false}, stopped_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;
  std::set<std::weak_ptr<Session>, std::owner_less<std::weak_ptr<Session>>> sessions_;
  FILE* log_ = nullptr;
  bool own_log_ = false;
  std::mutex log_mu_;
};

void Session::Start() {
  beast::error_code ec;
  auto ep = stream_.socket().remote_endpoint(ec);
  remote_ = ec ? "?" : ep.address().to_string();
  asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
    if (!self->tls_) return self->ReadHeader();
    self->busy_ = true;  // a handshake in progress is not idle
    self->stream_.expires_after(std::chrono::milliseconds(self->server_->opts().header_timeout_ms));
    self->tls_->async_handshake(asio::ssl::stream_base::server, [self](beast::error_code ec) {
      if (ec) return self->Close();
      self->ReadHeader();
    });
  });
}

void Session::CloseIfIdle() {
  asio::post(stream_.get_executor(), [self = shared_from_this()] {
    if (!self->busy_) self->Close();
  });
}

void Session::ReadHeader() {
  if (server_->stopping()) return Close();
  busy_ = false;
  ReleaseBody();
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(server_->opts().max_header_bytes));
  parser_->body_limit(server_->opts().max_body_bytes);
  const auto& o = server_->opts();
  stream_.expires_after(
      std::chrono::milliseconds(first_ ? o.header_timeout_ms : o.idle_timeout_ms));
  WithStream([&](auto& s) {
    bhttp::async_read_header(
        s, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnHeader(ec); });
  });
}

void Session::OnHeader(beast::error_code ec) {
  first_ = false;
  if (ec == bhttp::error::end_of_stream || ec == asio::error::operation_aborted ||
      ec == beast::error::timeout || ec == asio::error::connection_reset ||
      ec == asio::error::eof || ec == asio::ssl::error::stream_truncated)
    return Close();
  busy_ = true;
  started_ = std::chrono::steady_clock::now();
  if (ec == bhttp::error::header_limit) return Fail(431, "request headers are too large");
  if (ec == bhttp::error::body_limit)
    return Fail(413, fmt::format("request body is larger than the limit of {} bytes",
                                 server_->opts().max_body_bytes));
  if (ec) return Fail(400, "malformed HTTP request: " + ec.message());
  const auto& msg = parser_->get();
  if (msg.version() != 11 && msg.version() != 10) return Fail(505, "HTTP version not supported");
  if (auto len = parser_->content_length(); len && *len > server_->opts().max_body_bytes)
    return Fail(413, fmt::format("request body of {} bytes is larger than the limit of {}", *len,
                                 server_->opts().max_body_bytes));
  auto req = Head();
  if (!server_->HasGate()) return ReadBody(std::move(req));
  // The gate (authentication) runs before a byte of the body is read.
  stream_.expires_never();
  server_->RunHandler([self = shared_from_this(), req] {
    std::optional<Response> deny = self->server_->RunGate(*req);
    asio::post(self->stream_.get_executor(), [self, req, deny = std::move(deny)]() mutable {
      if (!deny) return self->ReadBody(req);
      self->server_->Log(self->remote_, req->method, req->target, deny->status, deny->body.size(),
                         self->Millis());
      // Without a body the connection can go on (a Digest client answers the challenge on
      // it); with one, the body is not read: drop what arrives, then close.
      const bool bodyless = self->parser_->is_done();
      self->Send(std::move(*deny), bodyless && self->parser_->get().keep_alive(), !bodyless);
    });
  });
}

std::shared_ptr<Request> Session::Head() {
  const auto& msg = parser_->get();
  auto req = std::make_shared<Request>();
  req->method = std::string(msg.method_string());
  SetTarget(req.get(), msg.target());
  for (const auto& f : msg) AddHeader(req.get(), f.name_string(), f.value());
  req->remote = remote_;
  req->tls = tls_ != nullptr;
  return req;
}

void Session::ReadBody(std::shared_ptr<Request> req) {
  if (!parser_->is_done()) {
    auto len = parser_->content_length();
    const size_t need = len ? static_cast<size_t>(*len) : server_->opts().max_body_bytes;
    if (!server_->ReserveBody(need)) {
      server_->Log(remote_, req->method, req->target, 503, 0, Millis());
      Response r;
      r.status = 503;
      r.body = R"({"error":"the server is reading too many request bodies at once; retry"})";
      r.headers.emplace_back("Retry-After", "1");
      return Send(std::move(r), false, true);
    }
    reserved_ = need;
  }
  auto finish_read = [self = shared_from_this(), req] {
    // The body's deadline is a timer of its own that cancels the read, not the stream's
    // expiry: that one closes the socket, and the client should read a 408 first.
    self->stream_.expires_never();
    self->body_timed_out_ = false;
    self->body_timer_.emplace(self->stream_.get_executor(),
                              std::chrono::milliseconds(self->server_->opts().body_timeout_ms));
    self->body_timer_->async_wait([weak = self->weak_from_this()](beast::error_code ec) {
      auto s = weak.lock();
      if (ec || !s) return;
      s->body_timed_out_ = true;
      beast::error_code ignored;
      s->stream_.socket().cancel(ignored);
    });
    self->WithStream([&](auto& s) {
      bhttp::async_read(s, self->buffer_, *self->parser_,
                        [self, req](beast::error_code ec, std::size_t) { self->OnBody(ec, req); });
    });
  };
  if (!parser_->is_done() && beast::iequals(parser_->get()[bhttp::field::expect], "100-continue")) {
    auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
    WithStream([&](auto& s) {
      asio::async_write(
          s, asio::buffer(*cont),
          [self = shared_from_this(), cont, finish_read](beast::error_code ec, std::size_t) {
            if (ec) return self->Close();
            finish_read();
          });
    });
    return;
  }
  finish_read();
}

void Session::OnBody(beast::error_code ec, std::shared_ptr<Request> req) {
  if (body_timer_) body_timer_->cancel();
  if (body_timed_out_ && ec) return Fail(408, "the request body did not arrive in time");
  if (ec == bhttp::error::body_limit)
    return Fail(413, fmt::format("request body is larger than the limit of {} bytes",
                                 server_->opts().max_body_bytes));
  if (ec == beast::error::timeout) return Fail(408, "the request body did not arrive in time");
  if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
      ec == bhttp::error::partial_message || ec == asio::ssl::error::stream_truncated)
    return Close();  // truncated: nothing to answer
  if (ec) return Fail(400, "malformed HTTP request: " + ec.message());
  Dispatch(std::move(req));
}

void Session::Dispatch(std::shared_ptr<Request> req) {
  auto& msg = parser_->get();
  req->body = std::move(msg.body());
  const bool keep_alive = msg.keep_alive();
  stream_.expires_never();  // the handler may take a while (a durable commit)
  server_->Begin();
  server_->RunHandler([self = shared_from_this(), req, keep_alive] {
    self->Answer(req, self->server_->Handle(*req), keep_alive, std::chrono::steady_clock::now());
  });
}

void Session::Answer(std::shared_ptr<Request> req, Response r, bool keep_alive,
                     std::chrono::steady_clock::time_point poll_start) {
  if (r.stream) return Stream(req, std::move(r), keep_alive);
  if (r.poll) {
    const bool last = server_->stopping() || std::chrono::steady_clock::now() - poll_start >=
                                                 std::chrono::milliseconds(r.poll_timeout_ms);
    std::optional<Response> ready;
    try {
      ready = r.poll(last);
    } catch (const std::exception& e) {
      ready = InternalError(e);
    }
    if (ready) {
      r.poll = nullptr;  // frees what it held (a long-poll slot) before the client can ask again
      return Answer(req, std::move(*ready), keep_alive, poll_start);
    }
    // Nothing yet: wait on a timer (no thread held), then ask again on a worker.
    auto timer = std::make_shared<asio::steady_timer>(stream_.get_executor());
    timer->expires_after(std::chrono::milliseconds(std::max(10, r.poll_interval_ms)));
    auto pending = std::make_shared<Response>(std::move(r));
    timer->async_wait([self = shared_from_this(), req, pending, timer, keep_alive,
                       poll_start](beast::error_code) {
      self->server_->RunHandler([self, req, pending, keep_alive, poll_start] {
        self->Answer(req, std::move(*pending), keep_alive, poll_start);
      });
    });
    return;
  }
  asio::post(stream_.get_executor(),
             [self = shared_from_this(), req, r = std::move(r), keep_alive]() mutable {
               self->server_->Log(self->remote_, req->method, req->target, r.status, r.body.size(),
                                  self->Millis(), req->user);
               self->ReleaseBody();
               self->Send(std::move(r), keep_alive && !self->server_->stopping());
               self->server_->End();
             });
}

void Session::Send(Response r, bool keep_alive, bool linger) {
  auto res = std::make_shared<bhttp::response<bhttp::string_body>>();
  res->version(11);
  res->result(static_cast<unsigned>(r.status));
  res->set(bhttp::field::server, "libcommcare");
  if (!r.content_type.empty()) res->set(bhttp::field::content_type, r.content_type);
  for (const auto& [k, v] : r.headers) res->insert(k, v);
  res->body() = std::move(r.body);
  res->keep_alive(keep_alive);
  res->prepare_payload();
  stream_.expires_after(std::chrono::milliseconds(server_->opts().body_timeout_ms));
  WithStream([&](auto& s) {
    bhttp::async_write(
        s, *res,
        [self = shared_from_this(), res, keep_alive, linger](beast::error_code ec, std::size_t) {
          if (!ec && linger) return self->Linger();
          if (ec || !keep_alive) return self->Close();
          self->ReadHeader();
        });
  });
}

void Session::Stream(std::shared_ptr<Request> req, Response r, bool keep_alive) {
  keep_alive = keep_alive && !server_->stopping();
  auto st = std::make_shared<StreamState>();
  auto maker = std::move(r.stream);
  st->head = std::move(r);
  auto self = shared_from_this();
  // Kicks the sender when it is idle (mu held); it then sends until the spool is empty.
  auto kick = [&] {
    if (st->pumping || st->broken) return;
    st->pumping = true;
    asio::post(stream_.get_executor(),
               [self, st, req, keep_alive] { self->Pump(st, req, keep_alive); });
  };
  ChunkWriter write = [&](int status, std::string_view chunk) -> Status {
    std::lock_guard l(st->mu);
    if (st->broken) return Status::Unavailable("the client went away or stopped reading");
    if (!st->status_set) {
      st->status_set = true;
      st->head.status = status;
    }
    if (chunk.empty()) return Status::Ok();
    CC_RETURN_IF_ERROR(st->spool.Append(chunk));
    st->bytes += chunk.size();
    kick();
    return Status::Ok();
  };
  Status s;
  try {
    s = maker(write);
  } catch (const std::exception& e) {
    s = Status::Internal(e.what());
  }
  std::lock_guard l(st->mu);
  st->finished = true;
  st->result = s;
  st->head.stream = std::move(maker);  // released with the state (it may hold a slot)
  if (!st->status_set && !s.ok()) st->head.status = 500;
  if (st->broken && !st->pumping)
    asio::post(stream_.get_executor(), [self, st, req] { self->Complete(st, req, false); });
  else
    kick();
}

void Session::Pump(std::shared_ptr<StreamState> st, std::shared_ptr<Request> req, bool keep_alive) {
  enum { kHeaders, kChunk, kLast, kAbort } what;
  std::string piece;
  {
    std::lock_guard l(st->mu);
    if (!st->headers_sent) {
      st->headers_sent = true;
      what = kHeaders;
    } else {
      auto taken = st->spool.Take(64 * 1024);
      if (!taken.ok()) {
        st->broken = true;
        what = kAbort;
      } else if (!taken->empty()) {
        piece = std::move(*taken);
        what = kChunk;
      } else if (st->finished) {
        what = st->result.ok() ? kLast : kAbort;  // a failed stream cannot be finished cleanly
      } else {
        st->pumping = false;  // the maker kicks again with its next write
        return;
      }
    }
  }
  if (what == kAbort) return Complete(st, req, false);
  auto self = shared_from_this();
  auto next = [self, st, req, keep_alive, last = what == kLast](beast::error_code ec, std::size_t) {
    if (ec) {
      std::lock_guard l(st->mu);
      st->broken = true;
      st->pumping = false;
      if (!st->finished) return;  // the maker finds out with its next write
    }
    if (ec || last) return self->Complete(st, req, !ec && keep_alive);
    self->Pump(st, req, keep_alive);
  };
  stream_.expires_after(std::chrono::milliseconds(server_->opts().body_timeout_ms));
  if (what == kHeaders) {
    auto res = std::make_shared<bhttp::response<bhttp::empty_body>>();
    res->version(11);
    res->result(static_cast<unsigned>(st->head.status));
    res->set(bhttp::field::server, "libcommcare");
    if (!st->head.content_type.empty()) res->set(bhttp::field::content_type, st->head.content_type);
    for (const auto& [k, v] : st->head.headers) res->insert(k, v);
    res->keep_alive(keep_alive);
    res->chunked(true);
    auto sr = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*res);
    WithStream([&](auto& s) {
      bhttp::async_write_header(
          s, *sr, [res, sr, next](beast::error_code ec, std::size_t n) { next(ec, n); });
    });
    return;
  }
  auto data = std::make_shared<std::string>(std::move(piece));
  WithStream([&](auto& s) {
    if (what == kLast)
      asio::async_write(s, bhttp::make_chunk_last(), next);
    else
      asio::async_write(s, bhttp::make_chunk(asio::buffer(*data)),
                        [data, next](beast::error_code ec, std::size_t n) { next(ec, n); });
  });
}

void Session::Complete(std::shared_ptr<StreamState> st, std::shared_ptr<Request> req, bool go_on) {
  {
    std::lock_guard l(st->mu);
    if (st->completed) return;
    st->completed = true;
    st->head.stream = nullptr;  // frees what the maker held (a stream slot) now
  }
  server_->Log(remote_, req->method, req->target, st->head.status, st->bytes, Millis(), req->user);
  ReleaseBody();
  if (go_on)
    ReadHeader();
  else
    Close();
  server_->End();
}

void Session::Fail(int status, const std::string& message) {
  server_->Log(remote_, parser_ ? std::string(parser_->get().method_string()) : "?",
               parser_ ? std::string(parser_->get().target()) : "?", status, 0, 0);
  Response r;
  r.status = status;
  r.body = fmt::format(R"({{"error":"{}"}})", JsonEscape(message));
  Send(std::move(r), false, true);  // after a framing error the connection cannot be trusted
}

void Session::Linger() {
  if (tls_) return Close();  // TLS has no half-close to linger in
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream_.expires_after(std::chrono::seconds(2));
  auto scratch = std::make_shared<std::array<char, 65536>>();
  auto drain = std::make_shared<std::function<void()>>();
  *drain = [self = shared_from_this(), scratch, drain] {
    self->stream_.async_read_some(asio::buffer(*scratch),
                                  [self, scratch, drain](beast::error_code ec, std::size_t) {
                                    if (ec) {
                                      *drain = nullptr;  // breaks the self-reference
                                      return self->Close();
                                    }
                                    (*drain)();
                                  });
  };
  (*drain)();
}

void Session::Close() {
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.close();
  ReleaseBody();
  server_->Unregister(weak_from_this());
}

}  // namespace

Result<std::unique_ptr<Server>> Server::Start(const ServerOptions& options, Handler handler,
                                              Gate gate) {
  auto s = std::make_unique<ServerImpl>(options, std::move(handler), std::move(gate));
  CC_RETURN_IF_ERROR(s->Listen());
  return std::unique_ptr<Server>(std::move(s));
}

}  // namespace commcare::http
