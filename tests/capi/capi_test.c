/* The C ABI, compiled as C: every entry point, error codes and messages, ownership.
 * Run plainly and (capi_leak_test) linked with LeakSanitizer over loops of 10,000 calls. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <commcare/c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures = 0;

#define CHECK(cond)                                                                              \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      fprintf(stderr, "%s:%d: CHECK(%s) failed; last error %d: %s\n", __FILE__, __LINE__, #cond, \
              cc_error_last()->code, cc_error_last()->message);                                  \
      failures++;                                                                                \
    }                                                                                            \
  } while (0)

/* A call expected to succeed. */
#define OK(call) CHECK((call) == CC_OK)
/* A call expected to fail with code and a message containing text. */
#define FAILS(call, want, text)                                               \
  do {                                                                        \
    int rc_ = (call);                                                         \
    CHECK(rc_ == (want));                                                     \
    CHECK(cc_error_last()->code == (want));                                   \
    if (strstr(cc_error_last()->message, (text)) == NULL) {                   \
      fprintf(stderr, "%s:%d: message '%s' lacks '%s'\n", __FILE__, __LINE__, \
              cc_error_last()->message, (text));                              \
      failures++;                                                             \
    }                                                                         \
  } while (0)

static char form_buf[4096];
static const char* case_form(const char* form_id, const char* case_id, const char* body) {
  snprintf(form_buf, sizeof form_buf,
           "<?xml version=\"1.0\"?><data xmlns=\"http://example.org/form\">"
           "<meta xmlns=\"http://openrosa.org/jr/xforms\"><instanceID>%s</instanceID>"
           "<userID>u1</userID><timeStart>2020-01-01T00:00:00Z</timeStart>"
           "<timeEnd>2020-01-01T00:01:00Z</timeEnd></meta>"
           "<case xmlns=\"http://commcarehq.org/case/transaction/v2\" case_id=\"%s\" "
           "date_modified=\"2020-01-01T00:01:00Z\" user_id=\"u1\">%s</case></data>",
           form_id, case_id, body);
  return form_buf;
}

static int submit(cc_engine* e, const char* xml, cc_submit_result** out) {
  cc_submit_options o = CC_SUBMIT_OPTIONS_INIT;
  o.domain = "demo";
  o.headers_json = "{\"X-OpenRosa-Version\": \"3.0\"}";
  return cc_engine_submit(out, e, &o, xml, strlen(xml));
}

static cc_engine* open_memory(void) {
  cc_engine_options o = CC_ENGINE_OPTIONS_INIT;
  cc_engine* e = NULL;
  o.config_json = "{\"backend\": \"memory\"}";
  OK(cc_engine_open(&e, &o));
  return e;
}

static int g_logged = 0;
static void count_log(void* user, int level, const char* message, const char* fields_json) {
  (void)user, (void)level, (void)message, (void)fields_json;
  ++g_logged;
}

static void test_basics(void) {
  int major = -1, minor = -1, patch = -1;
  cc_engine_options o;
  cc_engine* e = NULL;
  cc_version(&major, &minor, &patch);
  CHECK(major == CC_VERSION_MAJOR && minor == CC_VERSION_MINOR && patch == CC_VERSION_PATCH);
  cc_free(NULL);
  cc_engine_free(NULL);
  cc_submit_result_free(NULL);
  cc_pillows_free(NULL);
  FAILS(cc_set_logger(count_log, NULL, 7), CC_EINVALID, "min_level");
  OK(cc_set_logger(count_log, NULL, 2));
  OK(cc_set_logger(NULL, NULL, 0));

  FAILS(cc_engine_options_init(&o, 99), CC_EINVALID, "version 99");
  FAILS(cc_engine_options_init(NULL, CC_ENGINE_OPTIONS_VERSION), CC_EINVALID, "NULL");
  OK(cc_engine_options_init(&o, CC_ENGINE_OPTIONS_VERSION));
  CHECK(o.version == CC_ENGINE_OPTIONS_VERSION && o.config_json == NULL);
  CHECK(cc_error_last()->code == CC_OK);

  FAILS(cc_engine_open(&e, &o), CC_EINVALID, "config_json is NULL");
  CHECK(e == NULL);
  FAILS(cc_engine_open(NULL, &o), CC_EINVALID, "out is NULL");
  o.config_json = "{\"backend\": ";
  FAILS(cc_engine_open(&e, &o), CC_EINVALID, "not valid JSON");
  o.config_json = "[1]";
  FAILS(cc_engine_open(&e, &o), CC_EINVALID, "must be a JSON object");
  o.config_json = "{\"backend\": \"cassandra\"}";
  FAILS(cc_engine_open(&e, &o), CC_EINVALID, "unknown backend \"cassandra\"");
  o.config_json = "{\"backend\": \"memory\", \"colour\": 1}";
  FAILS(cc_engine_open(&e, &o), CC_EINVALID, "unknown key \"colour\"");
  o.config_json = "{\"backend\": \"memory\", \"durable\": 1}";
  FAILS(cc_engine_open(&e, &o), CC_EINVALID, "\"durable\" must be true or false");
  o.config_json = "{\"backend\": \"sqlite\"}";
  FAILS(cc_engine_open(&e, &o), CC_EINVALID, "data_dir");
  o.config_json = "{\"backend\": \"sqlite\", \"data_dir\": \"/nonexistent/cc\"}";
  CHECK(cc_engine_open(&e, &o) < 0);
  CHECK(e == NULL);
  o.version = 7;
  FAILS(cc_engine_open(&e, &o), CC_EINVALID, "version 7");
}

static void test_submit_and_read(void) {
  cc_engine* e = open_memory();
  cc_submit_result* r = NULL;
  char* json = NULL;
  void* bytes = NULL;
  size_t len = 0;
  cc_submit_options so;
  char bad[] = {'<', 'a', ' ', 'x', '=', '"', (char)0xff, '"', '/', '>', 0};

  OK(submit(e,
            case_form("f1", "c1",
                      "<create><case_type>patient</case_type><case_name>Ann</case_name>"
                      "<owner_id>u1</owner_id></create><update><village>v1</village></update>"),
            &r));
  CHECK(r != NULL && r->http_status == 201);
  CHECK(r && strcmp(r->form_id, "f1") == 0 && strcmp(r->state, "normal") == 0);
  CHECK(r && strcmp(r->nature, "submit_success") == 0 && strstr(r->body, "OpenRosaResponse"));
  cc_submit_result_free(r);

  OK(cc_engine_get_case(&json, e, "demo", "c1"));
  CHECK(json && strstr(json, "\"village\":\"v1\"") && strstr(json, "\"case_name\":\"Ann\""));
  cc_free(json);
  FAILS(cc_engine_get_case(&json, e, "demo", "nope"), CC_ENOTFOUND, "nope");
  CHECK(json == NULL);
  FAILS(cc_engine_get_case(&json, e, "other", "c1"), CC_ENOTFOUND, "c1");
  FAILS(cc_engine_get_case(&json, e, NULL, "c1"), CC_EINVALID, "domain is NULL");
  FAILS(cc_engine_get_case(&json, e, "demo", "\xc3\x28"), CC_EINVALID, "not valid UTF-8");
  FAILS(cc_engine_get_case(NULL, e, "demo", "c1"), CC_EINVALID, "out is NULL");
  FAILS(cc_engine_get_case(&json, NULL, "demo", "c1"), CC_EINVALID, "engine is NULL");

  OK(cc_engine_list_cases(&json, e, "{\"domain\": \"demo\", \"case_type\": \"patient\"}"));
  CHECK(json && json[0] == '[' && strstr(json, "\"c1\""));
  cc_free(json);
  OK(cc_engine_list_cases(&json, e, "{\"domain\": \"demo\", \"case_type\": \"household\"}"));
  CHECK(json && strcmp(json, "[]") == 0);
  cc_free(json);
  FAILS(cc_engine_list_cases(&json, e, "{\"case_type\": \"x\"}"), CC_EINVALID, "domain");
  FAILS(cc_engine_list_cases(&json, e, "{\"domain\": \"demo\", \"limit\": -1}"), CC_EINVALID,
        "limit");

  OK(cc_engine_case_history(&json, e, "demo", "c1"));
  CHECK(json && strstr(json, "\"f1\""));
  cc_free(json);

  OK(cc_engine_get_form(&json, e, "demo", "f1"));
  CHECK(json && strstr(json, "http://example.org/form"));
  cc_free(json);
  OK(cc_engine_get_attachment(&bytes, &len, e, "demo", "f1", "form.xml"));
  CHECK(bytes && len > 100 && memcmp(bytes, "<?xml", 5) == 0 && ((char*)bytes)[len] == '\0');
  cc_free(bytes);
  FAILS(cc_engine_get_attachment(&bytes, &len, e, "demo", "f1", "photo.jpg"), CC_ENOTFOUND,
        "photo.jpg");

  /* Malformed XML: an error code, the message, and the OpenRosa answer still handed out. */
  FAILS(submit(e, "<data><unclosed></data>", &r), CC_EINVALID, "");
  CHECK(r != NULL && r->http_status == 500 && strcmp(r->state, "submission_error_log") == 0 &&
        strlen(r->message) > 0);
  cc_submit_result_free(r);
  FAILS(submit(e, bad, &r), CC_EINVALID, "");
  cc_submit_result_free(r);
  OK(cc_submit_options_init(&so, CC_SUBMIT_OPTIONS_VERSION));
  FAILS(cc_engine_submit(&r, e, &so, "x", 1), CC_EINVALID, "domain is NULL");
  CHECK(r == NULL);
  so.domain = "demo";
  so.headers_json = "{\"X-Submit-Time\": \"yesterday\"}";
  FAILS(cc_engine_submit(&r, e, &so, "x", 1), CC_EINVALID, "X-Submit-Time");
  so.version = 0;
  FAILS(cc_engine_submit(&r, e, &so, "x", 1), CC_EINVALID, "version 0");
  FAILS(cc_submit_options_init(&so, 2), CC_EINVALID, "version 2");

  /* Archive: the case goes (it was created by the archived form); unarchive brings it back. */
  OK(cc_engine_archive_form(e, "demo", "f1"));
  OK(cc_engine_get_form(&json, e, "demo", "f1"));
  CHECK(json && strstr(json, "archived"));
  cc_free(json);
  OK(cc_engine_unarchive_form(e, "demo", "f1"));
  OK(cc_engine_get_case(&json, e, "demo", "c1"));
  CHECK(json && strstr(json, "\"closed\":false"));
  cc_free(json);
  FAILS(cc_engine_archive_form(e, "demo", "nope"), CC_ENOTFOUND, "nope");

  /* Ledgers. */
  OK(submit(e,
            "<?xml version=\"1.0\"?><data xmlns=\"http://example.org/stock\">"
            "<meta xmlns=\"http://openrosa.org/jr/xforms\"><instanceID>f2</instanceID>"
            "<userID>u1</userID></meta>"
            "<balance xmlns=\"http://commcarehq.org/ledger/v1\" entity-id=\"c1\" "
            "section-id=\"stock\" date=\"2020-01-02\"><entry id=\"p1\" quantity=\"7\"/></balance>"
            "</data>",
            &r));
  cc_submit_result_free(r);
  OK(cc_engine_get_ledger(&json, e, "demo", "c1"));
  CHECK(json && strstr(json, "\"stock\"") && strstr(json, "\"p1\":7"));
  cc_free(json);

  /* Changes: relayed, readable by topic and partition. */
  OK(cc_engine_relay(e));
  OK(cc_engine_topics(&json, e));
  CHECK(json && strstr(json, "\"case-sql\"") && strstr(json, "\"form-sql\""));
  cc_free(json);
  {
    int p, found = 0;
    for (p = 0; p < 8; p++) {
      OK(cc_engine_read_changes(&json, e, "case-sql", p, 0, 100));
      if (json && strstr(json, "\"document_id\":\"c1\"")) found = 1;
      cc_free(json);
    }
    CHECK(found);
  }
  FAILS(cc_engine_read_changes(&json, e, "no-such-topic", 0, 0, 10), CC_ENOTFOUND, "");

  /* A closed handle answers CC_EPRECONDITION. */
  OK(cc_engine_close(e));
  FAILS(cc_engine_get_case(&json, e, "demo", "c1"), CC_EPRECONDITION, "closed");
  FAILS(submit(e, case_form("f9", "c9", ""), &r), CC_EPRECONDITION, "closed");
  OK(cc_engine_close(e));
  cc_engine_free(e);
}

struct sink {
  char* data;
  size_t len;
  int chunks;
  int stop_after;
};
static int write_sink(const char* data, size_t len, void* payload) {
  struct sink* s = (struct sink*)payload;
  s->chunks++;
  if (s->stop_after && s->chunks >= s->stop_after) return 1;
  s->data = (char*)realloc(s->data, s->len + len + 1);
  memcpy(s->data + s->len, data, len);
  s->len += len;
  s->data[s->len] = '\0';
  return 0;
}

static void test_users_and_restore(void) {
  cc_engine* e = open_memory();
  cc_submit_result* r = NULL;
  char *json = NULL, *payload = NULL, *result = NULL;
  size_t len = 0;
  struct sink s = {NULL, 0, 0, 0};
  char* id_start;
  char user_id[64] = {0};
  char form[64], cid[64], req[512];
  int i;

  OK(cc_engine_create_domain(&json, e, "{\"name\": \"demo\"}"));
  CHECK(json && strstr(json, "\"name\":\"demo\""));
  cc_free(json);
  FAILS(cc_engine_create_domain(NULL, e, "{\"name\": \"demo\"}"), CC_EEXISTS, "demo");
  FAILS(cc_engine_create_domain(NULL, e, "{}"), CC_EINVALID, "name");
  OK(cc_engine_list_domains(&json, e));
  CHECK(json && strstr(json, "\"demo\""));
  cc_free(json);
  /* The domain flags: HQ's ASYNC_RESTORE and MM_CASE_PROPERTIES toggles, off by default. */
  OK(cc_engine_get_domain(&json, e, "demo"));
  CHECK(json && strstr(json, "\"async_restore\":false") &&
        strstr(json, "\"case_attachments_in_restore\":false") && strstr(json, "\"_rev\":1"));
  cc_free(json);
  OK(cc_engine_create_domain(&json, e,
                             "{\"name\": \"slow\", \"async_restore\": true, "
                             "\"case_attachments_in_restore\": true}"));
  CHECK(json && strstr(json, "\"async_restore\":true") &&
        strstr(json, "\"case_attachments_in_restore\":true"));
  cc_free(json);
  OK(cc_engine_update_domain(&json, e,
                             "{\"name\": \"slow\", \"_rev\": 1, "
                             "\"async_restore\": false}"));
  CHECK(json && strstr(json, "\"async_restore\":false") &&
        strstr(json, "\"case_attachments_in_restore\":true") && strstr(json, "\"_rev\":2"));
  cc_free(json);
  OK(cc_engine_get_domain(&json, e, "slow"));
  CHECK(json && strstr(json, "\"async_restore\":false") && strstr(json, "\"_rev\":2"));
  cc_free(json);
  FAILS(cc_engine_update_domain(NULL, e,
                                "{\"name\": \"slow\", \"_rev\": 1, "
                                "\"async_restore\": true}"),
        CC_EABORTED, "revision");
  FAILS(cc_engine_update_domain(NULL, e, "{\"name\": \"slow\", \"async_restore\": true}"),
        CC_EINVALID, "_rev");
  FAILS(cc_engine_update_domain(NULL, e,
                                "{\"name\": \"slow\", \"_rev\": 2, "
                                "\"async_restore\": \"yes\"}"),
        CC_EINVALID, "async_restore");
  FAILS(cc_engine_update_domain(NULL, e, "{\"name\": \"slow\", \"_rev\": 2, \"colour\": 1}"),
        CC_EINVALID, "colour");
  FAILS(cc_engine_update_domain(NULL, e, "{\"name\": \"nowhere\", \"_rev\": 1}"), CC_ENOTFOUND,
        "nowhere");
  FAILS(cc_engine_get_domain(&json, e, "nowhere"), CC_ENOTFOUND, "nowhere");
  FAILS(cc_engine_create_domain(NULL, e, "{\"name\": \"d2\", \"async_restore\": 1}"), CC_EINVALID,
        "async_restore");

  OK(cc_engine_put_user(&json, e, "{\"username\": \"nurse\", \"domains\": [\"demo\"]}", "pw12"));
  CHECK(json && strstr(json, "\"user_id\":\""));
  id_start = json ? strstr(json, "\"user_id\":\"") : NULL;
  if (id_start) memcpy(user_id, id_start + 11, 32);
  cc_free(json);
  FAILS(cc_engine_put_user(NULL, e, "{\"username\": \"nurse\", \"domains\": [\"demo\"]}", "x1234"),
        CC_EINVALID, "_rev");
  FAILS(cc_engine_put_user(NULL, e, "{\"username\": \"n2\", \"domains\": [\"nowhere\"]}", "pw12"),
        CC_ENOTFOUND, "nowhere");
  FAILS(cc_engine_put_user(NULL, e, "{\"username\": \"n3\", \"domains\": [\"demo\"], \"hat\": 1}",
                           "pw12"),
        CC_EINVALID, "hat");
  OK(cc_engine_authenticate(&json, e, "nurse", "pw12"));
  cc_free(json);
  FAILS(cc_engine_authenticate(NULL, e, "nurse", "wrong"), CC_EUNAUTHENTICATED, "");
  OK(cc_engine_get_user(&json, e, "nurse"));
  CHECK(json && strstr(json, "\"_rev\":1"));
  cc_free(json);
  OK(cc_engine_put_user(&json, e,
                        "{\"username\": \"nurse\", \"domains\": [\"demo\"], \"_rev\": 1, "
                        "\"user_data\": {\"district\": \"north\"}}",
                        NULL));
  CHECK(json && strstr(json, "north") && strstr(json, "\"_rev\":2"));
  cc_free(json);
  OK(cc_engine_list_users(&json, e, "demo"));
  CHECK(json && strstr(json, "nurse"));
  cc_free(json);

  for (i = 0; i < 3; i++) {
    char body[256];
    snprintf(form, sizeof form, "rf%d", i);
    snprintf(cid, sizeof cid, "rc%d", i);
    snprintf(body, sizeof body,
             "<create><case_type>patient</case_type><case_name>P%d</case_name>"
             "<owner_id>%s</owner_id></create>",
             i, user_id);
    OK(submit(e, case_form(form, cid, body), &r));
    cc_submit_result_free(r);
  }
  OK(cc_engine_restore_buffer(&payload, &len, e,
                              "{\"domain\": \"demo\", \"username\": \"nurse\"}"));
  CHECK(payload && len == strlen(payload) && strstr(payload, "ota_restore_success"));
  CHECK(payload && strstr(payload, "rc0") && strstr(payload, "rc2") && strstr(payload, "north"));
  cc_free(payload);

  OK(cc_engine_restore(&result, e, "{\"domain\": \"demo\", \"username\": \"nurse\"}", write_sink,
                       &s));
  CHECK(s.data && strstr(s.data, "<restore_id>") && s.chunks >= 1);
  CHECK(result && strstr(result, "\"cases\":3"));
  /* An incremental sync from that token: nothing changed. */
  if (result) {
    char* sid = strstr(result, "\"sync_id\":\"");
    char token[64] = {0};
    if (sid) memcpy(token, sid + 11, 32);
    snprintf(req, sizeof req, "{\"domain\": \"demo\", \"username\": \"nurse\", \"since\": \"%s\"}",
             token);
    cc_free(result);
    OK(cc_engine_restore(&result, e, req, write_sink, &s));
    CHECK(result && strstr(result, "\"cases\":0"));
    cc_free(result);
  }
  free(s.data);

  FAILS(cc_engine_restore_buffer(&payload, &len, e,
                                 "{\"domain\": \"demo\", \"username\": \"nurse\", \"since\": "
                                 "\"0123456789abcdef0123456789abcdef\"}"),
        CC_EPRECONDITION, "");
  CHECK(payload == NULL);
  FAILS(cc_engine_restore_buffer(&payload, &len, e, "{\"domain\": \"demo\", \"username\": \"x\"}"),
        CC_ENOTFOUND, "x");
  FAILS(cc_engine_restore_buffer(&payload, &len, e, "{\"domain\": \"demo\"}"), CC_EINVALID,
        "username");
  {
    struct sink stop = {NULL, 0, 0, 1};
    FAILS(cc_engine_restore(NULL, e, "{\"domain\": \"demo\", \"username\": \"nurse\"}", write_sink,
                            &stop),
          CC_EABORTED, "write callback");
    free(stop.data);
  }
  FAILS(cc_engine_restore(NULL, e, "{\"domain\": \"demo\", \"username\": \"nurse\"}", NULL, NULL),
        CC_EINVALID, "write");
  cc_engine_free(e);
}

struct counter {
  int seen;
  int fail;
};
static int count_changes(const char* change_json, size_t len, void* payload) {
  struct counter* c = (struct counter*)payload;
  if (strlen(change_json) != len || !strstr(change_json, "\"document_id\"")) return -1;
  c->seen++;
  if (c->fail) return cc_error_set(CC_EINTERNAL, "the C processor refused it");
  return 0;
}

static void test_pillows(void) {
  cc_engine* e = open_memory();
  cc_pillows* p = NULL;
  cc_submit_result* r = NULL;
  char* json = NULL;
  int64_t n = -1;
  struct counter ok = {0, 0}, bad = {0, 1};
  int i;

  for (i = 0; i < 5; i++) {
    char form[32], cid[32];
    snprintf(form, sizeof form, "pf%d", i);
    snprintf(cid, sizeof cid, "pc%d", i);
    OK(submit(e,
              case_form(form, cid,
                        "<create><case_type>patient</case_type><case_name>Bo</case_name>"
                        "<owner_id>u1</owner_id></create><update><ward>w7</ward></update>"),
              &r));
    cc_submit_result_free(r);
  }
  OK(cc_engine_relay(e));
  FAILS(cc_pillows_open(&p, e, "{\"colour\": 1}"), CC_EINVALID, "colour");
  FAILS(cc_pillows_open(&p, e, "{\"consumer_group\": \"g\"}"), CC_EUNIMPLEMENTED, "Kafka");
  OK(cc_pillows_open(&p, e, NULL));
  OK(cc_pillows_add(p, "{\"name\": \"count\", \"topics\": [\"case-sql\"]}", count_changes, &ok));
  OK(cc_pillows_add(p, "{\"name\": \"refuse\", \"topics\": [\"case-sql\"], \"max_attempts\": 1}",
                    count_changes, &bad));
  FAILS(cc_pillows_add(p, "{\"name\": \"x\"}", count_changes, &ok), CC_EINVALID, "topics");
  FAILS(cc_pillows_add(p, "{\"name\": \"x\", \"topics\": [\"a\"]}", NULL, &ok), CC_EINVALID, "fn");
  OK(cc_pillows_run_until_caught_up(&n, p));
  CHECK(n > 0);
  CHECK(ok.seen == 5);
  CHECK(bad.seen == 5);
  OK(cc_pillows_retries(&json, p, "refuse"));
  CHECK(json && strstr(json, "the C processor refused it") && strstr(json, "pc0"));
  cc_free(json);
  OK(cc_pillows_retries(&json, p, "count"));
  CHECK(json && strcmp(json, "[]") == 0);
  cc_free(json);
  OK(cc_pillows_requeue(&n, p, "refuse", NULL, 1));
  CHECK(n == 5);
  OK(cc_pillows_status(&json, p));
  CHECK(json && strstr(json, "\"count\"") && strstr(json, "\"case-search\""));
  cc_free(json);

  OK(cc_pillows_search(&json, p, "{\"domain\": \"demo\", \"properties\": {\"ward\": \"w7\"}}"));
  CHECK(json && strstr(json, "pc0") && strstr(json, "pc4"));
  cc_free(json);
  FAILS(cc_pillows_search(&json, p, "{\"domain\": \"demo\", \"properties\": [1]}"), CC_EINVALID,
        "properties");
  OK(cc_pillows_list_forms(&json, p, "{\"domain\": \"demo\"}"));
  CHECK(json && strstr(json, "\"total_count\":5"));
  cc_free(json);
  FAILS(cc_pillows_ucr_load(&n, p, "{\"table_id\": 3}"), CC_EINVALID, "");
  CHECK(cc_pillows_ucr_rows(&json, p, "demo", "no_such_table", 10, 0) < 0);
  CHECK(json == NULL);
  FAILS(cc_pillows_ucr_rows(&json, p, "demo", NULL, 10, 0), CC_EINVALID, "table_id is NULL");
  cc_pillows_free(p);
  cc_engine_free(e);
}

struct progress {
  int calls;
  int stop_after; /* stop (non-zero) once calls reaches it; 0: never */
  int64_t last_done;
};
static int on_progress(int64_t done, int64_t total, void* payload) {
  struct progress* p = (struct progress*)payload;
  p->calls++;
  p->last_done = done;
  (void)total;
  return p->stop_after && p->calls >= p->stop_after;
}

static int file_contains(const char* path, const char* text) {
  char buf[8192];
  size_t n;
  FILE* f = fopen(path, "rb");
  if (!f) return 0;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  return strstr(buf, text) != NULL;
}

#define PATIENTS_UCR                                                                            \
  "{\"domain\": \"demo\", \"table_id\": \"wards\", \"referenced_doc_type\": \"CommCareCase\", " \
  "\"configured_indicators\": [{\"type\": \"raw\", \"column_id\": \"ward\", \"datatype\": "     \
  "\"string\", \"property_name\": \"ward\"}]}"
#define WARDS_REPORT(extra)                                                               \
  "{\"name\": \"wards\", \"domain\": \"demo\", \"table_id\": \"wards\", \"recipients\": " \
  "[\"lead@example.org\"], \"group_by\": [\"ward\"], \"aggregations\": [{\"fn\": "        \
  "\"count\"}]" extra "}"

/* Data forwarding: forwarders added, listed, paused, deleted; records made by the pillow,
 * listed, read and resent (delivery itself is tested in forwarding_test.py). */
static void test_forwarding(void) {
  char dir[] = "/tmp/cc-capi-fwd-XXXXXX", config[512];
  cc_engine_options o = CC_ENGINE_OPTIONS_INIT;
  cc_engine* e = NULL;
  cc_submit_result* r = NULL;
  cc_pillows* p = NULL;
  char *json = NULL, id[64] = {0}, *at;
  int64_t n = 0;

  CHECK(mkdtemp(dir) != NULL);
  snprintf(config, sizeof config,
           "{\"backend\": \"sqlite\", \"data_dir\": \"%s/data\", \"create\": true}", dir);
  o.config_json = config;
  OK(cc_engine_open(&e, &o));
  FAILS(cc_forwarder_add(&json, e, "{\"domain\": \"demo\", \"url\": \"ftp://x\"}"), CC_EINVALID,
        "url");
  FAILS(cc_forwarder_add(&json, e, "{\"domain\": \"demo\", \"url\": \"http://x\", \"colour\": 1}"),
        CC_EINVALID, "colour");
  OK(cc_forwarder_add(&json, e,
                      "{\"domain\": \"demo\", \"kind\": \"case\", \"url\": "
                      "\"http://127.0.0.1:1/in\", \"auth\": \"bearer\", \"token\": \"t0k\"}"));
  CHECK(json && strstr(json, "\"token\":\"***\"") && !strstr(json, "t0k"));
  at = json ? strstr(json, "\"id\":\"") : NULL;
  CHECK(at != NULL);
  if (at) memcpy(id, at + 6, 32);
  cc_free(json);
  OK(cc_forwarder_list(&json, e, "demo"));
  CHECK(json && strstr(json, id));
  cc_free(json);
  OK(cc_forwarder_set_paused(e, "demo", id, 1));
  FAILS(cc_forwarder_set_paused(e, "other", id, 1), CC_ENOTFOUND, "forwarder");
  OK(submit(e,
            case_form("ff1", "fc1",
                      "<create><case_type>patient</case_type><case_name>P"
                      "</case_name><owner_id>u1</owner_id></create>"),
            &r));
  cc_submit_result_free(r);
  OK(cc_pillows_open(&p, e, NULL));
  OK(cc_pillows_run_until_caught_up(&n, p));
  cc_pillows_free(p);
  OK(cc_forward_records(&json, e, "demo", "{\"state\": \"pending\"}"));
  CHECK(json && strstr(json, "\"doc_id\":\"fc1\"") && strstr(json, "\"event\":\"create\""));
  cc_free(json);
  FAILS(cc_forward_records(&json, e, "demo", "{\"state\": \"lost\"}"), CC_EINVALID, "state");
  OK(cc_forward_record(&json, e, "demo", 1));
  CHECK(json && strstr(json, "\"state\":\"pending\""));
  cc_free(json);
  FAILS(cc_forward_record(&json, e, "other", 1), CC_ENOTFOUND, "record");
  OK(cc_forward_resend(&n, e, "demo", 0, NULL));
  CHECK(n == 0); /* nothing failed yet */
  OK(cc_forwarder_delete(e, "demo", id));
  OK(cc_forward_records(&json, e, "demo", "{\"state\": \"cancelled\"}"));
  CHECK(json && strstr(json, "fc1"));
  cc_free(json);
  OK(cc_forwarder_list(&json, e, "demo"));
  CHECK(json && strcmp(json, "[]") == 0);
  cc_free(json);
  OK(cc_engine_close(e));
  cc_engine_free(e);
  snprintf(config, sizeof config, "rm -rf '%s'", dir);
  CHECK(system(config) == 0);
}

/* Exports (run, saved definitions, tasks) and reports (saved, sent, previewed). */
static void test_exports_and_reports(void) {
  char dir[] = "/tmp/cc-capi-XXXXXX", path[256], config[512];
  cc_engine_options o = CC_ENGINE_OPTIONS_INIT;
  cc_engine *e = NULL, *mem = open_memory();
  cc_submit_result* r = NULL;
  cc_pillows* p = NULL;
  char* json = NULL;
  int64_t id = 0, n = 0;
  struct progress pr = {0, 0, 0};
  int i;

  CHECK(mkdtemp(dir) != NULL);
  snprintf(config, sizeof config,
           "{\"backend\": \"sqlite\", \"data_dir\": \"%s/data\", "
           "\"create\": true}",
           dir);
  o.config_json = config;
  OK(cc_engine_open(&e, &o));
  for (i = 0; i < 4; i++) {
    char form[32], cid[32], body[256];
    snprintf(form, sizeof form, "xf%d", i);
    snprintf(cid, sizeof cid, "xc%d", i);
    snprintf(body, sizeof body,
             "<create><case_type>patient</case_type><case_name>P%d</case_name>"
             "<owner_id>u1</owner_id></create><update><ward>w%d</ward></update>",
             i, i % 2);
    OK(submit(e, case_form(form, cid, body), &r));
    cc_submit_result_free(r);
  }

  /* A run in this thread, with progress; stopped by the callback; a bad definition. */
  snprintf(path, sizeof path, "%s/patients.csv", dir);
  OK(cc_export_run(&json, e, "{\"domain\": \"demo\", \"columns\": [\"case_id\", \"ward\"]}", path,
                   on_progress, &pr));
  CHECK(json && strstr(json, "\"rows\":4") && strstr(json, "\"Cases\""));
  cc_free(json);
  CHECK(pr.calls >= 2 && pr.last_done == 4);
  CHECK(file_contains(path, "case_id,ward\r\n") && file_contains(path, "xc3,w1\r\n"));
  OK(cc_export_run(NULL, e, "{\"domain\": \"demo\", \"format\": \"xlsx\"}", path, NULL, NULL));
  pr.stop_after = 1;
  FAILS(cc_export_run(&json, e, "{\"domain\": \"demo\"}", path, on_progress, &pr), CC_EABORTED,
        "cancelled");
  CHECK(json == NULL);
  FAILS(cc_export_run(&json, e, "{\"domain\": \"demo\", \"colour\": 1}", path, NULL, NULL),
        CC_EINVALID, "colour");
  FAILS(cc_export_run(&json, e, "{\"domain\": \"demo\"}", NULL, NULL, NULL), CC_EINVALID,
        "out_path");

  /* Saved definitions: need a data directory. */
  FAILS(cc_export_save(mem, "{\"domain\": \"demo\", \"name\": \"x\"}"), CC_EPRECONDITION,
        "data directory");
  OK(cc_export_save(e, "{\"domain\": \"demo\", \"name\": \"wards\", \"columns\": [\"ward\"]}"));
  FAILS(cc_export_save(e, "{\"domain\": \"demo\"}"), CC_EINVALID, "name");
  OK(cc_export_list(&json, e, "demo"));
  CHECK(json && strcmp(json, "[\"wards\"]") == 0);
  cc_free(json);
  OK(cc_export_load(&json, e, "demo", "wards"));
  CHECK(json && strstr(json, "\"ward\""));
  cc_free(json);
  FAILS(cc_export_load(&json, e, "demo", "nope"), CC_ENOTFOUND, "nope");
  OK(cc_export_enqueue(&id, e, "demo", "{\"saved\": \"wards\"}"));
  CHECK(id > 0);
  OK(cc_tasks_get(&json, e, id));
  CHECK(json && strstr(json, "\"export.run\""));
  cc_free(json);
  OK(cc_export_enqueue(&id, e, "demo", "{\"kind\": \"case\", \"columns\": [\"case_id\"]}"));
  /* No worker runs it here: its file cannot be fetched yet, nor from another domain. */
  FAILS(cc_export_fetch(NULL, e, "demo", id, "cc-capi-export.csv"), CC_EPRECONDITION, "queued");
  FAILS(cc_export_fetch(NULL, e, "other", id, "cc-capi-export.csv"), CC_ENOTFOUND, "other");
  /* A saved export with a schedule is a daily saved export: saving puts its schedule. */
  OK(cc_export_save(e,
                    "{\"domain\": \"demo\", \"name\": \"daily\", \"schedule\": "
                    "{\"cron\": \"0 6 * * *\", \"time_zone\": \"Africa/Nairobi\"}}"));
  OK(cc_tasks_schedules(&json, e));
  CHECK(json && strstr(json, "export:demo:daily"));
  cc_free(json);
  FAILS(cc_export_save(e,
                       "{\"domain\": \"demo\", \"name\": \"bad\", \"schedule\": "
                       "{\"cron\": \"61 * * * *\"}}"),
        CC_EINVALID, "cron");
  OK(cc_export_delete(e, "demo", "daily"));
  OK(cc_tasks_schedules(&json, e));
  CHECK(json && !strstr(json, "export:demo:daily"));
  cc_free(json);
  FAILS(cc_export_enqueue(&id, e, "demo", "{\"saved\": \"nope\"}"), CC_ENOTFOUND, "nope");
  FAILS(cc_export_enqueue(&id, e, "demo", "{\"domain\": \"other\"}"), CC_EPERMISSION, "domain");
  OK(cc_export_delete(e, "demo", "wards"));
  FAILS(cc_export_delete(e, "demo", "wards"), CC_ENOTFOUND, "wards");

  /* Reports over a UCR table. */
  OK(cc_pillows_open(&p, e, NULL));
  OK(cc_pillows_ucr_load(&n, p, PATIENTS_UCR));
  CHECK(n == 4);
  cc_pillows_free(p);
  FAILS(cc_report_set(&json, e, WARDS_REPORT("")), CC_EINVALID, "schedule");
  FAILS(cc_report_set(&json, e, WARDS_REPORT(", \"format\": \"pdf\"")), CC_EINVALID, "format");
  OK(cc_report_set(
      &json, e, WARDS_REPORT(", \"format\": \"xlsx\", \"schedule\": {\"cron\": \"0 8 * * 1\"}")));
  CHECK(json && strstr(json, "\"schedule\":\"report:demo:wards\"") && strstr(json, "next_run_at"));
  cc_free(json);
  OK(cc_report_list(&json, e, NULL));
  CHECK(json && strstr(json, "report:demo:wards"));
  cc_free(json);
  OK(cc_report_list(&json, e, "other"));
  CHECK(json && strcmp(json, "[]") == 0);
  cc_free(json);
  OK(cc_report_get(&json, e, "demo", "wards"));
  CHECK(json && strstr(json, "\"xlsx\""));
  cc_free(json);
  OK(cc_report_preview(&json, e, "demo", "wards"));
  CHECK(json && strstr(json, "\"header\":[\"ward\",\"count\"]") && strstr(json, "[\"w0\",\"2\"]") &&
        strstr(json, "\"totals\":[\"Total\",\"4\"]"));
  cc_free(json);
  OK(cc_report_render(&json, e,
                      WARDS_REPORT(", \"filters\": [{\"column\": \"ward\", "
                                   "\"equals\": \"w1\"}]")));
  CHECK(json && strstr(json, "\"source_rows\":2"));
  cc_free(json);
  OK(cc_report_send(&id, e, "demo", "wards"));
  OK(cc_tasks_get(&json, e, id));
  CHECK(json && strstr(json, "\"report.send\""));
  cc_free(json);
  FAILS(cc_report_send(&id, e, "demo", "nope"), CC_ENOTFOUND, "nope");
  FAILS(cc_report_preview(&json, e, "demo", NULL), CC_EINVALID, "name");
  OK(cc_report_delete(e, "demo", "wards"));
  FAILS(cc_report_get(&json, e, "demo", "wards"), CC_ENOTFOUND, "wards");
  CHECK(json == NULL);

  cc_engine_free(mem);
  cc_engine_free(e);
  snprintf(config, sizeof config, "rm -rf '%s'", dir);
  CHECK(system(config) == 0);
}

/* Case import (dry run, then for real, then again: nothing changes) and a bulk edit. */
static void test_import_and_bulk_edit(void) {
  char dir[] = "/tmp/cc-capi-import-XXXXXX", path[256], config[512];
  const char* opts =
      "{\"domain\": \"demo\", \"case_type\": \"patient\", "
      "\"search_field\": \"external_id\", \"create_new\": true%s}";
  char options[256];
  cc_engine_options o = CC_ENGINE_OPTIONS_INIT;
  cc_engine* e = NULL;
  char* json = NULL;
  int64_t id = 0;
  FILE* f;

  CHECK(mkdtemp(dir) != NULL);
  snprintf(config, sizeof config,
           "{\"backend\": \"sqlite\", \"data_dir\": \"%s/data\", "
           "\"create\": true}",
           dir);
  o.config_json = config;
  OK(cc_engine_open(&e, &o));
  snprintf(path, sizeof path, "%s/p.csv", dir);
  f = fopen(path, "w");
  CHECK(f != NULL);
  fputs("external_id,name,ward,close\nE1,Amina,w1,\nE2,Baraka,w2,maybe\nE1,,w3,\n", f);
  fclose(f);
  snprintf(options, sizeof options, opts, ", \"dry_run\": true");
  OK(cc_import_cases(&json, e, options, path, NULL, NULL));
  CHECK(json && strstr(json, "\"created_count\":1") && strstr(json, "\"match_count\":1") &&
        strstr(json, "\"failed_count\":1") && strstr(json, "\"row\":3"));
  cc_free(json);
  OK(cc_bulk_edit(&json, e,
                  "{\"domain\": \"demo\", \"filter\": {\"case_type\": \"patient\"}, "
                  "\"preview\": true}",
                  NULL, NULL));
  CHECK(json && strstr(json, "\"matched\":0")); /* the dry run wrote nothing */
  cc_free(json);
  snprintf(options, sizeof options, opts, "");
  OK(cc_import_cases(&json, e, options, path, NULL, NULL));
  CHECK(json && strstr(json, "\"created_count\":1") &&
        strstr(json, "\"chunks_already_applied\":0"));
  cc_free(json);
  OK(cc_import_cases(&json, e, options, path, NULL, NULL));
  CHECK(json && strstr(json, "\"chunks_already_applied\":2"));
  cc_free(json);
  FAILS(cc_import_cases(&json, e, "{\"domain\": \"demo\"}", path, NULL, NULL), CC_EINVALID,
        "case_type");
  FAILS(cc_import_cases(&json, e, "{\"colour\": 1}", path, NULL, NULL), CC_EINVALID, "colour");
  OK(cc_bulk_edit(&json, e,
                  "{\"domain\": \"demo\", \"filter\": {\"properties.ward\": \"w3\"}, "
                  "\"set\": {\"flag\": \"yes\"}}",
                  NULL, NULL));
  CHECK(json && strstr(json, "\"updated\":1"));
  cc_free(json);
  FAILS(cc_bulk_edit(&json, e,
                     "{\"domain\": \"demo\", \"filter\": {\"colour\": \"red\"}, "
                     "\"close\": true}",
                     NULL, NULL),
        CC_EINVALID, "colour");
  OK(cc_import_enqueue(&id, e, options, "external_id,name\nE9,x\n", 22));
  CHECK(id > 0);
  OK(cc_tasks_get(&json, e, id));
  CHECK(json && strstr(json, "\"import.cases\""));
  cc_free(json);
  OK(cc_bulk_edit_enqueue(&id, e,
                          "{\"domain\": \"demo\", \"filter\": {\"case_type\": "
                          "\"patient\"}, \"close\": true}"));
  CHECK(id > 0);
  cc_engine_free(e);
  snprintf(config, sizeof config, "rm -rf '%s'", dir);
  CHECK(system(config) == 0);
}

/* Ownership: 10,000 rounds of every allocating call, successful and failing (LeakSanitizer
 * checks the capi_leak_test build of this file at exit). */
/* Case update rules: saved with their schedule, a bad one refused naming the field, a dry run
 * that changes nothing, a run that does, a rerun that finds nothing left to do. */
#define FLAG_RULE(extra)                                                            \
  "{\"name\": \"flag\", \"domain\": \"demo\", \"case_type\": \"patient\", "         \
  "\"criteria\": [{\"property_name\": \"status\", \"match_type\": \"EQUAL\", "      \
  "\"property_value\": \"new\"}], \"actions\": {\"update\": [{\"name\": \"flag\", " \
  "\"value\": \"yes\"}]}" extra "}"
static void test_rules(void) {
  cc_engine* e = open_memory();
  cc_submit_result* r = NULL;
  char* json = NULL;
  int64_t id = 0;
  OK(submit(e,
            case_form("rf1", "rc1",
                      "<create><case_type>patient</case_type><case_name>A</case_name>"
                      "<owner_id>u1</owner_id></create><update><status>new</status></update>"),
            &r));
  cc_submit_result_free(r);
  FAILS(cc_rule_set(&json, e, FLAG_RULE(", \"time_zone\": \"Nowhere/City\"")), CC_EINVALID,
        "time_zone");
  FAILS(cc_rule_set(&json, e,
                    "{\"name\": \"x\", \"domain\": \"demo\", \"case_type\": \"p\", "
                    "\"criteria\": [{\"property_name\": \"a\", \"match_type\": \"REGEX\", "
                    "\"property_value\": \"[\"}], \"actions\": {\"close_case\": true}}"),
        CC_EINVALID, "criteria[0].property_value");
  OK(cc_rule_set(&json, e, FLAG_RULE(", \"time_zone\": \"Asia/Kolkata\"")));
  CHECK(json && strstr(json, "\"schedule\":\"rule:demo:flag\"") != NULL);
  cc_free(json);
  OK(cc_rule_list(&json, e, "demo"));
  CHECK(json && strstr(json, "Asia/Kolkata") != NULL);
  cc_free(json);
  OK(cc_rule_run(&json, e, "demo", "flag", 1));
  CHECK(json && strstr(json, "\"case_id\":\"rc1\"") && strstr(json, "\"changed\":1"));
  cc_free(json);
  OK(cc_engine_get_case(&json, e, "demo", "rc1"));
  CHECK(json && strstr(json, "\"flag\"") == NULL);
  cc_free(json);
  OK(cc_rule_run(&json, e, "demo", "flag", 0));
  CHECK(json && strstr(json, "\"changed\":1"));
  cc_free(json);
  OK(cc_engine_get_case(&json, e, "demo", "rc1"));
  CHECK(json && strstr(json, "\"flag\":\"yes\"") != NULL);
  cc_free(json);
  OK(cc_rule_run(&json, e, "demo", "flag", 0));
  CHECK(json && strstr(json, "\"changed\":0") && strstr(json, "\"unchanged\":1"));
  cc_free(json);
  OK(cc_rule_run_later(&id, e, "demo", "flag"));
  CHECK(id > 0);
  OK(cc_rule_delete(e, "demo", "flag"));
  FAILS(cc_rule_get(&json, e, "demo", "flag"), CC_ENOTFOUND, "no rule");
  cc_engine_free(e);
}

/* Reminders: an alert saved with its check schedule, bad ones refused naming the field, a check
 * that queues a due message once, the message log with its filters. */
#define VISIT_ALERT(extra)                                                                     \
  "{\"name\": \"visit\", \"domain\": \"demo\", \"case_type\": \"patient\", "                   \
  "\"criteria\": [{\"property_name\": \"status\", \"match_type\": \"EQUAL\", "                 \
  "\"property_value\": \"new\"}], \"start\": {\"property\": \"visit\", \"time\": \"00:00\"}, " \
  "\"recipient\": \"nurse@example.org\", \"message\": \"Visit {case_name}\"" extra "}"
static void test_alerts(void) {
  cc_engine* e = open_memory();
  cc_submit_result* r = NULL;
  char* json = NULL;
  char body[512], today[16];
  int64_t id = 0;
  time_t now = time(NULL);
  strftime(today, sizeof today, "%Y-%m-%d", gmtime(&now));
  snprintf(body, sizeof body,
           "<create><case_type>patient</case_type><case_name>A</case_name>"
           "<owner_id>u1</owner_id></create><update><status>new</status><visit>%s</visit>"
           "</update>",
           today);
  OK(submit(e, case_form("af1", "ac1", body), &r));
  cc_submit_result_free(r);
  FAILS(cc_alert_set(&json, e, VISIT_ALERT(", \"check\": \"every 5 minutes\"")), CC_EINVALID,
        "check");
  OK(cc_alert_set(&json, e, VISIT_ALERT("")));
  CHECK(json && strstr(json, "\"schedule\":\"alert:demo:visit\"") != NULL);
  cc_free(json);
  OK(cc_alert_list(&json, e, "demo"));
  CHECK(json && strstr(json, "nurse@example.org") != NULL);
  cc_free(json);
  OK(cc_alert_get(&json, e, "demo", "visit"));
  CHECK(json && strstr(json, "Visit {case_name}") != NULL);
  cc_free(json);
  FAILS(cc_alert_get(&json, e, "demo", "nope"), CC_ENOTFOUND, "no alert 'nope'");
  OK(cc_alert_check(&json, e, "demo", "visit"));
  CHECK(json && strstr(json, "\"matched\":1") && strstr(json, "\"queued\":1"));
  cc_free(json);
  OK(cc_alert_check(&json, e, "demo", "visit"));
  CHECK(json && strstr(json, "\"queued\":0") != NULL); /* each message once */
  cc_free(json);
  OK(cc_alert_messages(&json, e, "{\"domain\": \"demo\", \"alert\": \"visit\"}"));
  CHECK(json && strstr(json, "\"message\":\"Visit A\"") && strstr(json, "\"outcome\":\"queued\""));
  cc_free(json);
  OK(cc_alert_messages(&json, e, "{\"domain\": \"demo\", \"outcome\": \"skipped\"}"));
  CHECK(json && strcmp(json, "[]") == 0);
  cc_free(json);
  FAILS(cc_alert_messages(&json, e, "{\"domain\": \"demo\", \"outcome\": \"sent\"}"), CC_EINVALID,
        "outcome");
  FAILS(cc_alert_messages(&json, e, "{\"alert\": \"visit\"}"), CC_EINVALID, "domain");
  OK(cc_alert_check_later(&id, e, "demo", "visit"));
  CHECK(id > 0);
  OK(cc_alert_delete(e, "demo", "visit"));
  FAILS(cc_alert_delete(e, "demo", "visit"), CC_ENOTFOUND, "no alert 'visit'");
  cc_engine_free(e);
}

static void test_loops(int rounds) {
  cc_engine* e = open_memory();
  cc_submit_result* r = NULL;
  char* json = NULL;
  void* bytes = NULL;
  size_t len = 0;
  int i;
  OK(submit(e, case_form("lf", "lc", "<create><case_type>t</case_type></create>"), &r));
  cc_submit_result_free(r);
  OK(cc_engine_create_domain(NULL, e, "{\"name\": \"demo\"}"));
  for (i = 0; i < rounds; i++) {
    OK(cc_engine_get_case(&json, e, "demo", "lc"));
    cc_free(json);
    CHECK(cc_engine_get_case(&json, e, "demo", "missing") == CC_ENOTFOUND);
    OK(cc_engine_get_form(&json, e, "demo", "lf"));
    cc_free(json);
    OK(cc_engine_get_attachment(&bytes, &len, e, "demo", "lf", "form.xml"));
    cc_free(bytes);
    OK(cc_engine_list_cases(&json, e, "{\"domain\": \"demo\"}"));
    cc_free(json);
    CHECK(cc_engine_list_cases(&json, e, "{bad json") == CC_EINVALID);
    OK(cc_engine_list_domains(&json, e));
    cc_free(json);
    if (i % 50 == 0) {
      CHECK(submit(e, "<broken", &r) == CC_EINVALID);
      cc_submit_result_free(r);
      OK(submit(e, case_form("lf", "lc", ""), &r)); /* a duplicate */
      cc_submit_result_free(r);
    }
  }
  cc_engine_free(e);
}

int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 200;
  test_basics();
  test_submit_and_read();
  test_users_and_restore();
  test_pillows();
  test_exports_and_reports();
  test_rules();
  test_alerts();
  test_import_and_bulk_edit();
  test_forwarding();
  test_loops(rounds);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("capi_test: all checks passed (%d loop rounds)\n", rounds);
  return 0;
}
