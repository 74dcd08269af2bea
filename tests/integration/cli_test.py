#!/usr/bin/env python3
"""The `commcare` command end to end: every subcommand, JSON output, exit codes, errors."""
import base64
import fcntl
import glob
import http.client
import json
import os
import re
import shutil
import sqlite3
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

CC = sys.argv.pop(1)
SAMPLES = sys.argv.pop(1)


def cc(*args, expect=0):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode} (wanted {expect}): {p.stdout}{p.stderr}")
    return p


def lines(p):
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cc-cli-")
        self.data = os.path.join(self.tmp, "data")
        out = lines(cc("init", "--data", self.data, "--shards", "32", "--databases", "2"))
        self.assertEqual(out, [{"data": self.data, "shards": 32, "databases": 2, "blob_store": "pack"}])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def submit(self, *files, **kw):
        args = ["submit", "--data", self.data, "--domain", kw.get("domain", "demo")]
        if "version" in kw:
            args += ["--openrosa-version", kw["version"]]
        return lines(cc(*args, *files, expect=kw.get("expect", 0)))

    def test_submit_all_samples_and_read_back(self):
        files = sorted(glob.glob(os.path.join(SAMPLES, "*.xml")))
        self.assertGreaterEqual(len(files), 30)
        out = self.submit(*files)
        self.assertEqual(len(out), len(files))
        for r in out:
            self.assertEqual(set(r), {"file", "status", "nature", "message", "form_id", "state"})
        by_name = {os.path.basename(r["file"]): r for r in out}
        self.assertEqual(by_name["receiverwrapper__missing_xmlns.xml"]["status"], 500)
        self.assertEqual(by_name["receiverwrapper__missing_xmlns.xml"]["state"], "submission_error_log")
        self.assertEqual(by_name["case-bugs__empty_id.xml"]["state"], "error")
        self.assertEqual(by_name["case-v2__basic_create.xml"]["nature"], "submit_success")

        case = lines(cc("case", "get", "--data", self.data, "--domain", "demo",
                        "ad38211be256653bceac8e2156475667"))[0]
        for key in ("case_id", "case_type", "case_name", "external_id", "owner_id", "date_opened",
                    "last_modified", "server_last_modified", "closed", "date_closed", "properties",
                    "indices", "opened_by", "closed_by", "modified_by", "deleted"):
            self.assertIn(key, case)
        self.assertEqual(case["external_id"], "someexternal")

        listed = lines(cc("case", "list", "--data", self.data, "--domain", "demo",
                          "--type", "cc_shine_client"))
        self.assertEqual(len(listed), 4)
        closed = lines(cc("case", "list", "--data", self.data, "--domain", "demo", "--closed", "true"))
        self.assertTrue(all(c["closed"] for c in closed) and closed)
        owned = lines(cc("case", "list", "--data", self.data, "--domain", "demo", "--owner",
                         "91cadfa4cb957cf021c76dfe31d206a6"))
        # simple_form.xml reuses case_ledger_form's instance id: it is an edit that drops both
        # cases; ...b stays live through case_ledger_form_2's update, ...c is deleted.
        self.assertEqual({c["case_id"][-1] for c in owned}, {"b"})
        self.assertEqual(lines(cc("case", "list", "--data", self.data, "--domain", "other")), [])

        hist = lines(cc("case", "history", "--data", self.data, "--domain", "demo",
                        "fbb69a88-1eca-463a-883e-1148b96fb03b"))
        self.assertIn("case_create", hist[0]["types"])

        form = lines(cc("form", "get", "--data", self.data, "--domain", "demo",
                        "ad38211be256653bceac8e2156475666"))[0]
        self.assertEqual(form["xmlns"], "http://commcarehq.org/test/submit")
        self.assertEqual(form["state"], "normal")
        xml = cc("form", "get", "--data", self.data, "--domain", "demo",
                 "ad38211be256653bceac8e2156475666", "--xml").stdout
        with open(os.path.join(SAMPLES, "receiverwrapper__form_with_case.xml")) as f:
            self.assertEqual(xml, f.read())

        check = lines(cc("check", "--data", self.data))[0]
        self.assertTrue(check["ok"], check)
        # Every sample is a stored form but the device log, which HQ keeps out of the forms
        # (receiverwrapper accepts it 201 without a form; issue 22 audit F1).
        self.assertEqual(by_name["receiverwrapper__device_log.xml"]["status"], 201)
        self.assertEqual(check["forms"], len(files) - 1)

    def test_archive_and_ledger(self):
        self.submit(os.path.join(SAMPLES, "receiverwrapper__case_ledger_form.xml"))
        led = lines(cc("ledger", "get", "--data", self.data, "--domain", "demo",
                       "fbb69a88-1eca-463a-883e-1148b96fb03b"))[0]
        self.assertEqual(led, {"stock": {"fbb69a88-1eca-463a-883e-1148b96fb03b": 10}})
        fid = "ad38211be256653bceac8e2156475664"
        out = lines(cc("form", "archive", "--data", self.data, "--domain", "demo", fid))[0]
        self.assertEqual(out["state"], "archived")
        case = lines(cc("case", "get", "--data", self.data, "--domain", "demo",
                        "fbb69a88-1eca-463a-883e-1148b96fb03b"))[0]
        self.assertTrue(case["deleted"])
        led = lines(cc("ledger", "get", "--data", self.data, "--domain", "demo",
                       "fbb69a88-1eca-463a-883e-1148b96fb03b"))[0]
        self.assertEqual(led["stock"]["fbb69a88-1eca-463a-883e-1148b96fb03b"], 0)
        err = lines(cc("form", "archive", "--data", self.data, "--domain", "demo", fid, expect=3))[0]
        self.assertIn("is archived, not normal", err["error"])
        out = lines(cc("form", "unarchive", "--data", self.data, "--domain", "demo", fid))[0]
        self.assertEqual(out["state"], "normal")
        case = lines(cc("case", "get", "--data", self.data, "--domain", "demo",
                        "fbb69a88-1eca-463a-883e-1148b96fb03b"))[0]
        self.assertFalse(case["deleted"])
        self.assertTrue(case["closed"])

    def test_openrosa_v3_and_errors(self):
        r = self.submit(os.path.join(SAMPLES, "case-bugs__empty_id.xml"), version="3.0")[0]
        self.assertEqual((r["status"], r["nature"]), (422, "processing_failure"))
        # A version that is no version number is refused; a newer one is kept (HQ's middleware).
        r = self.submit(os.path.join(SAMPLES, "case-v2__basic_create.xml"), version="v7")[0]
        self.assertEqual(r["status"], 400)
        self.assertIn("X-OpenRosa-Version", r["message"])
        missing = self.submit("/nonexistent.xml", expect=2)[0]
        self.assertEqual(missing["error"], "cannot read file")

    def test_errors_are_json_with_nonzero_exit(self):
        e = lines(cc("case", "get", "--data", self.data, "--domain", "demo", "nope", expect=2))[0]
        self.assertIn("case 'nope' not found", e["error"])
        e = lines(cc("form", "get", "--data", self.data, "--domain", "demo", "nope", expect=2))[0]
        self.assertIn("form 'nope' not found", e["error"])
        e = cc("case", "get", "--domain", "demo", "x", expect=64)
        self.assertIn("--data", e.stderr)
        e = cc("frobnicate", "--data", self.data, expect=64)
        self.assertIn("unknown command frobnicate", e.stderr)
        e = lines(cc("init", "--data", self.data, expect=1))[0]
        self.assertIn("already initialised", e["error"])
        e = cc("case", "list", "--data", self.data, "--domain", "d", "--closed", "maybe", expect=64)
        self.assertIn("--closed", e.stderr)
        e = lines(cc("case", "get", "--data", os.path.join(self.tmp, "nothing"), "--domain", "d", "x",
                     expect=2))[0]
        self.assertIn("not a libcommcare data directory", e["error"])

    def test_second_writer_is_refused_readers_are_not(self):
        self.submit(os.path.join(SAMPLES, "case-v2__basic_create.xml"))
        with open(os.path.join(self.data, "LOCK"), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            e = lines(cc("submit", "--data", self.data, "--domain", "demo",
                         os.path.join(SAMPLES, "case-v2__basic_update.xml"), expect=3))[0]
            self.assertIn("locked by another writing process", e["error"])
            c = lines(cc("case", "get", "--data", self.data, "--domain", "demo", "foo-case-id"))[0]
            self.assertEqual(c["case_id"], "foo-case-id")
            check = lines(cc("check", "--data", self.data))[0]
            self.assertTrue(check["ok"])

    def new_database(self, name):
        """A new database on the test PostgreSQL; its connection string."""
        pg = os.environ["COMMCARE_TEST_PG"]
        subprocess.run(["psql", "-q", pg + " dbname=postgres", "-c", f"CREATE DATABASE {name}"],
                       check=True)
        return pg + f" dbname={name}"

    def with_new_pillows(self, host, tag):
        """A copy of a host file whose pillows use a new database; its path."""
        with open(host) as f:
            h = json.load(f)
        h["pillows"]["database"] = self.new_database(f"p{os.getpid()}_{tag}")
        path = os.path.join(self.tmp, tag + ".json")
        with open(path, "w") as f:
            json.dump(h, f)
        return path

    def production_host(self, tag, partitions):
        """A host file on the test servers (scripts/with-test-servers): PostgreSQL (2 new
        databases for the shard map, a third for users and sync logs, a fourth for the
        pillows), S3 and Kafka; (path, the shard map's connection strings)."""
        env = {k: os.environ.get(k) for k in ("COMMCARE_TEST_PG", "COMMCARE_TEST_S3",
                                               "COMMCARE_TEST_KAFKA", "COMMCARE_TEST_KAFKA_CONTROL")}
        if not all(env.values()):
            if os.environ.get("CI") == "true":
                self.fail(f"CI=true but the test servers are not all set: {env}")
            self.skipTest("no test servers (run under scripts/with-test-servers)")
        dbs = [self.new_database(f"{tag}_{i}") for i in ("0", "1", "meta", "pillows")]
        pillows = dbs.pop()
        meta = dbs.pop()
        host = os.path.join(self.tmp, tag + ".json")
        with open(host, "w") as f:
            json.dump({"shards": 16, "databases": 2,
                       "primary": {"kind": "postgres", "databases": dbs},
                       "meta": {"kind": "postgres", "database": meta},
                       "pillows": {"kind": "postgres", "database": pillows},
                       "blob_store": {"kind": "s3", "endpoint": env["COMMCARE_TEST_S3"],
                                      "bucket": "blobs", "access_key": "S3RVER",
                                      "secret_key": "S3RVER", "prefix": tag + "/"},
                       "change_log": {"kind": "kafka",
                                      "bootstrap_servers": env["COMMCARE_TEST_KAFKA"],
                                      "topic_control": env["COMMCARE_TEST_KAFKA_CONTROL"],
                                      "topic_prefix": tag + ".", "partitions": partitions,
                                      "session_timeout_ms": 4000}}, f)
        return host, dbs

    def test_production_backends_across_processes(self):
        """commcare init --config with PostgreSQL (2 databases), S3 and Kafka from
        scripts/with-test-servers; every command below is its own process."""
        host, dbs = self.production_host(f"cli{os.getpid()}", 4)
        data = os.path.join(self.tmp, "prod")
        out = lines(cc("init", "--data", data, "--config", host))[0]
        self.assertEqual((out["shards"], out["databases"]), (16, 2))
        with open(os.path.join(data, "commcare.json")) as f:
            stored = json.load(f)
        self.assertEqual(stored["primary"]["databases"], dbs)
        bad = os.path.join(self.tmp, "bad.json")
        with open(bad, "w") as f:
            json.dump({"shards": 16, "colour": "red"}, f)
        err = lines(cc("init", "--data", data + "-bad", "--config", bad, expect=1))[0]
        self.assertIn("colour", err["error"])
        files = sorted(glob.glob(os.path.join(SAMPLES, "*.xml")))
        half = len(files) // 2
        sub = lines(cc("submit", "--data", data, "--domain", "demo", *files[:half]))
        sub += lines(cc("submit", "--data", data, "--domain", "demo", *files[half:]))
        stored_forms = [r for r in sub if r.get("form_id")]
        self.assertGreater(len(stored_forms), 10)
        first = stored_forms[0]
        xml = cc("form", "get", "--data", data, "--domain", "demo", first["form_id"], "--xml").stdout
        self.assertIn("<", xml)  # read back from the bucket
        live = {c["case_id"] for c in lines(cc("case", "list", "--data", data, "--domain", "demo"))}
        self.assertTrue(live)
        changes = lines(cc("changes", "--data", data, "--topic", "form-sql"))
        self.assertTrue({c["key"] for c in changes} >= {r["form_id"] for r in stored_forms})
        ran = lines(cc("pillows", "run", "--data", data, "--once"))[0]
        self.assertGreater(ran["processed"], 0)
        status = lines(cc("pillows", "status", "--data", data))[0]
        self.assertTrue(all(p["lag"] == 0 for p in status), status)
        found = json.loads(cc("search", "--data", data, "--domain", "demo", "--limit", "5000").stdout)
        self.assertEqual({c["case_id"] for c in found["cases"]}, live)
        check = lines(cc("check", "--data", data))[0]
        self.assertTrue(check["ok"], check)

    def test_scale_out_two_servers_two_pillow_processes(self):
        """Two `serve --config` processes and two `pillows run --config` processes on one
        deployment (PostgreSQL x2, S3, Kafka with 8 partitions): concurrent updates of the same
        cases through both servers lose nothing, every change reaches the log once, and the
        pillow processes split the partitions and index every live case."""
        host, _ = self.production_host(f"scale{os.getpid()}", 8)
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="pw",
                   COMMCARE_DOMAIN="demo")
        servers, ports = [], []
        try:
            for k in range(2):
                p = subprocess.Popen([CC, "serve", "--config", host, "--data",
                                      os.path.join(self.tmp, f"server{k}"), "--listen",
                                      "127.0.0.1:0", "--no-pillows"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env)
                servers.append(p)
                line = p.stdout.readline()
                self.assertTrue(line, f"server {k} did not start")
                ports.append(int(json.loads(line)["listening"].rsplit(":", 1)[1]))
            auth = "Basic " + base64.b64encode(b"admin:pw").decode()
            threads_n, forms_n, shared_n = 4, 12, 3
            failures = []

            def submitter(t):
                conn = http.client.HTTPConnection("127.0.0.1", ports[t % 2], timeout=60)
                for i in range(forms_n):
                    blocks = "".join(
                        f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="so-{c}" '
                        f'date_modified="2020-01-01T00:00:00Z" user_id="u1"><update>'
                        f"<f{t}_{i}>1</f{t}_{i}></update></case>" for c in range(shared_n))
                    xml = ('<?xml version="1.0"?><data xmlns="http://example.org/scale">'
                           '<meta xmlns="http://openrosa.org/jr/xforms">'
                           f"<instanceID>scale-{t}-{i}</instanceID><userID>u1</userID></meta>"
                           f'<case xmlns="http://commcarehq.org/case/transaction/v2" '
                           f'case_id="own-{t}-{i}" date_modified="2020-01-01T00:00:00Z" user_id="u1">'
                           "<create><case_type>t</case_type><case_name>n</case_name>"
                           "<owner_id>u1</owner_id></create></case>" + blocks + "</data>")
                    conn.request("POST", "/a/demo/receiver/", body=xml,
                                 headers={"Authorization": auth, "Content-Type": "text/xml"})
                    r = conn.getresponse()
                    body = r.read()
                    if r.status != 201:
                        failures.append((r.status, body))
                conn.close()

            ts = [threading.Thread(target=submitter, args=(t,)) for t in range(threads_n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            self.assertEqual(failures, [])

            def call(k, method, path, body=None, user=("admin", "pw")):
                conn = http.client.HTTPConnection("127.0.0.1", ports[k], timeout=60)
                headers = {"Authorization": "Basic " + base64.b64encode(
                    ":".join(user).encode()).decode()}
                if body is not None:
                    headers["Content-Type"] = "application/json"
                    body = json.dumps(body)
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                return r.status, data

            # The servers share users and sync logs (the host's "meta" database): a mobile
            # worker made through one logs in through the other, a sync token from one is
            # good on the other, and a deactivation counts at once on both.
            s, body = call(0, "POST", "/a/demo/api/users/",
                           {"username": "nurse", "password": "pw-nurse"})
            self.assertEqual(s, 201, body)
            nurse = json.loads(body)
            nurse_auth = ("nurse", "pw-nurse")
            s, payload = call(1, "GET", "/a/demo/phone/restore/?version=2.0", user=nurse_auth)
            self.assertEqual(s, 200, payload)
            token = re.search(rb"<restore_id>([0-9a-f]+)</restore_id>", payload).group(1).decode()
            xml = ('<?xml version="1.0"?><data xmlns="http://example.org/scale">'
                   '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>for-nurse</instanceID>'
                   '</meta><case xmlns="http://commcarehq.org/case/transaction/v2" '
                   'case_id="nurse-case" date_modified="2020-01-01T00:00:00Z"><create>'
                   "<case_type>t</case_type><case_name>n</case_name>"
                   f"<owner_id>{nurse['user_id']}</owner_id></create></case></data>")
            conn = http.client.HTTPConnection("127.0.0.1", ports[1], timeout=60)
            conn.request("POST", "/a/demo/receiver/", body=xml,
                         headers={"Authorization": auth, "Content-Type": "text/xml"})
            self.assertEqual(conn.getresponse().status, 201)
            conn.close()
            s, payload = call(0, "GET", f"/a/demo/phone/restore/?version=2.0&since={token}",
                              user=nurse_auth)
            self.assertEqual(s, 200, payload)
            self.assertIn(b'case_id="nurse-case"', payload)
            self.assertEqual(call(0, "GET", "/a/demo/api/users/nurse")[0], 200)
            s, body = call(1, "PUT", "/a/demo/api/users/nurse",
                           {"_rev": nurse["_rev"], "is_active": False})
            self.assertEqual(s, 200, body)
            self.assertEqual(call(0, "GET", "/a/demo/phone/restore/?version=2.0",
                                  user=nurse_auth)[0], 401)
        finally:
            for p in servers:
                p.send_signal(signal.SIGTERM)
            for p in servers:
                p.wait(timeout=60)
                p.stdout.close()
        # Another process reads the shared store: no update was lost.
        reader = os.path.join(self.tmp, "reader")
        for c in range(shared_n):
            got = lines(cc("case", "get", "--config", host, "--data", reader, "--domain", "demo",
                           f"so-{c}"))[0]
            keys = {k for k in got["properties"] if k.startswith("f")}
            self.assertEqual(keys, {f"f{t}_{i}" for t in range(threads_n) for i in range(forms_n)})
            # A replay of the case's transactions (a single process) gives the same case.
            rebuilt = lines(cc("case", "rebuild", "--config", host, "--data", reader, "--domain",
                               "demo", f"so-{c}"))[0]
            self.assertEqual(rebuilt["properties"], got["properties"])
        # Every change in the log once: the servers relayed under one lease (check drains the
        # rest and counts the outbox).
        check = lines(cc("check", "--config", host, "--data", reader))[0]
        self.assertTrue(check["ok"], check)
        self.assertEqual(check["outbox_rows"], 0)
        forms = lines(cc("changes", "--config", host, "--data", reader, "--topic", "form-sql"))
        self.assertEqual(sorted(c["key"] for c in forms),
                         sorted([f"scale-{t}-{i}" for t in range(threads_n) for i in range(forms_n)]
                                + ["for-nurse"]))
        cases = lines(cc("changes", "--config", host, "--data", reader, "--topic", "case-sql"))
        per_case = {}
        for c in cases:
            per_case[c["key"]] = per_case.get(c["key"], 0) + 1
        # (one record per form that touched the case, and one for its rebuild above)
        self.assertEqual({per_case[f"so-{c}"] for c in range(shared_n)}, {threads_n * forms_n + 1})
        self.assertEqual(len(cases), threads_n * forms_n * (shared_n + 1) + shared_n + 1)
        # A host file that disagrees with the directory it is used with is refused.
        other = os.path.join(self.tmp, "other.json")
        with open(other, "w") as f:
            json.dump({"shards": 32, "databases": 2}, f)
        e = lines(cc("case", "list", "--config", other, "--data", reader, "--domain", "demo",
                     expect=3))[0]
        self.assertIn('another "shards"', e["error"])
        # Two pillow processes, each with a data directory of its own, split the 8 partitions
        # and share the host's pillow database (checkpoints, case search, UCR tables).
        pdir = os.path.join(self.tmp, "pillows")
        lines(cc("migrate", "--config", host, "--data", pdir))
        ucr = os.path.join(self.tmp, "ucr.json")
        with open(ucr, "w") as f:
            json.dump({"domain": "demo", "table_id": "by_owner", "referenced_doc_type": "CommCareCase",
                       "configured_indicators": [{"type": "raw", "column_id": "owner",
                                                  "property_name": "owner_id"},
                                                 {"type": "raw", "column_id": "name",
                                                  "property_name": "name"}]}, f)
        lines(cc("ucr", "load", "--config", host, "--data", pdir, ucr))
        parts = []
        for k in range(2):
            st = lines(cc("pillows", "status", "--config", host, "--data", pdir,
                          "--num-processes", "2", "--process-num", str(k)))[0]
            parts.append({(p["pillow"], q["topic"], q["partition"]) for p in st for q in p["partitions"]})
        self.assertFalse(parts[0] & parts[1])  # no partition owned by both
        for pillow, topic in {(pl, tp) for pl, tp, _ in parts[0] | parts[1]}:  # all 8 owned
            self.assertEqual({n for pl, tp, n in parts[0] | parts[1] if (pl, tp) == (pillow, topic)},
                             set(range(8)))
        runs = [subprocess.Popen([CC, "pillows", "run", "--config", host, "--data",
                                  os.path.join(self.tmp, f"pillows{k}"),
                                  "--num-processes", "2", "--process-num", str(k), "--once"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for k in range(2)]
        for p in runs:
            out, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, out + err)
            self.assertGreater(json.loads(out)["processed"], 0)
        status = lines(cc("pillows", "status", "--config", host, "--data", pdir))[0]
        self.assertTrue(all(p["lag"] == 0 for p in status), status)
        for k in range(2):  # the pillow databases are in PostgreSQL, not in the directories
            self.assertFalse(os.path.exists(os.path.join(self.tmp, f"pillows{k}", "pillows")))
        live = {c["case_id"] for c in lines(cc("case", "list", "--config", host, "--data", reader,
                                               "--domain", "demo"))}
        self.assertEqual(len(live), threads_n * forms_n + shared_n + 1)  # and nurse-case
        found = json.loads(cc("search", "--config", host, "--data", pdir, "--domain", "demo",
                              "--limit", "5000").stdout)
        self.assertEqual({c["case_id"] for c in found["cases"]}, live)
        # The servers answer from the shared pillow database too.
        p = subprocess.Popen([CC, "serve", "--config", host, "--data",
                              os.path.join(self.tmp, "server0"), "--listen", "127.0.0.1:0",
                              "--no-pillows"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, env=env)
        try:
            port = int(json.loads(p.stdout.readline())["listening"].rsplit(":", 1)[1])
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/a/demo/api/case/v2/?limit=5000", headers={"Authorization": auth})
            r = conn.getresponse()
            body = r.read()
            conn.close()
            self.assertEqual(r.status, 200, body)
            self.assertEqual({c["case_id"] for c in json.loads(body)["cases"]}, live)
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
            p.stdout.close()
        # ... and equal a rebuild: one process from offset 0 into a fresh pillow database.
        host2 = self.with_new_pillows(host, "rebuild")
        fresh = os.path.join(self.tmp, "pillows-rebuild")
        lines(cc("migrate", "--config", host2, "--data", fresh))
        lines(cc("ucr", "load", "--config", host2, "--data", fresh, ucr))
        lines(cc("pillows", "run", "--config", host2, "--data", fresh, "--once"))
        rebuilt = json.loads(cc("search", "--config", host2, "--data", fresh, "--domain", "demo",
                                "--limit", "5000").stdout)
        by_id = lambda r: sorted(({k: v for k, v in c.items() if k != "indexed_on"}
                                  for c in r["cases"]), key=lambda c: c["case_id"])
        self.assertEqual(by_id(found), by_id(rebuilt))
        rows = lambda h, d: sorted(json.dumps({k: v for k, v in r.items() if k != "inserted_at"},
                                           sort_keys=True) for r in lines(
            cc("ucr", "rows", "--config", h, "--data", d, "--domain", "demo", "--table", "by_owner",
               "--limit", "5000")))
        split_rows = rows(host, pdir)
        self.assertEqual(len(split_rows), len(live))
        self.assertEqual(split_rows, rows(host2, fresh))
        # Two members of a Kafka consumer group share the partitions out between them and
        # index every live case (into a pillow database of their own); --once does not go
        # with a group.
        host = self.with_new_pillows(host, "group")
        gdir = os.path.join(self.tmp, "pillows-group")
        e = lines(cc("pillows", "run", "--config", host, "--data", gdir, "--consumer-group", "g",
                     "--once", expect=1))[0]
        self.assertIn("--consumer-group", e["error"])
        members = [subprocess.Popen([CC, "pillows", "run", "--config", host, "--data", gdir,
                                     "--only", "case-search", "--consumer-group", "scale"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(2)]
        try:
            deadline = time.time() + 90
            while time.time() < deadline:
                st = lines(cc("pillows", "status", "--config", host, "--data", gdir, "--only",
                              "case-search"))[0]
                if st and st[0]["partitions"] and st[0]["lag"] == 0:
                    break
                time.sleep(0.5)
            self.assertEqual(st[0]["lag"], 0, st)
            grouped = json.loads(cc("search", "--config", host, "--data", gdir, "--domain", "demo",
                                    "--limit", "5000").stdout)
            self.assertEqual(by_id(grouped), by_id(rebuilt))
        finally:
            for p in members:
                p.send_signal(signal.SIGTERM)
            for p in members:
                out, err = p.communicate(timeout=60)
                self.assertEqual(p.returncode, 0, out + err)

    def test_changes_pillows_search_and_ucr_on_the_samples(self):
        files = sorted(glob.glob(os.path.join(SAMPLES, "*.xml")))
        out = self.submit(*files)
        stored = {r["form_id"] for r in out if r.get("form_id")}
        # The submit process relayed everything before it exited: one form-sql record per form.
        changes = lines(cc("changes", "--data", self.data, "--topic", "form-sql"))
        self.assertTrue({c["key"] for c in changes} >= stored)
        deprecated = [c for c in changes if c["change"]["document_type"] == "XFormDeprecated"]
        self.assertEqual(len(deprecated), 2)  # the two edits' originals, moved aside
        self.assertEqual(changes[0]["change"]["data_source_type"], "sql")
        one = lines(cc("changes", "--data", self.data, "--topic", "form-sql", "--partition", "0",
                       "--limit", "1"))
        self.assertLessEqual(len(one), 1)
        # Pillows beside another writer: read-only engine, secondary change log.
        config = os.path.join(self.tmp, "ucr.json")
        with open(config, "w") as f:
            json.dump({"domain": "demo", "table_id": "by_owner", "referenced_doc_type": "CommCareCase",
                       "configured_indicators": [{"type": "raw", "column_id": "owner",
                                                  "property_name": "owner_id"}]}, f)
        with open(os.path.join(self.data, "LOCK"), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            ran = lines(cc("pillows", "run", "--data", self.data, "--once"))[0]
            self.assertGreater(ran["processed"], 0)
            self.assertEqual(lines(cc("ucr", "load", "--data", self.data, config))[0]["rows"] > 0, True)
        status = lines(cc("pillows", "status", "--data", self.data))[0]
        self.assertEqual({p["pillow"] for p in status},
                         {"case-search", "read-copy", "ucr", "forwarding"})
        self.assertTrue(all(p["lag"] == 0 for p in status), status)
        # The index holds every live case of the domain.
        live = {c["case_id"] for c in lines(cc("case", "list", "--data", self.data, "--domain", "demo"))}
        found = json.loads(cc("search", "--data", self.data, "--domain", "demo", "--limit", "5000").stdout)
        self.assertEqual({c["case_id"] for c in found["cases"]}, live)
        self.assertIsNone(found["next"])
        rows = lines(cc("ucr", "rows", "--data", self.data, "--domain", "demo", "--table", "by_owner"))
        self.assertEqual({r["doc_id"] for r in rows}, live)
        # Bad input names the problem.
        e = cc("changes", "--data", self.data, "--partition", "x", expect=64)
        self.assertIn("--partition", e.stderr)
        e = cc("pillows", "frob", "--data", self.data, expect=64)
        self.assertIn("frob", e.stderr)
        e = cc("pillows", "requeue", "--data", self.data, expect=64)
        self.assertIn("--pillow", e.stderr)
        e = cc("search", "--data", self.data, expect=64)
        self.assertIn("--domain", e.stderr)
        e = lines(cc("search", "--data", self.data, "--domain", "demo", "--range", "age", expect=1))[0]
        self.assertIn("key:op:value", e["error"])
        with open(config, "w") as f:
            f.write('{"domain":"demo","table_id":"t","referenced_doc_type":"CommCareCase",'
                    '"configured_indicators":[{"type":"expression","column_id":"a","datatype":"string",'
                    '"expression":{"type":"bogus"}}]}')
        e = lines(cc("ucr", "load", "--data", self.data, config, expect=1))[0]
        self.assertEqual(e["error"], "configured_indicators[0].expression.type: unknown expression type 'bogus'")
        e = lines(cc("ucr", "rows", "--data", self.data, "--domain", "demo", "--table", "none", expect=2))[0]
        self.assertIn("no UCR data source", e["error"])
        e = lines(cc("pillows", "retries", "--data", self.data, "--pillow", "nope", expect=2))[0]
        self.assertIn("no pillow named nope", e["error"])

    def test_ucr_table_of_an_older_version_is_renamed(self):
        # Before a UCR table's name was one data source's alone it was ucr_<domain>_<table_id>:
        # a store from then keeps its rows once a pillow host opens it.
        self.submit(*sorted(glob.glob(os.path.join(SAMPLES, "*.xml"))))
        lines(cc("pillows", "run", "--data", self.data, "--once"))  # caught up: rows stay as loaded
        config = os.path.join(self.tmp, "ucr.json")
        with open(config, "w") as f:
            json.dump({"domain": "demo", "table_id": "by-owner", "referenced_doc_type": "CommCareCase",
                       "configured_indicators": [{"type": "raw", "column_id": "owner",
                                                  "property_name": "owner_id"}]}, f)
        self.assertGreater(lines(cc("ucr", "load", "--data", self.data, config))[0]["rows"], 0)
        before = lines(cc("ucr", "rows", "--data", self.data, "--domain", "demo", "--table", "by-owner"))
        db = sqlite3.connect(os.path.join(self.data, "pillows", "ucr.sqlite"))
        (table,) = db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE "
                              "'ucr_demo_by_owner_%'").fetchone()
        self.assertRegex(table, r"^ucr_demo_by_owner_[0-9a-f]{12}$")
        db.execute(f'ALTER TABLE "{table}" RENAME TO "ucr_demo_by_owner"')
        db.commit()
        db.close()
        lines(cc("pillows", "run", "--data", self.data, "--once"))
        after = lines(cc("ucr", "rows", "--data", self.data, "--domain", "demo", "--table", "by-owner"))
        self.assertEqual(after, before)

    def test_pillow_status_after_catching_up_without_ucr_sources(self):
        # The ucr pillow skips every change while no data source is loaded: its skips are
        # checkpointed, so it is not shown behind; seconds print as plain decimals.
        self.submit(*sorted(glob.glob(os.path.join(SAMPLES, "*.xml"))))
        worker = subprocess.Popen([CC, "pillows", "run", "--data", self.data],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertTrue(worker.stderr.readline().startswith("pillows running"))
            deadline = time.time() + 20
            while True:  # while the worker runs (no checkpoint of its exit to help)
                out = cc("pillows", "status", "--data", self.data).stdout
                lags = {p["pillow"]: p["lag"] for p in json.loads(out)}
                if set(lags.values()) == {0} or time.time() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual(lags, {"case-search": 0, "read-copy": 0, "ucr": 0, "forwarding": 0})
            self.assertNotRegex(out, r"[0-9]E-?[0-9]")
            self.assertRegex(out, r'"lag_seconds":[0-9]+\.[0-9]{3}[,}]')
        finally:
            worker.terminate()
            worker.communicate(timeout=30)

    def test_api_keys_create_list_revoke(self):
        lines(cc("admin", "domain", "create", "--data", self.data, "clinic"))
        lines(cc("admin", "user", "create", "--data", self.data, "--domain", "clinic",
                 "--username", "nurse", "--password", "pw-nurse"))
        k1 = lines(cc("admin", "apikey", "create", "--data", self.data, "--username", "nurse"))[0]
        k2 = lines(cc("admin", "apikey", "create", "--data", self.data, "--username", "nurse",
                      "--expires-days", "30"))[0]
        self.assertEqual(len(k1["key"]), 40)
        self.assertIsNone(k1["expires"])
        self.assertTrue(k2["expires"].endswith("Z"))
        listed = lines(cc("admin", "apikey", "list", "--data", self.data, "--username", "nurse"))[0]
        self.assertEqual({k["id"] for k in listed["api_keys"]}, {k1["id"], k2["id"]})
        self.assertNotIn(k1["key"], json.dumps(listed))
        lines(cc("admin", "apikey", "revoke", "--data", self.data, "--username", "nurse", "--id", k1["id"]))
        listed = lines(cc("admin", "apikey", "list", "--data", self.data, "--username", "nurse"))[0]
        self.assertEqual([k["id"] for k in listed["api_keys"]], [k2["id"]])
        e = lines(cc("admin", "apikey", "revoke", "--data", self.data, "--username", "nurse",
                     "--id", k1["id"], expect=2))[0]
        self.assertIn("no API key", e["error"])
        e = lines(cc("admin", "apikey", "revoke", "--data", self.data, "--username", "nurse", expect=1))[0]
        self.assertIn("--all", e["error"])
        e = cc("admin", "apikey", "create", "--data", self.data, "--username", "nurse",
               "--expires-days", "0", expect=64)
        self.assertIn("--expires-days", e.stderr)
        lines(cc("admin", "apikey", "revoke", "--data", self.data, "--username", "nurse", "--all"))
        listed = lines(cc("admin", "apikey", "list", "--data", self.data, "--username", "nurse"))[0]
        self.assertEqual(listed["api_keys"], [])
        # The data directory is its owner's alone.
        self.assertEqual(os.stat(self.data).st_mode & 0o777, 0o700)


if __name__ == "__main__":
    unittest.main(verbosity=2)
