/* c.h must compile alone as strict C99 (built with -std=c99 -pedantic -Werror). */
#include <commcare/c.h>

int main(void) {
  cc_engine_options o = CC_ENGINE_OPTIONS_INIT;
  cc_submit_options s = CC_SUBMIT_OPTIONS_INIT;
  (void)s;
  return o.version == CC_ENGINE_OPTIONS_VERSION ? 0 : 1;
}
