// Read-only SQLite connections kept open between calls, per file (internal): a query then
// starts with a warm page cache and memory map instead of opening the file, parsing the
// schema and faulting pages in again.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "util/sqlite_conn.h"

namespace commcare::util {

class ReadPool {
 public:
  // A connection on loan; back to the pool (statements reset) when destroyed.
  class Lease {
   public:
    Lease(std::unique_ptr<Conn> c, std::string path, ino_t inode)
        : conn_(std::move(c)), path_(std::move(path)), inode_(inode) {}
    Lease(Lease&&) = default;
    ~Lease() {
      if (conn_) Return(path_, inode_, std::move(conn_));
    }
    Conn& operator*() { return *conn_; }
    Conn* operator->() { return conn_.get(); }

   private:
    std::unique_ptr<Conn> conn_;
    std::string path_;
    ino_t inode_;
  };

  // A read-only connection to path; setup runs once on each new connection (to register SQL
  // functions). A file replaced since a connection was opened (another inode) gets new ones.
  static Result<Lease> Acquire(const std::string& path,
                               const std::function<Status(Conn&)>& setup = {}) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
      return Status::NotFound(fmt::format("no database at {}", path));
    {
      std::lock_guard l(State().mu);
      auto& idle = State().idle[path];
      if (idle.inode != st.st_ino) idle = {st.st_ino, {}};
      if (!idle.conns.empty()) {
        auto c = std::move(idle.conns.back());
        idle.conns.pop_back();
        return Lease(std::move(c), path, st.st_ino);
      }
    }
    auto c = std::make_unique<Conn>();
    CC_RETURN_IF_ERROR(c->Open(path, true, false));
    if (setup) CC_RETURN_IF_ERROR(setup(*c));
    return Lease(std::move(c), path, st.st_ino);
  }

 private:
  static constexpr size_t kMaxIdle = 8;  // per file
  struct Idle {
    ino_t inode = 0;
    std::vector<std::unique_ptr<Conn>> conns;
  };
  struct Shared {
    std::mutex mu;
    std::map<std::string, Idle> idle;
  };
  static Shared& State() {
    static Shared* s = new Shared;  // never destroyed: leases may end during exit
    return *s;
  }
  static void Return(const std::string& path, ino_t inode, std::unique_ptr<Conn> c) {
    c->ResetAll();
    std::lock_guard l(State().mu);
    auto& idle = State().idle[path];
    if (idle.inode == inode && idle.conns.size() < kMaxIdle) idle.conns.push_back(std::move(c));
  }
};

}  // namespace commcare::util
