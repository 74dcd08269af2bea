"""libcommcare from Python: the C ABI (libcommcare_c) through ctypes, standard library only.

    with commcare.Engine("/srv/cc") as engine:          # SQLite data directory (created)
        result = engine.submit(xml_bytes, domain="demo")
        case = engine.case("demo", case_id)
"""

import ctypes
import dataclasses
import json
import os
import threading
import time
import weakref

from . import _ffi
from .errors import (AbortedError, AlreadyExistsError, CommcareError, DataLossError,
                     FailedPreconditionError, InternalError, InvalidArgumentError, NotFoundError,
                     PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError,
                     UnavailableError, UnimplementedError)

__all__ = [
    "Engine", "Pillows", "Workers", "Task", "SubmitResult", "version", "CommcareError", "NotFoundError",
    "AlreadyExistsError", "InvalidArgumentError", "FailedPreconditionError", "AbortedError",
    "UnavailableError", "DataLossError", "UnimplementedError", "InternalError",
    "ResourceExhaustedError", "PermissionDeniedError", "UnauthenticatedError",
]

__version__ = "0.1.0"

_lib = _ffi.lib
_t = _ffi.text


def version():
    """The C library's (major, minor, patch)."""
    return _ffi.version()


def _json(s):
    return json.dumps(s) if s is not None else None


def _call_json(fn, *args):
    out = ctypes.c_void_p()
    fn(ctypes.byref(out), *args)
    data = _ffi.take(out)
    return json.loads(data) if data is not None else None


@dataclasses.dataclass
class SubmitResult:
    """The engine's answer to a submission (body is the OpenRosa XML for the device)."""
    status: int
    nature: str
    message: str
    form_id: str
    state: str
    body: str


class _Handle:
    """An owned C handle: close() frees it; also a context manager."""
    _free = None

    def __init__(self):
        self._ptr = None
        self._lock = threading.Lock()

    def _handle(self):
        ptr = self._ptr
        if ptr is None:
            raise FailedPreconditionError(f"the {type(self).__name__.lower()} is closed")
        return ptr

    def close(self):
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            type(self)._free(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class Engine(_Handle):
    """An engine over a data directory (backend "sqlite", created when missing) or in memory
    (no data_dir, or backend="memory"). config: further cc_engine_open keys (durable, shards,
    databases, blob_store, strict_case_updates, max_xml_bytes, relay, read_only).
    Every method may be called from several threads."""

    def __init__(self, data_dir=None, *, backend=None, create=True, **config):
        super().__init__()
        cfg = dict(config)
        cfg["backend"] = backend or ("sqlite" if data_dir else "memory")
        if data_dir is not None:
            cfg["data_dir"] = str(data_dir)
            cfg["create"] = create
        opts = _ffi.EngineOptions(_ffi.ENGINE_OPTIONS_VERSION, _t(json.dumps(cfg)))
        ptr = ctypes.c_void_p()
        _lib.cc_engine_open(ctypes.byref(ptr), ctypes.byref(opts))
        self._ptr = ptr.value
        self._pillows = None  # the Pillows whose stores search/ucr_rows/forms read
        self._hosts = weakref.WeakSet()  # every Pillows opened on this engine
        self._closed = False

    _free = staticmethod(_lib.cc_engine_free)

    def _handle(self):
        if self._ptr is None:
            raise FailedPreconditionError("the engine is closed")
        return self._ptr

    def close(self):
        """Closes the stores (pillows opened on this engine first). Calls made after it, from
        any thread, raise FailedPreconditionError; calls in flight finish first."""
        for p in list(getattr(self, "_hosts", ())):
            p.close()
        self._pillows = None
        with self._lock:
            if self._ptr is None or self._closed:
                return
            self._closed = True
        _lib.cc_engine_close(self._ptr)

    def __del__(self):
        # The handle is freed only here, when no thread can be using it.
        try:
            self.close()
            if self._ptr is not None:
                ptr, self._ptr = self._ptr, None
                _lib.cc_engine_free(ptr)
        except Exception:  # interpreter shutdown
            pass

    # -- submissions --------------------------------------------------------------------------

    def submit(self, body, domain, *, content_type=None, user_id=None, app_id=None,
               headers=None, check=True):
        """Processes a submission (raw XML or a multipart body) and returns a SubmitResult once
        it is durable. A refused one raises (InvalidArgumentError for bad XML, ...) with the
        answer in .result, unless check=False."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        body = bytes(body)
        opts = _ffi.SubmitOptions(_ffi.SUBMIT_OPTIONS_VERSION, _t(domain), _t(content_type),
                                  _t(user_id), _t(app_id), _t(_json(headers)))
        res = ctypes.POINTER(_ffi.SubmitResult)()
        rc = _lib.cc_engine_submit(ctypes.byref(res), self._handle(), ctypes.byref(opts), body,
                                   len(body))
        code, message = _ffi.last_error() if rc < 0 else (0, "")
        result = None
        if res:
            r = res.contents
            d = lambda b: (b or b"").decode("utf-8", "replace")  # noqa: E731
            result = SubmitResult(r.http_status, d(r.nature), d(r.message), d(r.form_id),
                                  d(r.state), d(r.body))
            _lib.cc_submit_result_free(res)
        if rc < 0 and (check or result is None):
            from .errors import from_code
            raise from_code(code, message, result)
        return result

    # -- cases, forms, ledgers ----------------------------------------------------------------

    def case(self, domain, case_id):
        """A case as Case API v2 JSON (dict); NotFoundError if absent."""
        return _call_json(_lib.cc_engine_get_case, self._handle(), _t(domain), _t(case_id))

    def cases(self, domain, *, case_type=None, owner_id=None, closed=None,
              include_deleted=False, limit=1000, offset=0):
        """Cases of a domain, filtered, as a list of dicts."""
        f = {"domain": domain, "limit": limit, "offset": offset,
             "include_deleted": include_deleted}
        if case_type is not None:
            f["case_type"] = case_type
        if owner_id is not None:
            f["owner_id"] = owner_id
        if closed is not None:
            f["closed"] = closed
        return _call_json(_lib.cc_engine_list_cases, self._handle(), _t(json.dumps(f)))

    def case_history(self, domain, case_id):
        """The case's transactions, oldest first."""
        return _call_json(_lib.cc_engine_case_history, self._handle(), _t(domain), _t(case_id))

    def ledger(self, domain, case_id):
        """The case's ledger: {section: {entry: balance}}."""
        return _call_json(_lib.cc_engine_get_ledger, self._handle(), _t(domain), _t(case_id))

    def form(self, domain, form_id):
        """A form's metadata (dict); NotFoundError if absent."""
        return _call_json(_lib.cc_engine_get_form, self._handle(), _t(domain), _t(form_id))

    def attachment(self, domain, form_id, name):
        """The bytes of a form's attachment ("form.xml" is its XML)."""
        out, n = ctypes.c_void_p(), ctypes.c_size_t()
        _lib.cc_engine_get_attachment(ctypes.byref(out), ctypes.byref(n), self._handle(),
                                      _t(domain), _t(form_id), _t(name))
        return _ffi.take(out, n.value) or b""

    def form_xml(self, domain, form_id):
        """The form's raw XML (bytes)."""
        return self.attachment(domain, form_id, "form.xml")

    def archive(self, domain, form_id):
        """Archives a form (its case and ledger changes are revoked)."""
        _lib.cc_engine_archive_form(self._handle(), _t(domain), _t(form_id))

    def unarchive(self, domain, form_id):
        """Restores an archived form."""
        _lib.cc_engine_unarchive_form(self._handle(), _t(domain), _t(form_id))

    # -- change log ---------------------------------------------------------------------------

    def relay(self):
        """Moves committed change records to the change log now."""
        _lib.cc_engine_relay(self._handle())

    def topics(self):
        """[{"topic", "partitions": [{"partition", "start", "end"}]}]."""
        return _call_json(_lib.cc_engine_topics, self._handle())

    def read_changes(self, topic, partition, offset=0, limit=1000):
        """Up to limit records of one partition from offset."""
        return _call_json(_lib.cc_engine_read_changes, self._handle(), _t(topic), partition,
                          offset, limit)

    def changes(self, topics=None, since=None, follow=False, poll_interval=0.2, batch=1000):
        """Iterates change records ({"topic", "partition", "offset", "timestamp", "key",
        "change"}) of the given topics (all by default) from since ({(topic, partition):
        offset}, default each partition's start), partition by partition; with follow, keeps
        polling for new ones. Resume from record["offset"] + 1 of the last record seen."""
        position = dict(since or {})
        while True:
            self.relay()
            found = False
            for t in self.topics():
                if topics is not None and t["topic"] not in topics:
                    continue
                for p in t["partitions"]:
                    key = (t["topic"], p["partition"])
                    start = max(position.get(key, p["start"]), p["start"])
                    while start < p["end"]:
                        records = self.read_changes(key[0], key[1], start, batch)
                        if not records:
                            break
                        for r in records:
                            position[key] = r["offset"] + 1
                            found = True
                            yield r
                        start = position[key]
            if not follow:
                return
            if not found:
                time.sleep(poll_interval)

    # -- mobile sync --------------------------------------------------------------------------

    @staticmethod
    def _restore_request(domain, username, since, state, version, items, device_id, app_id):
        q = {"domain": domain, "username": username, "version": version, "items": items}
        for k, v in (("since", since), ("state", state), ("device_id", device_id),
                     ("app_id", app_id)):
            if v is not None:
                q[k] = v
        return _t(json.dumps(q))

    def restore(self, domain, username, *, since=None, state=None, version="2.0", items=False,
                device_id=None, app_id=None):
        """The user's OTA restore payload (bytes). FailedPreconditionError for a bad token or
        state (CommCare's 412), NotFoundError for an unknown user."""
        out, n = ctypes.c_void_p(), ctypes.c_size_t()
        _lib.cc_engine_restore_buffer(
            ctypes.byref(out), ctypes.byref(n), self._handle(),
            self._restore_request(domain, username, since, state, version, items, device_id,
                                  app_id))
        return _ffi.take(out, n.value) or b""

    def restore_to(self, write, domain, username, **kwargs):
        """Streams the restore payload to write(bytes) (a file's write, say); returns
        {"sync_id", "cases", "ledgers", "footprint"}."""
        failure = []

        def cb(data, length, _payload):
            try:
                write(ctypes.string_at(data, length))
                return 0
            except BaseException as e:  # noqa: B902 (reported after the call returns)
                failure.append(e)
                return 1

        fn = _ffi.WRITE_FN(cb)
        req = self._restore_request(domain, username, kwargs.get("since"), kwargs.get("state"),
                                    kwargs.get("version", "2.0"), kwargs.get("items", False),
                                    kwargs.get("device_id"), kwargs.get("app_id"))
        out = ctypes.c_void_p()
        try:
            _lib.cc_engine_restore(ctypes.byref(out), self._handle(), req, fn, None)
        except AbortedError:
            if failure:
                raise failure[0]
            raise
        return json.loads(_ffi.take(out))

    # -- users and domains --------------------------------------------------------------------

    def create_domain(self, name, *, secure_submissions=True, async_restore=False,
                      case_attachments_in_restore=False):
        """Creates a domain; AlreadyExistsError if it exists. async_restore is HQ's
        ASYNC_RESTORE toggle, case_attachments_in_restore its MM_CASE_PROPERTIES toggle."""
        return _call_json(_lib.cc_engine_create_domain, self._handle(),
                          _t(json.dumps({"name": name,
                                         "secure_submissions": secure_submissions,
                                         "async_restore": async_restore,
                                         "case_attachments_in_restore":
                                             case_attachments_in_restore})))

    def domain(self, name):
        """A domain's flags and _rev; NotFoundError if absent."""
        return _call_json(_lib.cc_engine_get_domain, self._handle(), _t(name))

    def update_domain(self, name, *, _rev, **flags):
        """Sets a domain's flags (secure_submissions, async_restore,
        case_attachments_in_restore); _rev is the revision read (AbortedError if stale).
        Returns the stored domain."""
        return _call_json(_lib.cc_engine_update_domain, self._handle(),
                          _t(json.dumps(dict(flags, name=name, _rev=_rev))))

    def domains(self):
        """Every domain."""
        return _call_json(_lib.cc_engine_list_domains, self._handle())

    def put_user(self, username, *, domains=None, password=None, **fields):
        """Creates a user (password required) or updates one (pass _rev=the revision read);
        fields: is_active, web_user, is_superuser, role_id, location_ids, user_data,
        permissions. Returns the stored profile."""
        u = dict(fields, username=username)
        if domains is not None:
            u["domains"] = list(domains)
        return _call_json(_lib.cc_engine_put_user, self._handle(), _t(json.dumps(u)),
                          _t(password))

    def user(self, username):
        """A user's profile (with _rev); NotFoundError if absent."""
        return _call_json(_lib.cc_engine_get_user, self._handle(), _t(username))

    def users(self, domain):
        """The domain's users."""
        return _call_json(_lib.cc_engine_list_users, self._handle(), _t(domain))

    def authenticate(self, username, password):
        """The user's profile if the password matches; UnauthenticatedError otherwise."""
        return _call_json(_lib.cc_engine_authenticate, self._handle(), _t(username),
                          _t(password))

    # -- pillows and the stores they fill -----------------------------------------------------

    # ---- the task queue ----

    def enqueue(self, task_type, payload=None, **spec):
        """Adds a task; returns its id. spec: queue, domain, priority, run_at (ISO time),
        max_attempts, unique_key (an unfinished task with the same key: its id instead)."""
        body = dict(spec, type=task_type)
        if payload is not None:
            body["payload"] = payload
        n = ctypes.c_int64()
        _lib.cc_tasks_enqueue(ctypes.byref(n), self._handle(), _t(json.dumps(body)))
        return n.value

    def task(self, task_id):
        """One task (state, attempts, progress, result, last_error, ...)."""
        return _call_json(_lib.cc_tasks_get, self._handle(), int(task_id))

    def tasks(self, **filter):
        """Tasks, newest first. filter: domain, queue, type, state, before_id, limit."""
        return _call_json(_lib.cc_tasks_list, self._handle(), _t(json.dumps(filter)))

    def cancel_task(self, task_id):
        """Cancels a queued task, or asks a running one to stop."""
        _lib.cc_tasks_cancel(self._handle(), int(task_id))

    def retry_task(self, task_id):
        """Queues a dead or cancelled task again."""
        _lib.cc_tasks_retry(self._handle(), int(task_id))

    def wait_task(self, task_id, timeout=30.0):
        """Waits up to timeout seconds for the task to finish; returns it either way."""
        return _call_json(_lib.cc_tasks_wait, self._handle(), int(task_id), int(timeout * 1000))

    def task_stats(self):
        """Per queue: tasks by state and the oldest due task's wait."""
        return _call_json(_lib.cc_tasks_stats, self._handle())

    def put_schedule(self, name, cron, task_type, payload=None, *, time_zone="UTC",
                     missed="once", enabled=True, **spec):
        """Adds or replaces a periodic schedule (cron line in an IANA time zone)."""
        task = dict(spec, type=task_type)
        if payload is not None:
            task["payload"] = payload
        _lib.cc_tasks_schedule_put(self._handle(), _t(json.dumps({
            "name": name, "cron": cron, "time_zone": time_zone, "task": task,
            "missed": missed, "enabled": enabled})))

    def schedules(self):
        """The periodic schedules, with next_run_at and last_run_at."""
        return _call_json(_lib.cc_tasks_schedules, self._handle())

    def delete_schedule(self, name):
        _lib.cc_tasks_schedule_delete(self._handle(), _t(name))

    # ---- exports (docs/exports.md) ----

    def export(self, definition, out_path, progress=None):
        """Runs an export (a definition: dict or JSON text) into out_path, in this thread;
        returns {"file", "rows", "tables"} (a CSV export of several tables is written as a .zip,
        named in "file"). progress(done, total) is called as rows go; returning False stops the
        export (AbortedError). InvalidArgumentError names a bad field or column.

            engine.export({"kind": "case", "domain": "demo", "format": "xlsx",
                           "filters": {"case_type": "patient"}}, "/tmp/patients.xlsx")
        """
        failure = []

        def cb(done, total, _payload):
            try:
                return 1 if progress(done, total) is False else 0
            except BaseException as e:  # noqa: B902 (re-raised after the call returns)
                failure.append(e)
                return 1

        fn = _ffi.PROGRESS_FN(cb) if progress is not None else _ffi.PROGRESS_FN()
        out = ctypes.c_void_p()
        try:
            _lib.cc_export_run(ctypes.byref(out), self._handle(), _t(self._text(definition)),
                               _t(str(out_path)), fn, None)
        except AbortedError:
            if failure:
                raise failure[0]
            raise
        return json.loads(_ffi.take(out))

    @staticmethod
    def _text(value):
        return value if isinstance(value, (str, bytes)) else json.dumps(value)

    def save_export(self, definition):
        """Saves (adds or replaces) an export definition under its domain and name (the
        engine must be on a data directory)."""
        _lib.cc_export_save(self._handle(), _t(self._text(definition)))

    def export_definitions(self, domain):
        """The names of the domain's saved export definitions."""
        return _call_json(_lib.cc_export_list, self._handle(), _t(domain))

    def load_export(self, domain, name):
        """A saved export definition (dict); NotFoundError if absent."""
        return _call_json(_lib.cc_export_load, self._handle(), _t(domain), _t(name))

    def delete_export(self, domain, name):
        """Deletes a saved export definition; NotFoundError if absent."""
        _lib.cc_export_delete(self._handle(), _t(domain), _t(name))

    def enqueue_export(self, definition, domain=None):
        """Queues an export.run task and returns it (a dict, as task()): definition is a
        definition (dict; domain defaults to its "domain") or the name of a saved one (domain
        required). A worker pool runs it; fetch_export copies its file once it succeeded."""
        if isinstance(definition, str) and not definition.lstrip().startswith("{"):
            request = {"saved": definition}
        else:
            request = json.loads(definition) if isinstance(definition, (str, bytes)) \
                else dict(definition)
            domain = domain or request.get("domain")
        n = ctypes.c_int64()
        _lib.cc_export_enqueue(ctypes.byref(n), self._handle(), _t(domain),
                               _t(json.dumps(request)))
        return self.task(n.value)

    def fetch_export(self, domain, task_id, out_path):
        """Copies the file of export task task_id (kept in the blob store) to out_path and
        returns {"task_id", "key", "file", "size", "expires_at"}; NotFoundError when there is
        no such export or its file expired, FailedPreconditionError until it succeeded."""
        return _call_json(_lib.cc_export_fetch, self._handle(), _t(domain), int(task_id),
                          _t(os.fspath(out_path)))

    # ---- case import and bulk case edit (docs/import.md) ----

    def _with_progress(self, call, progress, *args):
        """Runs call(out, handle, *args, progress_fn, None), re-raising an exception of
        progress (or AbortedError when it returned False)."""
        failure = []

        def cb(done, total, _payload):
            try:
                return 1 if progress(done, total) is False else 0
            except BaseException as e:  # noqa: B902 (re-raised after the call returns)
                failure.append(e)
                return 1

        fn = _ffi.PROGRESS_FN(cb) if progress is not None else _ffi.PROGRESS_FN()
        out = ctypes.c_void_p()
        try:
            call(ctypes.byref(out), self._handle(), *args, fn, None)
        except AbortedError:
            if failure:
                raise failure[0]
            raise
        return json.loads(_ffi.take(out))

    def import_cases(self, path, options, progress=None):
        """Imports cases from a CSV or XLSX file in this thread (HQ's case importer) and
        returns HQ's result counts and errors plus "problems" (problem rows: row, column,
        error, reason). options: {"domain", "case_type", "search_field", "create_new",
        "dry_run", "columns", "user_id", "username", ...}.

            engine.import_cases("/tmp/p.csv", {"domain": "demo", "case_type": "patient",
                                               "create_new": True, "dry_run": True})
        """
        return self._with_progress(_lib.cc_import_cases, progress, _t(self._text(options)),
                                   _t(os.fspath(path)))

    def enqueue_import(self, data, options):
        """Stores the file's bytes (or a path's) and queues an import.cases task; returns the
        task (a dict, as task()); its result is the import's once a worker ran it."""
        if not isinstance(data, (bytes, bytearray)):
            with open(os.fspath(data), "rb") as f:
                data = f.read()
        n = ctypes.c_int64()
        _lib.cc_import_enqueue(ctypes.byref(n), self._handle(), _t(self._text(options)),
                               bytes(data), len(data))
        return self.task(n.value)

    def bulk_edit(self, options, progress=None):
        """Runs a bulk case edit in this thread, or counts it with "preview": True: options are
        {"domain", "filter": {Case API filters}, "set": {...}, "close", "preview"}; returns
        {"matched", "updated", "num_chunks", "sample", ...}."""
        return self._with_progress(_lib.cc_bulk_edit, progress, _t(self._text(options)))

    def enqueue_bulk_edit(self, options):
        """Queues an import.bulk_edit task and returns it (a dict, as task())."""
        n = ctypes.c_int64()
        _lib.cc_bulk_edit_enqueue(ctypes.byref(n), self._handle(), _t(self._text(options)))
        return self.task(n.value)

    # ---- scheduled reports (docs/email-and-reports.md) ----

    def set_report(self, report):
        """Saves (adds or replaces) a scheduled report (dict or JSON text; "schedule"
        required); returns it as saved: {"schedule", "report", "next_run_at", "last_run_at",
        "enabled"}."""
        return _call_json(_lib.cc_report_set, self._handle(), _t(self._text(report)))

    def reports(self, domain=None):
        """Saved reports (of one domain, or every domain's), as set_report returns them."""
        return _call_json(_lib.cc_report_list, self._handle(), _t(domain))

    def report(self, domain, name):
        """One saved report; NotFoundError if absent."""
        return _call_json(_lib.cc_report_get, self._handle(), _t(domain), _t(name))

    def delete_report(self, domain, name):
        """Deletes a saved report; NotFoundError if absent."""
        _lib.cc_report_delete(self._handle(), _t(domain), _t(name))

    def send_report(self, domain, name):
        """Queues a report.send task for a saved report now and returns it (a dict, as
        task()); a worker pool renders the report and queues its email.send task."""
        n = ctypes.c_int64()
        _lib.cc_report_send(ctypes.byref(n), self._handle(), _t(domain), _t(name))
        return self.task(n.value)

    def preview_report(self, domain, name):
        """A saved report rendered from its UCR table: {"header", "rows", "totals",
        "source_rows"}."""
        return _call_json(_lib.cc_report_preview, self._handle(), _t(domain), _t(name))

    def render_report(self, report):
        """A report definition (not saved) rendered as preview_report does."""
        return _call_json(_lib.cc_report_render, self._handle(), _t(self._text(report)))

    # ---- automatic case update rules (docs/rules.md) ----

    def set_rule(self, rule):
        """Saves (adds or replaces) a case update rule (dict or JSON text) and its daily
        schedule; returns it as saved: {"schedule", "rule", "next_run_at", "last_run_at",
        "enabled"}. InvalidArgumentError names a bad field."""
        return _call_json(_lib.cc_rule_set, self._handle(), _t(self._text(rule)))

    def rules(self, domain=None):
        """Saved rules (of one domain, or every domain's), as set_rule returns them."""
        return _call_json(_lib.cc_rule_list, self._handle(), _t(domain))

    def rule(self, domain, name):
        """One saved rule; NotFoundError if absent."""
        return _call_json(_lib.cc_rule_get, self._handle(), _t(domain), _t(name))

    def delete_rule(self, domain, name):
        """Deletes a saved rule and its schedule; NotFoundError if absent."""
        _lib.cc_rule_delete(self._handle(), _t(domain), _t(name))

    def run_rule(self, domain, name, dry_run=False):
        """Runs a saved rule here: {"changes": [{"case_id", "update", "close", ...}],
        "summary": {"scanned", "matched", "changed", "unchanged", "failed", ...}}; with
        dry_run, what it would change, changing nothing."""
        return _call_json(_lib.cc_rule_run, self._handle(), _t(domain), _t(name),
                          1 if dry_run else 0)

    def run_rule_later(self, domain, name):
        """Queues a rule.run task for a saved rule and returns it (a dict, as task())."""
        n = ctypes.c_int64()
        _lib.cc_rule_run_later(ctypes.byref(n), self._handle(), _t(domain), _t(name))
        return self.task(n.value)

    # ---- reminders: conditional alerts on cases (docs/rules.md, "Reminders") ----

    def set_alert(self, alert):
        """Saves (adds or replaces) an alert (dict or JSON text) and its check schedule;
        returns it as saved: {"schedule", "alert", "next_run_at", "last_run_at", "enabled"}."""
        return _call_json(_lib.cc_alert_set, self._handle(), _t(self._text(alert)))

    def alerts(self, domain=None):
        """Saved alerts (of one domain, or every domain's), as set_alert returns them."""
        return _call_json(_lib.cc_alert_list, self._handle(), _t(domain))

    def alert(self, domain, name):
        """One saved alert; NotFoundError naming it if absent."""
        return _call_json(_lib.cc_alert_get, self._handle(), _t(domain), _t(name))

    def delete_alert(self, domain, name):
        """Deletes a saved alert (its logged messages stay); NotFoundError if absent."""
        _lib.cc_alert_delete(self._handle(), _t(domain), _t(name))

    def check_alert(self, domain, name):
        """Looks for the alert's due messages now and queues each once (email.send or
        sms.send tasks); returns {"scanned", "matched", "queued", "skipped", ...}."""
        return _call_json(_lib.cc_alert_check, self._handle(), _t(domain), _t(name))

    def check_alert_later(self, domain, name):
        """Queues a reminder.check task for a saved alert and returns it (a dict, as task())."""
        n = ctypes.c_int64()
        _lib.cc_alert_check_later(ctypes.byref(n), self._handle(), _t(domain), _t(name))
        return self.task(n.value)

    def alert_messages(self, domain, alert=None, case_id=None, outcome=None, limit=100,
                       offset=0):
        """The message log, newest first: [{"alert", "case_id", "occurrence", "due_at",
        "recipient", "message", "task_id", "outcome", ...}], optionally one alert's, one
        case's, one outcome's (a task state, or "skipped"), a page of limit from offset."""
        query = {"domain": domain, "limit": limit, "offset": offset}
        for key, value in (("alert", alert), ("case_id", case_id), ("outcome", outcome)):
            if value is not None:
                query[key] = value
        return _call_json(_lib.cc_alert_messages, self._handle(), _t(json.dumps(query)))

    # ---- data forwarding (docs/forwarding.md) ----

    def add_forwarder(self, forwarder):
        """Adds a forwarder (dict or JSON text: "domain", "url", "kind", "format", "auth", ...)
        and returns it with its "id" (secrets shown as "***")."""
        return _call_json(_lib.cc_forwarder_add, self._handle(), _t(self._text(forwarder)))

    def forwarders(self, domain):
        """The domain's forwarders (list of dicts)."""
        return _call_json(_lib.cc_forwarder_list, self._handle(), _t(domain))

    def pause_forwarder(self, domain, forwarder_id, paused=True):
        """Pauses (records wait) or, with paused=False, resumes a forwarder."""
        _lib.cc_forwarder_set_paused(self._handle(), _t(domain), _t(forwarder_id),
                                     1 if paused else 0)

    def delete_forwarder(self, domain, forwarder_id):
        """Deletes a forwarder; its waiting records are cancelled."""
        _lib.cc_forwarder_delete(self._handle(), _t(domain), _t(forwarder_id))

    def forward_records(self, domain, forwarder=None, state=None, limit=100, before=None):
        """Repeat records, newest first (list of dicts: id, doc_id, state, attempts, ...)."""
        f = {"limit": limit}
        if forwarder:
            f["forwarder"] = forwarder
        if state:
            f["state"] = state
        if before:
            f["before"] = before
        return _call_json(_lib.cc_forward_records, self._handle(), _t(domain),
                          _t(json.dumps(f)))

    def forward_record(self, domain, record_id):
        """One repeat record with its "attempt_log"; NotFoundError if absent."""
        return _call_json(_lib.cc_forward_record, self._handle(), _t(domain), int(record_id))

    def resend(self, domain, record_id=None, forwarder=None):
        """Sends one record again now, or (no record_id) every failed and cancelled one (of
        one forwarder); returns how many."""
        n = ctypes.c_int64()
        _lib.cc_forward_resend(ctypes.byref(n), self._handle(), _t(domain), int(record_id or 0),
                               _t(forwarder))
        return n.value

    def workers(self, **options):
        """A worker pool (not started): Workers(self, queues=[...], workers=N, ...)."""
        return Workers(self, **options)

    def pillows(self, **options):
        """A Pillows host over this engine (dir, builtin, only, num_processes, process_num,
        inspect_only, consumer_group). The first one opened also serves search(), ucr_rows()
        and forms()."""
        p = Pillows(self, **options)
        self._hosts.add(p)
        if self._pillows is None:
            self._pillows = p
        return p

    def _stores(self):
        if self._pillows is None or self._pillows._ptr is None:
            self._pillows = self.pillows(inspect_only=True)
        return self._pillows

    def search(self, domain, **query):
        """Case search (see Pillows.search)."""
        return self._stores().search(domain, **query)

    def forms(self, domain, **query):
        """Forms from the read copy (see Pillows.forms)."""
        return self._stores().forms(domain, **query)

    def ucr_rows(self, domain, table_id, limit=1000, offset=0):
        """Rows of a UCR table."""
        return self._stores().ucr_rows(domain, table_id, limit, offset)


class Task:
    """What a handler sees of its task: id, type, payload, attempts, and progress() and
    cancelled to report back and to stop early."""

    def __init__(self, ctx, info):
        self._ctx = ctx
        self.info = info
        self.id = info["id"]
        self.type = info["type"]
        self.payload = info["payload"]
        self.attempts = info["attempts"]
        self.domain = info["domain"]

    def progress(self, done, total, message=""):
        """Reports progress (also renews the task's lease)."""
        _lib.cc_task_ctx_progress(self._ctx, int(done), int(total), _t(message))

    @property
    def cancelled(self):
        """True once the task was cancelled or the pool is stopping: return soon."""
        return _lib.cc_task_ctx_cancelled(self._ctx) == 1


class Workers(_Handle):
    """A pool of worker threads running tasks from the engine's task queue: the library's own
    task types and Python functions added with add() or the handler() decorator. A handler
    returns a JSON-able result; an exception fails the attempt (InvalidArgumentError,
    NotFoundError, PermissionDeniedError and FailedPreconditionError dead-letter the task at
    once; anything else is retried with backoff). Delivery is at least once: make the effect
    idempotent, e.g. keyed by task.id."""

    def __init__(self, engine, **options):
        super().__init__()
        self._engine = engine
        self._callbacks = []
        ptr = ctypes.c_void_p()
        _lib.cc_workers_open(ctypes.byref(ptr), engine._handle(),
                             _t(json.dumps(options)) if options else None)
        self._ptr = ptr.value

    def add(self, task_type, fn, **options):
        """Registers fn(task) for task_type (before start()). options: lease_ms,
        backoff_base_ms, backoff_max_ms."""
        def cb(ctx, task_json, _payload):
            try:
                result = fn(Task(ctx, json.loads(task_json)))
                if result is not None:
                    _lib.cc_task_ctx_result(ctx, _t(json.dumps(result)))
                return 0
            except CommcareError as e:
                return _lib.cc_error_set(e.code, _t(str(e)))
            except BaseException as e:  # noqa: B902 (the attempt fails; the task is retried)
                return _lib.cc_error_set(-9, _t(f"{type(e).__name__}: {e}"))

        c_fn = _ffi.TASK_FN(cb)
        self._callbacks.append(c_fn)
        _lib.cc_workers_register(self._handle(), _t(task_type),
                                 _t(json.dumps(options)) if options else None, c_fn, None)
        return fn

    def handler(self, task_type, **options):
        """Decorator: @workers.handler("send_report") def send(task): ..."""
        def wrap(fn):
            return self.add(task_type, fn, **options)
        return wrap

    def start(self):
        """Starts the worker threads."""
        _lib.cc_workers_start(self._handle())
        return self

    def stop(self, grace_ms=10000):
        """Stops the pool (running handlers get grace_ms to finish) and frees it."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            _lib.cc_workers_free(ptr, int(grace_ms))

    close = stop


class Pillows(_Handle):
    """Change processors over an engine's change log: the built-in ones (case-search,
    read-copy, ucr) and Python functions added with add() or the processor() decorator.
    run()/run_until_caught_up() drive them from the calling thread."""

    _free = staticmethod(_lib.cc_pillows_free)

    def __init__(self, engine, **options):
        super().__init__()
        self._engine = engine  # kept alive: the host reads through it
        self._callbacks = []   # CFUNCTYPE objects must outlive the host
        ptr = ctypes.c_void_p()
        _lib.cc_pillows_open(ctypes.byref(ptr), engine._handle(),
                             _t(json.dumps(options)) if options else None)
        self._ptr = ptr.value

    def add(self, name, topics, fn, **config):
        """Adds a pillow calling fn(change) for each change (a dict: topic, partition, offset,
        timestamp, change). An exception sends the change to the retry queue with its text.
        config: chunk_size, max_wait_ms, checkpoint_every, max_attempts, retry_delay_ms."""
        def cb(data, length, _payload):
            try:
                fn(json.loads(ctypes.string_at(data, length)))
                return 0
            except BaseException as e:  # noqa: B902 (the change is retried, never lost)
                return _lib.cc_error_set(-9, _t(f"{type(e).__name__}: {e}"))

        c_fn = _ffi.CHANGE_FN(cb)
        self._callbacks.append(c_fn)
        cfg = dict(config, name=name, topics=list(topics))
        _lib.cc_pillows_add(self._handle(), _t(json.dumps(cfg)), c_fn, None)
        return fn

    def processor(self, name, topics, **config):
        """Decorator: @pillows.processor("summary", ["case-sql"]) def on_change(change): ..."""
        def wrap(fn):
            return self.add(name, topics, fn, **config)
        return wrap

    def run_until_caught_up(self):
        """Processes every change in the log now and every due retry; returns how many."""
        n = ctypes.c_int64()
        _lib.cc_pillows_run_until_caught_up(ctypes.byref(n), self._handle())
        return n.value

    def run(self):
        """Runs until stop() is called (from another thread)."""
        _lib.cc_pillows_run(self._handle())

    def stop(self):
        """Makes run() return after its batch in hand."""
        _lib.cc_pillows_stop(self._handle())

    def status(self):
        """Each pillow's checkpoints, lag and queue counts."""
        return _call_json(_lib.cc_pillows_status, self._handle())

    def retries(self, pillow):
        """A pillow's retry queue (and dead letters)."""
        return _call_json(_lib.cc_pillows_retries, self._handle(), _t(pillow))

    def requeue(self, pillow, doc_id=None, include_dead=False):
        """Makes queued changes due now; returns how many."""
        n = ctypes.c_int64()
        _lib.cc_pillows_requeue(ctypes.byref(n), self._handle(), _t(pillow), _t(doc_id),
                                1 if include_dead else 0)
        return n.value

    def search(self, domain, **query):
        """Case search: case_type, owner_id, closed, case_name, external_id, properties={p: v},
        ranges=[{"property", "op", "value"}], text, limit, cursor. Returns {"cases",
        "next_cursor"}."""
        q = dict(query, domain=domain)
        return _call_json(_lib.cc_pillows_search, self._handle(), _t(json.dumps(q)))

    def forms(self, domain, **query):
        """Forms from the read copy: xmlns, app_id, user_id, received_on_start/end,
        include_archived, limit, offset. Returns {"forms", "total_count"}."""
        q = dict(query, domain=domain)
        return _call_json(_lib.cc_pillows_list_forms, self._handle(), _t(json.dumps(q)))

    def ucr_load(self, config):
        """Stores a UCR data source (dict or JSON text) and builds its table; returns rows."""
        n = ctypes.c_int64()
        text = config if isinstance(config, (str, bytes)) else json.dumps(config)
        _lib.cc_pillows_ucr_load(ctypes.byref(n), self._handle(), _t(text))
        return n.value

    def ucr_rows(self, domain, table_id, limit=1000, offset=0):
        """Rows of a UCR table."""
        return _call_json(_lib.cc_pillows_ucr_rows, self._handle(), _t(domain), _t(table_id),
                          limit, offset)
