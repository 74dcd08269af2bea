"""Loads libcommcare_c and declares its functions (one table, one errcheck)."""

import ctypes
import ctypes.util
import glob
import os

from . import errors

_HERE = os.path.dirname(os.path.abspath(__file__))
MAJOR_VERSION = 0  # the C ABI major version this package speaks


def _load():
    tried = []
    env = os.environ.get("COMMCARE_LIBRARY")
    candidates = [env] if env else []
    candidates += sorted(glob.glob(os.path.join(_HERE, "libcommcare_c.so*")))
    found = ctypes.util.find_library("commcare_c")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path}: {e}")
    raise ImportError(
        "cannot load libcommcare_c: set COMMCARE_LIBRARY to its path, put it next to the "
        "commcare package, or install it on the system library path"
        + ("; tried " + "; ".join(tried) if tried else ""))


lib = _load()


class Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char_p)]


class EngineOptions(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("config_json", ctypes.c_char_p)]


class SubmitOptions(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint), ("domain", ctypes.c_char_p),
                ("content_type", ctypes.c_char_p), ("user_id", ctypes.c_char_p),
                ("app_id", ctypes.c_char_p), ("headers_json", ctypes.c_char_p)]


class SubmitResult(ctypes.Structure):
    _fields_ = [("http_status", ctypes.c_int), ("nature", ctypes.c_char_p),
                ("message", ctypes.c_char_p), ("form_id", ctypes.c_char_p),
                ("state", ctypes.c_char_p), ("body", ctypes.c_char_p)]


ENGINE_OPTIONS_VERSION = 1
SUBMIT_OPTIONS_VERSION = 1

WRITE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
CHANGE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
TASK_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
PROGRESS_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)


def last_error():
    e = lib.cc_error_last().contents
    return e.code, (e.message or b"").decode("utf-8", "replace")


def _check(result, func, args):
    if result < 0:
        code, message = last_error()
        raise errors.from_code(code if code < 0 else result, message)
    return result


P = ctypes.POINTER
vp, cp, sz, i64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int64
out = P(ctypes.c_void_p)  # char ** / void ** / handle **

# (name, argtypes, restype, errcheck)
_FUNCS = [
    ("cc_error_last", [], P(Error), None),
    ("cc_error_set", [ctypes.c_int, cp], ctypes.c_int, None),
    ("cc_version", [P(ctypes.c_int)] * 3, None, None),
    ("cc_free", [vp], None, None),
    ("cc_engine_open", [out, P(EngineOptions)], ctypes.c_int, _check),
    ("cc_engine_close", [vp], ctypes.c_int, _check),
    ("cc_engine_free", [vp], None, None),
    ("cc_engine_submit", [P(P(SubmitResult)), vp, P(SubmitOptions), cp, sz], ctypes.c_int, None),
    ("cc_submit_result_free", [P(SubmitResult)], None, None),
    ("cc_engine_get_case", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_engine_list_cases", [out, vp, cp], ctypes.c_int, _check),
    ("cc_engine_case_history", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_engine_get_ledger", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_engine_get_form", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_engine_get_attachment", [out, P(sz), vp, cp, cp, cp], ctypes.c_int, _check),
    ("cc_engine_archive_form", [vp, cp, cp], ctypes.c_int, _check),
    ("cc_engine_unarchive_form", [vp, cp, cp], ctypes.c_int, _check),
    ("cc_engine_relay", [vp], ctypes.c_int, _check),
    ("cc_engine_topics", [out, vp], ctypes.c_int, _check),
    ("cc_engine_read_changes", [out, vp, cp, ctypes.c_int, i64, sz], ctypes.c_int, _check),
    ("cc_engine_restore", [out, vp, cp, WRITE_FN, vp], ctypes.c_int, _check),
    ("cc_engine_restore_buffer", [out, P(sz), vp, cp], ctypes.c_int, _check),
    ("cc_engine_create_domain", [out, vp, cp], ctypes.c_int, _check),
    ("cc_engine_get_domain", [out, vp, cp], ctypes.c_int, _check),
    ("cc_engine_update_domain", [out, vp, cp], ctypes.c_int, _check),
    ("cc_engine_list_domains", [out, vp], ctypes.c_int, _check),
    ("cc_engine_put_user", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_engine_get_user", [out, vp, cp], ctypes.c_int, _check),
    ("cc_engine_list_users", [out, vp, cp], ctypes.c_int, _check),
    ("cc_engine_authenticate", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_pillows_open", [out, vp, cp], ctypes.c_int, _check),
    ("cc_pillows_free", [vp], None, None),
    ("cc_pillows_add", [vp, cp, CHANGE_FN, vp], ctypes.c_int, _check),
    ("cc_pillows_run_until_caught_up", [P(i64), vp], ctypes.c_int, _check),
    ("cc_pillows_run", [vp], ctypes.c_int, _check),
    ("cc_pillows_stop", [vp], ctypes.c_int, _check),
    ("cc_pillows_status", [out, vp], ctypes.c_int, _check),
    ("cc_pillows_retries", [out, vp, cp], ctypes.c_int, _check),
    ("cc_pillows_requeue", [P(i64), vp, cp, cp, ctypes.c_int], ctypes.c_int, _check),
    ("cc_pillows_search", [out, vp, cp], ctypes.c_int, _check),
    ("cc_pillows_list_forms", [out, vp, cp], ctypes.c_int, _check),
    ("cc_pillows_ucr_load", [P(i64), vp, cp], ctypes.c_int, _check),
    ("cc_pillows_ucr_rows", [out, vp, cp, cp, sz, sz], ctypes.c_int, _check),
    ("cc_tasks_enqueue", [P(i64), vp, cp], ctypes.c_int, _check),
    ("cc_tasks_get", [out, vp, i64], ctypes.c_int, _check),
    ("cc_tasks_list", [out, vp, cp], ctypes.c_int, _check),
    ("cc_tasks_cancel", [vp, i64], ctypes.c_int, _check),
    ("cc_tasks_retry", [vp, i64], ctypes.c_int, _check),
    ("cc_tasks_wait", [out, vp, i64, i64], ctypes.c_int, _check),
    ("cc_tasks_stats", [out, vp], ctypes.c_int, _check),
    ("cc_tasks_schedule_put", [vp, cp], ctypes.c_int, _check),
    ("cc_tasks_schedules", [out, vp], ctypes.c_int, _check),
    ("cc_tasks_schedule_delete", [vp, cp], ctypes.c_int, _check),
    ("cc_task_ctx_result", [vp, cp], ctypes.c_int, _check),
    ("cc_task_ctx_progress", [vp, i64, i64, cp], ctypes.c_int, _check),
    ("cc_task_ctx_cancelled", [vp], ctypes.c_int, None),
    ("cc_workers_open", [out, vp, cp], ctypes.c_int, _check),
    ("cc_workers_register", [vp, cp, cp, TASK_FN, vp], ctypes.c_int, _check),
    ("cc_workers_start", [vp], ctypes.c_int, _check),
    ("cc_workers_free", [vp, i64], None, None),
    ("cc_export_run", [out, vp, cp, cp, PROGRESS_FN, vp], ctypes.c_int, _check),
    ("cc_export_save", [vp, cp], ctypes.c_int, _check),
    ("cc_export_load", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_export_list", [out, vp, cp], ctypes.c_int, _check),
    ("cc_export_delete", [vp, cp, cp], ctypes.c_int, _check),
    ("cc_export_enqueue", [P(i64), vp, cp, cp], ctypes.c_int, _check),
    ("cc_export_fetch", [out, vp, cp, i64, cp], ctypes.c_int, _check),
    ("cc_import_cases", [out, vp, cp, cp, PROGRESS_FN, vp], ctypes.c_int, _check),
    ("cc_import_enqueue", [P(i64), vp, cp, cp, sz], ctypes.c_int, _check),
    ("cc_bulk_edit", [out, vp, cp, PROGRESS_FN, vp], ctypes.c_int, _check),
    ("cc_bulk_edit_enqueue", [P(i64), vp, cp], ctypes.c_int, _check),
    ("cc_report_set", [out, vp, cp], ctypes.c_int, _check),
    ("cc_report_list", [out, vp, cp], ctypes.c_int, _check),
    ("cc_report_get", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_report_delete", [vp, cp, cp], ctypes.c_int, _check),
    ("cc_report_send", [P(i64), vp, cp, cp], ctypes.c_int, _check),
    ("cc_report_preview", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_report_render", [out, vp, cp], ctypes.c_int, _check),
    ("cc_rule_set", [out, vp, cp], ctypes.c_int, _check),
    ("cc_rule_list", [out, vp, cp], ctypes.c_int, _check),
    ("cc_rule_get", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_rule_delete", [vp, cp, cp], ctypes.c_int, _check),
    ("cc_rule_run", [out, vp, cp, cp, ctypes.c_int], ctypes.c_int, _check),
    ("cc_rule_run_later", [P(i64), vp, cp, cp], ctypes.c_int, _check),
    ("cc_alert_set", [out, vp, cp], ctypes.c_int, _check),
    ("cc_alert_list", [out, vp, cp], ctypes.c_int, _check),
    ("cc_alert_get", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_alert_delete", [vp, cp, cp], ctypes.c_int, _check),
    ("cc_alert_check", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_alert_check_later", [P(i64), vp, cp, cp], ctypes.c_int, _check),
    ("cc_alert_messages", [out, vp, cp], ctypes.c_int, _check),
    ("cc_forwarder_add", [out, vp, cp], ctypes.c_int, _check),
    ("cc_forwarder_list", [out, vp, cp], ctypes.c_int, _check),
    ("cc_forwarder_set_paused", [vp, cp, cp, ctypes.c_int], ctypes.c_int, _check),
    ("cc_forwarder_delete", [vp, cp, cp], ctypes.c_int, _check),
    ("cc_forward_records", [out, vp, cp, cp], ctypes.c_int, _check),
    ("cc_forward_record", [out, vp, cp, i64], ctypes.c_int, _check),
    ("cc_forward_resend", [P(i64), vp, cp, i64, cp], ctypes.c_int, _check),
]

for _name, _args, _res, _errcheck in _FUNCS:
    _f = getattr(lib, _name)
    _f.argtypes = _args
    _f.restype = _res
    if _errcheck:
        _f.errcheck = _errcheck


def version():
    major, minor, patch = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.cc_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(patch))
    return major.value, minor.value, patch.value


if version()[0] != MAJOR_VERSION:
    raise ImportError(f"libcommcare_c has ABI version {version()}; this package needs "
                      f"{MAJOR_VERSION}.x")


def take(ptr, length=None):
    """The bytes at an owned pointer the library handed out; frees it."""
    if not ptr.value:
        return None
    try:
        return ctypes.string_at(ptr.value, length) if length is not None else \
            ctypes.string_at(ptr.value)
    finally:
        lib.cc_free(ptr.value)


def text(s):
    """A str argument as UTF-8 bytes (None stays None)."""
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return str(s).encode("utf-8", "surrogatepass")
