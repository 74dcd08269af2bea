// Reminders in the background (internal): where the message log lives and the reminder.check
// task type (sms.send is integrations/reminders/sms.h). Registered by the Host.
#pragma once

#include <memory>
#include <mutex>

#include "commcare/status.h"
#include "commcare/tasks.h"

namespace commcare {
class Host;
namespace util {
class SqlDb;
}
}  // namespace commcare

namespace commcare::reminders {

// The message log's database: the task queue's own (queue null: tasks are enqueued in the same
// transaction as their rows), or for an in-memory host a log of its own (queue: the host's).
// One connection per data directory, shared by every thread: hold *mu while using db.
struct LogDb {
  std::shared_ptr<util::SqlDb> db;
  std::shared_ptr<std::mutex> mu;
  TaskQueue* queue = nullptr;
};
// Opens (once per process) and migrates the log.
Result<LogDb> OpenLog(Host* host);

// reminder.check: payload is an alert; queues its due messages. Result: TickSummary's JSON.
TaskHandler CheckHandler(Host* host);

}  // namespace commcare::reminders
