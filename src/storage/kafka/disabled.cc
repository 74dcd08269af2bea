// Built instead of the Kafka change log when COMMCARE_WITH_KAFKA=OFF (no librdkafka): opening
// one fails with FailedPrecondition saying so.
#include "commcare/storage/change_log.h"
#include "storage/backends.h"

namespace commcare::storage {

Status KafkaBuilt() {
  return Status::FailedPrecondition(
      "this libcommcare was built without Kafka (COMMCARE_WITH_KAFKA=OFF)");
}

Result<std::unique_ptr<ChangeLog>> OpenKafkaChangeLog(const KafkaChangeLogOptions&) {
  return KafkaBuilt();
}

}  // namespace commcare::storage
