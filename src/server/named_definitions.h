// The REST shape the saved named definitions share (rules, reports, alerts): a collection at
// /a/{domain}/api/{kind}/ holding definitions by name, each at .../{kind}/{name}, with verbs at
// .../{name}/{verb} left to the caller. Internal to src/server.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "commcare/status.h"
#include "http/server.h"

namespace commcare::server {

// The name and verb of a route's rest ("flag/run" -> {"flag", "run"}; slashes trimmed).
struct NamedPath {
  std::string name, verb;
};
NamedPath SplitNamedPath(std::string rest);

// The error texts a kind answers with (its tests assert them).
struct NamedDefinitionTexts {
  std::string name_mismatch;      // 400: the body's name is not the URL's
  std::string foreign_domain;     // 403: the body's domain is not the URL's
  std::string collection_method;  // 405: a write to the collection that does not add
  std::string save_method;        // 405: a POST to .../{name} (PUT saves)
};

// A body made a definition: "name" (when the URL has one) and "domain" default to the URL's and
// must match it. InvalidArgument (status 400) or PermissionDenied (403) with the kind's text.
Result<std::string> NamedDefinitionBody(const std::string& body, const std::string& domain,
                                        const std::string& name, const NamedDefinitionTexts& texts,
                                        int* status);

// A kind's store of definitions, each definition a JSON object line.
struct NamedDefinitions {
  std::function<Result<std::vector<std::string>>()> list;
  std::function<Result<std::string>(const std::string& name)> get;
  std::function<Result<std::string>(const std::string& definition)> save;
  std::function<Status(const std::string& name)> remove;
  bool post_adds = false;  // POST to the collection adds one (its name from the body)
  NamedDefinitionTexts texts;
};

// Answers the verb-less routes: GET the collection {"objects": [...]}; POST to it (post_adds);
// GET, PUT (201 new, 200 replaced) and DELETE ({"name", "deleted": true}) one by name.
http::Response ServeNamedDefinitions(const http::Request& r, const std::string& domain,
                                     const NamedPath& path, const NamedDefinitions& d);

}  // namespace commcare::server
