// A fault injector for the S3 tests: an HTTP server on loopback that answers an S3 bucket
// check ("HEAD /blobs") with 200 and every other request with 500 (or, with hang, reads the
// request and never answers).
#pragma once

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace cctest {

// A fault injector: answers the bucket check, then every other request with 500 (or, with hang,
// reads requests and never answers). With an upstream port, a connection accepted while
// `failing` is false is relayed to the upstream server instead (the S3 server coming back).
struct FlakyHttp {
  int fd = -1;
  int port = 0;
  std::atomic<int> requests{0};
  std::atomic<bool> stop{false};
  std::atomic<bool> failing{true};
  std::thread t;
  std::vector<std::thread> relays;
  // Copies bytes both ways between a client and the upstream until either side closes.
  void Relay(int c, int upstream_port, std::string first) {
    int u = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(upstream_port));
    if (::connect(u, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::write(u, first.data(), first.size()) != static_cast<ssize_t>(first.size())) {
      ::close(u);
      ::close(c);
      return;
    }
    char buf[65536];
    while (!stop) {
      pollfd p[2] = {{c, POLLIN, 0}, {u, POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      bool closed = false;
      for (int i = 0; i < 2 && !closed; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        closed = n <= 0 || ::write(i == 0 ? u : c, buf, static_cast<size_t>(n)) != n;
      }
      if (closed) break;
    }
    ::close(u);
    ::close(c);
  }
  explicit FlakyHttp(bool hang, int upstream_port = 0) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
    t = std::thread([this, hang, upstream_port] {
      std::vector<int> held;
      while (!stop) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        int c = ::accept(fd, nullptr, nullptr);
        if (c < 0) continue;
        std::string req;
        char buf[65536];
        while (req.find("\r\n\r\n") == std::string::npos) {
          ssize_t n = ::read(c, buf, sizeof buf);
          if (n <= 0) break;
          req.append(buf, static_cast<size_t>(n));
        }
        const bool bucket_check = req.rfind("HEAD /blobs HTTP", 0) == 0;
        ++requests;
        if (upstream_port && !failing) {
          relays.emplace_back([this, c, upstream_port, req] { Relay(c, upstream_port, req); });
          continue;
        }
        if (hang && !bucket_check) {
          held.push_back(c);
          continue;
        }
        std::string body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>";
        std::string res = bucket_check ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                                       : fmt::format(
                                             "HTTP/1.1 500 Internal Server Error\r\nContent-"
                                             "Length: {}\r\nConnection: close\r\n\r\n{}",
                                             body.size(), body);
        (void)!::write(c, res.data(), res.size());
        ::close(c);
      }
      for (int c : held) ::close(c);
    });
  }
  ~FlakyHttp() {
    stop = true;
    t.join();
    for (auto& r : relays) r.join();
    ::close(fd);
  }
};

}  // namespace cctest
