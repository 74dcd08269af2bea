// Built instead of the PostgreSQL backends when COMMCARE_WITH_POSTGRES=OFF (no libpq): opening a
// PostgreSQL primary store or SQL database fails with FailedPrecondition saying so.
#include "commcare/storage/primary_store.h"
#include "storage/backends.h"
#include "util/sql_db.h"

namespace commcare {

namespace storage {

Status PostgresBuilt() {
  return Status::FailedPrecondition(
      "this libcommcare was built without PostgreSQL (COMMCARE_WITH_POSTGRES=OFF)");
}

Result<std::unique_ptr<PrimaryStore>> OpenPostgresPrimaryStore(const std::string&) {
  return PostgresBuilt();
}

}  // namespace storage

namespace util {

Result<std::unique_ptr<SqlDb>> OpenPostgresSqlDb(const std::string&, const std::string&) {
  return storage::PostgresBuilt();
}

}  // namespace util

}  // namespace commcare
