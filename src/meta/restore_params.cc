#include "meta/restore_params.h"

#include <fmt/format.h>

#include <boost/json.hpp>

namespace commcare::meta {

namespace json = boost::json;

namespace {

constexpr const char* kStrings[] = {"username",  "since",  "version", "state",
                                    "device_id", "app_id", "url_base"};
constexpr const char* kBools[] = {"hide_password", "items", "overwrite_cache", "skip_fixtures"};

std::string* StringField(RestoreParams* p, std::string_view k) {
  if (k == "username") return &p->username;
  if (k == "since") return &p->since;
  if (k == "version") return &p->version;
  if (k == "state") return &p->state;
  if (k == "device_id") return &p->device_id;
  if (k == "app_id") return &p->app_id;
  if (k == "url_base") return &p->url_base;
  return nullptr;
}

bool* BoolField(RestoreParams* p, std::string_view k) {
  if (k == "hide_password") return &p->hide_password;
  if (k == "items") return &p->items;
  if (k == "overwrite_cache") return &p->overwrite_cache;
  if (k == "skip_fixtures") return &p->skip_fixtures;
  return nullptr;
}

}  // namespace

std::string RestoreParams::ToJson() const {
  RestoreParams copy = *this;
  json::object o;
  for (const char* k : kStrings) o[k] = *StringField(&copy, k);
  for (const char* k : kBools) o[k] = *BoolField(&copy, k);
  return json::serialize(o);
}

Result<RestoreParams> RestoreParams::FromJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("restore parameters: not a JSON object");
  RestoreParams p;
  for (const auto& kv : v.get_object()) {
    const std::string_view k(kv.key().data(), kv.key().size());
    const json::value& val = kv.value();
    if (std::string* s = StringField(&p, k)) {
      if (!val.is_string())
        return Status::InvalidArgument(fmt::format("restore parameters: {} must be a string", k));
      *s = std::string(val.get_string());
    } else if (bool* b = BoolField(&p, k)) {
      if (!val.is_bool())
        return Status::InvalidArgument(fmt::format("restore parameters: {} must be a boolean", k));
      *b = val.get_bool();
    } else {
      return Status::InvalidArgument(fmt::format("restore parameters: unknown field {}", k));
    }
  }
  if (p.username.empty())
    return Status::InvalidArgument("restore parameters: username is required");
  return p;
}

}  // namespace commcare::meta
