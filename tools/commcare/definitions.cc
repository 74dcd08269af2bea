// The commands over saved named definitions (definitions.h).
#include "definitions.h"

#include <fmt/format.h>

#include <boost/json.hpp>

namespace commcare::cli {

bool DefinitionArg(const Args& a, std::string_view noun, Status (*validate)(std::string_view),
                   std::string* text, int* code) {
  *text = a.Get("--json");
  if (a.Has("--file") && !ReadFile(a.Get("--file"), text)) {
    *code = Fail("cannot read " + a.Get("--file"), kUsage);
    return false;
  }
  if (text->empty()) {
    *code = Fail(fmt::format("give {} as --file PATH or --json TEXT", noun), kUsage);
    return false;
  }
  if (Status st = validate ? validate(*text) : Status::Ok(); !st.ok()) {
    *code = Fail(st.message(), kUsage);
    return false;
  }
  return true;
}

std::string JsonLines(const std::vector<std::string>& all) {
  std::string out;
  for (const auto& line : all) out += (out.empty() ? "" : "\n") + line;
  return out;
}

std::string DeletedLine(std::string_view kind, const Args& a) {
  return boost::json::serialize(boost::json::object{
      {"deleted", fmt::format("{}:{}:{}", kind, a.Get("--domain"), a.Get("--name"))}});
}

}  // namespace commcare::cli
