// The reference server's routes: the OpenRosa receiver, the Case API v2 (first slice), health.
// Plain Request -> Response over an Engine, the MetaStore and the pillows' stores.
#pragma once

#include <string>

#include "commcare/engine.h"
#include "http/server.h"
#include "meta/meta_store.h"

namespace commcare::server {

class App {
 public:
  App(Engine* engine, meta::MetaStore* meta, std::string pillows_dir)
      : engine_(engine), meta_(meta), pillows_dir_(std::move(pillows_dir)) {}
  http::Response Handle(const http::Request& r);

 private:
  http::Response Receiver(const http::Request& r, const std::string& domain,
                          const std::string& rest);
  http::Response CaseApi(const http::Request& r, const std::string& domain,
                         const std::string& rest);
  // The authenticated user (Basic or ApiKey), or the 401 to send.
  Result<meta::User> Authenticate(const http::Request& r);

  Engine* engine_;
  meta::MetaStore* meta_;
  std::string pillows_dir_;
};

}  // namespace commcare::server
