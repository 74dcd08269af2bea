// BlobStore: raw form XML and attachments, by key (object storage's role).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "commcare/status.h"

namespace commcare::storage {

// Keys are printable ASCII without "..". Put takes a name and returns the key to read the blob
// back with: a file store returns the name itself, a volume store returns where the blob lies
// (as Haystack does), so the caller keeps the returned key in its metadata row.
// Thread safety: every method may be called concurrently.
class BlobStore {
 public:
  virtual ~BlobStore() = default;
  BlobStore() = default;
  BlobStore(const BlobStore&) = delete;
  BlobStore& operator=(const BlobStore&) = delete;

  // Stores data under a key derived from name (replacing an old blob of that key) and returns
  // the key; readers see all of the blob or none of it. durable=true: on return it survives a
  // crash; false: only after the next Sync().
  virtual Result<std::string> Put(std::string_view name, std::string_view data, bool durable) = 0;
  // The blob's bytes; NotFound if there is none.
  virtual Result<std::string> Get(std::string_view key) = 0;
  // Removes the blob; Ok if it did not exist.
  virtual Status Delete(std::string_view key) = 0;
  // Whether a blob is stored under key.
  virtual Result<bool> Exists(std::string_view key) = 0;
  // Makes every earlier Put durable (one barrier for many puts: group commit).
  virtual Status Sync() = 0;
  // Writes data under exactly this key, one that Put returned earlier, and makes it durable:
  // repairs a blob lost in a crash from the copy the blob journal kept.
  virtual Status Restore(std::string_view key, std::string_view data) = 0;
  // Whether every Put is durable when it returns, whatever its durable flag (S3): the engine
  // then keeps no journal copy of the blob with the rows.
  virtual bool PutsAreDurable() const { return false; }

  // Streaming, for blobs too big to hold in memory (export files). Both have defaults built on
  // Put and Get (which hold the whole blob); the file and S3 stores override them.
  // Stores the file at local_path like Put(name, its bytes, durable=true) and returns the key;
  // the file and S3 stores read it in pieces (S3: a multipart upload past multipart_threshold).
  // NotFound when local_path cannot be opened.
  virtual Result<std::string> PutFile(std::string_view name, const std::string& local_path);
  // Up to len bytes of the blob from offset: fewer at its end, none from its end on. NotFound if
  // there is no blob. The file store reads just those bytes, S3 sends a ranged GET.
  virtual Result<std::string> ReadRange(std::string_view key, uint64_t offset, size_t len);
};

// An in-memory BlobStore.
std::unique_ptr<BlobStore> NewMemoryBlobStore();
// A BlobStore in a directory of append-only volume files: each Put appends one checksummed
// record to the current volume and returns "pack/<volume>/<offset>/<length>"; Sync is one
// fdatasync per volume written; Delete punches a hole. The embedded default.
Result<std::unique_ptr<BlobStore>> OpenPackBlobStore(const std::string& root,
                                                     bool read_only = false);
// A BlobStore in a directory: one file per blob, written to a temp file and renamed into place.
// A writer (read_only=false) removes temp files a crashed writer left behind.
Result<std::unique_ptr<BlobStore>> OpenFsBlobStore(const std::string& root, bool read_only = false);

// Where and how to reach an S3 bucket.
struct S3Options {
  std::string endpoint = "https://s3.amazonaws.com";  // http(s)://host[:port]
  std::string region = "us-east-1";
  std::string bucket;
  std::string access_key, secret_key;      // "" = $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY
  std::string prefix;                      // prepended to every key
  bool path_style = true;                  // host/bucket/key; false: bucket.host/key
  std::string ca_file;                     // TLS trust ("" = the system's)
  int timeout_ms = 10000;                  // per request
  int max_attempts = 4;                    // on 5xx, 429 and network errors, with backoff
  size_t multipart_threshold = 16u << 20;  // larger blobs go up in parts ...
  size_t part_size = 8u << 20;             // ... of this size (at least 5 MiB)
};
// A BlobStore on an S3 bucket (AWS Signature V4). Put is durable when it returns (Sync does
// nothing); the key is the name. Opening checks that the bucket can be reached: NotFound for
// no such bucket, PermissionDenied for refused credentials, Unavailable for a server that does
// not answer.
Result<std::unique_ptr<BlobStore>> OpenS3BlobStore(const S3Options& options);

}  // namespace commcare::storage
