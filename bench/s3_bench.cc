// S3 blob store figures (issue: production backends).
//
//   s3_bench --endpoint http://127.0.0.1:PORT [--bucket blobs] [--puts 20000] [--inflight 16]
//            [--size 3072] [--access-key S3RVER --secret-key S3RVER]
//
// 1. OpenS3BlobStore: --puts PUTs of --size bytes from --inflight threads (signed SigV4,
//    pooled keep-alive connections): puts/s, p50, p99.
// 2. The server's own ceiling, measured the same way by a plain HTTP/1.1 client (unsigned
//    PUTs on raw keep-alive sockets, s3rver accepts anonymous writes): puts/s.
#include <arpa/inet.h>
#include <commcare/storage/blob_store.h>
#include <fmt/format.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace {

using namespace bench;

struct Args {
  std::string endpoint, bucket = "blobs", access = "S3RVER", secret = "S3RVER";
  long puts = 20000;
  int inflight = 16;
  size_t size = 3072;
};

struct Result {
  double seconds = 0;
  std::vector<double> lat_ms;
  long failures = 0;
};

template <typename F>
Result Run(const Args& a, F&& put_one) {
  Result r;
  std::atomic<long> next{0}, failures{0};
  std::mutex mu;
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < a.inflight; ++t)
    ts.emplace_back([&, t] {
      std::vector<double> lat;
      auto state = put_one.Start(t);
      while (true) {
        long i = next.fetch_add(1);
        if (i >= a.puts) break;
        auto s = Clock::now();
        if (!put_one.Put(state, i)) failures++;
        lat.push_back(Seconds(s, Clock::now()) * 1000);
      }
      std::lock_guard l(mu);
      r.lat_ms.insert(r.lat_ms.end(), lat.begin(), lat.end());
    });
  for (auto& t : ts) t.join();
  r.seconds = Seconds(t0, Clock::now());
  r.failures = failures;
  std::sort(r.lat_ms.begin(), r.lat_ms.end());
  return r;
}

double Pct(const std::vector<double>& v, double p) {
  return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

struct StorePuts {
  commcare::storage::BlobStore* store;
  std::string data;
  int Start(int) { return 0; }
  bool Put(int, long i) { return store->Put(fmt::format("bench/{}", i), data, true).ok(); }
};

// Unsigned PUTs over one raw keep-alive socket per thread.
struct PlainPuts {
  std::string host, port, bucket, data;
  int Start(int) {
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res)) return -1;
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd, res->ai_addr, res->ai_addrlen) != 0) fd = -1;
    freeaddrinfo(res);
    return fd;
  }
  bool Put(int fd, long i) {
    if (fd < 0) return false;
    std::string req =
        fmt::format("PUT /{}/plain/{} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {}\r\n\r\n",
                    bucket, i, host, port, data.size());
    req += data;
    if (::write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) return false;
    std::string in;
    char buf[4096];
    size_t need = std::string::npos;
    while (true) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) return false;
      in.append(buf, static_cast<size_t>(n));
      auto h = in.find("\r\n\r\n");
      if (h == std::string::npos) continue;
      if (need == std::string::npos) {
        auto cl = in.find("ontent-Length: ");
        size_t len = cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 15));
        need = h + 4 + len;
      }
      if (in.size() >= need) break;
    }
    return in.rfind("HTTP/1.1 200", 0) == 0;
  }
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (k == "--endpoint")
      a.endpoint = next();
    else if (k == "--bucket")
      a.bucket = next();
    else if (k == "--puts")
      a.puts = std::stol(next());
    else if (k == "--inflight")
      a.inflight = std::stoi(next());
    else if (k == "--size")
      a.size = std::stoul(next());
    else if (k == "--access-key")
      a.access = next();
    else if (k == "--secret-key")
      a.secret = next();
    else
      return fmt::print(stderr, "unknown option {}\n", k), 2;
  }
  if (a.endpoint.empty()) return fmt::print(stderr, "--endpoint is required\n"), 2;
  std::string data(a.size, 'x');
  commcare::storage::S3Options o;
  o.endpoint = a.endpoint;
  o.bucket = a.bucket;
  o.access_key = a.access;
  o.secret_key = a.secret;
  auto store = commcare::storage::OpenS3BlobStore(o);
  if (!store.ok()) return fmt::print(stderr, "{}\n", store.status().ToString()), 1;

  StorePuts sp{store->get(), data};
  auto r1 = Run(a, sp);
  fmt::print(
      "S3BlobStore: {} puts of {} B, {} in flight: {:.0f} puts/s, p50 {:.1f} ms, p99 {:.1f} "
      "ms, {} failed\n",
      a.puts, a.size, a.inflight, a.puts / r1.seconds, Pct(r1.lat_ms, 0.5), Pct(r1.lat_ms, 0.99),
      r1.failures);

  std::string hp = a.endpoint.substr(a.endpoint.find("//") + 2);
  PlainPuts pp{hp.substr(0, hp.rfind(':')), hp.substr(hp.rfind(':') + 1), a.bucket, data};
  auto r2 = Run(a, pp);
  fmt::print(
      "plain HTTP client (the server's ceiling): {:.0f} puts/s, p50 {:.1f} ms, p99 {:.1f} "
      "ms, {} failed\n",
      a.puts / r2.seconds, Pct(r2.lat_ms, 0.5), Pct(r2.lat_ms, 0.99), r2.failures);
  fmt::print("S3BlobStore / ceiling: {:.0f}%\n", 100.0 * r2.seconds / r1.seconds);
  return r1.failures || r2.failures ? 1 : 0;
}
