// A consumer of the installed/exported package: opens an in-memory engine and submits a form.
#include <commcare/engine.h>

#include <cstdio>

int main() {
  commcare::EngineOptions o;
  o.in_memory = true;
  auto e = commcare::Engine::Open(o);
  if (!e.ok()) return 1;
  commcare::SubmitRequest r;
  r.domain = "demo";
  r.body = "<data xmlns=\"http://example.org/f\"><meta><instanceID>x1</instanceID></meta></data>";
  auto resp = (*e)->Submit(r);
  std::printf("%d %s\n", resp.http_status, resp.nature.c_str());
  return resp.http_status == 201 ? 0 : 1;
}
