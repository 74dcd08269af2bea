#!/usr/bin/env python3
"""`commcare export cases|forms` end to end (JSON line, CSV content, XLSX sheets, usage errors) and
the REST face (POST /a/{domain}/api/exports/, GET .../{task_id}/download)."""
import base64
import csv
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

    def test_usage_errors(self):
        [err] = cc("export", "forms", "--data", self.data, "--domain", "demo", "--xmlns", "x",
                   "--columns", "bogus", "--out", os.path.join(self.tmp, "x.csv"), expect=64)
        self.assertIn("bogus", err["error"])


class ExportRestTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cc-export-rest-")
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo")
        self.proc = subprocess.Popen(
            [CC, "serve", "--data", os.path.join(self.tmp, "data"), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])

    def tearDown(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def request(self, method, path, body=None):
        h = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, data

    def test_post_then_download(self):
        with open(FORM, "rb") as f:
            status, _ = self.request("POST", "/a/demo/receiver/", f.read())
        self.assertEqual(status, 201)
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


if __name__ == "__main__":
    unittest.main()
