#!/usr/bin/env python3
"""`commcare export cases|forms` end to end (JSON line, CSV content, XLSX sheets, usage errors),
`commcare export saved ...`, and the REST face (POST /a/{domain}/api/exports/, GET
.../{task_id}/download, saved definitions, expiry), on the file export store and on S3 (the
s3rver of scripts/with-test-servers), with a big export streamed in bounded memory."""
import base64
import csv
import hashlib
import http.client
import time
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipfile

CC = sys.argv.pop(1)
SAMPLES = sys.argv.pop(1)
FORM = os.path.join(SAMPLES, "receiverwrapper__form_with_case.xml")


def cc(*args, expect=0):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode} (wanted {expect}): {p.stdout}{p.stderr}")
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


class ExportCliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cc-export-cli-")
        self.data = os.path.join(self.tmp, "data")
        cc("init", "--data", self.data)
        cc("submit", "--data", self.data, "--domain", "demo", FORM)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_cases_csv(self):
        out = os.path.join(self.tmp, "c.csv")
        [line] = cc("export", "cases", "--data", self.data, "--domain", "demo", "--format", "csv",
                    "--out", out)
        self.assertEqual(line, {"rows": 1, "file": out, "tables": ["Cases"]})
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(rows[0]["case_type"], "test_case_type")
        self.assertEqual(rows[0]["closed_on"], "---")
        [line] = cc("export", "cases", "--data", self.data, "--domain", "demo", "--type", "nope",
                    "--columns", "case_id,name", "--out", out)
        self.assertEqual(line["rows"], 0)
        with open(out, newline="") as f:
            self.assertEqual(f.read(), "case_id,name\r\n")

    def test_forms_xlsx(self):
        out = os.path.join(self.tmp, "f.xlsx")
        [line] = cc("export", "forms", "--data", self.data, "--domain", "demo", "--xmlns",
                    "http://commcarehq.org/test/submit", "--received-since", "2000-01-01",
                    "--format", "xlsx", "--out", out)
        self.assertEqual(line["rows"], 1)
        with zipfile.ZipFile(out) as z:
            sheet = z.read("xl/worksheets/sheet1.xml").decode()
        self.assertIn("form_id", sheet)

    def test_saved_definitions(self):
        d = {"kind": "case", "name": "daily", "columns": ["case_id"],
             "schedule": {"cron": "0 6 * * *", "time_zone": "Africa/Nairobi"}}
        [line] = cc("export", "saved", "set", "--data", self.data, "--domain", "demo",
                    "--json", json.dumps(d))
        self.assertEqual(line["schedule_name"], "export:demo:daily")
        self.assertEqual(line["domain"], "demo")
        [sched] = [s for s in cc("tasks", "schedules", "--data", self.data)
                   if s["name"] == "export:demo:daily"]
        self.assertEqual((sched["cron"], sched["time_zone"]), ("0 6 * * *", "Africa/Nairobi"))
        [listed] = cc("export", "saved", "list", "--data", self.data, "--domain", "demo")
        self.assertEqual(listed["name"], "daily")
        [shown] = cc("export", "saved", "show", "--data", self.data, "--domain", "demo",
                     "--name", "daily")
        self.assertEqual(shown["schedule"]["cron"], "0 6 * * *")
        self.assertNotIn("latest", shown)
        d["schedule"]["cron"] = "0 25 * * *"
        [err] = cc("export", "saved", "set", "--data", self.data, "--domain", "demo",
                   "--json", json.dumps(d), expect=64)
        self.assertIn("schedule.cron", err["error"])
        cc("export", "saved", "delete", "--data", self.data, "--domain", "demo", "--name", "daily")
        self.assertEqual([s for s in cc("tasks", "schedules", "--data", self.data)
                          if s["name"] == "export:demo:daily"], [])
        cc("export", "saved", "show", "--data", self.data, "--domain", "demo", "--name", "daily",
           expect=2)

    def test_usage_errors(self):
        [err] = cc("export", "forms", "--data", self.data, "--domain", "demo", "--xmlns", "x",
                   "--columns", "bogus", "--out", os.path.join(self.tmp, "x.csv"), expect=64)
        self.assertIn("bogus", err["error"])


def case_form(i, width=32):
    """A form creating case c<i> (its id padded to width), type big."""
    cid = f"c{i:0{width - 1}d}"
    return (f'<?xml version="1.0"?><data xmlns="http://example.org/big"><meta '
            f'xmlns="http://openrosa.org/jr/xforms"><instanceID>big-f{i}</instanceID><userID>u1'
            f'</userID></meta><case xmlns="http://commcarehq.org/case/transaction/v2" '
            f'case_id="{cid}" date_modified="2020-01-01T00:00:00Z" user_id="u1"><create>'
            f'<case_type>big</case_type><case_name>n{i}</case_name><owner_id>o1</owner_id>'
            f'</create></case></data>').encode(), cid


class RestServer:
    """`commcare serve` on a data directory (set up with `init_args` first when given)."""

    def start(self, init_args=()):
        self.tmp = tempfile.mkdtemp(prefix="cc-export-rest-")
        self.data = os.path.join(self.tmp, "data")
        if init_args:
            cc("init", "--data", self.data, *init_args)
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo")
        self.proc = subprocess.Popen(
            [CC, "serve", "--data", self.data, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def open(self, method, path, body=None):
        h = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request(method, path, body=body, headers=h)
        return conn, conn.getresponse()

    def request(self, method, path, body=None):
        conn, r = self.open(method, path, body)
        data = r.read()
        conn.close()
        return r.status, data

    def submit(self, xml):
        status, body = self.request("POST", "/a/demo/receiver/", xml)
        assert status == 201, body

    def export(self, definition):
        """POSTs an export and waits for it: (its task id, the task)."""
        status, body = self.request("POST", "/a/demo/api/exports/", json.dumps(definition))
        assert status == 202, body
        task = json.loads(body)
        for _ in range(1200):
            status, body = self.request("GET", f"/a/demo/api/tasks/{task['id']}/")
            t = json.loads(body)
            if t["state"] in ("succeeded", "dead", "cancelled"):
                assert t["state"] == "succeeded", t
                return task["id"], t
            time.sleep(0.05)
        raise AssertionError(f"export {task['id']} did not finish")

    def reset_peak_rss(self):
        """Resets the server's VmHWM to its current RSS (Linux 4.0+), so that a later peak is
        the download's alone; False where that is refused."""
        try:
            with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def peak_rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM")


class ExportRestTest(unittest.TestCase, RestServer):
    def setUp(self):
        self.start()

    def tearDown(self):
        self.stop()

    def test_post_then_download(self):
        with open(FORM, "rb") as f:
            self.submit(f.read())
        status, body = self.request("POST", "/a/demo/api/exports/",
                                    json.dumps({"kind": "case", "filterz": {}}))
        self.assertEqual(status, 400)
        self.assertIn(b"filterz", body)
        status, body = self.request("POST", "/a/demo/api/exports/",
                                    json.dumps({"kind": "case", "columns": ["case_id", "name"]}))
        self.assertEqual(status, 202, body)
        task = json.loads(body)
        self.assertEqual(task["type"], "export.run")
        for _ in range(200):
            status, body = self.request("GET", f"/a/demo/api/exports/{task['id']}/download")
            if status != 409:
                break
            time.sleep(0.05)
        self.assertEqual(status, 200, body)
        self.assertEqual(body.decode(), "case_id,name\r\nad38211be256653bceac8e2156475667,test case name\r\n")
        status, _ = self.request("GET", "/a/demo/api/exports/999999/download")
        self.assertEqual(status, 404)
        _, t = self.export({"kind": "case"})
        self.assertEqual(t["result"]["key"], f"exports/demo/{t['id']}.csv")
        self.assertIn("expires_at", t["result"])

    def test_expired_file_is_gone(self):
        tid, t = self.export({"kind": "case", "columns": ["case_id"], "expiry_seconds": 1})
        status, _ = self.request("GET", f"/a/demo/api/exports/{tid}/download")
        self.assertEqual(status, 200)
        time.sleep(1.2)
        status, body = self.request("GET", f"/a/demo/api/exports/{tid}/download")
        self.assertEqual(status, 410, body)
        self.assertIn(b"expired", body)

    def test_saved_over_rest(self):
        with open(FORM, "rb") as f:
            self.submit(f.read())
        base = "/a/demo/api/exports/saved/"
        self.assertEqual(self.request("GET", base), (200, b'{"objects":[]}'))
        d = {"kind": "case", "columns": ["case_id", "name"],
             "schedule": {"cron": "30 5 * * *", "time_zone": "Asia/Kolkata"}}
        status, body = self.request("PUT", base + "daily", json.dumps(d))
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["name"], "daily")
        self.assertEqual(json.loads(body)["domain"], "demo")
        # Bad input: 400 naming the field.
        for field, bad in [("schedule.cron", dict(d, schedule={"cron": "bogus"})),
                           ("schedule.time_zone",
                            dict(d, schedule={"cron": "@daily", "time_zone": "Nowhere/Land"})),
                           ("filterz", dict(d, filterz={})),
                           ("name", dict(d, name="other")),
                           ("expiry_seconds", dict(d, expiry_seconds="soon"))]:
            status, body = self.request("PUT", base + "daily", json.dumps(bad))
            self.assertEqual(status, 400, (field, body))
            self.assertIn(field.encode(), body)
        status, body = self.request("PUT", base + "x", json.dumps(dict(d, domain="other")))
        self.assertEqual(status, 403)
        status, body = self.request("GET", base)
        self.assertEqual([o["name"] for o in json.loads(body)["objects"]], ["daily"])
        status, body = self.request("GET", base + "daily")
        self.assertEqual(json.loads(body)["schedule"],
                         {"cron": "30 5 * * *", "time_zone": "Asia/Kolkata"})
        scheds = [s for s in cc("tasks", "schedules", "--data", self.data)
                  if s["name"] == "export:demo:daily"]
        self.assertEqual(len(scheds), 1)
        self.assertEqual(scheds[0]["task"]["payload"], {"saved": "daily"})
        # No run yet: nothing to download. Then a run of the saved export is its latest file.
        status, _ = self.request("GET", base + "daily/download")
        self.assertEqual(status, 404)
        tid, _ = self.export({"saved": "daily"})
        status, latest = self.request("GET", base + "daily/download")
        self.assertEqual(status, 200, latest)
        self.assertEqual(latest, self.request("GET", f"/a/demo/api/exports/{tid}/download")[1])
        self.assertEqual(json.loads(self.request("GET", base + "daily")[1])["latest"]["task_id"],
                         tid)
        self.assertEqual(self.request("DELETE", base + "daily")[0], 200)
        self.assertEqual(self.request("DELETE", base + "daily")[0], 404)
        self.assertEqual(self.request("GET", base + "daily")[0], 404)
        self.assertEqual([s for s in cc("tasks", "schedules", "--data", self.data)
                          if s["name"] == "export:demo:daily"], [])


class ExportS3RestTest(unittest.TestCase, RestServer):
    """Export files on the deployment's S3 bucket (s3rver from scripts/with-test-servers)."""

    def setUp(self):
        s3 = os.environ.get("COMMCARE_TEST_S3")
        if not s3:
            if os.environ.get("CI") == "true":
                self.fail("CI=true but COMMCARE_TEST_S3 is not set")
            self.skipTest("no S3 test server (run under scripts/with-test-servers)")
        self.start(["--blob-store", json.dumps(
            {"kind": "s3", "endpoint": s3, "bucket": "blobs", "access_key": "S3RVER",
             "secret_key": "S3RVER", "prefix": f"exports-{os.getpid()}-{time.time_ns()}/"})])

    def tearDown(self):
        self.stop()

    def test_download_equals_cli_output(self):
        with open(FORM, "rb") as f:
            self.submit(f.read())
        for i in range(5):
            self.submit(case_form(i)[0])
        tid, t = self.export({"kind": "case"})
        status, body = self.request("GET", f"/a/demo/api/exports/{tid}/download")
        self.assertEqual(status, 200, body)
        # The CLI opens the data directory as a reader beside the server, which sees the
        # server's latest writes within a moment: wait until it has all 6 cases.
        out = os.path.join(self.tmp, "local.csv")
        for _ in range(100):
            [line] = cc("export", "cases", "--data", self.data, "--domain", "demo", "--out", out)
            if line["rows"] == 6:
                break
            time.sleep(0.1)
        self.assertEqual(t["result"]["rows"], 6)
        with open(out, "rb") as f:
            self.assertEqual(body, f.read())
        self.assertEqual(t["result"]["size"], len(body))

    def test_big_export_streams_in_bounded_memory(self):
        """40 cases x 25,000 columns of 32-character ids: a 33 MB CSV, uploaded in parts and
        downloaded in ranged pieces; the server's peak RSS grows far less than the file."""
        ids = []
        for i in range(40):
            xml, cid = case_form(i)
            self.submit(xml)
            ids.append(cid)
        cols = [{"path": "case_id", "label": f"c{j}"} for j in range(25000)]
        tid, t = self.export({"kind": "case", "filters": {"case_type": "big"}, "columns": cols})
        size = t["result"]["size"]
        self.assertGreater(size, 30_000_000)
        self.reset_peak_rss()
        before = self.peak_rss_kib()
        conn, r = self.open("GET", f"/a/demo/api/exports/{tid}/download")
        self.assertEqual(r.status, 200)
        got, rows, rest = 0, [], b""
        while True:
            piece = r.read(1 << 20)
            if not piece:
                break
            got += len(piece)
            lines = (rest + piece).split(b"\r\n")
            rest = lines.pop()
            rows += [line.split(b",", 1)[0] for line in lines]
        conn.close()
        grown_mb = (self.peak_rss_kib() - before) / 1024
        self.assertEqual(got, size)
        self.assertEqual(rest, b"")
        self.assertEqual(rows[0], b"c0")
        self.assertEqual(sorted(rows[1:]), [c.encode() for c in sorted(ids)])
        self.assertLess(grown_mb, size / 1e6 / 3, f"peak RSS grew {grown_mb:.1f} MB")


if __name__ == "__main__":
    unittest.main()
