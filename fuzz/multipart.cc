// Fuzz target: the multipart/form-data envelope of a submission. The input's first line is the
// Content-Type header's value, the rest the body; each XML part is then parsed as a form, as the
// receiver does.
#include <cstdint>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "xform/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace commcare;
  std::string_view in = fuzz::AsText(data, size);
  auto nl = in.find('\n');
  std::string_view content_type = in.substr(0, nl);
  std::string_view body = nl == std::string_view::npos ? std::string_view() : in.substr(nl + 1);
  std::string boundary = xform::MultipartBoundary(content_type);
  if (boundary.empty()) return 0;
  std::vector<xform::MultipartPart> parts;
  if (!xform::ParseMultipart(body, boundary, &parts).ok()) return 0;
  for (const auto& p : parts) {
    // Every part's bytes lie inside the body.
    FUZZ_CHECK(p.data.empty() || (p.data.data() >= body.data() &&
                                  p.data.data() + p.data.size() <= body.data() + body.size()));
    if (p.name == "xml_submission_file" || p.content_type.find("xml") != std::string::npos) {
      xform::ParsedForm form;
      (void)xform::ParseForm(p.data, xform::ParseLimits{}, &form);
    }
  }
  return 0;
}
