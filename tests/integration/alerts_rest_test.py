#!/usr/bin/env python3
"""Reminders (conditional alerts) over REST (/a/{domain}/api/alerts/): POST/PUT/GET/DELETE with
bad input refused naming the field (a bad check cron, a bad start time, an unknown criterion
operator, an unknown alert -> 404 naming it), permissions (a user without a role gets 403);
and end to end under `commcare serve --task-workers 2`: a reminder.check task run by the
server's workers sends an SMS to a gateway on loopback and an email to the SMTP sink, the
message log (filters, pages) shows both as succeeded, and a second check sends nothing again.
Usage: alerts_rest_test.py COMMCARE"""
import datetime
import email
import email.policy
import functools
import http.server
import json
import os
import sys
import threading
import time
import unittest
import urllib.parse

import rest_helpers

CC = sys.argv.pop(1)
cc = functools.partial(rest_helpers.cc, CC)


class Gateway(http.server.BaseHTTPRequestHandler):
    received = []

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        Gateway.received.append({"to": query.get("to", [""])[0],
                                 "text": query.get("text", [""])[0]})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def case_form(i, edd):
    return (
        '<?xml version="1.0"?><data xmlns="http://example.org/form">'
        '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>af%d</instanceID>'
        "<userID>u1</userID></meta>"
        '<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="ac%d" '
        'date_modified="2024-01-01T00:00:00Z" user_id="u1"><create>'
        "<case_type>pregnancy</case_type><case_name>Mother %d</case_name><owner_id>u1</owner_id>"
        "</create><update><risk>%s</risk><edd>%s</edd><phone>+25470000000%d</phone></update>"
        "</case></data>" % (i, i, i, "high" if i == 0 else "low", edd, i)).encode()


def alert(name, **extra):
    return dict({"name": name, "domain": "demo", "case_type": "pregnancy",
                 "criteria": [{"property_name": "risk", "match_type": "EQUAL",
                               "property_value": "high"}],
                 "start": {"property": "edd", "offset_days": -2, "time": "00:00"},
                 "message": "Hello {case_name}, visit due {edd}"}, **extra)


class AlertsRestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.smtp, cls.smtp_dir = (os.environ.get("COMMCARE_TEST_SMTP"),
                                  os.environ.get("COMMCARE_TEST_SMTP_DIR"))
        env = {"COMMCARE_SMTP_FROM": "alerts@commcare.test"}
        if cls.smtp:
            env["COMMCARE_SMTP_URL"] = f"smtp://{cls.smtp}?starttls=opportunistic&timeout_ms=10000"
        cls.server = rest_helpers.Server(CC, "cc-alerts-rest-", env=env,
                                         args=["--task-workers", "2"])
        cls.request = staticmethod(cls.server.request)
        cls.gateway = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
        threading.Thread(target=cls.gateway.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.gateway.shutdown()
        cls.gateway.server_close()
        cls.server.close()

    def sms_alert(self):
        return alert("sms", channel="sms", recipient="{phone}", gateway={
            "url": f"http://127.0.0.1:{self.gateway.server_port}/send?to={{to}}&text={{message}}",
            "success": {"status": 200, "contains": "OK"}})

    def test_1_round_trip_and_errors(self):
        base = "/a/demo/api/alerts/"
        self.assertEqual(self.request("GET", base), (200, {"objects": []}))
        s, body = self.request("POST", base, alert("x", check="every 5 minutes"))
        self.assertEqual(s, 400, body)
        self.assertIn("check", body["error"])
        s, body = self.request("PUT", base + "x", alert("x", start={"property": "edd",
                                                                   "time": "9am"}))
        self.assertEqual(s, 400, body)
        self.assertIn("start.time", body["error"])
        s, body = self.request("POST", base, alert("x", criteria=[
            {"property_name": "risk", "match_type": "ABOUT", "property_value": "high"}]))
        self.assertEqual(s, 400, body)
        self.assertIn("criteria[0].match_type", body["error"])
        s, body = self.request("POST", base, alert("messages"))  # the log's path
        self.assertEqual((s, body["error"]), (400, "name: 'messages' is reserved for the message log"))
        s, body = self.request("PUT", base + "x", alert("other"))
        self.assertEqual((s, body["error"]), (400, "name: the body's name is not the URL's"))
        s, body = self.request("PUT", base + "x", dict(alert("x"), domain="elsewhere"))
        self.assertEqual((s, body["error"]), (403, "domain: the alert's domain is not this domain"))
        self.assertEqual(self.request("PUT", base + "x", b"[1")[0], 400)
        self.assertEqual(self.request("GET", base)[1], {"objects": []})  # nothing stored

        s, body = self.request("POST", base, alert("anc", recipient="nurse@example.org"))
        self.assertEqual(s, 201, body)
        self.assertEqual(body["schedule"], "alert:demo:anc")
        self.assertTrue(body["next_run_at"])
        s, body = self.request("PUT", base + "anc", {k: v for k, v in alert("anc").items()
                                                     if k not in ("name", "domain")})
        self.assertEqual(s, 200, body)
        self.assertEqual(body["alert"], alert("anc"))  # replaced: no fixed recipient now
        s, body = self.request("GET", base + "anc/")
        self.assertEqual((s, body["alert"]["message"]), (200, alert("anc")["message"]))
        self.assertEqual([a["schedule"] for a in self.request("GET", base)[1]["objects"]],
                         ["alert:demo:anc"])
        s, body = self.request("GET", base + "nope")
        self.assertEqual(s, 404)
        self.assertIn("no alert 'nope'", body["error"])
        self.assertEqual(self.request("POST", base + "nope/check")[0], 404)
        s, body = self.request("GET", base + "messages/?outcome=sent")
        self.assertEqual(s, 400)
        self.assertIn("outcome: unknown outcome 'sent'", body["error"])
        self.assertEqual(self.request("GET", base + "messages/?limit=0")[0], 400)

        # Permissions: reading needs API access, which a mobile worker's role lacks (changing
        # needs edit-data, which it has: it submits forms).
        self.assertEqual(self.request("GET", base, auth=None)[0], 401)
        self.assertEqual(self.request("PUT", base + "anc", alert("anc"), auth=None)[0], 401)
        for path in (base, base + "anc", base + "messages/"):
            s, body = self.request("GET", path, auth=("w.demo", "pw-demo"))
            self.assertEqual(s, 403, (path, body))
        self.assertEqual(self.request("PATCH", base + "anc")[0], 405)
        self.assertEqual(self.request("GET", base + "anc/check")[0], 405)
        self.assertEqual(self.request("GET", base + "anc/what")[0], 404)

        self.assertEqual(self.request("DELETE", base + "anc"),
                         (200, {"name": "anc", "deleted": True}))
        s, body = self.request("DELETE", base + "anc")
        self.assertEqual(s, 404)
        self.assertIn("no alert 'anc'", body["error"])

    def test_2_workers_send_sms_and_email_once(self):
        self.assertTrue(self.smtp, "COMMCARE_TEST_SMTP is not set: run under "
                                   "scripts/with-test-servers (it starts the SMTP sink)")
        base = "/a/demo/api/alerts/"
        edd = (datetime.date.today() + datetime.timedelta(days=2)).isoformat()
        for i in range(2):  # ac0 matches (risk high), ac1 does not
            s, body = self.request("POST", "/a/demo/receiver/", case_form(i, edd))
            self.assertEqual(s, 201, body)
        for a in (self.sms_alert(), alert("mail", recipient="midwife@example.org",
                                          subject="Visit for {case_name}")):
            s, body = self.request("POST", base, a)
            self.assertEqual(s, 201, body)
        before = set(os.listdir(self.smtp_dir))

        for name in ("sms", "mail"):
            s, task = self.request("POST", base + name + "/check")
            self.assertEqual(s, 202, task)
            self.assertEqual((task["type"], task["domain"]), ("reminder.check", "demo"))
            t = self.server.wait_task(task["id"])
            self.assertEqual(t["state"], "succeeded", t["last_error"])
            self.assertEqual((t["result"]["scanned"], t["result"]["matched"],
                              t["result"]["queued"]), (2, 1, 1))
        log = self.wait_log(2)
        self.assertEqual({(m["alert"], m["case_id"], m["channel"], m["recipient"]) for m in log},
                         {("sms", "ac0", "sms", "+254700000000"),
                          ("mail", "ac0", "email", "midwife@example.org")})
        self.assertEqual(len(Gateway.received), 1)
        self.assertEqual(Gateway.received[0], {"to": "+254700000000",
                                               "text": "Hello Mother 0, visit due " + edd})
        mail = self.wait_mail(before, "midwife@example.org")
        self.assertEqual(mail["Subject"], "Visit for Mother 0")
        self.assertIn("Hello Mother 0, visit due " + edd, mail.get_body().get_content())

        # The log's filters and pages.
        s, page = self.request("GET", base + "messages/?alert=sms")
        self.assertEqual([m["channel"] for m in page["objects"]], ["sms"])
        s, page = self.request("GET", base + "messages/?case_id=ac1")
        self.assertEqual(page["objects"], [])
        s, page = self.request("GET", base + "messages/?outcome=succeeded&limit=1")
        self.assertEqual((len(page["objects"]), page["meta"]["offset"]), (1, 0))
        self.assertIn("offset=1", page["meta"]["next"])
        s, rest = self.request("GET", base + "messages/?outcome=succeeded&limit=1&offset=1")
        self.assertEqual(len(rest["objects"]), 1)
        self.assertNotEqual(rest["objects"][0]["alert"], page["objects"][0]["alert"])
        self.assertEqual(self.request("GET", base + "messages/?outcome=skipped")[1]["objects"],
                         [])

        # A second check finds each message logged: nothing is queued or sent again.
        for name in ("sms", "mail"):
            s, task = self.request("POST", base + name + "/check")
            t = self.server.wait_task(task["id"])
            self.assertEqual((t["state"], t["result"]["queued"]), ("succeeded", 0))
        time.sleep(0.5)
        self.assertEqual(len(Gateway.received), 1)
        self.assertEqual(len(self.request("GET", base + "messages/")[1]["objects"]), 2)
        self.assertEqual(len([n for n in set(os.listdir(self.smtp_dir)) - before
                              if n.endswith(".json")]), 1)

    def wait_log(self, n):
        """The message log once n messages are logged and every one has succeeded."""
        log = []
        for _ in range(400):
            s, body = self.request("GET", "/a/demo/api/alerts/messages/")
            self.assertEqual(s, 200, body)
            log = body["objects"]
            if len(log) == n and all(m["outcome"] == "succeeded" for m in log):
                return log
            time.sleep(0.05)
        self.fail(f"the messages were not all sent: {log}")

    def wait_mail(self, before, to):
        for _ in range(200):
            for name in sorted(set(os.listdir(self.smtp_dir)) - before):
                if name.endswith(".json"):
                    with open(os.path.join(self.smtp_dir, name)) as f:
                        if to in f.read():
                            with open(os.path.join(self.smtp_dir, name[:-5] + ".eml"), "rb") as f:
                                return email.message_from_bytes(f.read(),
                                                                policy=email.policy.default)
            time.sleep(0.05)
        self.fail(f"no email to {to} reached the sink")


if __name__ == "__main__":
    unittest.main()
