// The C ABI (include/commcare/c.h): domains and users, from the engine's MetaStore. Helpers
// and handles: c_api_internal.h.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <string>

#include "c_api_internal.h"
#include "commcare/c.h"
#include "meta/meta_store.h"

namespace json = boost::json;
using commcare::Result;
using commcare::Status;
using commcare::StatusCode;
using namespace commcare::capi;  // the shared helpers (c_api_internal.h)

namespace {

// The shape of the MetaStore calls: the out-param checked (required when kOutRequired, else
// NULL means "no result wanted"), the engine open, its MetaStore opened on first use; fn's JSON
// handed out.
template <bool kOutRequired, typename F>
int MetaCall(char** out, cc_engine* engine, F&& fn) {
  return Fence([&]() -> Status {
    if (kOutRequired) CC_RETURN_IF_ERROR(NeedOut(out));
    if (out) *out = nullptr;
    Use use;
    CC_RETURN_IF_ERROR(Open(engine, &use));
    commcare::meta::MetaStore* meta = nullptr;
    CC_RETURN_IF_ERROR(engine->Meta(&meta));
    CC_ASSIGN_OR_RETURN(std::string json, fn(meta));
    if (out) *out = Dup(json);
    return Status::Ok();
  });
}

json::object DomainJson(const commcare::meta::Domain& d) {
  return {{"name", d.name},
          {"secure_submissions", d.secure_submissions},
          {"async_restore", d.async_restore},
          {"case_attachments_in_restore", d.case_attachments_in_restore},
          {"_rev", d.rev}};
}

// The domain flags a create or an update sets (those absent keep their value).
Status ReadDomainFlags(const Reader& r, commcare::meta::Domain* d) {
  CC_RETURN_IF_ERROR(r.Bool("secure_submissions", &d->secure_submissions));
  CC_RETURN_IF_ERROR(r.Bool("async_restore", &d->async_restore));
  return r.Bool("case_attachments_in_restore", &d->case_attachments_in_restore);
}

}  // namespace

extern "C" {

int cc_engine_create_domain(char** out, cc_engine* engine, const char* domain_json) {
  return MetaCall<false>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(domain_json, "domain_json", &o));
    Reader r{o, "domain_json"};
    CC_RETURN_IF_ERROR(
        r.Only({"name", "secure_submissions", "async_restore", "case_attachments_in_restore"}));
    commcare::meta::Domain d;
    CC_RETURN_IF_ERROR(r.Str("name", &d.name));
    CC_RETURN_IF_ERROR(ReadDomainFlags(r, &d));
    if (d.name.empty()) return Status::InvalidArgument("domain_json: \"name\" is required");
    if (meta->GetDomain(d.name).ok())
      return Status::AlreadyExists(fmt::format("domain {} exists", d.name));
    CC_ASSIGN_OR_RETURN(auto stored, meta->PutDomain(d));
    return json::serialize(DomainJson(stored));
  });
}

int cc_engine_get_domain(char** out, cc_engine* engine, const char* name) {
  return MetaCall<true>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    std::string n;
    CC_RETURN_IF_ERROR(Arg(name, "name", &n));
    CC_ASSIGN_OR_RETURN(auto d, meta->GetDomain(n));
    return json::serialize(DomainJson(d));
  });
}

int cc_engine_update_domain(char** out, cc_engine* engine, const char* domain_json) {
  return MetaCall<false>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(domain_json, "domain_json", &o));
    Reader r{o, "domain_json"};
    CC_RETURN_IF_ERROR(r.Only(
        {"name", "_rev", "secure_submissions", "async_restore", "case_attachments_in_restore"}));
    std::string name;
    CC_RETURN_IF_ERROR(r.Str("name", &name));
    if (name.empty()) return Status::InvalidArgument("domain_json: \"name\" is required");
    int64_t rev = -1;
    CC_RETURN_IF_ERROR(r.Int("_rev", &rev, 1, int64_t{1} << 62));
    if (rev < 0)
      return Status::InvalidArgument(
          "domain_json: \"_rev\" (the revision read) is required to update a domain");
    CC_ASSIGN_OR_RETURN(auto d, meta->GetDomain(name));
    d.rev = rev;
    CC_RETURN_IF_ERROR(ReadDomainFlags(r, &d));
    CC_ASSIGN_OR_RETURN(auto stored, meta->PutDomain(d));
    return json::serialize(DomainJson(stored));
  });
}

int cc_engine_list_domains(char** out, cc_engine* engine) {
  return MetaCall<true>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    CC_ASSIGN_OR_RETURN(auto ds, meta->ListDomains());
    json::array a;
    for (const auto& d : ds) a.push_back(DomainJson(d));
    return json::serialize(a);
  });
}

int cc_engine_put_user(char** out, cc_engine* engine, const char* user_json, const char* password) {
  return MetaCall<false>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    json::object o;
    CC_RETURN_IF_ERROR(JsonArg(user_json, "user_json", &o));
    std::string pw;
    CC_RETURN_IF_ERROR(Arg(password, "password", &pw, false));
    Reader r{o, "user_json"};
    std::string username, domain;
    CC_RETURN_IF_ERROR(r.Str("username", &username));
    if (username.empty()) return Status::InvalidArgument("user_json: \"username\" is required");
    commcare::meta::User u;
    auto old = meta->GetUser(username);
    if (old.ok()) {
      u = *old;
      int64_t rev = -1;
      CC_RETURN_IF_ERROR(r.Int("_rev", &rev, 0, int64_t{1} << 62));
      if (rev < 0)
        return Status::InvalidArgument(
            fmt::format("user_json: user {} exists; \"_rev\" (the revision read) is required to "
                        "update it",
                        username));
      u.rev = rev;
    } else {
      u.username = username;
    }
    CC_RETURN_IF_ERROR(r.StrList("domains", &u.domains));
    CC_RETURN_IF_ERROR(r.Bool("is_superuser", &u.is_superuser));
    if (u.domains.empty() && !u.is_superuser)
      return Status::InvalidArgument("user_json: \"domains\" must name at least one domain");
    domain = u.domains.empty() ? "" : u.domains.front();
    if (!old.ok())  // a new user's default grants, in each of its domains
      for (const auto& d : u.domains)
        u.permissions[d] = {std::string(commcare::meta::kEditData),
                            std::string(commcare::meta::kMobileEndpoints)};
    json::object rest = o;
    rest.erase("domains");
    rest.erase("is_superuser");
    std::string field_pw;
    CC_RETURN_IF_ERROR(commcare::meta::ApplyUserFields(rest, domain, &u, &field_pw));
    if (!field_pw.empty() && pw.empty()) pw = field_pw;
    if (!old.ok() && pw.empty())
      return Status::InvalidArgument("a password is required to create a user");
    CC_ASSIGN_OR_RETURN(auto stored, meta->PutUser(u, pw));
    return json::serialize(commcare::meta::UserJson(stored));
  });
}

int cc_engine_get_user(char** out, cc_engine* engine, const char* username) {
  return MetaCall<true>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    std::string name;
    CC_RETURN_IF_ERROR(Arg(username, "username", &name));
    CC_ASSIGN_OR_RETURN(auto u, meta->GetUser(name));
    return json::serialize(commcare::meta::UserJson(u));
  });
}

int cc_engine_list_users(char** out, cc_engine* engine, const char* domain) {
  return MetaCall<true>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    std::string d;
    CC_RETURN_IF_ERROR(Arg(domain, "domain", &d));
    CC_ASSIGN_OR_RETURN(auto us, meta->ListUsers(d));
    json::array a;
    for (const auto& u : us) a.push_back(commcare::meta::UserJson(u));
    return json::serialize(a);
  });
}

int cc_engine_authenticate(char** out, cc_engine* engine, const char* username,
                           const char* password) {
  return MetaCall<false>(out, engine, [&](commcare::meta::MetaStore* meta) -> Result<std::string> {
    std::string name, pw;
    CC_RETURN_IF_ERROR(Arg(username, "username", &name));
    CC_RETURN_IF_ERROR(Arg(password, "password", &pw));
    CC_ASSIGN_OR_RETURN(auto u, meta->Authenticate(name, pw));
    return json::serialize(commcare::meta::UserJson(u));
  });
}

}  // extern "C"
