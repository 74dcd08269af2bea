// What the routes read from a request before they touch a store: the domain path, the
// Authorization header, the Case API's JSON items and list parameters, a restore's parameters.
// Pure functions over http::Request and JSON (no engine, no MetaStore), so that the fuzz
// targets (fuzz/) drive them without the rest of the server. Internal.
#pragma once

#include <boost/json.hpp>
#include <map>
#include <string>
#include <string_view>

#include "commcare/pillows.h"
#include "commcare/status.h"
#include "http/server.h"
#include "meta/restore_params.h"

namespace commcare::server {

// A route's rest without its leading and trailing slashes ("/abc/" -> "abc").
std::string TrimSlashes(std::string_view rest);

// "/a/{domain}/{rest}" -> (domain, rest); false if the path is not under /a/ or names no domain.
bool SplitDomainPath(const std::string& path, std::string* domain, std::string* rest);

// Standard base64 ("" if it is not base64).
std::string Base64Decode(std::string_view in);

// key=value, key="quoted value", ... as in a Digest Authorization header; keys in lower case.
std::map<std::string, std::string> ParseAuthParams(std::string_view s);

// An Authorization header read once: its scheme (lower case), the username it claims, and its
// secret part (Basic, ApiKey) or parameters (Digest). malformed is Unauthenticated for an
// unknown scheme or a credential without its secret, else Ok.
struct Credentials {
  std::string scheme, claimed, secret;
  std::map<std::string, std::string> digest;
  Status malformed;
};
Credentials ParseAuthorization(std::string_view header);

// One case block of a Case API write as case XML; `at` names the item in errors ("" or
// "[3]"); temp_ids maps the request's temporary ids to case ids. InvalidArgument names the
// offending field.
Result<std::string> CaseApiBlock(const boost::json::value& v, const std::string& at, bool create,
                                 std::string case_id, const std::string& user_id,
                                 const std::map<std::string, std::string>& temp_ids,
                                 const std::map<std::string, std::string>& ext_ids,
                                 std::string* out_case_id);

// The Case API list's query from the request's parameters (HQ's get_list.py); InvalidArgument
// names a parameter it does not know or a bad value.
Result<CaseSearchQuery> CaseListQuery(const http::Request& r, const std::string& domain);

// A restore's parameters from its request (HQ's get_restore_params), all but username and
// hide_password, which come from who asks; InvalidArgument for a state that is not a case
// state hash.
Result<meta::RestoreParams> RestoreParamsFromRequest(const http::Request& r,
                                                     const std::string& app_id);

}  // namespace commcare::server
