#!/usr/bin/env python3
"""Data forwarding end to end through the CLI (docs/forwarding.md): forwarders added, forms and
cases submitted, `pillows run --once` makes repeat records, `tasks run --until-idle` delivers
them to a receiver on loopback that fails on purpose (500 then 200, slow, 301, refusing,
unresolvable). Checks payload formats, auth headers, HQ's states and retry schedule, order per
case, pause/resume, resend, device logs never forwarded; and the REST face."""
import base64
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

CC = sys.argv.pop(1)
SAMPLES = sys.argv.pop(1)
HOUR = 3600 * 1_000_000
XMLNS = "http://commcarehq.org/test/fwd"


def cc(*args, expect=0):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True, timeout=120)
    if p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode} (wanted {expect}): {p.stdout}{p.stderr}")
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


def form_xml(case_id, create=False, props=None, close=False, xmlns=XMLNS, modified="2024-01-01T10:00:00"):
    fid = uuid.uuid4().hex
    blk = ""
    if case_id:
        blk = (f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{case_id}" '
               f'user_id="u1" date_modified="{modified}">')
        if create:
            blk += "<create><case_type>patient</case_type><case_name>P</case_name>" \
                   "<owner_id>u1</owner_id></create>"
        if props:
            blk += "<update>" + "".join(f"<{k}>{v}</{k}>" for k, v in props.items()) + "</update>"
        if close:
            blk += "<close/>"
        blk += "</case>"
    return fid, (f'<?xml version="1.0"?><data xmlns="{xmlns}"><q>1</q>{blk}'
                 f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{fid}</instanceID>'
                 f'<userID>u1</userID><username>w</username></meta></data>')


class Receiver:
    """A loopback HTTP receiver; `plan[path]` is a list of answers to give in turn (the last
    repeats): an int status, ("sleep", seconds), ("redirect", url) or "digest"."""

    def __init__(self):
        self.requests = []
        self.plan = {}
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                with outer.lock:
                    answers = outer.plan.get(path, [200])
                    answer = answers.pop(0) if len(answers) > 1 else answers[0]
                    outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                           "body": body, "answer": answer, "at": time.time()})
                status, extra = answer, {}
                if isinstance(answer, tuple) and answer[0] == "sleep":
                    time.sleep(answer[1])
                    status = 200
                elif isinstance(answer, tuple) and answer[0] == "redirect":
                    status, extra = 301, {"Location": answer[1]}
                elif answer == "digest":
                    auth = self.headers.get("Authorization", "")
                    if auth.startswith("Digest ") and outer.digest_ok(auth, "POST"):
                        status = 200
                    else:
                        status = 401
                        extra = {"WWW-Authenticate":
                                 'Digest realm="fwd", nonce="abc123", qop="auth", algorithm=MD5'}
                text = b"ok" if status == 200 else f"status {status} on purpose".encode()
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def digest_ok(header, method):
        p = {}
        for part in header[len("Digest "):].split(","):
            k, _, v = part.strip().partition("=")
            p[k] = v.strip('"')
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()
        ha1 = md5(f"{p['username']}:fwd:secret")
        ha2 = md5(f"{method}:{p['uri']}")
        want = md5(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:{p['qop']}:{ha2}")
        return p.get("username") == "alice" and p.get("response") == want

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"].split("?")[0] == path]

    def close(self):
        self.server.shutdown()


class ForwardingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.rx = Receiver()

    @classmethod
    def tearDownClass(cls):
        cls.rx.close()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cc-fwd-")
        self.data = os.path.join(self.tmp, "data")
        cc("init", "--data", self.data)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def D(self, *args, expect=0):
        return cc(*args, "--data", self.data, "--domain", "demo", expect=expect)

    def submit(self, xml):
        path = os.path.join(self.tmp, uuid.uuid4().hex + ".xml")
        with open(path, "w") as f:
            f.write(xml)
        cc("submit", "--data", self.data, "--domain", "demo", path)

    def run_all(self):
        cc("pillows", "run", "--data", self.data, "--once", "--only", "forwarding")
        cc("tasks", "run", "--data", self.data, "--until-idle")

    def add(self, *args):
        [f] = self.D("forwarders", "add", *args)
        return f

    def records(self, *args):
        return self.D("forwarders", "records", *args)

    def sweep(self):
        """What the minute schedule does: delivery for every forwarder with due records."""
        cc("tasks", "enqueue", "--data", self.data, "--type", "forward.sweep")
        cc("tasks", "run", "--data", self.data, "--until-idle")

    def age(self, hours_since_last):
        """Makes every waiting record due, its last try `hours_since_last` hours ago."""
        db = sqlite3.connect(os.path.join(self.data, "pillows", "forwarding.sqlite"))
        now = int(time.time() * 1e6)
        db.execute("UPDATE fwd_records SET next_check=?, last_checked=? WHERE open=1 AND "
                   "last_checked>0", (now - 1, now - int(hours_since_last * HOUR)))
        db.commit()
        db.close()

    def test_form_xml_delivered_once_and_byte_identical(self):
        f = self.add("--url", self.rx.url("/xml1"), "--header", "X-Project: demo")
        self.assertEqual(f["format"], "form_xml")
        fid, xml = form_xml("c-" + uuid.uuid4().hex, create=True)
        self.submit(xml)
        self.run_all()
        [req] = self.rx.bodies("/xml1")
        self.assertEqual(req["body"].decode(), xml)
        self.assertEqual(req["headers"]["Content-Type"], "application/xml")
        self.assertEqual(req["headers"]["X-Project"], "demo")
        self.assertIn("received-on", {k.lower() for k in req["headers"]})
        [rec] = self.records()
        self.assertEqual((rec["state"], rec["doc_id"], rec["attempts"]), ("succeeded", fid, 1))
        # Running again sends nothing more: a succeeded record is never sent twice.
        self.run_all()
        self.assertEqual(len(self.rx.bodies("/xml1")), 1)
        [detail] = self.D("forwarders", "record", "--id", str(rec["id"]))
        [a] = detail["attempt_log"]
        self.assertEqual((a["state"], a["http_status"]), ("succeeded", 200))
        self.assertTrue(a["message"].startswith("200: ok"))

    def test_xmlns_filter_and_device_logs(self):
        self.add("--url", self.rx.url("/xmlns"), "--xmlns", XMLNS)
        _, other = form_xml(None, xmlns="http://example.com/other")
        _, mine = form_xml(None)
        with open(os.path.join(SAMPLES, "receiverwrapper__device_log.xml")) as f:
            device_log = f.read()
        self.submit(other)
        self.submit(mine)
        self.submit(device_log)
        self.add("--url", self.rx.url("/all"))
        self.run_all()
        self.assertEqual(len(self.rx.bodies("/xmlns")), 1)
        # The forwarder of every xmlns still never gets the device log.
        bodies = [r["body"].decode() for r in self.rx.bodies("/all")]
        self.assertEqual(len(bodies), 2)
        self.assertFalse(any("devicereport" in b for b in bodies))

    def test_500_then_200_retry_schedule_and_resend(self):
        self.rx.plan["/flaky"] = [500, 200]
        f = self.add("--url", self.rx.url("/flaky"))
        self.submit(form_xml(None)[1])
        self.run_all()
        [rec] = self.records()
        self.assertEqual(rec["state"], "failed")
        [d] = self.D("forwarders", "record", "--id", str(rec["id"]))
        self.assertEqual(d["attempt_log"][0]["http_status"], 500)
        self.assertIn("on purpose", d["attempt_log"][0]["message"])
        db = sqlite3.connect(os.path.join(self.data, "pillows", "forwarding.sqlite"))
        nc, lc = db.execute("SELECT next_check, last_checked FROM fwd_records").fetchone()
        self.assertGreaterEqual(nc - lc, HOUR)  # HQ's MIN_RETRY_WAIT
        self.assertLess(nc - lc, HOUR + 5_000_000)
        # Not due: running again sends nothing.
        self.run_all()
        self.assertEqual(len(self.rx.bodies("/flaky")), 1)
        [r] = self.D("forwarders", "resend", "--record", str(rec["id"]))
        self.assertEqual(r, {"resent": 1})
        cc("tasks", "run", "--data", self.data, "--until-idle")
        [rec] = self.records()
        self.assertEqual((rec["state"], rec["attempts"]), ("succeeded", 2))
        self.assertEqual(len(self.rx.bodies("/flaky")), 2)
        self.assertEqual(f["max_attempts"], 3)

    def test_fail_fail_cancelled_with_tripling_waits(self):
        self.rx.plan["/down"] = [503]
        self.add("--url", self.rx.url("/down"))
        self.submit(form_xml(None)[1])
        self.run_all()
        db = os.path.join(self.data, "pillows", "forwarding.sqlite")
        self.age(2)  # the last try 2 h ago: the next wait is 3 x 2 h
        self.sweep()
        con = sqlite3.connect(db)
        state, nc, lc = con.execute("SELECT state, next_check, last_checked FROM fwd_records").fetchone()
        con.close()
        self.assertEqual(state, 2)
        self.assertAlmostEqual((nc - lc) / HOUR, 6, delta=0.01)
        self.age(100)  # 3 x 100 h is over 7 days: capped (and the third try cancels)
        self.sweep()
        [rec] = self.records()
        self.assertEqual((rec["state"], rec["attempts"]), ("cancelled", 3))
        self.assertEqual(self.records("--state", "cancelled")[0]["id"], rec["id"])
        self.assertEqual(self.records("--state", "failed"), [])
        [r] = self.D("forwarders", "resend", "--failed")
        self.assertEqual(r["resent"], 1)
        self.rx.plan["/down"] = [200]
        cc("tasks", "run", "--data", self.data, "--until-idle")
        self.assertEqual(self.records()[0]["state"], "succeeded")

    def test_faults_are_recorded(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
        s.close()
        self.rx.plan["/slow"] = [("sleep", 1.5)]
        self.rx.plan["/moved"] = [("redirect", "http://elsewhere.example/")]
        urls = {"refused": f"http://127.0.0.1:{closed}/x", "unresolvable": "http://no-such-host.invalid/x",
                "slow": self.rx.url("/slow"), "moved": self.rx.url("/moved")}
        ids = {}
        for name, url in urls.items():
            ids[self.add("--url", url, "--timeout-ms", "300", "--name", name)["id"]] = name
        self.submit(form_xml(None)[1])
        self.run_all()
        want = {"refused": "onnect", "unresolvable": "resolve", "slow": "imeout", "moved": "redirected"}
        recs = self.records()
        self.assertEqual(len(recs), 4)
        for rec in recs:
            self.assertEqual(rec["state"], "failed")
            [d] = self.D("forwarders", "record", "--id", str(rec["id"]))
            msg = d["attempt_log"][0]["message"]
            self.assertIn(want[ids[rec["forwarder"]]], msg, msg)
            if ids[rec["forwarder"]] == "moved":
                self.assertEqual(d["attempt_log"][0]["http_status"], 301)

    def test_auth_headers(self):
        self.add("--url", self.rx.url("/basic"), "--auth", "basic", "--username", "alice",
                 "--password", "secret")
        f = self.add("--url", self.rx.url("/bearer"), "--auth", "bearer", "--token", "tok123")
        self.assertEqual(f["token"], "***")  # never shown
        self.rx.plan["/digest"] = ["digest"]
        self.add("--url", self.rx.url("/digest"), "--auth", "digest", "--username", "alice",
                 "--password", "secret")
        self.submit(form_xml(None)[1])
        self.run_all()
        [b] = self.rx.bodies("/basic")
        self.assertEqual(b["headers"]["Authorization"],
                         "Basic " + base64.b64encode(b"alice:secret").decode())
        [t] = self.rx.bodies("/bearer")
        self.assertEqual(t["headers"]["Authorization"], "Bearer tok123")
        d = self.rx.bodies("/digest")
        self.assertEqual([x["answer"] for x in d], ["digest", "digest"])  # challenge, then answer
        self.assertTrue(d[-1]["headers"]["Authorization"].startswith("Digest "))
        self.assertEqual({r["state"] for r in self.records()}, {"succeeded"})

    def test_case_formats_events_and_order_per_case(self):
        self.rx.plan["/cases"] = [500, 200]
        f = self.add("--url", self.rx.url("/cases"), "--kind", "case", "--case-type", "patient")
        self.add("--url", self.rx.url("/casexml"), "--kind", "case", "--format", "case_xml",
                 "--event", "close")
        cid = "c-" + uuid.uuid4().hex
        created, xml = form_xml(cid, create=True, props={"age": "1"})
        self.submit(xml)
        self.run_all()
        [first] = self.records("--forwarder", f["id"])
        self.assertEqual((first["state"], first["event"]), ("failed", "create"))
        updated, xml = form_xml(cid, props={"age": "2"}, modified="2024-01-02T10:00:00")
        self.submit(xml)
        self.run_all()
        recs = self.records("--forwarder", f["id"])
        self.assertEqual([(r["event"], r["state"]) for r in recs], [("update", "pending"), ("create", "failed")])
        self.assertEqual(len(self.rx.bodies("/cases")), 1)  # the update waits for the create
        self.age(1)
        self.sweep()
        got = self.rx.bodies("/cases")
        self.assertEqual(len(got), 3)
        self.assertEqual([r["state"] for r in self.records("--forwarder", f["id"])], ["succeeded"] * 2)
        self.assertLessEqual(got[1]["at"], got[2]["at"])
        body = json.loads(got[2]["body"])
        self.assertEqual(got[2]["headers"]["Content-Type"], "application/json")
        # HQ's CaseRepeaterJsonPayloadGenerator sends case.to_api_json(lite=True)
        # (corehq/motech/repeaters/repeater_generators.py): CommCareCaseAPISerializer's fields in
        # order, less reverse_indices (corehq/form_processor/serializers.py); the fixed case
        # fields inside properties (models/cases.py get_properties_in_api_format); xform_ids the
        # case's forms by server date; DRF's isoformat() of HQ's naive UTC datetimes (no "Z").
        self.assertEqual(list(body), ["domain", "case_id", "user_id", "closed", "xform_ids",
                                      "date_closed", "date_modified", "server_date_modified",
                                      "properties", "indices", "attachments"])
        self.assertEqual((body["domain"], body["case_id"], body["user_id"], body["closed"]),
                         ("demo", cid, "u1", False))
        self.assertEqual(body["xform_ids"], [created, updated])
        self.assertEqual((body["date_closed"], body["date_modified"]), (None, "2024-01-02T10:00:00"))
        self.assertRegex(body["server_date_modified"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?$")
        self.assertEqual(body["properties"], {"age": "2", "external_id": None, "owner_id": "u1",
                                              "case_name": "P", "case_type": "patient",
                                              "date_opened": "2024-01-01T10:00:00"})
        self.assertEqual((body["indices"], body["attachments"]), ({}, {}))
        self.assertNotIn("reverse_indices", body)
        self.assertEqual(self.rx.bodies("/casexml"), [])  # not closed yet
        self.submit(form_xml(cid, close=True, modified="2024-01-03T10:00:00")[1])
        self.run_all()
        [x] = self.rx.bodies("/casexml")
        text = x["body"].decode()
        self.assertIn(f'case_id="{cid}"', text)
        self.assertIn("<case_type>patient</case_type>", text)
        self.assertIn("<age>2</age>", text)
        self.assertTrue(text.endswith("<close/></case>"))

    def test_form_json_without_case_blocks(self):
        self.add("--url", self.rx.url("/json"), "--format", "form_json", "--no-case-blocks")
        self.add("--url", self.rx.url("/xmlnocase"), "--no-case-blocks")
        fid, xml = form_xml("c-" + uuid.uuid4().hex, create=True)
        self.submit(xml)
        self.run_all()
        [j] = self.rx.bodies("/json")
        doc = json.loads(j["body"])
        # HQ's FormRepeaterJsonPayloadGenerator sends XFormInstanceResource over the form
        # (corehq/motech/repeaters/repeater_generators.py; the fields in
        # corehq/apps/api/resources/v0_4.py): the Form API object, as GET /api/v0.5/form/<id>/.
        for key in ["id", "domain", "form", "type", "version", "uiversion", "metadata",
                    "received_on", "edited_on", "server_modified_on", "indexed_on", "app_id",
                    "build_id", "initial_processing_complete", "problem", "archived",
                    "attachments", "is_phone_submission", "edited_by_user_id", "resource_uri"]:
            self.assertIn(key, doc)
        self.assertNotIn("form_id", doc)
        self.assertEqual((doc["id"], doc["domain"], doc["type"], doc["archived"]),
                         (fid, "demo", "data", False))
        self.assertEqual(doc["form"]["@xmlns"], XMLNS)
        self.assertEqual(doc["form"]["meta"]["instanceID"], fid)
        self.assertEqual(doc["metadata"]["instanceID"], fid)
        self.assertEqual(doc["form"]["q"], "1")
        self.assertNotIn("case", doc["form"])
        self.assertEqual(doc["attachments"]["form.xml"]["url"],
                         f"/a/demo/api/form/attachment/{fid}/form.xml")
        [x] = self.rx.bodies("/xmlnocase")
        self.assertNotIn("<case", x["body"].decode())
        self.assertIn("<q>1</q>", x["body"].decode())
        # Zoned date-times in the form are UTC, as HQ stores them (adjust_datetimes).
        fid, xml = form_xml(None)
        self.submit(xml.replace("<username>w</username>",
                                "<username>w</username><timeStart>2024-03-02T10:21:48.715+01:00"
                                "</timeStart>"))
        self.run_all()
        doc = json.loads(self.rx.bodies("/json")[1]["body"])
        self.assertEqual(doc["id"], fid)
        self.assertEqual(doc["form"]["meta"]["timeStart"], "2024-03-02T09:21:48.715000Z")
        self.assertEqual(doc["metadata"]["timeStart"], "2024-03-02T09:21:48.715000Z")

    def test_base_url_makes_attachment_urls_absolute(self):
        # HQ's attachment urls are absolute (absolute_reverse over BASE_ADDRESS); ours start
        # with the deployment's base_url from commcare.json.
        path = os.path.join(self.data, "commcare.json")
        with open(path) as f:
            conf = json.load(f)
        conf["base_url"] = "ftp://hq.example.org"
        with open(path, "w") as f:
            json.dump(conf, f)
        p = subprocess.run([CC, "forwarders", "list", "--data", self.data, "--domain", "demo"],
                           capture_output=True, text=True, timeout=120)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("base_url must be http", p.stdout + p.stderr)  # refused, named
        conf["base_url"] = "https://hq.example.org/"
        with open(path, "w") as f:
            json.dump(conf, f)
        self.add("--url", self.rx.url("/abs"), "--format", "form_json")
        fid, xml = form_xml(None)
        self.submit(xml)
        self.run_all()
        [j] = self.rx.bodies("/abs")
        doc = json.loads(j["body"])
        self.assertEqual(doc["attachments"]["form.xml"]["url"],
                         f"https://hq.example.org/a/demo/api/form/attachment/{fid}/form.xml")

    def test_pause_resume_delete(self):
        f = self.add("--url", self.rx.url("/paused"))
        [p] = self.D("forwarders", "pause", "--id", f["id"])
        self.assertTrue(p["paused"])
        self.submit(form_xml(None)[1])
        self.run_all()
        self.assertEqual(self.rx.bodies("/paused"), [])
        self.assertEqual(self.records()[0]["state"], "pending")
        self.D("forwarders", "resume", "--id", f["id"])
        cc("tasks", "run", "--data", self.data, "--until-idle")
        self.assertEqual(len(self.rx.bodies("/paused")), 1)
        self.D("forwarders", "pause", "--id", f["id"])
        self.submit(form_xml(None)[1])
        self.run_all()
        self.D("forwarders", "delete", "--id", f["id"])
        self.assertEqual([r["state"] for r in self.records()], ["cancelled", "succeeded"])
        self.assertEqual(self.D("forwarders", "list"), [])
        self.D("forwarders", "pause", "--id", f["id"], expect=2)

    def test_worker_killed_mid_delivery(self):
        """kill -9 of the worker while it delivers: the records it sent but had not recorded are
        sent again (at least once), none is lost, and one recorded as succeeded is never sent
        again."""
        self.rx.plan["/crash"] = [("sleep", 0.03)]
        self.add("--url", self.rx.url("/crash"))
        n = 60
        ids = []
        for _ in range(n):
            fid, xml = form_xml(None)
            ids.append(fid)
            self.submit(xml)
        cc("pillows", "run", "--data", self.data, "--once", "--only", "forwarding")
        worker = subprocess.Popen([CC, "tasks", "run", "--data", self.data, "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while len(self.rx.bodies("/crash")) < n // 2 and time.time() < deadline:
            time.sleep(0.01)
        worker.kill()
        worker.wait()
        before = len(self.rx.bodies("/crash"))
        self.assertLess(before, n)
        recorded = {r["doc_id"] for r in self.records("--limit", "1000") if r["state"] == "succeeded"}
        # The lease (10 s) lapses; another worker reruns the task.
        cc("tasks", "run", "--data", self.data, "--until-idle")
        got = {}
        for r in self.rx.bodies("/crash"):
            fid = r["body"].decode().split("<instanceID>")[1].split("<")[0]
            got[fid] = got.get(fid, 0) + 1
        self.assertEqual(set(got), set(ids))  # none lost
        self.assertEqual({r["state"] for r in self.records("--limit", "1000")}, {"succeeded"})
        for fid in recorded:
            self.assertEqual(got[fid], 1, fid)  # recorded as succeeded: never sent again
        doubled = [f for f, c in got.items() if c > 1]
        self.assertLessEqual(len(doubled), 64)

    def test_bad_input(self):
        for args, what in [(["--url", "ftp://x"], "http"), (["--url", "http://x", "--kind", "case",
                           "--format", "form_xml"], "format"), (["--url", "http://x", "--auth", "bearer"], "token"),
                           (["--url", "http://x", "--header", "nocolon"], "header")]:
            p = subprocess.run([CC, "forwarders", "add", "--data", self.data, "--domain", "demo"] + args,
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 64, p.stdout + p.stderr)
            self.assertIn(what, (p.stdout + p.stderr).lower())
        self.assertEqual(self.D("forwarders", "list"), [])


class ForwardingPostgresTest(ForwardingTest):
    """The same pillow and delivery with the primary store (forms, cases) on PostgreSQL: records
    made, delivered byte for byte, case payloads read from it, retried after a 500 and a 503."""

    KEEP = {"test_form_xml_delivered_once_and_byte_identical",
            "test_500_then_200_retry_schedule_and_resend",
            "test_fail_fail_cancelled_with_tripling_waits",
            "test_case_formats_events_and_order_per_case"}

    def setUp(self):
        pg = os.environ.get("COMMCARE_TEST_PG")
        self.assertTrue(pg, "COMMCARE_TEST_PG is not set: run under scripts/with-test-servers")
        db = f"fwd_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        subprocess.run(["psql", "-q", f"{pg} dbname=postgres", "-c", f"CREATE DATABASE {db}"],
                       check=True)
        self.tmp = tempfile.mkdtemp(prefix="cc-fwd-pg-")
        self.data = os.path.join(self.tmp, "data")
        primary = {"kind": "postgres", "databases": [f"{pg} dbname={db}"]}
        cc("init", "--data", self.data, "--shards", "64", "--primary", json.dumps(primary))
        with open(os.path.join(self.data, "commcare.json")) as f:
            self.assertEqual(json.load(f)["primary"]["kind"], "postgres")


for _name in dir(ForwardingTest):  # only the tests above run again on PostgreSQL
    if _name.startswith("test_") and _name not in ForwardingPostgresTest.KEEP:
        setattr(ForwardingPostgresTest, _name, None)


class ForwardingRestTest(unittest.TestCase):
    """/a/{domain}/api/forwarders/ on `commcare serve`, whose pillows make the records and whose
    task workers deliver them."""

    @classmethod
    def setUpClass(cls):
        cls.rx = Receiver()
        cls.tmp = tempfile.mkdtemp(prefix="cc-fwd-rest-")
        cls.data = os.path.join(cls.tmp, "data")
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo")
        cls.proc = subprocess.Popen([CC, "serve", "--data", cls.data, "--listen", "127.0.0.1:0"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = cls.proc.stdout.readline()
        assert line, cls.proc.stderr.read()
        cls.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        cc("admin", "domain", "create", "--data", cls.data, "other")

    @classmethod
    def tearDownClass(cls):
        cls.proc.kill()
        cls.proc.wait()
        cls.proc.stdout.close()
        cls.proc.stderr.close()
        cls.rx.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def request(self, method, path, body=None, auth=("admin", "s3cret")):
        h = {}
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        if isinstance(body, dict):
            body = json.dumps(body)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, json.loads(data) if data[:1] in (b"{", b"[") else data

    def wait(self, path, n):
        for _ in range(600):
            if len(self.rx.bodies(path)) >= n:
                return
            time.sleep(0.05)
        self.fail(f"{path}: {len(self.rx.bodies(path))} of {n} deliveries")

    def test_rest_api(self):
        base = "/a/demo/api/forwarders/"
        self.assertEqual(self.request("GET", base), (200, {"objects": []}))
        self.assertEqual(self.request("GET", base, auth=None)[0], 401)
        s, body = self.request("POST", base, {"url": "ftp://x"})
        self.assertEqual(s, 400)
        self.assertIn("url", body["error"])
        s, body = self.request("POST", base, {"url": "http://x", "domain": "other"})
        self.assertEqual(s, 403)
        self.rx.plan["/rest"] = [500, 200]
        s, f = self.request("POST", base, {"url": self.rx.url("/rest"), "kind": "case",
                                           "auth": "basic", "username": "u", "password": "pw"})
        self.assertEqual(s, 201, f)
        self.assertEqual(f["password"], "***")
        self.assertEqual(self.request("GET", base + f["id"] + "/"), (200, f))
        self.assertEqual(self.request("GET", "/a/other/api/forwarders/" + f["id"] + "/")[0], 404)
        cid = "c-" + uuid.uuid4().hex
        s, _ = self.request("POST", "/a/demo/receiver/", form_xml(cid, create=True)[1])
        self.assertEqual(s, 201)
        self.wait("/rest", 1)
        for _ in range(100):
            s, recs = self.request("GET", base + "records/?state=failed")
            if recs["objects"]:
                break
            time.sleep(0.05)
        [rec] = recs["objects"]
        self.assertEqual((rec["doc_id"], rec["event"]), (cid, "create"))
        s, counts = self.request("GET", base + "records/counts")
        self.assertEqual((counts["failed"], counts["succeeded"]), (1, 0))
        self.assertEqual(self.request("POST", base + f["id"] + "/pause")[1]["paused"], True)
        s, body = self.request("POST", base + "records/resend_failed")
        self.assertEqual((s, body), (200, {"resent": 1}))
        time.sleep(0.5)
        self.assertEqual(len(self.rx.bodies("/rest")), 1)  # paused
        self.assertEqual(self.request("POST", base + f["id"] + "/resume")[1]["paused"], False)
        self.wait("/rest", 2)
        for _ in range(100):
            s, r = self.request("GET", base + f"records/{rec['id']}/")
            if r["state"] == "succeeded":
                break
            time.sleep(0.05)
        self.assertEqual([a["http_status"] for a in r["attempt_log"]], [500, 200])
        got = self.rx.bodies("/rest")[-1]
        self.assertEqual(got["headers"]["Authorization"], "Basic " + base64.b64encode(b"u:pw").decode())
        self.assertEqual(self.request("POST", base + f"records/{rec['id']}/resend")[0], 200)
        self.wait("/rest", 3)
        self.assertEqual(self.request("POST", base + "records/999999/resend")[0], 404)
        self.assertEqual(self.request("DELETE", base + f["id"] + "/"), (200, {"deleted": f["id"]}))
        self.assertEqual(self.request("GET", base), (200, {"objects": []}))


if __name__ == "__main__":
    unittest.main(verbosity=2)
