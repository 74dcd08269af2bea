// Data forwarding throughput and lag, to a receiver on loopback (a small HTTP/1.1 server in this
// program, a thread per connection, answering 200 at once).
//  1. lag: forms submitted at a steady rate while the forwarding pillow and a worker pool run;
//     submission → arrival at the receiver, p50/p99/max.
//  2. throughput: N records made while the forwarder is paused, then resumed; deliveries/s
//     from resume to the last arrival.
//  3. the floor, measured in the same run: the same N form XML bodies POSTed by one libcurl
//     handle (keep-alive) with no store, no records and no tasks — the least work delivery does.
//   forward_bench [forms=20000] [dir=/tmp/cc-forward-bench] [rate=500 forms/s for the lag phase]
#include <arpa/inet.h>
#include <commcare/forwarding.h>
#include <commcare/host.h>
#include <commcare/pillows.h>
#include <commcare/tasks.h>
#include <curl/curl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "bench_host.h"
#include "bench_util.h"

using namespace commcare;

namespace {

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Answers every request 200 "ok"; notes when each instanceID arrived.
class Receiver {
 public:
  Receiver() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 64);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    std::thread([this] { Accept(); }).detach();
  }
  int port() const { return port_; }
  int64_t count() const { return count_.load(); }
  std::map<std::string, int64_t> Arrivals() {
    std::lock_guard l(mu_);
    return arrivals_;
  }

 private:
  void Accept() {
    while (true) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      int one = 1;
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::thread([this, c] { Serve(c); }).detach();
    }
  }
  void Serve(int c) {
    std::string buf;
    char chunk[65536];
    while (true) {
      size_t head_end;
      while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
        ssize_t n = ::read(c, chunk, sizeof chunk);
        if (n <= 0) return (void)::close(c);
        buf.append(chunk, static_cast<size_t>(n));
      }
      size_t cl = 0;
      if (size_t p = buf.find("Content-Length: "); p != std::string::npos && p < head_end)
        cl = std::strtoul(buf.c_str() + p + 16, nullptr, 10);
      while (buf.size() < head_end + 4 + cl) {
        ssize_t n = ::read(c, chunk, sizeof chunk);
        if (n <= 0) return (void)::close(c);
        buf.append(chunk, static_cast<size_t>(n));
      }
      std::string_view body(buf.data() + head_end + 4, cl);
      const int64_t at = NowUs();
      if (size_t p = body.find("<instanceID>"); p != std::string_view::npos) {
        size_t e = body.find("</instanceID>", p);
        std::lock_guard l(mu_);
        arrivals_.emplace(std::string(body.substr(p + 12, e - p - 12)), at);
      }
      ++count_;
      static const char kOk[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
      if (::write(c, kOk, sizeof kOk - 1) < 0) return (void)::close(c);
      buf.erase(0, head_end + 4 + cl);
    }
  }
  int fd_ = -1, port_ = 0;
  std::atomic<int64_t> count_{0};
  std::mutex mu_;
  std::map<std::string, int64_t> arrivals_;
};

std::string Form(const std::string& id) {
  return fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://example.org/fwd"><q1>a</q1><q2>{0}</q2><case xmlns="http://commcarehq.org/case/transaction/v2" case_id="case-{0}" date_modified="2024-01-01T00:00:00Z" user_id="u1"><create><case_type>person</case_type><case_name>P</case_name><owner_id>o1</owner_id></create></case><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{0}</instanceID><userID>u1</userID></meta></data>)",
      id);
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    fmt::print(stderr, "{}: {}\n", what, s.ToString());
    std::exit(1);
  }
}

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

// The floor: n POSTs of the forms' XML through one keep-alive libcurl handle.
double Floor(int port, long n) {
  CURL* c = curl_easy_init();
  const std::string url = fmt::format("http://127.0.0.1:{}/floor", port);
  curl_slist* h = curl_slist_append(nullptr, "Content-Type: application/xml");
  h = curl_slist_append(h, "Expect:");
  const auto t0 = bench::Clock::now();
  for (long i = 0; i < n; ++i) {
    std::string body = Form(fmt::format("floor-{}", i));
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Discard);
    if (curl_easy_perform(c) != CURLE_OK) std::exit(1);
  }
  const double rate = n / bench::Seconds(t0, bench::Clock::now());
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 20000;
  const std::string dir = argc > 2 ? argv[2] : "/tmp/cc-forward-bench";
  const long rate = argc > 3 ? std::atol(argv[3]) : 500;
  std::filesystem::remove_all(dir);
  Receiver rx;
  auto host = bench::OpenHost(dir, "{}");
  auto q = host->Tasks();
  Check(q.status(), "tasks");
  auto store = ForwardingStore::Open(host->PillowStore(), *q);
  Check(store.status(), "store");
  Forwarder f;
  f.domain = "bench";
  f.url = fmt::format("http://127.0.0.1:{}/in", rx.port());
  auto added = (*store)->Add(f);
  Check(added.status(), "add");
  auto pillows = host->OpenPillows({});
  Check(pillows.status(), "pillows");
  std::atomic<bool> stop{false};
  std::thread pillow_thread([&] { Check((*pillows)->Run(stop), "pillows run"); });
  TaskWorkersOptions wo;
  wo.workers = 2;
  wo.poll = std::chrono::milliseconds(50);
  auto workers = host->NewTaskWorkers(wo);
  Check(workers.status(), "workers");
  Check((*workers)->Start(), "start");
  Engine* e = host->engine();
  auto submit = [&](const std::string& id) {
    SubmitRequest r;
    r.domain = "bench";
    r.body = Form(id);
    if (e->Submit(r).http_status != 201) std::exit(1);
  };
  auto wait_for = [&](int64_t count) {
    while (rx.count() < count) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  };

  // 1. Lag at a steady rate.
  const long lag_n = std::min<long>(n / 4, rate * 10);
  std::map<std::string, int64_t> submitted;
  const auto t_lag = bench::Clock::now();
  for (long i = 0; i < lag_n; ++i) {
    const auto due = t_lag + std::chrono::microseconds(i * 1'000'000 / rate);
    std::this_thread::sleep_until(due);
    const std::string id = fmt::format("lag-{}", i);
    submitted[id] = NowUs();
    submit(id);
  }
  wait_for(lag_n);
  auto arrivals = rx.Arrivals();
  std::vector<double> lags;
  for (const auto& [id, at] : submitted) lags.push_back((arrivals.at(id) - at) / 1000.0);
  std::sort(lags.begin(), lags.end());
  auto pct = [&](double p) { return lags[std::min(lags.size() - 1, size_t(p * lags.size()))]; };

  // 2. Throughput: records made while paused, then delivered.
  Check((*store)->SetPaused("bench", added->id, true), "pause");
  for (long i = 0; i < n; ++i) submit(fmt::format("tp-{}", i));
  Check(e->RelayChanges(), "relay");
  for (int i = 0; i < 100000; ++i) {  // until every record is made (pillow batches rotate)
    auto counts = (*store)->Counts("bench");
    Check(counts.status(), "counts");
    const size_t at = counts->find("\"pending\":");
    if (at != std::string::npos && std::atol(counts->c_str() + at + 10) >= n) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto t0 = bench::Clock::now();
  Check((*store)->SetPaused("bench", added->id, false), "resume");
  wait_for(lag_n + n);
  const double secs = bench::Seconds(t0, bench::Clock::now());
  stop = true;
  pillow_thread.join();
  (*workers)->Stop();
  const double floor = Floor(rx.port(), n);

  fmt::print("forward_bench: {} forms, form_xml to a receiver on loopback\n", n);
  fmt::print("lag ({} forms at {}/s)   p50 {:.1f} ms  p99 {:.1f} ms  max {:.1f} ms\n", lag_n, rate,
             pct(0.50), pct(0.99), lags.back());
  fmt::print("deliveries             {:>8.0f} /s  ({} in {:.2f} s)\n", n / secs, n, secs);
  fmt::print("floor (bare POSTs)     {:>8.0f} /s\n", floor);
  fmt::print("ratio deliveries/floor {:>8.2f}\n", n / secs / floor);
  return 0;
}
