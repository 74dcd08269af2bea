// The BlobStore on S3 (or any S3-compatible server): AWS Signature V4 over Boost.Beast, plain
// HTTP or TLS, path-style or virtual-host addressing, keep-alive connections pooled per store,
// retries with backoff on 5xx, throttling and network errors, multipart upload for large blobs.
#include <fmt/format.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "commcare/storage/blob_store.h"
#include "storage/backends.h"
#include "storage/s3/sigv4.h"
#include "util/hash.h"

namespace commcare::storage {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using s3::Sha256Hex;
using s3::UriEncode;

// The text of the first <tag>...</tag> in an XML body ("" if absent).
std::string XmlText(std::string_view body, std::string_view tag) {
  std::string open = fmt::format("<{}>", tag), close = fmt::format("</{}>", tag);
  auto a = body.find(open);
  if (a == std::string_view::npos) return "";
  a += open.size();
  auto b = body.find(close, a);
  return b == std::string_view::npos ? "" : std::string(body.substr(a, b - a));
}

struct Endpoint {
  bool tls = false;
  std::string host;  // as connected to
  std::string port;
};

Result<Endpoint> ParseEndpoint(const std::string& url) {
  Endpoint e;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    e.tls = true;
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else {
    return Status::InvalidArgument(fmt::format("s3: endpoint {} must start with http(s)://", url));
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos)
    return Status::InvalidArgument(fmt::format("s3: endpoint {} must not have a path", url));
  auto colon = rest.rfind(':');
  e.host = colon == std::string::npos ? rest : rest.substr(0, colon);
  e.port = colon == std::string::npos ? (e.tls ? "443" : "80") : rest.substr(colon + 1);
  if (e.host.empty())
    return Status::InvalidArgument(fmt::format("s3: endpoint {} has no host", url));
  return e;
}

struct Response {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names
};

// One keep-alive connection, plain or TLS, with its own io_context: every step runs as an
// asynchronous operation under the stream's deadline (synchronous Beast calls have no timeout).
class Connection {
 public:
  explicit Connection(asio::ssl::context* ssl) {
    if (ssl)
      tls_.emplace(io_, *ssl);
    else
      plain_.emplace(io_);
  }
  beast::tcp_stream& Lowest() { return plain_ ? *plain_ : beast::get_lowest_layer(*tls_); }

  void Connect(const std::string& host, const std::string& port, const std::string& sni,
               std::chrono::milliseconds timeout) {
    tcp::resolver resolver(io_);
    auto addrs = resolver.resolve(host, port);
    Lowest().expires_after(timeout);
    beast::error_code ec;
    Lowest().async_connect(addrs, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    Run(ec);
    if (tls_) {
      if (!SSL_set_tlsext_host_name(tls_->native_handle(), sni.c_str()))
        throw beast::system_error(beast::error_code(static_cast<int>(::ERR_get_error()),
                                                    asio::error::get_ssl_category()));
      tls_->set_verify_callback(asio::ssl::host_name_verification(sni));
      tls_->async_handshake(asio::ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
      Run(ec);
    }
  }

  Response RoundTrip(http::request<http::string_body>& req, std::chrono::milliseconds timeout) {
    Lowest().expires_after(timeout);
    http::response_parser<http::string_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (req.method() == http::verb::head) parser.skip(true);
    beast::error_code ec;
    auto done = [&](beast::error_code e, std::size_t) { ec = e; };
    if (plain_)
      http::async_write(*plain_, req, done);
    else
      http::async_write(*tls_, req, done);
    Run(ec);
    if (plain_)
      http::async_read(*plain_, buf_, parser, done);
    else
      http::async_read(*tls_, buf_, parser, done);
    Run(ec);
    auto& res = parser.get();
    Response out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    for (const auto& f : res) {
      std::string name(f.name_string());
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      out.headers[name] = std::string(f.value());
    }
    keep_alive_ = res.keep_alive();
    return out;
  }
  bool keep_alive() const { return keep_alive_; }
  std::chrono::steady_clock::time_point last_used;  // when the pool last got it back

 private:
  // Runs the pending operation to its end (or its deadline: beast reports timeout).
  void Run(const beast::error_code& ec) {
    io_.restart();
    io_.run();
    if (ec) throw beast::system_error(ec);
  }

  asio::io_context io_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buf_;
  bool keep_alive_ = true;
};

class S3BlobStore final : public BlobStore {
 public:
  explicit S3BlobStore(S3Options o) : o_(std::move(o)) {}

  Status Open() {
    if (o_.bucket.empty()) return Status::InvalidArgument("s3: bucket is required");
    if (o_.access_key.empty() || o_.secret_key.empty())
      return Status::InvalidArgument(
          "s3: credentials are required (access_key/secret_key, or AWS_ACCESS_KEY_ID and "
          "AWS_SECRET_ACCESS_KEY)");
    CC_ASSIGN_OR_RETURN(ep_, ParseEndpoint(o_.endpoint));
    host_header_ = o_.path_style ? ep_.host : o_.bucket + "." + ep_.host;
    if ((ep_.tls && ep_.port != "443") || (!ep_.tls && ep_.port != "80"))
      host_header_ += ":" + ep_.port;
    if (ep_.tls) {
      ssl_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
      ssl_->set_verify_mode(asio::ssl::verify_peer);
      boost::system::error_code ec;
      if (!o_.ca_file.empty())
        ssl_->load_verify_file(o_.ca_file, ec);
      else
        ssl_->set_default_verify_paths(ec);
      if (ec) return Status::InvalidArgument(fmt::format("s3: CA certificates: {}", ec.message()));
    }
    // Reach the bucket now, so a wrong endpoint, bucket or key fails at open with its reason.
    CC_ASSIGN_OR_RETURN(auto r, Request(http::verb::head, "", {}, ""));
    if (r.status == 404) return Status::NotFound(fmt::format("s3: no bucket {}", o_.bucket));
    if (r.status == 403)
      return Status::PermissionDenied(fmt::format("s3: access to bucket {} denied", o_.bucket));
    if (r.status >= 300)
      return Status::Unavailable(fmt::format("s3: bucket {}: HTTP {}", o_.bucket, r.status));
    return Status::Ok();
  }

  Result<std::string> Put(std::string_view name, std::string_view data, bool) override {
    std::string key = o_.prefix + std::string(name);
    if (data.size() > o_.multipart_threshold) {
      CC_RETURN_IF_ERROR(Multipart(key, data.size(), [&](size_t off, size_t n, std::string* part) {
        part->assign(data.substr(off, n));
        return Status::Ok();
      }));
    } else {
      CC_ASSIGN_OR_RETURN(auto r, Request(http::verb::put, key, {}, data));
      CC_RETURN_IF_ERROR(Expect(r, "PUT", key));
    }
    return std::string(name);
  }

  Result<std::string> Get(std::string_view name) override {
    std::string key = o_.prefix + std::string(name);
    CC_ASSIGN_OR_RETURN(auto r, Request(http::verb::get, key, {}, ""));
    if (r.status == 404) return Status::NotFound(fmt::format("no blob {}", name));
    CC_RETURN_IF_ERROR(Expect(r, "GET", key));
    return std::move(r.body);
  }

  Status Delete(std::string_view name) override {
    std::string key = o_.prefix + std::string(name);
    CC_ASSIGN_OR_RETURN(auto r, Request(http::verb::delete_, key, {}, ""));
    if (r.status == 404) return Status::Ok();
    return Expect(r, "DELETE", key);
  }

  Result<bool> Exists(std::string_view name) override {
    std::string key = o_.prefix + std::string(name);
    CC_ASSIGN_OR_RETURN(auto r, Request(http::verb::head, key, {}, ""));
    if (r.status == 404) return false;
    CC_RETURN_IF_ERROR(Expect(r, "HEAD", key));
    return true;
  }

  // A file up to multipart_threshold goes up in one PUT (held in memory: at most that much);
  // a bigger one as a multipart upload read from the file a part at a time.
  Result<std::string> PutFile(std::string_view name, const std::string& local_path) override {
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(local_path.c_str(), "rb"), &std::fclose);
    if (!f) return Status::NotFound(fmt::format("s3: cannot open {}", local_path));
    std::error_code ec;
    const auto size = std::filesystem::file_size(local_path, ec);
    if (ec) return Status::Internal(fmt::format("s3: {}: {}", local_path, ec.message()));
    auto read = [&](size_t off, size_t n, std::string* out) -> Status {
      out->resize(n);
      if (std::fseek(f.get(), static_cast<long>(off), SEEK_SET) != 0 ||
          std::fread(out->data(), 1, n, f.get()) != n)
        return Status::Internal(fmt::format("s3: cannot read {}", local_path));
      return Status::Ok();
    };
    std::string key = o_.prefix + std::string(name);
    if (size > o_.multipart_threshold) {
      CC_RETURN_IF_ERROR(Multipart(key, size, read));
    } else {
      std::string data;
      CC_RETURN_IF_ERROR(read(0, size, &data));
      CC_ASSIGN_OR_RETURN(auto r, Request(http::verb::put, key, {}, data));
      CC_RETURN_IF_ERROR(Expect(r, "PUT", key));
    }
    return std::string(name);
  }

  // A ranged GET; 416 (the range starts at or past the end) is no bytes. The first read (offset
  // 0) asks for the size first: a range of an empty object is 416 on S3 but a broken answer
  // from some S3-compatible servers (s3rver).
  Result<std::string> ReadRange(std::string_view name, uint64_t offset, size_t len) override {
    if (len == 0) return std::string();
    std::string key = o_.prefix + std::string(name);
    if (offset == 0) {
      CC_ASSIGN_OR_RETURN(auto h, Request(http::verb::head, key, {}, ""));
      if (h.status == 404) return Status::NotFound(fmt::format("no blob {}", name));
      CC_RETURN_IF_ERROR(Expect(h, "HEAD", key));
      if (h.headers["content-length"] == "0") return std::string();
    }
    CC_ASSIGN_OR_RETURN(auto r, Request(http::verb::get, key, {}, "",
                                        fmt::format("bytes={}-{}", offset, offset + len - 1)));
    if (r.status == 404) return Status::NotFound(fmt::format("no blob {}", name));
    if (r.status == 416) return std::string();
    CC_RETURN_IF_ERROR(Expect(r, "GET", key));
    // A server that ignores Range answers 200 with the whole blob.
    if (r.status == 200 && (offset > 0 || r.body.size() > len)) {
      if (offset >= r.body.size()) return std::string();
      return r.body.substr(offset, len);
    }
    return std::move(r.body);
  }

  // A PUT is durable when S3 answers it.
  Status Sync() override { return Status::Ok(); }
  bool PutsAreDurable() const override { return true; }

  Status Restore(std::string_view key, std::string_view data) override {
    return Put(key, data, true).status();
  }

 private:
  Status Expect(const Response& r, std::string_view what, const std::string& key) {
    if (r.status >= 200 && r.status < 300) return Status::Ok();
    std::string code = XmlText(r.body, "Code"), msg = XmlText(r.body, "Message");
    std::string text = fmt::format("s3: {} {}: HTTP {}{}{}", what, key, r.status,
                                   code.empty() ? "" : " " + code, msg.empty() ? "" : ": " + msg);
    if (r.status == 403) return Status::PermissionDenied(text);
    if (r.status >= 500 || r.status == 429) return Status::Unavailable(text);
    return Status::InvalidArgument(text);
  }

  // Reads size bytes of a blob, part by part: *part = the n bytes from off.
  using PartReader = std::function<Status(size_t off, size_t n, std::string* part)>;

  // One multipart upload of size bytes read by read, a part (part_size, at least 5 MiB) at a
  // time: memory holds one part. Aborted on any failure.
  Status Multipart(const std::string& key, size_t size, const PartReader& read) {
    CC_ASSIGN_OR_RETURN(auto init, Request(http::verb::post, key, {{"uploads", ""}}, ""));
    CC_RETURN_IF_ERROR(Expect(init, "POST ?uploads", key));
    std::string upload = XmlText(init.body, "UploadId");
    if (upload.empty()) return Status::Unavailable("s3: no UploadId in the multipart answer");
    std::string complete = "<CompleteMultipartUpload>";
    const size_t part = std::max<size_t>(o_.part_size, 5u << 20);
    Status s;
    std::string bytes;
    for (size_t off = 0, n = 1; off < size; off += part, ++n) {
      if (s = read(off, std::min(part, size - off), &bytes); !s.ok()) break;
      auto r = Request(http::verb::put, key,
                       {{"partNumber", std::to_string(n)}, {"uploadId", upload}}, bytes);
      if (r.ok()) s = Expect(*r, "PUT part", key);
      if (!r.ok() || !s.ok()) {
        if (s.ok()) s = r.status();
        break;
      }
      complete += fmt::format("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", n,
                              r->headers["etag"]);
    }
    if (s.ok()) {
      complete += "</CompleteMultipartUpload>";
      auto r = Request(http::verb::post, key, {{"uploadId", upload}}, complete);
      if (!r.ok()) s = r.status();
      // S3 can answer 200 with an error document.
      else if (s = Expect(*r, "POST complete", key); s.ok() && !XmlText(r->body, "Code").empty())
        s = Status::Unavailable(
            fmt::format("s3: completing {}: {}", key, XmlText(r->body, "Code")));
    }
    if (!s.ok()) (void)Request(http::verb::delete_, key, {{"uploadId", upload}}, "");
    return s;
  }

  // One signed request, retried with backoff on 5xx, 429 and network errors.
  Result<Response> Request(http::verb verb, const std::string& key,
                           const std::map<std::string, std::string>& query, std::string_view body,
                           std::string_view range = {}) {
    std::string path = o_.path_style ? "/" + o_.bucket : "";
    if (!key.empty() || !o_.path_style) path += "/" + key;
    const std::string canonical_path = UriEncode(path, true);
    std::string qs;
    for (const auto& [k, v] : query) {  // std::map: sorted by name, as SigV4 wants
      if (!qs.empty()) qs += '&';
      qs += UriEncode(k, false) + "=" + UriEncode(v, false);
    }
    const std::string payload_hash = Sha256Hex(body);
    Status last;
    for (int attempt = 0; attempt < o_.max_attempts; ++attempt) {
      if (attempt > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(50 << std::min(attempt - 1, 6)));
      http::request<http::string_body> req{
          verb, qs.empty() ? canonical_path : canonical_path + "?" + qs, 11};
      req.set(http::field::host, host_header_);
      req.set(http::field::user_agent, "libcommcare");
      if (!range.empty()) req.set(http::field::range, range);  // unsigned: S3 allows that
      Sign(req, http::to_string(verb), canonical_path, qs, payload_hash);
      req.body() = std::string(body);
      req.prepare_payload();
      auto conn = Take();
      try {
        Response r;
        if (conn) {
          try {
            r = conn->RoundTrip(req, std::chrono::milliseconds(o_.timeout_ms));
          } catch (const std::exception&) {  // the server closed an idle connection: redial
            conn = Dial();
            r = conn->RoundTrip(req, std::chrono::milliseconds(o_.timeout_ms));
          }
        } else {
          conn = Dial();
          r = conn->RoundTrip(req, std::chrono::milliseconds(o_.timeout_ms));
        }
        if (r.status >= 500 || r.status == 429) {
          last = Expect(r, http::to_string(verb), key);
          if (conn->keep_alive()) Give(std::move(conn));
          continue;
        }
        if (conn->keep_alive()) Give(std::move(conn));
        return r;
      } catch (const std::exception& e) {
        last = Status::Unavailable(
            fmt::format("s3: {} {}: {}", std::string(http::to_string(verb)), key, e.what()));
      }
    }
    return last;
  }

  void Sign(http::request<http::string_body>& req, std::string_view method,
            const std::string& canonical_path, const std::string& qs,
            const std::string& payload_hash) {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char amz[32];
    std::strftime(amz, sizeof amz, "%Y%m%dT%H%M%SZ", &tm);
    req.set("x-amz-date", amz);
    req.set("x-amz-content-sha256", payload_hash);
    s3::SigV4Request r{
        std::string(method),
        canonical_path,
        qs,
        {{"host", host_header_}, {"x-amz-content-sha256", payload_hash}, {"x-amz-date", amz}},
        payload_hash,
        amz};
    req.set(http::field::authorization,
            s3::SigV4Authorization(r, o_.region, o_.access_key, o_.secret_key));
  }

  std::unique_ptr<Connection> Dial() {
    auto c = std::make_unique<Connection>(ssl_.get());
    c->Connect(ep_.host, ep_.port, o_.path_style ? ep_.host : o_.bucket + "." + ep_.host,
               std::chrono::milliseconds(o_.timeout_ms));
    return c;
  }
  std::unique_ptr<Connection> Take() {
    std::lock_guard l(pool_mu_);
    DropIdle(std::chrono::steady_clock::now());
    if (pool_.empty()) return nullptr;
    auto c = std::move(pool_.back());
    pool_.pop_back();
    return c;
  }
  // The pool is a stack: the most recently used connection is taken first, so those at the
  // bottom sit idle once a burst is over. They are closed after kIdle (servers close idle
  // keep-alive connections after a few seconds themselves: s3rver after 5 s, S3 after ~20 s),
  // so the pool follows the current concurrency instead of the highest it ever saw.
  static constexpr auto kIdle = std::chrono::seconds(4);
  void Give(std::unique_ptr<Connection> c) {
    c->last_used = std::chrono::steady_clock::now();
    std::lock_guard l(pool_mu_);
    DropIdle(c->last_used);
    if (pool_.size() < 64) pool_.push_back(std::move(c));
  }
  void DropIdle(std::chrono::steady_clock::time_point now) {  // pool_mu_ held
    std::erase_if(pool_, [&](const auto& p) { return now - p->last_used > kIdle; });
  }

  S3Options o_;
  Endpoint ep_;
  std::string host_header_;
  std::unique_ptr<asio::ssl::context> ssl_;
  std::mutex pool_mu_;
  std::vector<std::unique_ptr<Connection>> pool_;
};

}  // namespace

Status S3Built() { return Status::Ok(); }

Result<std::unique_ptr<BlobStore>> OpenS3BlobStore(const S3Options& options) {
  S3Options o = options;
  if (o.access_key.empty())
    if (const char* k = std::getenv("AWS_ACCESS_KEY_ID")) o.access_key = k;
  if (o.secret_key.empty())
    if (const char* k = std::getenv("AWS_SECRET_ACCESS_KEY")) o.secret_key = k;
  if (o.region.empty()) o.region = "us-east-1";
  auto s = std::make_unique<S3BlobStore>(std::move(o));
  CC_RETURN_IF_ERROR(s->Open());
  return std::unique_ptr<BlobStore>(std::move(s));
}

}  // namespace commcare::storage
