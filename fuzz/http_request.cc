// Fuzz target: the HTTP request path without a socket. The input is what a client sends: Beast's
// parser reads it with the server's limits, the request becomes the plain http::Request the
// server makes (target split and decoded, header names in lower case), its Authorization header
// is read, and it is routed by the same matching App::Route uses to the parsing its route does
// first: the receiver's multipart or XML body, the Case API's list parameters and JSON body,
// restore parameters. The route handlers themselves (stores, engine) are not driven.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cstdint>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "http/server.h"
#include "server/app.h"
#include "server/request_parse.h"
#include "xform/parser.h"

namespace {

namespace bhttp = boost::beast::http;
using commcare::server::App;

// The shapes of the server's routes (App::Routes() in src/server/app.cc) the target routes to.
const std::vector<App::RouteSpec>& Routes() {
  using M = App::RouteSpec::Match;
  static const std::vector<App::RouteSpec> routes = {
      {"console", "/", false, M::kExact, nullptr},
      {"console_api", "/console/api/", false, M::kPrefix, nullptr},
      {"console", "/console", false, M::kSegment, nullptr},
      {"health", "/health", false, M::kExact, nullptr},
      {"receiver", "receiver", true, M::kSegment, nullptr},
      {"case_api_v2", "api/case/v2", true, M::kPrefix, nullptr},
      {"phone_restore", "phone/restore", true, M::kSegment, nullptr},
      {"ucr_api", "api/ucr/", true, M::kPrefix, nullptr},
      {"form_api", "api/v0.5/form", true, M::kPrefix, nullptr},
  };
  return routes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace commcare;
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(1 << 20);
  parser.eager(true);
  boost::beast::error_code ec;
  std::string_view in = fuzz::AsText(data, size);
  size_t used = 0;
  while (used < in.size() && !parser.is_done()) {
    size_t n = parser.put(boost::asio::buffer(in.data() + used, in.size() - used), ec);
    if (ec == bhttp::error::need_more) break;
    if (ec) return 0;
    if (n == 0) break;
    used += n;
  }
  if (!parser.is_header_done()) return 0;
  const auto& msg = parser.get();
  http::Request r;
  r.method = std::string(msg.method_string());
  http::SetTarget(&r, msg.target());
  for (const auto& f : msg) http::AddHeader(&r, f.name_string(), f.value());
  if (parser.is_done()) r.body = msg.body();

  if (const std::string* auth = r.Header("authorization")) {
    server::Credentials c = server::ParseAuthorization(*auth);
    // A Digest credential is always read; Basic and ApiKey ones need their secret.
    if (c.scheme == "digest") FUZZ_CHECK(c.malformed.ok());
  }

  std::string domain, rest;
  const bool under_domain = server::SplitDomainPath(r.path, &domain, &rest);
  if (under_domain) FUZZ_CHECK(!domain.empty() && domain.find('/') == std::string::npos);
  const App::RouteSpec* route = nullptr;
  for (const auto& spec : Routes())
    if (spec.domain == under_domain && spec.Matches(spec.domain ? rest : r.path)) {
      route = &spec;
      break;
    }
  if (!route) return 0;
  if (route->name == "receiver" && r.method == "POST") {
    const std::string* ct = r.Header("content-type");
    std::string boundary = xform::MultipartBoundary(ct ? *ct : "");
    xform::ParsedForm form;
    if (boundary.empty()) {
      (void)xform::ParseForm(r.body, xform::ParseLimits{}, &form);
    } else {
      std::vector<xform::MultipartPart> parts;
      if (xform::ParseMultipart(r.body, boundary, &parts).ok())
        for (const auto& p : parts)
          if (p.name == "xml_submission_file")
            (void)xform::ParseForm(p.data, xform::ParseLimits{}, &form);
    }
  } else if (route->name == "case_api_v2") {
    (void)server::CaseListQuery(r, domain);
    boost::system::error_code jec;
    boost::json::value v = boost::json::parse(r.body, jec);
    std::string id;
    if (!jec) (void)server::CaseApiBlock(v, "", true, "case-1", "user-1", {}, {}, &id);
  } else if (route->name == "phone_restore") {
    (void)server::RestoreParamsFromRequest(r, rest.substr(route->path.size()));
  }
  return 0;
}
