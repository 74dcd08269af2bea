// Built instead of the S3 blob store when COMMCARE_WITH_S3=OFF (no S3 client): opening one
// fails with FailedPrecondition saying so.
#include "commcare/storage/blob_store.h"
#include "storage/backends.h"

namespace commcare::storage {

Status S3Built() {
  return Status::FailedPrecondition("this libcommcare was built without S3 (COMMCARE_WITH_S3=OFF)");
}

Result<std::unique_ptr<BlobStore>> OpenS3BlobStore(const S3Options&) { return S3Built(); }

}  // namespace commcare::storage
