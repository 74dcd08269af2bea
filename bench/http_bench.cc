// Load generator for the reference server (issue: reference server figures).
//
//   http_bench --commcare build/bin/commcare [--forms N] [--clients C] [--rate R] [--dir DIR]
//              [--no-pillows]
//
// Starts `commcare serve` on a fresh data directory (durable commits, pillows running unless
// --no-pillows), then C keep-alive clients POST the submit_bench forms (~3 KB, one case block)
// to the OpenRosa receiver with Basic auth. --rate R paces the clients to R submissions/s in
// total (latency counted from each request's scheduled time, so a stall is not hidden);
// without it they send as fast as answers come. Prints submissions/s, p50/p90/p99/max latency
// and the server's RSS.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace {

using namespace bench;

struct Args {
  std::string commcare = "build/bin/commcare";
  long forms = 20000;
  int clients = 16;
  double rate = 0;
  std::string dir;
  bool pillows = true;
};

int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

bool SendAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads one response; returns its status (0 on a broken connection).
int ReadResponse(int fd, std::string* buf) {
  size_t header_end;
  char tmp[16384];
  while ((header_end = buf->find("\r\n\r\n")) == std::string::npos) {
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return 0;
    buf->append(tmp, static_cast<size_t>(n));
  }
  int status = std::atoi(buf->c_str() + 9);
  size_t len = 0;
  std::string head = buf->substr(0, header_end);
  for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (auto p = head.find("content-length:"); p != std::string::npos)
    len = std::strtoul(head.c_str() + p + 15, nullptr, 10);
  while (buf->size() < header_end + 4 + len) {
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return 0;
    buf->append(tmp, static_cast<size_t>(n));
  }
  buf->erase(0, header_end + 4 + len);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  a.dir =
      (std::filesystem::temp_directory_path() / fmt::format("cc-hbench-{}", ::getpid())).string();
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (k == "--commcare")
      a.commcare = next();
    else if (k == "--forms")
      a.forms = std::stol(next());
    else if (k == "--clients")
      a.clients = std::stoi(next());
    else if (k == "--rate")
      a.rate = std::stod(next());
    else if (k == "--dir")
      a.dir = next();
    else if (k == "--no-pillows")
      a.pillows = false;
    else {
      fmt::print(stderr, "unknown option {}\n", k);
      return 2;
    }
  }
  std::filesystem::remove_all(a.dir);
  std::filesystem::create_directories(a.dir);
  const std::string out_path = a.dir + "/serve.out";
  pid_t server = ::fork();
  if (server == 0) {
    ::setenv("COMMCARE_ADMIN_USER", "bench", 1);
    ::setenv("COMMCARE_ADMIN_PASSWORD", "bench-password", 1);
    ::setenv("COMMCARE_DOMAIN", "bench", 1);
    FILE* f = std::freopen(out_path.c_str(), "w", stdout);
    (void)f;
    std::vector<const char*> args = {a.commcare.c_str(), "serve",      "--data", nullptr,
                                     "--listen",         "127.0.0.1:0"};
    std::string data = a.dir + "/data";
    args[3] = data.c_str();
    if (!a.pillows) args.push_back("--no-pillows");
    args.push_back(nullptr);
    ::execv(a.commcare.c_str(), const_cast<char* const*>(args.data()));
    std::perror("exec");
    std::_Exit(127);
  }
  int port = 0;
  for (int i = 0; i < 200 && !port; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream in(out_path);
    std::string line;
    if (std::getline(in, line)) {
      auto p = line.find("127.0.0.1:");
      if (p != std::string::npos) port = std::atoi(line.c_str() + p + 10);
    }
  }
  if (!port) {
    fmt::print(stderr, "the server did not start\n");
    ::kill(server, SIGKILL);
    return 1;
  }
  unsigned char auth[64];
  std::string cred = "bench:bench-password";
  int n = EVP_EncodeBlock(auth, reinterpret_cast<const unsigned char*>(cred.data()),
                          static_cast<int>(cred.size()));
  const std::string authz =
      "Basic " + std::string(reinterpret_cast<char*>(auth), static_cast<size_t>(n));
  {  // one request first: the password is verified once (PBKDF2) and cached, as in steady state
    int fd = Connect(port);
    std::string req = fmt::format(
        "GET /a/bench/api/case/v2/?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
        "{}\r\n\r\n",
        authz);
    std::string buf;
    if (fd < 0 || !SendAll(fd, req) || ReadResponse(fd, &buf) == 0)
      fmt::print(stderr, "warm-up request failed\n");
    if (fd >= 0) ::close(fd);
  }
  const long ncases = a.forms / 2;
  std::atomic<long> next{0}, failures{0};
  std::mutex mu;
  std::vector<double> latencies;
  latencies.reserve(static_cast<size_t>(a.forms));
  const double interval =
      a.rate > 0 ? a.clients / a.rate : 0;  // seconds between one client's sends
  auto t0 = Clock::now();
  // The server's RSS at every tenth of the run (it must not grow with the submissions).
  std::atomic<bool> done{false};
  std::thread rss_watch([&] {
    for (long tenth = 1; tenth < 10 && !done;) {
      if (next.load() >= a.forms * tenth / 10) {
        fmt::print("after ~{} submissions: server rss {} KB (anon {} KB)\n", a.forms * tenth / 10,
                   StatusKb("VmRSS", std::to_string(server)),
                   StatusKb("RssAnon", std::to_string(server)));
        std::fflush(stdout);
        ++tenth;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  std::vector<std::thread> ts;
  for (int c = 0; c < a.clients; ++c)
    ts.emplace_back([&, c] {
      int fd = Connect(port);
      std::string buf;
      std::vector<double> mine;
      long k = 0;
      for (long i; (i = next.fetch_add(1)) < a.forms; ++k) {
        auto scheduled = Clock::now();
        if (interval > 0) {
          scheduled =
              t0 + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(interval * (k + c / double(a.clients))));
          std::this_thread::sleep_until(scheduled);
        }
        std::string body = MakeForm(i, ncases);
        std::string req = fmt::format(
            "POST /a/bench/receiver/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n"
            "Content-Type: text/xml\r\nX-OpenRosa-Version: 3.0\r\nContent-Length: {}\r\n\r\n",
            authz, body.size());
        req += body;
        int status = 0;
        for (int attempt = 0; attempt < 2 && !status; ++attempt) {
          if (fd < 0) fd = Connect(port);
          if (fd >= 0 && SendAll(fd, req)) status = ReadResponse(fd, &buf);
          if (!status && fd >= 0) {
            ::close(fd);
            fd = -1;
            buf.clear();
          }
        }
        if (status != 201) failures.fetch_add(1);
        mine.push_back(Seconds(scheduled, Clock::now()));
      }
      if (fd >= 0) ::close(fd);
      std::lock_guard l(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  for (auto& t : ts) t.join();
  double secs = Seconds(t0, Clock::now());
  done = true;
  rss_watch.join();
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    return latencies.empty() ? 0
                             : latencies[std::min(latencies.size() - 1,
                                                  static_cast<size_t>(p * latencies.size()))] *
                                   1e3;
  };
  fmt::print("{} submissions, {} clients{}, pillows {}: {:.0f} submissions/s ({} failures)\n",
             a.forms, a.clients, a.rate > 0 ? fmt::format(", paced at {:.0f}/s", a.rate) : "",
             a.pillows ? "running" : "off", a.forms / secs, failures.load());
  fmt::print("latency ms: p50 {:.2f}  p90 {:.2f}  p99 {:.2f}  max {:.2f}\n", pct(0.5), pct(0.9),
             pct(0.99), latencies.empty() ? 0 : latencies.back() * 1e3);
  fmt::print("server rss: {} KB (anon {} KB)\n", StatusKb("VmRSS", std::to_string(server)),
             StatusKb("RssAnon", std::to_string(server)));
  ::kill(server, SIGTERM);
  int st;
  ::waitpid(server, &st, 0);
  std::filesystem::remove_all(a.dir);
  return failures.load() == 0 ? 0 : 1;
}
