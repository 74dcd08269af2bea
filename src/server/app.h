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
  App(Engine* engine, meta::MetaStore* meta, std::string pillows_dir);
  http::Response Handle(const http::Request& r);

 private:
  http::Response Receiver(const http::Request& r, const std::string& domain,
                          const std::string& rest);
  http::Response CaseApi(const http::Request& r, const std::string& domain,
                         const std::string& rest);
  // The authenticated user (Basic, Digest or ApiKey); Unauthenticated says why (a message
  // starting "stale" for an expired Digest nonce).
  Result<meta::User> Authenticate(const http::Request& r);
  Result<meta::User> AuthenticateDigest(const http::Request& r, std::string_view params);
  // 401 with a challenge for every scheme (a fresh Digest nonce).
  http::Response Unauthorized(const Status& why) const;
  std::string Nonce() const;
  bool NonceValid(std::string_view nonce, bool* stale) const;

  Engine* engine_;
  meta::MetaStore* meta_;
  std::string pillows_dir_;
  std::string secret_;  // signs Digest nonces (new per process: old nonces become stale)
};

}  // namespace commcare::server
