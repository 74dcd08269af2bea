// A build without PostgreSQL (COMMCARE_WITH_POSTGRES=OFF): no LISTEN thread. A queue is never
// opened on PostgreSQL there (SqlDb::Open refuses it first); this keeps the link whole.
#include "tasks/queue.h"

namespace commcare::tasks {

struct SqlTaskQueue::Listener {};

Status SqlTaskQueue::StartListener() {
  return Status::FailedPrecondition(
      "this libcommcare was built without PostgreSQL (COMMCARE_WITH_POSTGRES=OFF)");
}

}  // namespace commcare::tasks
