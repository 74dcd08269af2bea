// Deployment: the backends a data directory uses, as its commcare.json records them. The one
// reader and writer of that file; every other part of the library asks it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/status.h"
#include "commcare/storage/blob_store.h"
#include "commcare/storage/change_log.h"

namespace commcare {

// What every process of a deployment shares, typed and validated.
struct Deployment {
  int shards = 1024;  // logical shards, a power of two, fixed for the life of the data
  int databases = 1;  // physical databases the shards are spread over (contiguous ranges)
  enum class Blobs { kPack, kFiles, kS3 };
  Blobs blobs = Blobs::kPack;  // pack: append-only volumes; files: one file per blob; S3
  storage::S3Options s3;       // when blobs is kS3
  // PostgreSQL connection strings, one per database; empty: SQLite files in <data>/db.
  std::vector<std::string> primary;
  // A Kafka change log; unset: the embedded RocksDB log in <data>/changes. Its
  // transactional_id is "" unless the file names one (the engine derives one then).
  std::optional<storage::KafkaChangeLogOptions> kafka;
  std::string meta;     // users, domains, sync logs: a PostgreSQL conninfo; "": SQLite in <data>
  std::string pillows;  // pillow state and secondary stores: PostgreSQL; "": <data>/pillows
  std::string tasks;    // the task queue: a PostgreSQL conninfo; "": SQLite <data>/tasks.db
  // Where phones and integrators reach the servers ("https://hq.example.org", no trailing
  // slash), HQ's BASE_ADDRESS: the start of absolute URLs made away from a request (forwarded
  // payloads' attachment urls). "": those are paths.
  std::string base_url;

  // Parses the JSON object of commcare.json (or of a host file's shared part); InvalidArgument
  // names the source and the bad key. Unknown keys are refused; "comment" and "data_dir" are
  // skipped (data_dir: *data_dir gets it when given).
  static Result<Deployment> FromJson(std::string_view json, std::string_view source,
                                     std::string* data_dir = nullptr);
  // Reads <data_dir>/commcare.json: NotFound (naming `commcare init`) when there is none,
  // DataLoss when it does not parse.
  static Result<Deployment> Load(const std::string& data_dir);
  // Writes <data_dir>/commcare.json atomically (temp file and rename).
  Status Save(const std::string& data_dir) const;
  // The file's JSON ({"format_version": 1, ...}), with every field spelled out.
  std::string ToJson() const;

  bool operator==(const Deployment& o) const { return ToJson() == o.ToJson(); }

  // Where a data directory keeps one of its SQL stores: "postgres:<conninfo>" when section
  // ("meta", "pillows" or "tasks") names a PostgreSQL database, else data_dir/file.
  std::string StoreAt(const std::string& data_dir, std::string_view section,
                      std::string_view file) const;
};

}  // namespace commcare
