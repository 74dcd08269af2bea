#!/usr/bin/env python3
"""The restore route as CommCare HQ answers it (issue 22; research/hq-fidelity.md §2), over a
real server: each test cites the HQ or commcare-core file it follows.
Usage: restore_fidelity_test.py COMMCARE"""
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse
import xml.etree.ElementTree as ET

CC = sys.argv[1]
del sys.argv[1:2]

NS = {"or": "http://openrosa.org/http/response", "sync": "http://commcarehq.org/sync",
      "c": "http://commcarehq.org/case/transaction/v2"}


def cc(*args):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{args}: exit {p.returncode}: {p.stdout} {p.stderr}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


class RestoreFidelityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cc-restore-")
        cls.data = os.path.join(cls.tmp, "data")
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo")
        cls.proc = subprocess.Popen([CC, "serve", "--data", cls.data, "--listen", "127.0.0.1:0"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
        line = cls.proc.stdout.readline()
        assert line, cls.proc.stderr.read()
        cls.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        for user, pw in [("w.empty", "pw-empty"), ("w.photo", "pw-photo")]:
            cc("admin", "user", "create", "--data", cls.data, "--domain", "demo", "--username",
               user, "--password", pw)
        cc("admin", "domain", "create", "--data", cls.data, "other")
        cc("admin", "user", "create", "--data", cls.data, "--domain", "other", "--username",
           "w.other", "--password", "pw-other")

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
            cls.proc.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def request(self, method, path, body=None, headers=None, auth=("admin", "s3cret")):
        h = dict(headers or {})
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def restore(self, query, auth):
        s, _, body = self.request("GET", f"/a/demo/phone/restore/?{query}", auth=auth)
        return s, body

    def test_empty_footprint_state_and_unknown_parameters(self):
        # R4: commcare-core's CaseDBUtils.computeCaseDbHash returns "" with no case
        # (CaseDBUtils.java:13-32) and HQ's Checksum([]).hexdigest() is '' (phone/checksum.py),
        # so a phone without cases syncs with state=ccsh:.
        auth = ("w.empty", "pw-empty")
        s, body = self.restore("version=2.0", auth)
        self.assertEqual(s, 200, body)
        token = ET.fromstring(body).find("sync:Sync/sync:restore_id", NS).text
        s, body = self.restore(f"version=2.0&since={token}&state=ccsh:", auth)
        self.assertEqual(s, 200, body)
        token = ET.fromstring(body).find("sync:Sync/sync:restore_id", NS).text
        s, body = self.restore(f"since={token}&state=ccsh:00000000000000000000000000000001", auth)
        self.assertEqual(s, 412, body)
        # R5: HQ's get_restore_params (corehq/apps/ota/views.py) reads the parameters it knows
        # and ignores any other.
        s, body = self.restore("version=2.0&case_sync=livequery&foo=bar&_=1712345678", auth)
        self.assertEqual(s, 200, body)
        self.assertIn(b"ota_restore_success", body)


if __name__ == "__main__":
    unittest.main()
