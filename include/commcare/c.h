/* libcommcare's C ABI: the one stable surface (C99). Python's binding sits on it.
 *
 * Conventions
 * - Handles are opaque (cc_engine, cc_pillows). Functions are cc_<object>_<verb>.
 * - A function returning int returns 0 (CC_OK) on success or a negative CC_E* code on failure;
 *   cc_error_last() then holds the code and a message naming the problem. It is thread-local,
 *   owned by the library and valid until the next cc_ call on the same thread.
 * - Out-parameters come first and are named out*. What a call hands out through char ** or
 *   void ** is the caller's: free it with cc_free (never free()). Structs handed out have their
 *   own cc_*_free. All free functions accept NULL. const char * results are borrowed.
 * - Rich values (cases, forms, changes, queries, configuration) cross as UTF-8 JSON text;
 *   bytes (form XML, attachments, restore payloads) cross as pointer + length. Strings passed
 *   in must be UTF-8 (CC_EINVALID otherwise).
 * - Option structs start with `unsigned int version`; initialise them with their _INIT macro
 *   or cc_*_init(). An unknown version is CC_EINVALID.
 * - No C++ exception leaves a cc_ function. Unless a function says otherwise, it may be called
 *   from any thread on a shared handle; freeing a handle must wait until no call uses it.
 */
#ifndef COMMCARE_C_H_
#define COMMCARE_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define CC_EXTERN(type) __declspec(dllexport) type
#else
#define CC_EXTERN(type) __attribute__((visibility("default"))) type
#endif

#define CC_VERSION_MAJOR 0
#define CC_VERSION_MINOR 1
#define CC_VERSION_PATCH 0

/* Error codes (negated StatusCode numbers of the C++ API; frozen). */
#define CC_OK 0
#define CC_ENOTFOUND (-1)         /* no such document, user, topic, ... */
#define CC_EEXISTS (-2)           /* it exists already */
#define CC_EINVALID (-3)          /* bad argument: NULL, bad JSON, bad XML, unknown name, ... */
#define CC_EPRECONDITION (-4)     /* wrong state: a closed handle, a lock held elsewhere, ... */
#define CC_EABORTED (-5)          /* a conflict (stale revision); retrying may succeed */
#define CC_EUNAVAILABLE (-6)      /* a backend is down or busy; retryable */
#define CC_EDATALOSS (-7)         /* stored data is damaged */
#define CC_EUNIMPLEMENTED (-8)    /* not supported by this backend or build */
#define CC_EINTERNAL (-9)         /* a bug, or an unexpected failure */
#define CC_ERESOURCE (-10)        /* a size or rate limit was exceeded */
#define CC_EPERMISSION (-11)      /* authenticated but not allowed */
#define CC_EUNAUTHENTICATED (-12) /* bad or missing credentials */

/** The last error on this thread. */
typedef struct cc_error {
  int code;            /**< a CC_E* code (CC_OK if the last call succeeded) */
  const char* message; /**< what went wrong; never NULL */
} cc_error;

/** The calling thread's last error; borrowed, valid until the next cc_ call on this thread.
 *  @return never NULL */
CC_EXTERN(const cc_error*) cc_error_last(void);

/** Sets this thread's last error (for callbacks that fail: return its result from the callback).
 *  @param code a CC_E* code  @param message copied; NULL for none
 *  @return code */
CC_EXTERN(int) cc_error_set(int code, const char* message);

/** The library's version (any argument may be NULL). Thread-safe. */
CC_EXTERN(void) cc_version(int* major, int* minor, int* patch);

/** Frees memory the library handed out (NULL-safe). */
CC_EXTERN(void) cc_free(void* ptr);

/** Receives a log record: level 0 debug, 1 info, 2 warning, 3 error; message and fields_json (a
 *  JSON object of the record's keys, e.g. {"component": "relay", "next": "retrying ..."}) are
 *  borrowed for the call. Called from the library's threads, concurrently. */
typedef void (*cc_log_fn)(void* user, int level, const char* message, const char* fields_json);

/** Sends the library's log records at or above min_level (0..3) to fn; NULL restores the
 *  default (text lines on stderr). Background failures are logged once, with what happens next.
 *  @return CC_OK, CC_EINVALID for a level out of range */
CC_EXTERN(int) cc_set_logger(cc_log_fn fn, void* user, int min_level);

/* ---------------------------------------------------------------------------------------- */
/* Engine                                                                                    */

typedef struct cc_engine cc_engine;

#define CC_ENGINE_OPTIONS_VERSION 1
/** How to open an engine. */
typedef struct cc_engine_options {
  unsigned int version; /**< CC_ENGINE_OPTIONS_VERSION */
  /** JSON object: {"backend": "sqlite"|"memory", "data_dir": DIR, "create": bool (init DIR
   *  when it is not a data directory yet), "shards": N, "databases": K, "blob_store":
   *  "pack"|"files"|{"kind": "s3", ...}, "change_log": {"kind": "kafka", ...}, "primary",
   *  "meta", "pillows": {"kind": "postgres", ...} (the last seven with "create", for the new
   *  directory: see InitOptions in engine.h), "durable": bool,
   *  "strict_case_updates": bool, "max_xml_bytes": N, "relay": bool, "read_only": bool}.
   *  Unknown keys are CC_EINVALID. */
  const char* config_json;
} cc_engine_options;
#define CC_ENGINE_OPTIONS_INIT \
  { CC_ENGINE_OPTIONS_VERSION, NULL }

/** Initialises opts for the given version (CC_ENGINE_OPTIONS_VERSION).
 *  @return CC_OK, or CC_EINVALID for an unknown version or a NULL opts */
CC_EXTERN(int) cc_engine_options_init(cc_engine_options* opts, unsigned int version);

/** Opens an engine (a writer takes the data directory's lock).
 *  @param out the new handle; free with cc_engine_free
 *  @return CC_OK; CC_EINVALID for bad JSON, an unknown key or backend; CC_EPRECONDITION if
 *          another process holds the directory */
CC_EXTERN(int) cc_engine_open(cc_engine** out, const cc_engine_options* opts);

/** Closes the engine's stores now; later calls on the handle fail with CC_EPRECONDITION.
 *  Waits for calls in flight. The handle must still be freed with cc_engine_free. */
CC_EXTERN(int) cc_engine_close(cc_engine* engine);

/** Closes (if open) and frees the handle (NULL-safe). No call may use it concurrently. */
CC_EXTERN(void) cc_engine_free(cc_engine* engine);

#define CC_SUBMIT_OPTIONS_VERSION 1
/** A submission's context, as a host received it. */
typedef struct cc_submit_options {
  unsigned int version;     /**< CC_SUBMIT_OPTIONS_VERSION */
  const char* domain;       /**< required */
  const char* content_type; /**< NULL or "" for raw XML; multipart/form-data with its boundary */
  const char* user_id;      /**< the authenticated user (NULL: none) */
  const char* app_id;       /**< NULL: none */
  /** NULL or a JSON object of the request's HTTP headers; read are X-OpenRosa-Version,
   *  X-CommCareHQ-LastSyncToken, X-Submit-Time (ISO time), Date and X-Forwarded-For. */
  const char* headers_json;
} cc_submit_options;
#define CC_SUBMIT_OPTIONS_INIT \
  { CC_SUBMIT_OPTIONS_VERSION, NULL, NULL, NULL, NULL, NULL }

/** Initialises opts for the given version. @return CC_OK or CC_EINVALID */
CC_EXTERN(int) cc_submit_options_init(cc_submit_options* opts, unsigned int version);

/** The engine's answer to a submission. */
typedef struct cc_submit_result {
  int http_status; /**< 201 stored; 4xx/5xx refused */
  char* nature;    /**< submit_success, submit_error, processing_failure, ... */
  char* message;   /**< the OpenRosa message text */
  char* form_id;   /**< the stored record's id ("" if nothing was stored) */
  char* state;     /**< "normal", "duplicate", "error", ... ("" if nothing was stored) */
  char* body;      /**< the OpenRosa XML response for the device */
} cc_submit_result;

/** Processes a submission synchronously and atomically; returns once it is durable.
 *  @param out the answer, set whenever the engine answered (also with an error code, so a host
 *         can send the OpenRosa body); free with cc_submit_result_free
 *  @param body raw XML or a multipart body, body_len bytes
 *  @return CC_OK for a 2xx answer; CC_EINVALID for malformed or unprocessable XML (4xx),
 *          CC_ERESOURCE for an oversized body (413), CC_EUNAVAILABLE (503), CC_EINTERNAL */
CC_EXTERN(int)
cc_engine_submit(cc_submit_result** out, cc_engine* engine, const cc_submit_options* opts,
                 const void* body, size_t body_len);

/** Frees a submission result (NULL-safe). */
CC_EXTERN(void) cc_submit_result_free(cc_submit_result* result);

/** A case as Case API v2 JSON. @param out free with cc_free
 *  @return CC_OK, CC_ENOTFOUND if absent or in another domain */
CC_EXTERN(int)
cc_engine_get_case(char** out, cc_engine* engine, const char* domain, const char* case_id);

/** Cases as a JSON array of Case API v2 objects.
 *  @param filter_json {"domain": D (required), "case_type": T, "owner_id": O, "closed": bool,
 *         "include_deleted": bool, "limit": N (default 1000), "offset": N}
 *  @param out free with cc_free */
CC_EXTERN(int) cc_engine_list_cases(char** out, cc_engine* engine, const char* filter_json);

/** A case's transactions as a JSON array. @param out free with cc_free */
CC_EXTERN(int)
cc_engine_case_history(char** out, cc_engine* engine, const char* domain, const char* case_id);

/** A case's ledger as {"section": {"entry": balance}}. @param out free with cc_free */
CC_EXTERN(int)
cc_engine_get_ledger(char** out, cc_engine* engine, const char* domain, const char* case_id);

/** A form's metadata as JSON. @param out free with cc_free @return CC_OK, CC_ENOTFOUND */
CC_EXTERN(int)
cc_engine_get_form(char** out, cc_engine* engine, const char* domain, const char* form_id);

/** A form attachment's bytes ("form.xml" is the form's XML).
 *  @param out the bytes, followed by a NUL that out_len does not count; free with cc_free
 *  @param out_len their length */
CC_EXTERN(int)
cc_engine_get_attachment(void** out, size_t* out_len, cc_engine* engine, const char* domain,
                         const char* form_id, const char* name);

/** Archives a normal form (its case and ledger changes are revoked, cases rebuilt). */
CC_EXTERN(int) cc_engine_archive_form(cc_engine* engine, const char* domain, const char* form_id);

/** Restores an archived form and rebuilds its cases. */
CC_EXTERN(int) cc_engine_unarchive_form(cc_engine* engine, const char* domain, const char* form_id);

/** Moves every committed change record to the change log now (a writer also does it in the
 *  background). */
CC_EXTERN(int) cc_engine_relay(cc_engine* engine);

/** The change log's topics: [{"topic": T, "partitions": [{"partition": P, "start": S,
 *  "end": E}]}]. @param out free with cc_free */
CC_EXTERN(int) cc_engine_topics(char** out, cc_engine* engine);

/** Reads up to max change records of one partition from offset `from`, as a JSON array of
 *  {"topic","partition","offset","timestamp","key","change": ChangeMeta}.
 *  @param out free with cc_free @return CC_OK, CC_ENOTFOUND for an unknown topic/partition */
CC_EXTERN(int)
cc_engine_read_changes(char** out, cc_engine* engine, const char* topic, int partition,
                       int64_t from, size_t max);

/** Writes restore payload bytes; return 0 to go on, non-zero to stop (the restore then fails
 *  and its sync log is not stored). */
typedef int (*cc_write_fn)(const char* data, size_t len, void* payload);

/** Streams a user's OTA restore payload to write (chunks of at most 1,000 cases).
 *  @param out_result JSON {"sync_id","cases","ledgers","footprint"}; may be NULL; free with
 *         cc_free
 *  @param request_json {"domain": D, "username": U, "since": TOKEN, "state": "ccsh:...",
 *         "version": "2.0", "items": bool, "device_id": ID, "app_id": ID}
 *  @return CC_OK; CC_ENOTFOUND for an unknown user; CC_EPRECONDITION for a bad token or
 *          state (CommCare's 412; nothing written); CC_EABORTED if write stopped it */
CC_EXTERN(int)
cc_engine_restore(char** out_result, cc_engine* engine, const char* request_json, cc_write_fn write,
                  void* payload);

/** The restore payload in one buffer (as cc_engine_restore).
 *  @param out the payload; free with cc_free @param out_len its length */
CC_EXTERN(int)
cc_engine_restore_buffer(char** out, size_t* out_len, cc_engine* engine, const char* request_json);

/* Users and domains (the MetaStore, <data_dir>/meta.sqlite). */

/** Creates a domain. @param domain_json {"name": D, "secure_submissions": bool (default true),
 *  "async_restore": bool (HQ's ASYNC_RESTORE), "case_attachments_in_restore": bool (HQ's
 *  MM_CASE_PROPERTIES); both default false} @param out the stored domain as JSON (may be NULL);
 *  free with cc_free @return CC_OK, CC_EEXISTS, CC_EINVALID */
CC_EXTERN(int) cc_engine_create_domain(char** out, cc_engine* engine, const char* domain_json);

/** A domain as JSON (its flags and "_rev"). @param out free with cc_free
 *  @return CC_OK, CC_ENOTFOUND */
CC_EXTERN(int) cc_engine_get_domain(char** out, cc_engine* engine, const char* name);

/** Sets a domain's flags. @param domain_json {"name", "_rev": the revision read (required), and
 *  any of the flags of cc_engine_create_domain; those absent keep their value}
 *  @param out the stored domain as JSON (may be NULL); free with cc_free
 *  @return CC_OK, CC_ENOTFOUND, CC_EABORTED for a stale _rev, CC_EINVALID */
CC_EXTERN(int) cc_engine_update_domain(char** out, cc_engine* engine, const char* domain_json);

/** Every domain as a JSON array. @param out free with cc_free */
CC_EXTERN(int) cc_engine_list_domains(char** out, cc_engine* engine);

/** Creates or updates a user. @param user_json {"username", "domains": [...], "web_user",
 *  "is_superuser", "is_active", "permissions": [...], "location_ids", "user_data": {...},
 *  "rev": stored revision (0 to create)} @param password NULL to keep the stored one
 *  @param out the stored user's profile JSON (may be NULL); free with cc_free
 *  @return CC_OK, CC_EABORTED for a stale rev, CC_ENOTFOUND for an unknown domain */
CC_EXTERN(int)
cc_engine_put_user(char** out, cc_engine* engine, const char* user_json, const char* password);

/** A user's profile JSON (with "rev"). @param out free with cc_free @return CC_ENOTFOUND */
CC_EXTERN(int) cc_engine_get_user(char** out, cc_engine* engine, const char* username);

/** A domain's users as a JSON array of profiles. @param out free with cc_free */
CC_EXTERN(int) cc_engine_list_users(char** out, cc_engine* engine, const char* domain);

/** Checks a password. @param out the user's profile JSON (may be NULL); free with cc_free
 *  @return CC_OK, CC_EUNAUTHENTICATED */
CC_EXTERN(int)
cc_engine_authenticate(char** out, cc_engine* engine, const char* username, const char* password);

/* ---------------------------------------------------------------------------------------- */
/* Pillows: change processors over the engine's change log, and the stores they fill.       */

typedef struct cc_pillows cc_pillows;

/** Opens a pillow host over an engine (which must outlive it).
 *  @param options_json NULL or {"dir": DIR (default <data_dir>/pillows), "builtin": bool
 *         (case-search, read-copy, ucr; default true), "only": [names], "num_processes": N,
 *         "process_num": K, "inspect_only": bool, "consumer_group": NAME (Kafka: partitions
 *         assigned by that consumer group instead of num_processes/process_num)}
 *  @param out free with cc_pillows_free
 *  @return CC_OK; CC_EPRECONDITION if another worker holds the same partition share */
CC_EXTERN(int) cc_pillows_open(cc_pillows** out, cc_engine* engine, const char* options_json);

/** Checkpoints and frees the host (NULL-safe). Stop cc_pillows_run first. */
CC_EXTERN(void) cc_pillows_free(cc_pillows* pillows);

/** A change processor: change_json is {"topic","partition","offset","timestamp","change":
 *  ChangeMeta}. Return 0 when done; non-zero (say, `return cc_error_set(CC_EINTERNAL, why)`)
 *  sends the change to the pillow's retry queue with that message. Called from the thread
 *  that runs the host. */
typedef int (*cc_change_fn)(const char* change_json, size_t len, void* payload);

/** Adds a pillow with a user-defined processor (before running).
 *  @param config_json {"name": N (unique), "topics": [...], "chunk_size": N, "max_attempts": N,
 *         "retry_delay_ms": N} @param payload passed to fn; must live as long as the host */
CC_EXTERN(int)
cc_pillows_add(cc_pillows* pillows, const char* config_json, cc_change_fn fn, void* payload);

/** Relays what the engine committed, then processes every change in the log and every due
 *  retry. @param out_processed may be
 *  NULL. Not concurrently with itself or cc_pillows_run. */
CC_EXTERN(int) cc_pillows_run_until_caught_up(int64_t* out_processed, cc_pillows* pillows);

/** Runs the pillows until cc_pillows_stop is called from another thread. */
CC_EXTERN(int) cc_pillows_run(cc_pillows* pillows);

/** Makes a running cc_pillows_run return after its batch in hand. */
CC_EXTERN(int) cc_pillows_stop(cc_pillows* pillows);

/** Each pillow's checkpoints, lag and queue counts as a JSON array of PillowStatusToJson
 *  objects ({"pillow", "lag", "lag_seconds", "retries", "dead_letters", "partitions"}).
 *  @param out free with cc_free */
CC_EXTERN(int) cc_pillows_status(char** out, cc_pillows* pillows);

/** A pillow's retry queue as a JSON array. @param out free with cc_free */
CC_EXTERN(int) cc_pillows_retries(char** out, cc_pillows* pillows, const char* pillow);

/** Makes a pillow's queued changes due now (doc_id NULL: all; dead letters too when
 *  include_dead). @param out_count may be NULL */
CC_EXTERN(int)
cc_pillows_requeue(int64_t* out_count, cc_pillows* pillows, const char* pillow, const char* doc_id,
                   int include_dead);

/** Case search over the case-search pillow's index.
 *  @param query_json {"domain" (required), "case_type", "owner_id", "closed", "case_name",
 *         "external_id", "properties": {p: v}, "ranges": [{"property","op","value"}], "text"
 *         (the user's words: "a phrase" and a trailing * are its only operators),
 *         "limit", "cursor"}
 *  @param out {"cases": [...], "next_cursor": C}; free with cc_free */
CC_EXTERN(int) cc_pillows_search(char** out, cc_pillows* pillows, const char* query_json);

/** Forms from the read-copy pillow's store.
 *  @param query_json {"domain" (required), "xmlns", "app_id", "user_id", "include_archived",
 *         "limit", "offset"}
 *  @param out {"forms": [...], "total_count": N}; free with cc_free */
CC_EXTERN(int) cc_pillows_list_forms(char** out, cc_pillows* pillows, const char* query_json);

/** Stores a UCR data source (CommCare's DataSourceConfiguration JSON), builds its table.
 *  @param out_rows may be NULL @return CC_EINVALID naming the bad path of a bad config */
CC_EXTERN(int) cc_pillows_ucr_load(int64_t* out_rows, cc_pillows* pillows, const char* config_json);

/** Rows of a UCR table as a JSON array. @param out free with cc_free */
CC_EXTERN(int)
cc_pillows_ucr_rows(char** out, cc_pillows* pillows, const char* domain, const char* table_id,
                    size_t limit, size_t offset);

/* ---------------------------------------------------------------------------------------- */
/* Tasks: the durable task queue (include/commcare/tasks.h) and worker pools running task    */
/* types implemented by the host program. Times are ISO 8601 in JSON.                         */

/** Adds a task. @param spec_json {"type" (required), "payload": JSON, "queue", "domain",
 *  "priority", "run_at": ISO time, "max_attempts", "unique_key"}
 *  @param out_id its id (an unfinished task's with the same unique_key: that one's) */
CC_EXTERN(int) cc_tasks_enqueue(int64_t* out_id, cc_engine* engine, const char* spec_json);

/** One task as JSON (id, type, payload, state, attempts, progress, result, last_error, ...).
 *  @param out free with cc_free @return CC_ENOTFOUND when there is none */
CC_EXTERN(int) cc_tasks_get(char** out, cc_engine* engine, int64_t id);

/** Tasks, newest first, as a JSON array. @param filter_json NULL or {"domain", "queue",
 *  "type", "state", "before_id", "limit"} @param out free with cc_free */
CC_EXTERN(int) cc_tasks_list(char** out, cc_engine* engine, const char* filter_json);

/** Cancels a queued task, or asks a running one to stop. @return CC_EPRECONDITION if it has
 *  finished */
CC_EXTERN(int) cc_tasks_cancel(cc_engine* engine, int64_t id);

/** Queues a dead or cancelled task again. */
CC_EXTERN(int) cc_tasks_retry(cc_engine* engine, int64_t id);

/** Waits up to timeout_ms for the task to finish; *out is the task either way (free with
 *  cc_free). */
CC_EXTERN(int) cc_tasks_wait(char** out, cc_engine* engine, int64_t id, int64_t timeout_ms);

/** Per queue: tasks by state and the oldest due task's wait, as a JSON array. */
CC_EXTERN(int) cc_tasks_stats(char** out, cc_engine* engine);

/** Adds or replaces a periodic schedule. @param schedule_json {"name", "cron", "time_zone",
 *  "task": spec (as cc_tasks_enqueue), "missed": "once"|"skip", "enabled"}
 *  @return CC_EINVALID naming a bad cron field or time zone */
CC_EXTERN(int) cc_tasks_schedule_put(cc_engine* engine, const char* schedule_json);

/** The schedules as a JSON array (with next_run_at, last_run_at). */
CC_EXTERN(int) cc_tasks_schedules(char** out, cc_engine* engine);

/** Deletes a schedule. @return CC_ENOTFOUND when there is none */
CC_EXTERN(int) cc_tasks_schedule_delete(cc_engine* engine, const char* name);

typedef struct cc_workers cc_workers;
typedef struct cc_task_ctx cc_task_ctx;

/** A task type's handler, called on a worker thread: task_json is the task (its "payload"
 *  among the rest). Return 0 when done (a result set with cc_task_ctx_result), or non-zero
 *  with a message (`return cc_error_set(CC_EUNAVAILABLE, why)`): CC_EINVALID, CC_ENOTFOUND,
 *  CC_EPERMISSION and CC_EPRECONDITION dead-letter the task at once, other codes retry it
 *  with backoff. ctx is valid only during the call. */
typedef int (*cc_task_fn)(cc_task_ctx* ctx, const char* task_json, void* payload);

/** Sets the result (JSON) the task succeeds with. */
CC_EXTERN(int) cc_task_ctx_result(cc_task_ctx* ctx, const char* result_json);
/** Reports progress (a heartbeat too). message may be NULL. */
CC_EXTERN(int)
cc_task_ctx_progress(cc_task_ctx* ctx, int64_t done, int64_t total, const char* message);
/** 1 when the task was cancelled or the pool is stopping: return soon; else 0. */
CC_EXTERN(int) cc_task_ctx_cancelled(cc_task_ctx* ctx);

/** A worker pool over the engine's task queue, with the library's own task types.
 *  @param options_json NULL or {"queues": [...] (default ["default"]; [] every queue),
 *         "workers": N (threads, default 2), "poll_ms": N, "prefetch": N, "run_schedules": b}
 *  @param out free with cc_workers_free (before closing the engine) */
CC_EXTERN(int) cc_workers_open(cc_workers** out, cc_engine* engine, const char* options_json);

/** Registers a task type before cc_workers_start. @param options_json NULL or {"lease_ms",
 *  "backoff_base_ms", "backoff_max_ms"} @param payload passed to fn; must outlive the pool */
CC_EXTERN(int)
cc_workers_register(cc_workers* workers, const char* type, const char* options_json, cc_task_fn fn,
                    void* payload);

/** Starts the worker threads. */
CC_EXTERN(int) cc_workers_start(cc_workers* workers);

/** Stops the pool (running handlers get grace_ms to finish, then see cancelled) and frees it
 *  (NULL-safe). */
CC_EXTERN(void) cc_workers_free(cc_workers* workers, int64_t grace_ms);

/* ---------------------------------------------------------------------------------------- */
/* Exports (include/commcare/exports.h, docs/exports.md) and scheduled reports                */
/* (include/commcare/reports.h, docs/email-and-reports.md).                                   */

/** Reports progress: done of total (an estimate). Return 0 to go on, non-zero to stop (as
 *  cc_write_fn; the call then fails with CC_EABORTED). Called on the calling thread. */
typedef int (*cc_progress_fn)(int64_t done, int64_t total, void* payload);

/** Runs an export in the calling thread into out_path (replaced atomically; a CSV export of
 *  several tables is a .zip instead, named in the result).
 *  @param out_result {"file", "rows", "tables"}; may be NULL; free with cc_free
 *  @param definition_json an export definition ({"kind", "domain", "filters", "columns",
 *         "format", "name"}) @param progress may be NULL
 *  @return CC_OK; CC_EINVALID naming a bad field or column; CC_EABORTED if progress stopped it */
CC_EXTERN(int)
cc_export_run(char** out_result, cc_engine* engine, const char* definition_json,
              const char* out_path, cc_progress_fn progress, void* payload);

/** Saves (adds or replaces) an export definition under its "domain" and "name" in the data
 *  directory, with its daily schedule when it has a "schedule" {"cron", "time_zone"}. @return
 * CC_EINVALID for a bad definition; CC_EPRECONDITION in memory */
CC_EXTERN(int) cc_export_save(cc_engine* engine, const char* definition_json);

/** A saved export definition as JSON. @param out free with cc_free @return CC_ENOTFOUND */
CC_EXTERN(int) cc_export_load(char** out, cc_engine* engine, const char* domain, const char* name);

/** The names of a domain's saved export definitions, a JSON array. @param out free with cc_free */
CC_EXTERN(int) cc_export_list(char** out, cc_engine* engine, const char* domain);

/** Deletes a saved export definition. @return CC_ENOTFOUND when there is none */
CC_EXTERN(int) cc_export_delete(cc_engine* engine, const char* domain, const char* name);

/** Queues an export.run task in domain (fetch its file with cc_export_fetch once it succeeded).
 *  @param request_json a definition (its domain defaults to domain) or {"saved": NAME}
 *  @param out_id the task's id @return CC_ENOTFOUND for no such saved definition,
 *         CC_EPERMISSION for a definition of another domain */
CC_EXTERN(int)
cc_export_enqueue(int64_t* out_id, cc_engine* engine, const char* domain, const char* request_json);

/** Copies the file of export task task_id of domain to out_path (replaced atomically).
 *  @param out_result {"task_id", "key", "file", "size", "expires_at"}; may be NULL; cc_free it
 *  @return CC_ENOTFOUND: no such export task, or its file expired; CC_EPRECONDITION: the task
 *          has not succeeded */
CC_EXTERN(int)
cc_export_fetch(char** out_result, cc_engine* engine, const char* domain, int64_t task_id,
                const char* out_path);

/* ---- Case import and bulk case edit (docs/import.md) ---------------------------------------- */

/** Imports cases from a CSV or XLSX file in the calling thread (HQ's case importer).
 *  @param out_result HQ's result counts and errors plus "problems" (the first 1,000 problem rows:
 *         {"row", "column", "error", "reason"}); may be NULL; free with cc_free
 *  @param options_json {"domain", "case_type", "search_field", "create_new", "dry_run",
 *         "columns", "user_id", "username", ...} @param progress may be NULL
 *  @return CC_OK (problem rows are in the result); CC_EINVALID for a bad option or header;
 *          CC_EABORTED if progress stopped it */
CC_EXTERN(int)
cc_import_cases(char** out_result, cc_engine* engine, const char* options_json, const char* path,
                cc_progress_fn progress, void* payload);

/** Stores the file's bytes in the export blob store and queues an import.cases task.
 *  @param out_id the task's id (its result is the import's; cc_tasks_wait follows it) */
CC_EXTERN(int)
cc_import_enqueue(int64_t* out_id, cc_engine* engine, const char* options_json, const char* data,
                  size_t len);

/** Runs (or with "preview": true, counts) a bulk case edit in the calling thread.
 *  @param out_result {"matched", "updated", "num_chunks", "sample", ...}; may be NULL; cc_free it
 *  @param options_json {"domain", "filter": {Case API filters}, "set": {...}, "close",
 *         "preview", "user_id", "username"} @return CC_EINVALID names a bad filter or property */
CC_EXTERN(int)
cc_bulk_edit(char** out_result, cc_engine* engine, const char* options_json,
             cc_progress_fn progress, void* payload);

/** Queues an import.bulk_edit task. @param out_id the task's id */
CC_EXTERN(int) cc_bulk_edit_enqueue(int64_t* out_id, cc_engine* engine, const char* options_json);

/** Saves (adds or replaces) a scheduled report; its "schedule" is required.
 *  @param out the saved report {"schedule", "report", "next_run_at", "last_run_at", "enabled"}
 *         (may be NULL); free with cc_free @return CC_EINVALID naming a bad field */
CC_EXTERN(int) cc_report_set(char** out, cc_engine* engine, const char* report_json);

/** Saved reports as a JSON array (as cc_report_set's out). @param domain NULL: every domain's
 *  @param out free with cc_free */
CC_EXTERN(int) cc_report_list(char** out, cc_engine* engine, const char* domain);

/** One saved report. @param out free with cc_free @return CC_ENOTFOUND */
CC_EXTERN(int) cc_report_get(char** out, cc_engine* engine, const char* domain, const char* name);

/** Deletes a saved report. @return CC_ENOTFOUND when there is none */
CC_EXTERN(int) cc_report_delete(cc_engine* engine, const char* domain, const char* name);

/** Queues a report.send task for a saved report now (a worker pool sends it).
 *  @param out_id the task's id @return CC_ENOTFOUND */
CC_EXTERN(int)
cc_report_send(int64_t* out_id, cc_engine* engine, const char* domain, const char* name);

/** Renders a saved report from its UCR table: {"header", "rows", "totals", "source_rows"}.
 *  @param out free with cc_free @return CC_ENOTFOUND for no such report or table */
CC_EXTERN(int)
cc_report_preview(char** out, cc_engine* engine, const char* domain, const char* name);

/** Renders a report definition (not saved; no schedule needed) as cc_report_preview does.
 *  @param out free with cc_free */
CC_EXTERN(int) cc_report_render(char** out, cc_engine* engine, const char* report_json);

/* ------------------------------------------------------------------------------------------ */
/* Automatic case update rules (include/commcare/rules.h, docs/rules.md).                      */
/* ------------------------------------------------------------------------------------------ */

/** Saves (adds or replaces) a rule and its daily schedule.
 *  @param out the saved rule {"schedule", "rule", "next_run_at", "last_run_at", "enabled"}
 *         (may be NULL); free with cc_free @return CC_EINVALID naming a bad field */
CC_EXTERN(int) cc_rule_set(char** out, cc_engine* engine, const char* rule_json);

/** Saved rules as a JSON array (as cc_rule_set's out). @param domain NULL: every domain's */
CC_EXTERN(int) cc_rule_list(char** out, cc_engine* engine, const char* domain);

/** One saved rule. @param out free with cc_free @return CC_ENOTFOUND */
CC_EXTERN(int) cc_rule_get(char** out, cc_engine* engine, const char* domain, const char* name);

/** Deletes a saved rule and its schedule. @return CC_ENOTFOUND when there is none */
CC_EXTERN(int) cc_rule_delete(cc_engine* engine, const char* domain, const char* name);

/** Runs a saved rule in the calling thread (dry_run != 0: changes nothing).
 *  @param out {"changes": [{"case_id", "update", "close", ...}], "summary": {"scanned",
 *         "matched", "changed", "unchanged", "failed", ...}}; free with cc_free */
CC_EXTERN(int)
cc_rule_run(char** out, cc_engine* engine, const char* domain, const char* name, int dry_run);

/** Queues a rule.run task for a saved rule now (a worker pool runs it).
 *  @param out_id the task's id @return CC_ENOTFOUND */
CC_EXTERN(int)
cc_rule_run_later(int64_t* out_id, cc_engine* engine, const char* domain, const char* name);

/* ------------------------------------------------------------------------------------------ */
/* Reminders: conditional alerts on cases (include/commcare/reminders.h, docs/rules.md).       */
/* ------------------------------------------------------------------------------------------ */

/** Saves (adds or replaces) an alert and its check schedule.
 *  @param out the saved alert {"schedule", "alert", "next_run_at", "last_run_at", "enabled"}
 *         (may be NULL); free with cc_free @return CC_EINVALID naming a bad field */
CC_EXTERN(int) cc_alert_set(char** out, cc_engine* engine, const char* alert_json);

/** Saved alerts as a JSON array (as cc_alert_set's out). @param domain NULL: every domain's */
CC_EXTERN(int) cc_alert_list(char** out, cc_engine* engine, const char* domain);

/** One saved alert. @param out free with cc_free @return CC_ENOTFOUND naming it */
CC_EXTERN(int) cc_alert_get(char** out, cc_engine* engine, const char* domain, const char* name);

/** Deletes a saved alert (its logged messages stay). @return CC_ENOTFOUND when there is none */
CC_EXTERN(int) cc_alert_delete(cc_engine* engine, const char* domain, const char* name);

/** Looks for the alert's due messages now, in the calling thread, and queues each once.
 *  @param out {"alert", "domain", "scanned", "matched", "queued", "skipped"}; free with cc_free */
CC_EXTERN(int) cc_alert_check(char** out, cc_engine* engine, const char* domain, const char* name);

/** Queues a reminder.check task for a saved alert now (a worker pool runs it).
 *  @param out_id the task's id @return CC_ENOTFOUND */
CC_EXTERN(int)
cc_alert_check_later(int64_t* out_id, cc_engine* engine, const char* domain, const char* name);

/** The message log, newest first, as a JSON array of {"alert", "case_id", "occurrence",
 *  "due_at", "queued_at", "channel", "recipient", "message", "task_id", "outcome"}.
 *  @param query_json {"domain" (required), "alert", "case_id", "outcome", "limit", "offset"}
 *  @param out free with cc_free @return CC_EINVALID for an unknown outcome or a bad limit */
CC_EXTERN(int) cc_alert_messages(char** out, cc_engine* engine, const char* query_json);

/* ---------------------------------------------------------------------------------------- */
/* Data forwarding (include/commcare/forwarding.h, docs/forwarding.md). Records are made by    */
/* the forwarding pillow (cc_pillows_open) and delivered by worker pools (cc_workers_open).    */

/** Adds a forwarder. @param forwarder_json {"domain", "url", "kind": "form"|"case", "format",
 *  "auth", "username", "password", "token", "headers", "xmlns", "case_types", "events", ...}
 *  @param out the stored forwarder with its "id" (secrets as "***"); may be NULL; cc_free it
 *  @return CC_EINVALID naming a bad field */
CC_EXTERN(int) cc_forwarder_add(char** out, cc_engine* engine, const char* forwarder_json);

/** A domain's forwarders, a JSON array. @param out free with cc_free */
CC_EXTERN(int) cc_forwarder_list(char** out, cc_engine* engine, const char* domain);

/** Pauses (paused != 0: records wait) or resumes a forwarder. @return CC_ENOTFOUND */
CC_EXTERN(int)
cc_forwarder_set_paused(cc_engine* engine, const char* domain, const char* id, int paused);

/** Deletes a forwarder; its waiting records are cancelled. @return CC_ENOTFOUND */
CC_EXTERN(int) cc_forwarder_delete(cc_engine* engine, const char* domain, const char* id);

/** A domain's repeat records, newest first, a JSON array. @param filter_json NULL or
 *  {"forwarder", "state": "pending"|"failed"|"succeeded"|"cancelled"|"empty"|"invalid_payload",
 *  "limit": 1..1000, "before": id} @param out free with cc_free */
CC_EXTERN(int)
cc_forward_records(char** out, cc_engine* engine, const char* domain, const char* filter_json);

/** One repeat record with its "attempt_log". @param out free with cc_free @return CC_ENOTFOUND */
CC_EXTERN(int) cc_forward_record(char** out, cc_engine* engine, const char* domain, int64_t id);

/** Sends record_id again now (record_id > 0), or every failed and cancelled record of the
 *  domain (record_id 0; of forwarder_id only when not NULL). @param out_count how many; may be
 *  NULL @return CC_ENOTFOUND for no such record or forwarder */
CC_EXTERN(int)
cc_forward_resend(int64_t* out_count, cc_engine* engine, const char* domain, int64_t record_id,
                  const char* forwarder_id);

#ifdef __cplusplus
}
#endif

#endif /* COMMCARE_C_H_ */
