// Wake-ups for workers on PostgreSQL: a connection of its own LISTENs on the queue's channel
// and wakes this process's workers on each NOTIFY (an enqueue, in any process, at commit).
// When the connection drops it reconnects, waking the workers once so that nothing waits for
// a notification sent meanwhile.
#include <sys/select.h>

#include <atomic>
#include <thread>

#include "commcare/log.h"
#include "storage/postgres/pg_conn.h"
#include "tasks/queue.h"

namespace commcare::tasks {

struct SqlTaskQueue::Listener {
  std::atomic<bool> stop{false};
  std::thread thread;
  ~Listener() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
};

namespace {

// Waits up to 250 ms for notifications on c; false when the connection is lost.
bool Drain(pg::Conn* c, const std::function<void()>& wake) {
  int fd = PQsocket(c->get());
  if (fd < 0) return false;
  fd_set set;
  FD_ZERO(&set);
  FD_SET(fd, &set);
  timeval tv{0, 250'000};
  if (select(fd + 1, &set, nullptr, nullptr, &tv) < 0) return errno == EINTR;
  if (!PQconsumeInput(c->get())) return false;
  bool any = false;
  while (PGnotify* n = PQnotifies(c->get())) {
    any = true;
    PQfreemem(n);
  }
  if (any) wake();
  return PQstatus(c->get()) == CONNECTION_OK;
}

}  // namespace

Status SqlTaskQueue::StartListener() {
  const std::string dsn = where_.substr(std::string_view("postgres:").size());
  auto listener = std::make_shared<Listener>();
  CC_ASSIGN_OR_RETURN(auto first, pg::Connect(dsn));
  CC_RETURN_IF_ERROR(first->Exec("listening for tasks", "LISTEN commcare_tasks"));
  auto* raw = listener.get();
  listener->thread = std::thread([this, raw, dsn, c = std::move(first)]() mutable {
    bool logged = false;
    while (!raw->stop) {
      if (c && Drain(c.get(), [this] { Notify(); })) continue;
      c.reset();
      auto again = pg::Connect(dsn);
      Status s = again.ok() ? (*again)->Exec("listening for tasks", "LISTEN commcare_tasks")
                            : again.status();
      if (s.ok()) {
        c = std::move(*again);
        if (logged) Log(LogLevel::kInfo, "task wake-ups resumed", {{"component", "tasks"}});
        logged = false;
        Notify();  // anything enqueued while we were away
        continue;
      }
      if (!logged)
        Log(LogLevel::kWarning, "task wake-ups lost; workers poll until the connection is back",
            {{"component", "tasks"}, {"error", s.ToString()}, {"next", "reconnect every 1 s"}});
      logged = true;
      for (int i = 0; i < 4 && !raw->stop; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  });
  listener_ = std::move(listener);
  return Status::Ok();
}

}  // namespace commcare::tasks
