// Reminders in the background (internal): where the message log lives and the reminder.check
// task type (sms.send is integrations/reminders/sms.h). Registered by the Host.
#pragma once

#include <memory>

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
struct LogDb {
  std::shared_ptr<util::SqlDb> db;
  TaskQueue* queue = nullptr;
};
Result<LogDb> OpenLog(Host* host);

// reminder.check: payload is an alert; queues its due messages. Result: TickSummary's JSON.
TaskHandler CheckHandler(Host* host);

}  // namespace commcare::reminders
