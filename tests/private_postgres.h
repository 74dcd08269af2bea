// A private PostgreSQL cluster for tests that stop and start it (internal to the tests).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "test_util.h"

namespace cctest {

// A private PostgreSQL cluster (Debian's initdb/pg_ctl, as the postgres user when root) that a
// test may stop and start without disturbing the shared one other tests use.
struct PrivatePostgres {
  std::string dir, bin, as_pg, dsn;
  int port = 0;
  static std::string Run(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    REQUIRE(p);
    char buf[512];
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    int rc = ::pclose(p);
    REQUIRE_MESSAGE(rc == 0, cmd << ": " << out);
    return out;
  }
  PrivatePostgres() {
    dir = FreshTempDir("cc-pg", "priv");
    std::filesystem::create_directories(dir);
    bin = Run("pg_config --bindir");
    while (!bin.empty() && bin.back() == '\n') bin.pop_back();
    if (::getuid() == 0) {
      Run("chown postgres:postgres " + dir);
      as_pg = "runuser -u postgres -- ";
    }
    Run(as_pg + bin + "/initdb -D " + dir + "/data -U postgres --auth=trust -E UTF8 " +
        "--locale=C.UTF-8");
    {  // a free port: bind to 0 and read what the kernel chose
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof a;
      REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
      REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
      port = ntohs(a.sin_port);
      ::close(fd);
    }
    Start();
    dsn = fmt::format("host=127.0.0.1 port={} user=postgres", port);
  }
  void Stop() { Run(as_pg + bin + "/pg_ctl -D " + dir + "/data -m fast -w stop"); }
  void Start() {
    Run(as_pg + bin + "/pg_ctl -D " + dir + "/data -l " + dir + "/log -w -o \"-p " +
        std::to_string(port) + " -k " + dir + " -c listen_addresses=127.0.0.1\" start");
  }
  ~PrivatePostgres() {
    std::string cmd =
        as_pg + bin + "/pg_ctl -D " + dir + "/data -m immediate -w stop >/dev/null 2>&1";
    (void)std::system(cmd.c_str());
  }
};

}  // namespace cctest
