// commcare.json: the one place it is parsed, validated, written and asked where a store lives.
#include "commcare/deployment.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include "util/durable_file.h"

namespace commcare {
namespace {

namespace json = boost::json;
constexpr const char* kFileName = "commcare.json";

// Reads typed fields of one JSON object; errors read "<source>: <section>.<key> <problem>".
class Fields {
 public:
  Fields(const json::object& o, std::string_view source, std::string_view section = "")
      : o_(o), source_(source), section_(section) {}

  Status Only(std::initializer_list<std::string_view> keys) const {
    for (const auto& kv : o_) {
      bool known = false;
      for (auto k : keys) known = known || kv.key() == k;
      if (!known)
        return Status::InvalidArgument(fmt::format("{}: {}unknown key \"{}\"", source_,
                                                   section_.empty() ? "" : section_ + ": ",
                                                   std::string_view(kv.key())));
    }
    return Status::Ok();
  }
  Status Str(std::string_view key, std::string* out, bool required = false) const {
    const json::value* v = o_.if_contains(key);
    if (!v) return required ? Bad(key, "is required") : Status::Ok();
    if (!v->is_string()) return Bad(key, "must be a string");
    *out = v->get_string();
    if (required && out->empty()) return Bad(key, "must not be empty");
    return Status::Ok();
  }
  Status Int(std::string_view key, int* out, int lo, int hi) const {
    const json::value* v = o_.if_contains(key);
    if (!v) return Status::Ok();
    if (!v->is_int64() || v->get_int64() < lo || v->get_int64() > hi)
      return Bad(key, fmt::format("must be a whole number from {} to {}", lo, hi));
    *out = static_cast<int>(v->get_int64());
    return Status::Ok();
  }
  Status Bool(std::string_view key, bool* out) const {
    const json::value* v = o_.if_contains(key);
    if (!v) return Status::Ok();
    if (!v->is_bool()) return Bad(key, "must be true or false");
    *out = v->get_bool();
    return Status::Ok();
  }
  Status Kind(std::string_view want) const {
    std::string kind;
    CC_RETURN_IF_ERROR(Str("kind", &kind, true));
    if (kind != want) return Bad("kind", fmt::format("must be \"{}\" (got \"{}\")", want, kind));
    return Status::Ok();
  }
  Status Bad(std::string_view key, std::string_view what) const {
    return Status::InvalidArgument(
        fmt::format("{}: {}{} {}", source_, section_.empty() ? "" : section_ + ".", key, what));
  }

 private:
  const json::object& o_;
  std::string source_, section_;
};

const json::object* Section(const json::object& top, std::string_view key, std::string_view src,
                            Status* err) {
  const json::value* v = top.if_contains(key);
  if (!v) return nullptr;
  if (!v->is_object())
    *err = Status::InvalidArgument(fmt::format("{}: {} must be a JSON object", src, key));
  return v->is_object() ? &v->get_object() : nullptr;
}

Status ParseS3(const json::object& o, std::string_view src, storage::S3Options* s) {
  Fields f(o, src, "blob_store");
  CC_RETURN_IF_ERROR(f.Only({"kind", "endpoint", "region", "bucket", "access_key", "secret_key",
                             "prefix", "path_style", "ca_file", "timeout_ms", "max_attempts"}));
  CC_RETURN_IF_ERROR(f.Kind("s3"));
  CC_RETURN_IF_ERROR(f.Str("endpoint", &s->endpoint));
  CC_RETURN_IF_ERROR(f.Str("region", &s->region));
  CC_RETURN_IF_ERROR(f.Str("bucket", &s->bucket, true));
  CC_RETURN_IF_ERROR(f.Str("access_key", &s->access_key));  // "" = $AWS_ACCESS_KEY_ID
  CC_RETURN_IF_ERROR(f.Str("secret_key", &s->secret_key));
  CC_RETURN_IF_ERROR(f.Str("prefix", &s->prefix));
  CC_RETURN_IF_ERROR(f.Bool("path_style", &s->path_style));
  CC_RETURN_IF_ERROR(f.Str("ca_file", &s->ca_file));
  CC_RETURN_IF_ERROR(f.Int("timeout_ms", &s->timeout_ms, 1, 3'600'000));
  return f.Int("max_attempts", &s->max_attempts, 1, 100);
}

Status ParseKafka(const json::object& o, std::string_view src, storage::KafkaChangeLogOptions* k) {
  Fields f(o, src, "change_log");
  CC_RETURN_IF_ERROR(
      f.Only({"kind", "bootstrap_servers", "topic_prefix", "transactional_id", "partitions",
              "replication_factor", "timeout_ms", "session_timeout_ms", "topic_control"}));
  CC_RETURN_IF_ERROR(f.Kind("kafka"));
  CC_RETURN_IF_ERROR(f.Str("bootstrap_servers", &k->bootstrap_servers, true));
  CC_RETURN_IF_ERROR(f.Str("topic_prefix", &k->topic_prefix));
  k->transactional_id.clear();
  CC_RETURN_IF_ERROR(f.Str("transactional_id", &k->transactional_id));
  CC_RETURN_IF_ERROR(f.Int("partitions", &k->default_partitions, 1, 100'000));
  CC_RETURN_IF_ERROR(f.Int("replication_factor", &k->replication_factor, 1, 100));
  CC_RETURN_IF_ERROR(f.Int("timeout_ms", &k->timeout_ms, 1, 3'600'000));
  CC_RETURN_IF_ERROR(f.Int("session_timeout_ms", &k->session_timeout_ms, 1, 3'600'000));
  return f.Str("topic_control", &k->topic_control);
}

// {"kind": "postgres", "database": "<conninfo>"} (meta, pillows, tasks).
Status ParseDatabase(const json::object& o, std::string_view src, std::string_view section,
                     std::string* conninfo) {
  Fields f(o, src, section);
  CC_RETURN_IF_ERROR(f.Only({"kind", "database"}));
  CC_RETURN_IF_ERROR(f.Kind("postgres"));
  return f.Str("database", conninfo, true);
}

// {"kind": "postgres", "databases": ["<conninfo>", ...]} (primary).
Status ParsePrimary(const json::object& o, std::string_view src, int databases,
                    std::vector<std::string>* dsns) {
  Fields f(o, src, "primary");
  CC_RETURN_IF_ERROR(f.Only({"kind", "databases"}));
  CC_RETURN_IF_ERROR(f.Kind("postgres"));
  const json::value* d = o.if_contains("databases");
  if (!d || !d->is_array()) return f.Bad("databases", "must be a list of connection strings");
  dsns->clear();
  for (const auto& x : d->get_array()) {
    if (!x.is_string() || x.get_string().empty())
      return f.Bad("databases", "must be a list of connection strings");
    dsns->emplace_back(x.get_string());
  }
  if (static_cast<int>(dsns->size()) != databases)
    return f.Bad("databases", fmt::format("lists {} connection strings for {} databases",
                                          dsns->size(), databases));
  return Status::Ok();
}

// scheme://host[:port][/path]: a host, no credentials (they would be in every payload), no
// query, fragment, quote, space or control character.
bool IsBaseUrl(std::string_view u) {
  std::string_view rest = u.starts_with("https://")  ? u.substr(8)
                          : u.starts_with("http://") ? u.substr(7)
                                                     : std::string_view();
  if (rest.empty() || rest.front() == '/' || rest.front() == ':') return false;
  for (char c : rest)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return false;
  return rest.find_first_of("?#\"\\<>@") == std::string_view::npos;
}

Status ParseTop(const json::object& top, std::string_view src, Deployment* d,
                std::string* data_dir) {
  Fields f(top, src);
  CC_RETURN_IF_ERROR(
      f.Only({"format_version", "shards", "databases", "blob_store", "primary", "change_log",
              "meta", "pillows", "tasks", "base_url", "comment", "data_dir"}));
  int version = 1;
  CC_RETURN_IF_ERROR(f.Int("format_version", &version, 1, 1));
  CC_RETURN_IF_ERROR(f.Int("shards", &d->shards, 1, 1 << 20));
  if (d->shards & (d->shards - 1)) return f.Bad("shards", "must be a power of two");
  CC_RETURN_IF_ERROR(f.Int("databases", &d->databases, 1, 256));
  if (d->databases > d->shards) return f.Bad("databases", "must not exceed shards");
  CC_RETURN_IF_ERROR(f.Str("base_url", &d->base_url));
  while (!d->base_url.empty() && d->base_url.back() == '/') d->base_url.pop_back();
  if (!d->base_url.empty() && !IsBaseUrl(d->base_url))
    return f.Bad("base_url", "must be http:// or https:// and a host, e.g. https://hq.example.org");
  std::string dir;
  CC_RETURN_IF_ERROR(f.Str("data_dir", &dir));
  if (data_dir && !dir.empty()) *data_dir = dir;
  if (const json::value* b = top.if_contains("blob_store")) {
    if (b->is_object()) {
      d->blobs = Deployment::Blobs::kS3;
      CC_RETURN_IF_ERROR(ParseS3(b->get_object(), src, &d->s3));
    } else if (b->is_string() && (b->get_string() == "pack" || b->get_string() == "files")) {
      d->blobs = b->get_string() == "pack" ? Deployment::Blobs::kPack : Deployment::Blobs::kFiles;
    } else {
      return f.Bad("blob_store", "must be \"pack\", \"files\" or an S3 object");
    }
  }
  Status err;
  if (const auto* p = Section(top, "primary", src, &err))
    CC_RETURN_IF_ERROR(ParsePrimary(*p, src, d->databases, &d->primary));
  if (const auto* c = Section(top, "change_log", src, &err)) {
    d->kafka.emplace();
    CC_RETURN_IF_ERROR(ParseKafka(*c, src, &*d->kafka));
  }
  if (const auto* m = Section(top, "meta", src, &err))
    CC_RETURN_IF_ERROR(ParseDatabase(*m, src, "meta", &d->meta));
  if (const auto* p = Section(top, "pillows", src, &err))
    CC_RETURN_IF_ERROR(ParseDatabase(*p, src, "pillows", &d->pillows));
  if (const auto* t = Section(top, "tasks", src, &err))
    CC_RETURN_IF_ERROR(ParseDatabase(*t, src, "tasks", &d->tasks));
  return err;
}

}  // namespace

Result<Deployment> Deployment::FromJson(std::string_view text, std::string_view source,
                                        std::string* data_dir) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return Status::InvalidArgument(fmt::format("{} is not a JSON object", source));
  Deployment d;
  CC_RETURN_IF_ERROR(ParseTop(v.get_object(), source, &d, data_dir));
  return d;
}

Result<Deployment> Deployment::Load(const std::string& data_dir) {
  const std::string path = data_dir + "/" + kFileName;
  std::ifstream in(path);
  if (!in)
    return Status::NotFound(
        fmt::format("{} is not a libcommcare data directory (no {}); run `commcare init --data {}`",
                    data_dir, kFileName, data_dir));
  std::stringstream ss;
  ss << in.rdbuf();
  auto d = FromJson(ss.str(), path);
  if (!d.ok()) return Status::DataLoss(d.status().message());
  return d;
}

std::string Deployment::ToJson() const {
  json::object o{{"format_version", 1}, {"shards", shards}, {"databases", databases}};
  if (blobs == Blobs::kS3) {
    o["blob_store"] = json::object{{"kind", "s3"},
                                   {"endpoint", s3.endpoint},
                                   {"region", s3.region},
                                   {"bucket", s3.bucket},
                                   {"access_key", s3.access_key},
                                   {"secret_key", s3.secret_key},
                                   {"prefix", s3.prefix},
                                   {"path_style", s3.path_style},
                                   {"ca_file", s3.ca_file},
                                   {"timeout_ms", s3.timeout_ms},
                                   {"max_attempts", s3.max_attempts}};
  } else {
    o["blob_store"] = blobs == Blobs::kPack ? "pack" : "files";
  }
  if (!primary.empty()) {
    json::array dbs;
    for (const auto& p : primary) dbs.emplace_back(p);
    o["primary"] = json::object{{"kind", "postgres"}, {"databases", std::move(dbs)}};
  }
  if (kafka) {
    json::object k{{"kind", "kafka"},
                   {"bootstrap_servers", kafka->bootstrap_servers},
                   {"topic_prefix", kafka->topic_prefix},
                   {"partitions", kafka->default_partitions},
                   {"replication_factor", kafka->replication_factor},
                   {"timeout_ms", kafka->timeout_ms},
                   {"session_timeout_ms", kafka->session_timeout_ms}};
    if (!kafka->transactional_id.empty()) k["transactional_id"] = kafka->transactional_id;
    if (!kafka->topic_control.empty()) k["topic_control"] = kafka->topic_control;
    o["change_log"] = std::move(k);
  }
  if (!meta.empty()) o["meta"] = json::object{{"kind", "postgres"}, {"database", meta}};
  if (!pillows.empty()) o["pillows"] = json::object{{"kind", "postgres"}, {"database", pillows}};
  if (!tasks.empty()) o["tasks"] = json::object{{"kind", "postgres"}, {"database", tasks}};
  if (!base_url.empty()) o["base_url"] = base_url;
  return json::serialize(o);
}

Status Deployment::Save(const std::string& data_dir) const {
  // Durably: a power cut after a `commcare init` (or a first `serve`) that acknowledged forms
  // must not leave the directory without its commcare.json, or with an empty one (found by the
  // power-cut simulation, tests/campaigns/powercut.py).
  return util::WriteFileDurably(data_dir + "/" + kFileName, ToJson() + "\n");
}

std::string Deployment::StoreAt(const std::string& data_dir, std::string_view section,
                                std::string_view file) const {
  const std::string& db = section == "meta"      ? meta
                          : section == "pillows" ? pillows
                          : section == "tasks"   ? tasks
                                                 : "";
  if (!db.empty()) return "postgres:" + db;
  return data_dir + "/" + std::string(file);
}

}  // namespace commcare
