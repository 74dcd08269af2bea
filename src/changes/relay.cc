// One relay round: read the outbox after the mark, append with the new mark, dequeue.
#include "changes/relay.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <mutex>

namespace commcare::changes {
namespace {

// Fault injection for the crash tests: COMMCARE_TEST_CRASH_AFTER_RELAY_APPEND=N kills the
// process (SIGKILL, as kill -9 would) right after the Nth append, before its dequeue.
void MaybeCrashAfterAppend() {
  static const char* v = std::getenv("COMMCARE_TEST_CRASH_AFTER_RELAY_APPEND");
  if (!v) return;
  static std::mutex mu;
  static long seen = 0;
  std::lock_guard l(mu);
  if (++seen >= std::atol(v)) ::kill(::getpid(), SIGKILL);
}

}  // namespace

Status RelayBatch(Outbox* outbox, storage::ChangeLog* log, const std::string& producer,
                  size_t limit, int64_t* mark, int64_t* moved) {
  *moved = 0;
  if (*mark < 0) {
    CC_ASSIGN_OR_RETURN(int64_t logged, log->GetProducerMark(producer));
    *mark = logged;
    if (logged > 0) CC_RETURN_IF_ERROR(outbox->Dequeue(logged));  // appended, not dequeued
  }
  CC_ASSIGN_OR_RETURN(auto rows, outbox->Read(*mark, limit));
  if (rows.empty()) return Status::Ok();
  CC_RETURN_IF_ERROR(outbox->Sync());
  std::vector<storage::ChangeMessage> msgs;
  msgs.reserve(rows.size());
  for (auto& r : rows) msgs.push_back(std::move(r.message));
  storage::ProducerMark m{producer, rows.back().seq};
  CC_RETURN_IF_ERROR(log->Append(msgs, &m));
  MaybeCrashAfterAppend();
  *mark = rows.back().seq;
  CC_RETURN_IF_ERROR(outbox->Dequeue(*mark));
  *moved = static_cast<int64_t>(rows.size());
  return Status::Ok();
}

}  // namespace commcare::changes
