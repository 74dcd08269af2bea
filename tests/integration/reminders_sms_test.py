#!/usr/bin/env python3
"""Reminders by SMS through the generic HTTP gateway, against a receiver on loopback (Python's
http.server): `commcare alerts add|list|check|messages` and `commcare tasks run --until-idle`
deliver each due message once, with its placeholders filled, basic auth and the URL template;
a gateway that refuses (400) dead-letters the message, one that fails (500) is retried; a bad
alert exits 64 naming the field; every message is in the log with its outcome.
Usage: reminders_sms_test.py COMMCARE"""
import base64
import datetime
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse

CC = sys.argv.pop(1)


def cc(*args, expect=0):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode} (wanted {expect}): {p.stdout}{p.stderr}")
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


class Gateway(http.server.BaseHTTPRequestHandler):
    received = []
    answers = {}  # number -> status

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        to = query.get("to", [""])[0]
        Gateway.received.append({"to": to, "body": json.loads(body),
                                 "auth": self.headers.get("Authorization")})
        status = Gateway.answers.get(to, 200)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ACCEPTED" if status == 200 else b"NO")

    def log_message(self, *args):
        pass


def case_form(i, phone_owner, edd):
    return (
        '<?xml version="1.0"?><data xmlns="http://example.org/form">'
        '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>f%d</instanceID>'
        "<userID>u1</userID></meta>"
        '<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="p%d" '
        'date_modified="2024-01-01T00:00:00Z" user_id="u1"><create>'
        "<case_type>pregnancy</case_type><case_name>Mother %d</case_name><owner_id>u1</owner_id>"
        "</create><update><risk>high</risk><edd>%s</edd><phone>%s</phone></update></case></data>"
        % (i, i, i, edd, phone_owner))


class RemindersSmsTest(unittest.TestCase):
    def setUp(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        Gateway.received.clear()
        self.tmp = tempfile.mkdtemp(prefix="cc-reminders-")
        self.data = os.path.join(self.tmp, "data")
        cc("init", "--data", self.data)

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_sms_through_the_gateway(self):
        d = ["--data", self.data]
        today = datetime.date.today()
        files = []
        # Due: edd in 2 days with offset -2 at 00:00 UTC (today), occurrences 1.
        for i, number in enumerate(["+254700000001", "+254700000002", "+254700000003"]):
            path = os.path.join(self.tmp, f"f{i}.xml")
            with open(path, "w") as f:
                f.write(case_form(i, number, (today + datetime.timedelta(days=2)).isoformat()))
            files.append(path)
        cc("submit", *d, "--domain", "demo", *files)
        Gateway.answers = {"+254700000002": 400, "+254700000003": 500}
        alert = {"name": "anc", "domain": "demo", "case_type": "pregnancy",
                 "criteria": [{"property_name": "risk", "match_type": "EQUAL",
                               "property_value": "high"}],
                 "start": {"property": "edd", "offset_days": -2, "time": "00:00"},
                 "channel": "sms", "recipient": "{phone}",
                 "message": "Hello {case_name}, visit due {edd}",
                 "gateway": {"url": f"http://127.0.0.1:{self.server.server_port}/send?to={{to}}",
                             "method": "POST", "content_type": "application/json",
                             "body": '{"text": "{message}"}',
                             "auth": {"type": "basic", "username": "gw", "password": "pw"},
                             "success": {"status": 200, "contains": "ACCEPTED"}}}
        [err] = cc("alerts", "add", *d, "--json",
                   json.dumps(dict(alert, start={"property": "edd", "time": "25:00"})), expect=64)
        self.assertIn("start.time", err["error"])
        [saved] = cc("alerts", "add", *d, "--json", json.dumps(alert))
        self.assertEqual(saved["schedule"], "alert:demo:anc")
        self.assertEqual(len(cc("alerts", "list", *d, "--domain", "demo")), 1)
        [summary] = cc("alerts", "check", *d, "--domain", "demo", "--name", "anc")
        self.assertEqual((summary["matched"], summary["queued"]), (3, 3))
        [summary] = cc("alerts", "check", *d, "--domain", "demo", "--name", "anc")
        self.assertEqual(summary["queued"], 0)  # each message once
        cc("tasks", "run", *d, "--until-idle", "--workers", "1")
        ok = [r for r in Gateway.received if r["to"] == "+254700000001"]
        self.assertEqual(len(ok), 1)
        self.assertEqual(ok[0]["body"]["text"], "Hello Mother 0, visit due %s"
                         % (today + datetime.timedelta(days=2)).isoformat())
        self.assertEqual(ok[0]["auth"], "Basic " + base64.b64encode(b"gw:pw").decode())
        log = {m["recipient"]: m for m in cc("alerts", "messages", *d, "--domain", "demo")}
        self.assertEqual(log["+254700000001"]["outcome"], "succeeded")
        self.assertEqual(log["+254700000002"]["outcome"], "dead")  # refused: not retried
        self.assertIn(log["+254700000003"]["outcome"], ("retrying", "dead"))
        self.assertEqual(len([r for r in Gateway.received if r["to"] == "+254700000002"]), 1)
        self.assertGreaterEqual(len([r for r in Gateway.received if r["to"] == "+254700000003"]), 1)
        cc("alerts", "delete", *d, "--domain", "demo", "--name", "anc")
        cc("alerts", "delete", *d, "--domain", "demo", "--name", "anc", expect=2)


if __name__ == "__main__":
    unittest.main()
