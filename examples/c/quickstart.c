/* libcommcare from C: open an in-memory engine, submit a form that creates a case, read the
 * case back, watch its change with a processor, and sync it to a phone.
 * Build: cc quickstart.c -lcommcare_c */
#include <commcare/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Exits with the library's message when a call fails (libgit2's check_lg2). */
static void check(int rc, const char* what) {
  if (rc < 0) {
    fprintf(stderr, "%s failed (%d): %s\n", what, rc, cc_error_last()->message);
    exit(1);
  }
}

static const char* kForm =
    "<?xml version=\"1.0\"?>"
    "<data xmlns=\"http://example.org/registration\">"
    "<meta xmlns=\"http://openrosa.org/jr/xforms\">"
    "<instanceID>form-1</instanceID><userID>%s</userID></meta>"
    "<case xmlns=\"http://commcarehq.org/case/transaction/v2\" case_id=\"case-1\" "
    "date_modified=\"2024-05-01T10:00:00Z\" user_id=\"%s\">"
    "<create><case_type>patient</case_type><case_name>Ana</case_name>"
    "<owner_id>%s</owner_id></create><update><village>Kisumu</village></update>"
    "</case></data>";

static int on_change(const char* change_json, size_t len, void* payload) {
  (void)len;
  ++*(int*)payload;
  printf("change: %s\n", change_json);
  return 0;
}

static int to_stdout(const char* data, size_t len, void* payload) {
  (void)payload;
  return fwrite(data, 1, len, stdout) == len ? 0 : 1;
}

int main(void) {
  cc_engine_options opts = CC_ENGINE_OPTIONS_INIT;
  cc_submit_options sub = CC_SUBMIT_OPTIONS_INIT;
  cc_engine* engine = NULL;
  cc_pillows* pillows = NULL;
  cc_submit_result* result = NULL;
  char *json = NULL, *user = NULL, *sync = NULL;
  char form[2048], user_id[33] = {0};
  int changes = 0;

  opts.config_json = "{\"backend\": \"memory\"}";
  check(cc_engine_open(&engine, &opts), "open");

  check(cc_engine_create_domain(NULL, engine, "{\"name\": \"demo\"}"), "create domain");
  check(cc_engine_put_user(&user, engine, "{\"username\": \"nurse\", \"domains\": [\"demo\"]}",
                           "secret"),
        "create user");
  memcpy(user_id, strstr(user, "\"user_id\":\"") + 11, 32);
  cc_free(user);

  snprintf(form, sizeof form, kForm, user_id, user_id, user_id);
  sub.domain = "demo";
  check(cc_engine_submit(&result, engine, &sub, form, strlen(form)), "submit");
  printf("submitted: %d %s form %s\n", result->http_status, result->nature, result->form_id);
  cc_submit_result_free(result);

  check(cc_engine_get_case(&json, engine, "demo", "case-1"), "get case");
  printf("case: %s\n", json);
  cc_free(json);

  check(cc_pillows_open(&pillows, engine, "{\"builtin\": false}"), "open pillows");
  check(cc_pillows_add(pillows, "{\"name\": \"printer\", \"topics\": [\"case-sql\"]}", on_change,
                       &changes),
        "add pillow");
  check(cc_pillows_run_until_caught_up(NULL, pillows), "run pillows");
  cc_pillows_free(pillows);
  if (changes != 1) {
    fprintf(stderr, "expected one case change, saw %d\n", changes);
    return 1;
  }

  check(cc_engine_restore(&sync, engine, "{\"domain\": \"demo\", \"username\": \"nurse\"}",
                          to_stdout, NULL),
        "restore");
  printf("\nrestore: %s\n", sync);
  cc_free(sync);

  cc_engine_free(engine);
  return 0;
}
