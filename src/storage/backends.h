// Which optional backends this libcommcare was built with (CMake's COMMCARE_WITH_POSTGRES,
// COMMCARE_WITH_KAFKA and COMMCARE_WITH_S3, all ON by default). Each function is defined by its
// backend's own sources, or by the backend's disabled.cc when it is OFF: that file also defines
// the backend's Open functions, failing the same way, so nothing else needs to know.
#pragma once

#include "commcare/status.h"

namespace commcare::storage {

// Ok, or FailedPrecondition "this libcommcare was built without PostgreSQL
// (COMMCARE_WITH_POSTGRES=OFF)". Thread-safe.
Status PostgresBuilt();
// Ok, or FailedPrecondition "... without Kafka (COMMCARE_WITH_KAFKA=OFF)".
Status KafkaBuilt();
// Ok, or FailedPrecondition "... without S3 (COMMCARE_WITH_S3=OFF)".
Status S3Built();

}  // namespace commcare::storage
