// Fuzz target: the submission XML parser (form, meta, case and ledger blocks) over any bytes.
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "xform/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace commcare;
  xform::ParsedForm form;
  xform::ParseLimits limits;
  limits.max_depth = 64;
  Status st = xform::ParseForm(fuzz::AsText(data, size), limits, &form);
  if (st.ok()) {
    for (const auto& c : form.cases) FUZZ_CHECK(c.LowestAction() >= 0 && c.LowestAction() <= 5);
  } else {
    FUZZ_CHECK(st.IsInvalidArgument());
  }
  return 0;
}
