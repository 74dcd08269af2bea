"""The Python binding over libcommcare_c: every function, error mapping, ownership, threads.

Run with COMMCARE_LIBRARY pointing at libcommcare_c and bindings/python on PYTHONPATH
(ctest does both)."""

import csv
import ctypes
import email
import email.policy
import io
import json
import os
import shutil
import tempfile
import threading
import time
import unittest
import uuid
import zipfile

import commcare
from commcare import _ffi


def case_form(form_id, case_id, body, xmlns="http://example.org/form", user_id="u1"):
    return (
        '<?xml version="1.0"?><data xmlns="%s">'
        '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>%s</instanceID>'
        "<userID>%s</userID><timeStart>2020-01-01T00:00:00Z</timeStart>"
        "<timeEnd>2020-01-01T00:01:00Z</timeEnd></meta>"
        '<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="%s" '
        'date_modified="2020-01-01T00:01:00Z" user_id="%s">%s</case></data>'
        % (xmlns, form_id, user_id, case_id, user_id, body))


def create(case_id, owner="u1", case_type="patient", name="Ann", props=""):
    return ("<create><case_type>%s</case_type><case_name>%s</case_name><owner_id>%s</owner_id>"
            "</create><update>%s</update>" % (case_type, name, owner, props))


class _mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _mallinfo2


def allocated():
    """Bytes malloc has handed out and not taken back (C and Python allocations)."""
    m = _libc.mallinfo2()
    return m.uordblks + m.hblkhd


class EngineTest(unittest.TestCase):
    def setUp(self):
        self.engine = commcare.Engine()  # in memory

    def tearDown(self):
        self.engine.close()

    def test_version(self):
        self.assertEqual(commcare.version()[0], _ffi.MAJOR_VERSION)

    def test_submit_and_read_back(self):
        e = self.engine
        xml = case_form("f1", "c1", create("c1", props="<ward>w1</ward>"))
        r = e.submit(xml, "demo",
                     headers={"X-OpenRosa-Version": "3.0"})
        self.assertEqual((r.status, r.nature, r.form_id, r.state),
                         (201, "submit_success", "f1", "normal"))
        self.assertIn("OpenRosaResponse", r.body)
        c = e.case("demo", "c1")
        self.assertEqual(c["case_name"], "Ann")
        self.assertEqual(c["properties"]["ward"], "w1")
        self.assertEqual([x["case_id"] for x in e.cases("demo", case_type="patient")], ["c1"])
        self.assertEqual(e.cases("demo", case_type="household"), [])
        self.assertEqual(e.cases("demo", closed=True), [])
        self.assertEqual(len(e.cases("demo", owner_id="u1", closed=False)), 1)
        self.assertEqual(e.case_history("demo", "c1")[0]["form_id"], "f1")
        self.assertEqual(e.form("demo", "f1")["xmlns"], "http://example.org/form")
        self.assertTrue(e.form_xml("demo", "f1").startswith(b"<?xml"))
        self.assertEqual(e.attachment("demo", "f1", "form.xml"), e.form_xml("demo", "f1"))
        # A duplicate is answered, not refused; the same id with other content is an edit.
        self.assertEqual(e.submit(xml, "demo").state, "duplicate")
        self.assertEqual(e.submit(case_form("f1", "c1", ""), "demo").state, "normal")
        self.assertEqual(e.form("demo", "f1")["state"], "normal")

    def test_multipart_with_attachment(self):
        xml = case_form("fm", "cm", create("cm")).encode()
        boundary = "XyZ"
        body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; "
                b"filename=\"form.xml\"\r\nContent-Type: text/xml\r\n\r\n" + xml +
                b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"photo.jpg\"; "
                b"filename=\"photo.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\x00\x01"
                b"\r\n--XyZ--\r\n")
        r = self.engine.submit(body, "demo",
                               content_type="multipart/form-data; boundary=" + boundary)
        self.assertEqual(r.status, 201)
        self.assertEqual(self.engine.attachment("demo", "fm", "photo.jpg"), b"\xff\xd8\x00\x01")

    def test_errors_map_to_exceptions(self):
        e = self.engine
        with self.assertRaises(commcare.NotFoundError) as cm:
            e.case("demo", "missing")
        self.assertIn("missing", str(cm.exception))
        self.assertEqual(cm.exception.code, -1)
        self.assertIsInstance(cm.exception, LookupError)
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.submit("<data><unclosed></data>", "demo")
        self.assertIn("Invalid XML", str(cm.exception))
        self.assertEqual(cm.exception.result.status, 500)
        self.assertEqual(cm.exception.result.state, "submission_error_log")
        r = e.submit("<data><unclosed></data>", "demo", check=False)
        self.assertEqual(r.nature, "submit_error")
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.case("demo", b"\xc3\x28")
        self.assertIn("UTF-8", str(cm.exception))
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.cases("demo", limit=-5)
        self.assertIn("limit", str(cm.exception))
        with self.assertRaises(commcare.InvalidArgumentError):
            e.submit("x", "demo", headers={"X-Submit-Time": "yesterday"})
        with self.assertRaises(commcare.NotFoundError):
            e.archive("demo", "nope")
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            commcare.Engine(backend="cassandra")
        self.assertIn("cassandra", str(cm.exception))
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            commcare.Engine(colour="red")
        self.assertIn("colour", str(cm.exception))
        with self.assertRaises(commcare.CommcareError):
            commcare.Engine("/proc/no/such/dir")

    def test_oversized_body(self):
        with commcare.Engine(max_xml_bytes=1000) as e:
            with self.assertRaises(commcare.ResourceExhaustedError) as cm:
                e.submit(case_form("big", "cb", create("cb", props="<x>%s</x>" % ("a" * 5000))),
                         "demo")
            self.assertEqual(cm.exception.result.status, 413)
            with self.assertRaises(commcare.NotFoundError):
                e.form("demo", "big")

    def test_closed_engine(self):
        e = commcare.Engine()
        e.close()
        e.close()  # twice is fine
        with self.assertRaises(commcare.FailedPreconditionError) as cm:
            e.case("demo", "c1")
        self.assertIn("closed", str(cm.exception))
        with self.assertRaises(commcare.FailedPreconditionError):
            e.submit(case_form("f", "c", ""), "demo")

    def test_archive_ledgers_changes(self):
        e = self.engine
        e.submit(case_form("f1", "c1", create("c1")), "demo")
        e.submit('<?xml version="1.0"?><data xmlns="http://example.org/stock">'
                 '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>f2</instanceID>'
                 "<userID>u1</userID></meta>"
                 '<balance xmlns="http://commcarehq.org/ledger/v1" entity-id="c1" '
                 'section-id="stock" date="2020-01-02"><entry id="p1" quantity="7"/></balance>'
                 "</data>", "demo")
        self.assertEqual(e.ledger("demo", "c1"), {"stock": {"p1": 7}})
        e.archive("demo", "f2")
        self.assertEqual(e.form("demo", "f2")["state"], "archived")
        self.assertEqual(e.ledger("demo", "c1"), {"stock": {"p1": 0}})
        e.unarchive("demo", "f2")
        self.assertEqual(e.ledger("demo", "c1"), {"stock": {"p1": 7}})
        changes = list(e.changes(topics=["case-sql"]))
        self.assertIn("c1", {c["change"]["document_id"] for c in changes})
        topics = {t["topic"] for t in e.topics()}
        self.assertTrue({"case-sql", "form-sql", "ledger"} <= topics)
        # Resuming from a position yields only what came after it.
        position = {(c["topic"], c["partition"]): c["offset"] + 1 for c in changes}
        e.submit(case_form("f3", "c2", create("c2")), "demo")
        later = list(e.changes(topics=["case-sql"], since=position))
        self.assertEqual([c["change"]["document_id"] for c in later], ["c2"])
        first = changes[0]
        self.assertEqual(e.read_changes(first["topic"], first["partition"], first["offset"], 1),
                         [first])
        with self.assertRaises(commcare.NotFoundError):
            e.read_changes("no-such-topic", 0)

    def test_users_domains_restore(self):
        e = self.engine
        e.create_domain("demo")
        with self.assertRaises(commcare.AlreadyExistsError):
            e.create_domain("demo")
        self.assertEqual([d["name"] for d in e.domains()], ["demo"])
        # HQ's ASYNC_RESTORE and MM_CASE_PROPERTIES toggles: off unless asked for.
        d = e.domain("demo")
        self.assertEqual((d["async_restore"], d["case_attachments_in_restore"], d["_rev"]),
                         (False, False, 1))
        slow = e.create_domain("slow", async_restore=True, case_attachments_in_restore=True)
        self.assertEqual((slow["async_restore"], slow["case_attachments_in_restore"]),
                         (True, True))
        slow = e.update_domain("slow", _rev=slow["_rev"], async_restore=False)
        self.assertEqual((slow["async_restore"], slow["case_attachments_in_restore"],
                          slow["_rev"]), (False, True, 2))
        self.assertFalse(e.domain("slow")["async_restore"])
        with self.assertRaises(commcare.AbortedError):
            e.update_domain("slow", _rev=1, async_restore=True)
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.update_domain("slow", _rev=2, async_restore="yes")
        self.assertIn("async_restore", str(cm.exception))
        with self.assertRaises(commcare.NotFoundError):
            e.domain("nowhere")
        self.assertEqual(sorted(x["name"] for x in e.domains()), ["demo", "slow"])
        u = e.put_user("nurse", domains=["demo"], password="pw12",
                       user_data={"district": "north"})
        self.assertEqual(e.authenticate("nurse", "pw12")["user_id"], u["user_id"])
        with self.assertRaises(commcare.UnauthenticatedError):
            e.authenticate("nurse", "nope")
        with self.assertRaises(commcare.NotFoundError):
            e.put_user("x", domains=["elsewhere"], password="pw12")
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.put_user("nurse", domains=["demo"], is_active=False)
        self.assertIn("_rev", str(cm.exception))
        with self.assertRaises(commcare.AbortedError):
            e.put_user("nurse", domains=["demo"], _rev=99, is_active=True)
        self.assertEqual([x["username"] for x in e.users("demo")], ["nurse"])
        self.assertEqual(e.user("nurse")["_rev"], 1)

        for i in range(3):
            e.submit(case_form("rf%d" % i, "rc%d" % i, create("rc%d" % i, owner=u["user_id"])),
                     "demo")
        e.submit(case_form("other", "oc", create("oc", owner="someone-else")), "demo")
        payload = e.restore("demo", "nurse", items=True)
        self.assertIn(b"ota_restore_success", payload)
        for i in range(3):
            self.assertIn(b"rc%d" % i, payload)
        self.assertNotIn(b'"oc"', payload)
        self.assertIn(b"north", payload)
        buf = io.BytesIO()
        info = e.restore_to(buf.write, "demo", "nurse")
        self.assertEqual(info["cases"], 3)
        self.assertIn(info["sync_id"].encode(), buf.getvalue())
        # Incremental: one case changes.
        e.submit(case_form("rf9", "rc1", "<update><ward>w2</ward></update>",
                           user_id="someone"), "demo")
        again = e.restore("demo", "nurse", since=info["sync_id"])
        self.assertIn(b"rc1", again)
        self.assertNotIn(b"rc0", again)
        with self.assertRaises(commcare.FailedPreconditionError):
            e.restore("demo", "nurse", since=uuid.uuid4().hex)
        with self.assertRaises(commcare.NotFoundError):
            e.restore("demo", "nobody")

        def broken(_data):
            raise OSError("disk full")
        with self.assertRaises(OSError):
            e.restore_to(broken, "demo", "nurse")


def six_patients(engine):
    """c0..c5, patients of wards w0 and w1, one form each (f0..f5)."""
    for i in range(6):
        engine.submit(case_form("f%d" % i, "c%d" % i,
                                create("c%d" % i, props="<ward>w%d</ward>" % (i % 2))), "demo")


class PillowsTest(unittest.TestCase):
    def setUp(self):
        self.engine = commcare.Engine()
        six_patients(self.engine)

    def tearDown(self):
        self.engine.close()

    def test_python_processor_and_builtin_stores(self):
        seen = []
        with self.engine.pillows() as p:
            @p.processor("summary", ["case-sql"])
            def on_change(change):
                case = self.engine.case(change["change"]["domain"],
                                        change["change"]["document_id"])
                seen.append((case["case_id"], change["topic"]))

            self.assertGreaterEqual(p.run_until_caught_up(), 6)
            self.assertEqual(sorted(c for c, _ in seen), ["c%d" % i for i in range(6)])
            self.assertEqual({t for _, t in seen}, {"case-sql"})
            names = {s["pillow"] for s in p.status()}
            self.assertTrue({"summary", "case-search", "read-copy", "ucr"} <= names)
            self.assertTrue(all(s["lag"] == 0 for s in p.status()))

            found = p.search("demo", properties={"ward": "w1"})
            self.assertEqual(sorted(c["case_id"] for c in found["cases"]), ["c1", "c3", "c5"])
            self.assertEqual(self.engine.search("demo", properties={"ward": "w0"},
                                                limit=2)["next_cursor"] != "", True)
            forms = p.forms("demo", limit=10)
            self.assertEqual(forms["total_count"], 6)
            self.assertEqual(len(self.engine.forms("demo", limit=4)["forms"]), 4)
            with self.assertRaises(commcare.InvalidArgumentError):
                p.search("demo", properties=["ward"])

            rows = p.ucr_load({
                "domain": "demo", "table_id": "wards", "referenced_doc_type": "CommCareCase",
                "configured_filter": {"type": "property_match", "property_name": "type",
                                      "property_value": "patient"},
                "configured_indicators": [{"type": "raw", "column_id": "ward",
                                           "datatype": "string", "property_name": "ward"}]})
            self.assertEqual(rows, 6)
            self.assertEqual(len(p.ucr_rows("demo", "wards")), 6)
            self.assertEqual(len(self.engine.ucr_rows("demo", "wards", limit=4)), 4)
            with self.assertRaises(commcare.InvalidArgumentError):
                p.ucr_load({"domain": "demo"})

    def test_raising_processor_goes_to_retry_queue(self):
        calls = []
        with self.engine.pillows(builtin=False) as p:
            def fails(change):
                calls.append(change["change"]["document_id"])
                raise RuntimeError("cannot handle " + change["change"]["document_id"])
            p.add("fragile", ["case-sql"], fails, max_attempts=1)
            p.run_until_caught_up()
            self.assertEqual(len(calls), 6)
            retries = p.retries("fragile")
            self.assertEqual(len(retries), 6)
            self.assertIn("RuntimeError: cannot handle c", retries[0]["error"])
            self.assertEqual(p.status()[0]["dead_letters"], 6)
            self.assertEqual(p.requeue("fragile", include_dead=True), 6)
            with self.assertRaises(commcare.NotFoundError):
                p.retries("no-such-pillow")

    def test_consumer_group_needs_kafka(self):
        with self.assertRaises(commcare.UnimplementedError) as cm:
            self.engine.pillows(consumer_group="g")
        self.assertIn("Kafka", str(cm.exception))

    def test_run_and_stop_from_another_thread(self):
        seen = threading.Event()
        with self.engine.pillows(builtin=False) as p:
            p.add("watch", ["case-sql"], lambda c: seen.set(), max_wait_ms=10)
            t = threading.Thread(target=p.run)
            t.start()
            self.assertTrue(seen.wait(10))
            p.stop()
            t.join(10)
            self.assertFalse(t.is_alive())


class DiskAndThreadsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cc-py-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_data_directory_survives_reopen(self):
        path = os.path.join(self.dir, "data")
        with commcare.Engine(path, shards=16) as e:
            e.submit(case_form("f1", "c1", create("c1")), "demo")
        with commcare.Engine(path) as e:
            self.assertEqual(e.case("demo", "c1")["case_name"], "Ann")
            with self.assertRaises(commcare.FailedPreconditionError):
                commcare.Engine(path)  # the writer's lock is held

    def test_several_python_threads(self):
        errors = []
        with commcare.Engine(os.path.join(self.dir, "t"), durable=False) as e:
            def work(k):
                try:
                    for i in range(50):
                        cid = "t%d-%d" % (k, i)
                        e.submit(case_form("f" + cid, cid, create(cid)), "demo")
                        self.assertEqual(e.case("demo", cid)["case_id"], cid)
                except Exception as ex:  # noqa: B902
                    errors.append(ex)
            threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            self.assertEqual(len(e.cases("demo", limit=10000)), 200)


class OwnershipTest(unittest.TestCase):
    """10,000 rounds of every allocating call must not grow what malloc holds."""

    def test_no_growth_over_10000_calls(self):
        e = commcare.Engine()
        e.create_domain("demo")
        e.put_user("nurse", domains=["demo"], password="pw12")
        xml = case_form("f1", "c1", create("c1"))
        e.submit(xml, "demo")
        e.relay()

        def round_(i):
            e.case("demo", "c1")
            e.form("demo", "f1")
            e.form_xml("demo", "f1")
            e.cases("demo")
            e.domains()
            e.user("nurse")
            e.read_changes("case-sql", 0, 0, 5)
            try:
                e.case("demo", "missing")
            except commcare.NotFoundError:
                pass
            try:
                e.cases("demo", limit=-1)
            except commcare.InvalidArgumentError:
                pass
            if i % 100 == 0:
                e.submit(xml, "demo")  # a duplicate: a full result
                e.restore("demo", "nurse")

        for i in range(500):  # warm caches and pools up
            round_(i)
        before = allocated()
        for i in range(10000):
            round_(i)
        grown = allocated() - before
        e.close()
        # A leak of even one small string per call would be > 70 calls x 10,000 x ~50 bytes.
        self.assertLess(grown, 2 * 1024 * 1024, "malloc'd bytes grew by %d" % grown)


class TasksTest(unittest.TestCase):
    """The task queue through the C ABI: Python handlers on a worker pool."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cc-py-tasks-")
        self.engine = commcare.Engine(os.path.join(self.dir, "data"))

    def tearDown(self):
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_handlers_results_retries_and_dead_letters(self):
        e = self.engine
        w = e.workers(workers=2, queues=[], poll_ms=50)
        calls = {"flaky": 0}

        @w.handler("double")
        def double(task):
            task.progress(1, 2, "half way")
            return {"n": task.payload["n"] * 2}

        @w.handler("flaky", backoff_base_ms=10)
        def flaky(task):
            calls["flaky"] += 1
            if task.attempts < 3:
                raise RuntimeError("try again")
            return "ok"

        @w.handler("refuse")
        def refuse(task):
            raise commcare.InvalidArgumentError("no such report")

        w.start()
        try:
            t = e.wait_task(e.enqueue("double", {"n": 21}), timeout=20)
            self.assertEqual(t["state"], "succeeded")
            self.assertEqual(t["result"], {"n": 42})
            self.assertEqual(t["progress"], {"done": 1, "total": 2, "message": "half way"})
            t = e.wait_task(e.enqueue("flaky"), timeout=20)
            self.assertEqual((t["state"], t["attempts"], calls["flaky"]), ("succeeded", 3, 3))
            self.assertIn("RuntimeError: try again", t["last_error"])
            t = e.wait_task(e.enqueue("refuse", max_attempts=5), timeout=20)
            self.assertEqual((t["state"], t["attempts"]), ("dead", 1))
            self.assertEqual(t["last_error"], "InvalidArgument: no such report")
            self.assertEqual(len(e.tasks(state="dead")), 1)
            stats = {s["queue"]: s for s in e.task_stats()}
            self.assertEqual(stats["default"]["succeeded"], 2)
        finally:
            w.stop()

    def test_unique_keys_cancel_and_bad_input(self):
        e = self.engine
        a = e.enqueue("later", unique_key="k1", run_at="2099-01-01T00:00:00Z")
        self.assertEqual(e.enqueue("later", unique_key="k1"), a)
        e.cancel_task(a)
        self.assertEqual(e.task(a)["state"], "cancelled")
        with self.assertRaises(commcare.FailedPreconditionError):
            e.cancel_task(a)
        with self.assertRaises(commcare.NotFoundError):
            e.task(424242)
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.enqueue("x", max_attempts=0)
        self.assertIn("max_attempts", str(cm.exception))
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.put_schedule("bad", "0 0 * * *", "x", time_zone="Europe/Atlantis")
        self.assertIn("Europe/Atlantis", str(cm.exception))
        e.put_schedule("nightly", "30 2 * * *", "report", {"r": 1}, time_zone="Africa/Nairobi")
        (s,) = e.schedules()
        self.assertEqual((s["name"], s["time_zone"], s["task"]["payload"]),
                         ("nightly", "Africa/Nairobi", {"r": 1}))
        self.assertTrue(s["next_run_at"].endswith(":30:00.000000Z"))
        e.delete_schedule("nightly")
        self.assertEqual(e.schedules(), [])


class ExportsTest(unittest.TestCase):
    """Exports through the C ABI: a run in this thread, saved definitions, export.run tasks."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cc-py-exports-")
        self.engine = commcare.Engine(os.path.join(self.dir, "data"))
        for i in range(5):
            self.engine.submit(case_form("f%d" % i, "c%d" % i,
                                         create("c%d" % i, owner="u%d" % (1 + i % 2),
                                                props="<age>%d</age>" % (10 * i))), "demo")

    def tearDown(self):
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_import_cases_and_bulk_edit(self):
        e = self.engine
        path = os.path.join(self.dir, "import.csv")
        with open(path, "w") as f:
            f.write("case_id,age,close\nc0,99,\nc1,,yes\nnope,1,\nc2,3,perhaps\n")
        dry = e.import_cases(path, {"domain": "demo", "case_type": "patient", "dry_run": True})
        self.assertEqual((dry["match_count"], dry["skipped_count"], dry["failed_count"]), (2, 1, 1))
        self.assertEqual([(p["row"], p["column"]) for p in dry["problems"]], [(5, "close")])
        self.assertEqual(e.case("demo", "c0")["properties"]["age"], "0")  # nothing written
        r = e.import_cases(path, {"domain": "demo", "case_type": "patient"})
        self.assertEqual(r["match_count"], 2)
        self.assertEqual(e.case("demo", "c0")["properties"]["age"], "99")
        self.assertTrue(e.case("demo", "c1")["closed"])
        with self.assertRaises(commcare.InvalidArgumentError):
            e.import_cases(path, {"domain": "demo"})
        prev = e.bulk_edit({"domain": "demo", "filter": {"owner_id": "u2"}, "preview": True})
        self.assertEqual(prev["matched"], 2)
        done = e.bulk_edit({"domain": "demo", "filter": {"owner_id": "u2"}, "set": {"ward": "9"}})
        self.assertEqual(done["updated"], 2)
        self.assertEqual(e.case("demo", "c1")["properties"]["ward"], "9")
        task = e.enqueue_import(b"case_id,age\nc3,7\n", {"domain": "demo", "case_type": "patient"})
        self.assertEqual((task["type"], task["state"]), ("import.cases", "queued"))
        task = e.enqueue_bulk_edit({"domain": "demo", "filter": {"case_type": "patient"}, "close": True})
        self.assertEqual(task["type"], "import.bulk_edit")

    def test_form_export_writes_zoned_datetimes_in_utc(self):
        # HQ exports the stored form JSON, whose zoned date-times adjust_datetimes
        # (corehq/form_processor/utils/xform.py) made UTC; dates and zone-less times are kept.
        e = self.engine
        e.submit('<?xml version="1.0"?><data xmlns="http://example.org/tz">'
                 '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>tz1</instanceID>'
                 '<userID>u1</userID><timeStart>2024-03-02T10:21:48.715+01:00</timeStart>'
                 '</meta><seen>2024-03-02T10:21:48.715+01:00</seen><day>2024-03-02</day>'
                 '<local>2024-03-02T10:21:48</local></data>', "demo")
        out = os.path.join(self.dir, "tz.csv")
        e.export({"domain": "demo", "kind": "form", "filters": {"xmlns": "http://example.org/tz"},
                  "columns": ["form_id", "started_time", "form.seen", "form.day",
                              "form.local"]}, out)
        with open(out, newline="") as f:
            (row,) = list(csv.DictReader(f))
        self.assertEqual(row["form.seen"], "2024-03-02T09:21:48.715000Z")
        self.assertEqual(row["started_time"], "2024-03-02T09:21:48.715000Z")
        self.assertEqual((row["form.day"], row["form.local"]), ("2024-03-02", "2024-03-02T10:21:48"))

    def test_export_to_csv_and_xlsx_with_progress(self):
        e, seen = self.engine, []
        out = os.path.join(self.dir, "cases.csv")
        r = e.export({"domain": "demo", "columns": ["case_id", "owner_id", "age"]}, out,
                     progress=lambda done, total: seen.append((done, total)))
        self.assertEqual(r, {"file": out, "rows": 5, "tables": ["Cases"]})
        self.assertEqual(seen[-1], (5, 5))
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(sorted((x["case_id"], x["owner_id"], x["age"]) for x in rows),
                         [("c%d" % i, "u%d" % (1 + i % 2), str(10 * i)) for i in range(5)])
        xlsx = os.path.join(self.dir, "cases.xlsx")
        r = e.export(json.dumps({"domain": "demo", "format": "xlsx", "columns": ["case_id"]}),
                     xlsx)
        self.assertEqual(r["rows"], 5)
        with zipfile.ZipFile(xlsx) as z:
            sheet = z.read("xl/worksheets/sheet1.xml").decode()
        for i in range(5):
            self.assertIn(">c%d<" % i, sheet)
        with self.assertRaises(commcare.AbortedError):
            e.export({"domain": "demo"}, out, progress=lambda done, total: False)

        class Boom(Exception):
            pass

        def explode(done, total):
            raise Boom()

        with self.assertRaises(Boom):
            e.export({"domain": "demo"}, out, progress=explode)
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.export({"domain": "demo", "colour": 1}, out)
        self.assertIn("colour", str(cm.exception))

    def test_saved_definitions_and_export_tasks(self):
        e = self.engine
        e.save_export({"domain": "demo", "name": "ages", "columns": ["case_id", "age"]})
        self.assertEqual(e.export_definitions("demo"), ["ages"])
        self.assertEqual(e.export_definitions("other"), [])
        self.assertEqual(e.load_export("demo", "ages")["name"], "ages")
        w = e.workers(queues=[], poll_ms=50).start()
        try:
            t = e.enqueue_export("ages", domain="demo")
            self.assertEqual((t["type"], t["domain"]), ("export.run", "demo"))
            t = e.wait_task(t["id"], timeout=30)
            self.assertEqual(t["state"], "succeeded", t["last_error"])
            got = os.path.join(self.dir, "fetched.csv")
            with self.assertRaises(commcare.NotFoundError):
                e.fetch_export("other", t["id"], got)
            info = e.fetch_export("demo", t["id"], got)
            self.assertEqual(info["size"], os.path.getsize(got))
            with open(got, newline="") as f:
                rows = list(csv.reader(f))
            self.assertEqual(rows[0], ["case_id", "age"])
            self.assertEqual(len(rows), 6)
            t = e.wait_task(e.enqueue_export({"domain": "demo", "format": "xlsx"})["id"],
                            timeout=30)
            self.assertEqual(t["state"], "succeeded", t["last_error"])
            e.fetch_export("demo", t["id"], os.path.join(self.dir, "fetched.xlsx"))
            self.assertTrue(zipfile.is_zipfile(os.path.join(self.dir, "fetched.xlsx")))
        finally:
            w.stop()
        with self.assertRaises(commcare.NotFoundError):
            e.enqueue_export("nope", domain="demo")
        with self.assertRaises(commcare.PermissionDeniedError):
            e.enqueue_export({"domain": "other"}, domain="demo")
        e.delete_export("demo", "ages")
        with self.assertRaises(commcare.NotFoundError):
            e.load_export("demo", "ages")
        with self.assertRaises(commcare.FailedPreconditionError):
            commcare.Engine().save_export({"domain": "demo", "name": "x"})


class ForwardingTest(unittest.TestCase):
    """Data forwarding through the C ABI: a forwarder to a receiver on loopback, records made
    by the forwarding pillow and delivered by a worker pool; pause, resume, resend, delete."""

    def setUp(self):
        import http.server
        self.dir = tempfile.mkdtemp(prefix="cc-py-fwd-")
        self.engine = commcare.Engine(os.path.join(self.dir, "data"))
        self.got, self.answers = [], [500, 200]
        test = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = test.answers.pop(0) if len(test.answers) > 1 else test.answers[0]
                test.got.append((body, self.headers.get("X-Key"), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.rx = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.rx.serve_forever, daemon=True).start()

    def tearDown(self):
        self.rx.shutdown()
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def deliver(self, want):
        w = self.engine.workers(queues=[], poll_ms=20).start()
        try:
            for _ in range(500):
                if len(self.got) >= want:
                    break
                time.sleep(0.01)
        finally:
            w.stop()

    def test_forward_a_case_retry_pause_resend_delete(self):
        e = self.engine
        f = e.add_forwarder({"domain": "demo", "kind": "case", "format": "case_json",
                             "url": "http://127.0.0.1:%d/in" % self.rx.server_address[1],
                             "headers": {"X-Key": "k1"}})
        self.assertEqual([x["id"] for x in e.forwarders("demo")], [f["id"]])
        e.submit(case_form("f1", "c1", create("c1")), "demo")
        with e.pillows() as p:
            p.run_until_caught_up()
        [rec] = e.forward_records("demo")
        self.assertEqual((rec["doc_id"], rec["event"], rec["state"]), ("c1", "create", "pending"))
        self.deliver(1)
        rec = e.forward_record("demo", rec["id"])
        self.assertEqual(rec["state"], "failed")
        self.assertEqual(rec["attempt_log"][0]["http_status"], 500)
        self.assertEqual(e.forward_records("demo", state="failed")[0]["id"], rec["id"])
        e.pause_forwarder("demo", f["id"])
        self.assertEqual(e.resend("demo"), 1)
        self.deliver(2)
        self.assertEqual(len(self.got), 1)  # paused: the record waits
        e.pause_forwarder("demo", f["id"], paused=False)
        self.deliver(2)
        self.assertEqual(e.forward_record("demo", rec["id"])["state"], "succeeded")
        body, key, status = self.got[1]
        self.assertEqual((json.loads(body)["case_id"], key, status), ("c1", "k1", 200))
        with self.assertRaises(commcare.NotFoundError):
            e.forward_record("other", rec["id"])
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.add_forwarder({"domain": "demo", "url": "gopher://x"})
        self.assertIn("url", str(cm.exception))
        e.delete_forwarder("demo", f["id"])
        self.assertEqual(e.forwarders("demo"), [])
        with self.assertRaises(commcare.NotFoundError):
            e.pause_forwarder("demo", f["id"])


REPORT = {"name": "ages", "domain": "demo", "table_id": "patients", "subject": "Ages by owner",
          "recipients": ["lead@example.org"], "group_by": ["owner"],
          "aggregations": [{"fn": "count"}, {"fn": "sum", "column": "age"}], "format": "xlsx",
          "schedule": {"cron": "0 8 * * 1", "time_zone": "Africa/Nairobi"}}


class ReportsTest(unittest.TestCase):
    """Scheduled reports through the C ABI: saved, previewed, sent to the SMTP sink as XLSX."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cc-py-reports-")
        self.engine = commcare.Engine(os.path.join(self.dir, "data"))
        for i in range(5):  # owners u1 (ages 0, 20, 40) and u2 (10, 30)
            self.engine.submit(case_form("f%d" % i, "c%d" % i,
                                         create("c%d" % i, owner="u%d" % (1 + i % 2),
                                                props="<age>%d</age>" % (10 * i))), "demo")
        with self.engine.pillows() as p:
            self.assertEqual(p.ucr_load({
                "domain": "demo", "table_id": "patients", "referenced_doc_type": "CommCareCase",
                "configured_indicators": [
                    {"type": "raw", "column_id": "owner", "property_name": "owner_id"},
                    {"type": "expression", "column_id": "age", "datatype": "integer",
                     "expression": {"type": "property_name", "property_name": "age"}}]}), 5)

    def tearDown(self):
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_saved_listed_previewed_and_deleted(self):
        e = self.engine
        saved = e.set_report(REPORT)
        self.assertEqual(saved["schedule"], "report:demo:ages")
        self.assertEqual(saved["report"], REPORT)
        self.assertTrue(saved["enabled"])
        self.assertEqual([r["schedule"] for r in e.reports("demo")], ["report:demo:ages"])
        self.assertEqual(e.reports("other"), [])
        self.assertEqual(e.report("demo", "ages")["report"]["format"], "xlsx")
        self.assertEqual(e.preview_report("demo", "ages"), {
            "header": ["owner", "count", "sum_age"], "rows": [["u1", "3", "60"], ["u2", "2", "40"]],
            "totals": ["Total", "5", "100"], "source_rows": 5})
        unsaved = {k: v for k, v in REPORT.items() if k != "schedule"}
        r = e.render_report(dict(unsaved, filters=[{"column": "age", "min": 20}]))
        self.assertEqual(r["rows"], [["u1", "2", "60"], ["u2", "1", "30"]])
        with self.assertRaises(commcare.InvalidArgumentError) as cm:
            e.set_report(dict(REPORT, format="pdf"))
        self.assertIn("format", str(cm.exception))
        with self.assertRaises(commcare.NotFoundError):
            e.send_report("demo", "nope")
        e.delete_report("demo", "ages")
        with self.assertRaises(commcare.NotFoundError):
            e.report("demo", "ages")

    def test_sent_to_the_smtp_sink_as_xlsx(self):
        sink, sink_dir = os.environ.get("COMMCARE_TEST_SMTP"), os.environ.get("COMMCARE_TEST_SMTP_DIR")
        if not sink or not sink_dir:
            if os.environ.get("CI") == "true":
                self.fail("CI=true but COMMCARE_TEST_SMTP is not set")
            self.skipTest("no SMTP sink (run under scripts/with-test-servers)")
        e = self.engine
        e.set_report(dict(REPORT, recipients=["py-report@example.org"]))
        before = set(os.listdir(sink_dir))
        saved_env = {k: os.environ.get(k) for k in ("COMMCARE_SMTP_URL", "COMMCARE_SMTP_FROM")}
        os.environ["COMMCARE_SMTP_URL"] = "smtp://%s?starttls=opportunistic&timeout_ms=10000" % sink
        os.environ["COMMCARE_SMTP_FROM"] = "reports@commcare.test"
        w = e.workers(queues=[], poll_ms=50).start()
        try:
            t = e.send_report("demo", "ages")
            self.assertEqual(t["type"], "report.send")
            t = e.wait_task(t["id"], timeout=30)
            self.assertEqual(t["state"], "succeeded", t["last_error"])
            self.assertEqual(t["result"]["rows"], 5)
            mail = e.wait_task(t["result"]["email_task"], timeout=30)
            self.assertEqual(mail["state"], "succeeded", mail["last_error"])
        finally:
            w.stop()
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        message = None
        for _ in range(100):
            for name in sorted(set(os.listdir(sink_dir)) - before):
                if name.endswith(".json"):
                    with open(os.path.join(sink_dir, name)) as f:
                        if "py-report@example.org" in f.read():
                            with open(os.path.join(sink_dir, name[:-5] + ".eml"), "rb") as f:
                                message = email.message_from_bytes(f.read(),
                                                                   policy=email.policy.default)
            if message:
                break
            time.sleep(0.05)
        self.assertIsNotNone(message, "the report never reached the sink")
        self.assertEqual(message["Subject"], "Ages by owner")
        self.assertIn("<tfoot><tr><th>Total</th><th>5</th><th>100</th></tr></tfoot>",
                      message.get_body(("html",)).get_content())
        (attachment,) = list(message.iter_attachments())
        self.assertEqual(attachment.get_filename(), "ages.xlsx")
        with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as z:
            sheet = z.read("xl/worksheets/sheet1.xml").decode()
            strings = z.read("xl/sharedStrings.xml").decode()
        for s in ("owner", "sum_age", "u1", "u2", "Total"):
            self.assertIn("<t>%s</t>" % s, strings)
        for v in ("<v>3</v>", "<v>60</v>", "<v>40</v>", "<v>100</v>"):
            self.assertIn(v, sheet)


class RulesTest(unittest.TestCase):
    """Automatic case update rules through the C ABI: saved with a schedule, a bad one refused,
    a dry run, a run, a rerun that changes nothing, the parent's property updated."""

    RULE = {"name": "adult", "domain": "demo", "case_type": "patient",
            "criteria": [{"property_name": "dob", "match_type": "DAYS", "property_value": 365}],
            "actions": {"update": [{"name": "status", "value": "adult"},
                                   {"name": "parent/has_adult", "value": "yes"}]},
            "schedule": "0 3 * * *", "time_zone": "Africa/Nairobi"}

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cc-py-rules-")
        self.engine = commcare.Engine(os.path.join(self.dir, "data"))
        self.engine.submit(case_form("fh", "h1", create("h1", case_type="household")), "demo")
        for cid, dob in (("old", "2000-01-01"), ("young", time.strftime("%Y-%m-%d"))):
            self.engine.submit(case_form(
                "f" + cid, cid,
                create(cid, props="<dob>%s</dob>" % dob) +
                '<index><parent case_type="household">h1</parent></index>'), "demo")

    def tearDown(self):
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_saved_dry_run_run_and_rerun(self):
        e = self.engine
        with self.assertRaises(commcare.InvalidArgumentError) as bad:
            e.set_rule(dict(self.RULE, criteria=[{"property_name": "dob", "match_type": "SOON"}]))
        self.assertIn("criteria[0].match_type", str(bad.exception))
        saved = e.set_rule(self.RULE)
        self.assertEqual(saved["schedule"], "rule:demo:adult")
        self.assertEqual([r["rule"]["name"] for r in e.rules("demo")], ["adult"])
        dry = e.run_rule("demo", "adult", dry_run=True)
        self.assertEqual([c["case_id"] for c in dry["changes"]], ["old"])
        self.assertEqual(dry["changes"][0]["parent_update"], {"has_adult": "yes"})
        self.assertNotIn("status", e.case("demo", "old")["properties"])
        run = e.run_rule("demo", "adult")
        self.assertEqual(run["summary"]["changed"], 1)
        self.assertEqual(e.case("demo", "old")["properties"]["status"], "adult")
        self.assertEqual(e.case("demo", "h1")["properties"]["has_adult"], "yes")
        self.assertNotIn("status", e.case("demo", "young")["properties"])
        again = e.run_rule("demo", "adult")
        self.assertEqual((again["summary"]["changed"], again["summary"]["unchanged"]), (0, 1))
        self.assertEqual(e.run_rule_later("demo", "adult")["type"], "rule.run")
        e.delete_rule("demo", "adult")
        with self.assertRaises(commcare.NotFoundError):
            e.rule("demo", "adult")


if __name__ == "__main__":
    unittest.main()
