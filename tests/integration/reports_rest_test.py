#!/usr/bin/env python3
"""Scheduled reports over REST (/a/{domain}/api/reports/): list, PUT/GET/DELETE by name, preview,
send (202 with the report.send task, mailed to the SMTP sink as XLSX when COMMCARE_TEST_SMTP is
set), auth and errors; and `commcare reports list|preview` beside the running server.
Usage: reports_rest_test.py COMMCARE"""
import email
import email.policy
import functools
import io
import json
import os
import sys
import time
import unittest
import zipfile

import rest_helpers

CC = sys.argv.pop(1)
cc = functools.partial(rest_helpers.cc, CC)

UCR = {"domain": "demo", "table_id": "patients", "referenced_doc_type": "CommCareCase",
       "configured_indicators": [
           {"type": "raw", "column_id": "owner", "property_name": "owner_id"},
           {"type": "expression", "column_id": "age", "datatype": "integer",
            "expression": {"type": "property_name", "property_name": "age"}}]}
REPORT = {"subject": "Ages by owner", "table_id": "patients", "recipients": ["rest@example.org"],
          "group_by": ["owner"], "aggregations": [{"fn": "count"}, {"fn": "sum", "column": "age"}],
          "format": "xlsx", "schedule": {"cron": "0 8 * * 1", "time_zone": "Africa/Nairobi"}}


def case_form(i):
    return (
        '<?xml version="1.0"?><data xmlns="http://example.org/form">'
        '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>rf%d</instanceID>'
        "<userID>u1</userID><timeStart>2020-01-01T00:00:00Z</timeStart>"
        "<timeEnd>2020-01-01T00:01:00Z</timeEnd></meta>"
        '<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="rc%d" '
        'date_modified="2020-01-01T00:01:00Z" user_id="u1"><create><case_type>patient</case_type>'
        "<case_name>P%d</case_name><owner_id>u%d</owner_id></create>"
        "<update><age>%d</age></update></case></data>" % (i, i, i, 1 + i % 2, 10 * i)).encode()


class ReportsRestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.smtp, cls.smtp_dir = os.environ.get("COMMCARE_TEST_SMTP"), os.environ.get(
            "COMMCARE_TEST_SMTP_DIR")
        env = {"COMMCARE_SMTP_FROM": "reports@commcare.test"}
        if cls.smtp:
            env["COMMCARE_SMTP_URL"] = f"smtp://{cls.smtp}?starttls=opportunistic&timeout_ms=10000"
        cls.server = rest_helpers.Server(CC, "cc-reports-rest-", env=env)
        cls.data, cls.tmp = cls.server.data, cls.server.tmp
        cls.request = staticmethod(cls.server.request)
        cls.wait_task = staticmethod(cls.server.wait_task)
        cc("admin", "domain", "create", "--data", cls.data, "other")
        config = os.path.join(cls.tmp, "ucr.json")
        with open(config, "w") as f:
            json.dump(UCR, f)
        cc("ucr", "load", "--data", cls.data, config)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def test_reports_api(self):
        for i in range(5):  # owners u1 (ages 0, 20, 40) and u2 (10, 30)
            s, body = self.request("POST", "/a/demo/receiver/", case_form(i))
            self.assertEqual(s, 201, body)
        for _ in range(200):
            s, body = self.request("GET", "/a/demo/api/ucr/patients/")
            if s == 200 and len(body["rows"]) == 5:
                break
            time.sleep(0.05)
        self.assertEqual(len(body["rows"]), 5, body)

        self.assertEqual(self.request("GET", "/a/demo/api/reports/"), (200, {"objects": []}))
        s, body = self.request("PUT", "/a/demo/api/reports/ages",
                               {k: v for k, v in REPORT.items() if k != "schedule"})
        self.assertEqual(s, 400)
        self.assertIn("schedule", body["error"])
        s, body = self.request("PUT", "/a/demo/api/reports/ages", dict(REPORT, name="other"))
        self.assertEqual(s, 400)
        s, body = self.request("PUT", "/a/demo/api/reports/ages", dict(REPORT, domain="other"))
        self.assertEqual(s, 403)
        s, body = self.request("PUT", "/a/demo/api/reports/ages", b"[1")
        self.assertEqual(s, 400)
        s, body = self.request("PUT", "/a/demo/api/reports/ages", REPORT)
        self.assertEqual(s, 201, body)
        self.assertEqual(body["schedule"], "report:demo:ages")
        self.assertEqual(body["report"], dict(REPORT, name="ages", domain="demo"))
        self.assertTrue(body["next_run_at"])
        s, body = self.request("PUT", "/a/demo/api/reports/ages", dict(REPORT, subject="Ages"))
        self.assertEqual(s, 200, body)
        s, body = self.request("GET", "/a/demo/api/reports/")
        self.assertEqual([r["schedule"] for r in body["objects"]], ["report:demo:ages"])
        s, body = self.request("GET", "/a/demo/api/reports/ages/")
        self.assertEqual((s, body["report"]["subject"]), (200, "Ages"))
        self.assertEqual(self.request("GET", "/a/demo/api/reports/nope")[0], 404)
        self.assertEqual(self.request("GET", "/a/other/api/reports/")[1], {"objects": []})

        preview = {"header": ["owner", "count", "sum_age"],
                   "rows": [["u1", "3", "60"], ["u2", "2", "40"]],
                   "totals": ["Total", "5", "100"], "source_rows": 5}
        self.assertEqual(self.request("GET", "/a/demo/api/reports/ages/preview"), (200, preview))
        self.assertEqual(self.request("GET", "/a/demo/api/reports/nope/preview")[0], 404)
        # The CLI reads the same reports beside the running server.
        [line] = cc("reports", "list", "--data", self.data, "--domain", "demo")
        self.assertEqual(line["schedule"], "report:demo:ages")
        self.assertEqual(cc("reports", "preview", "--data", self.data, "--domain", "demo",
                            "--name", "ages"), [preview])

        # Auth: reading needs API access, writing edit-data; other domains are closed.
        self.assertEqual(self.request("GET", "/a/demo/api/reports/", auth=None)[0], 401)
        self.assertEqual(self.request("GET", "/a/demo/api/reports/",
                                      auth=("w.demo", "pw-demo"))[0], 403)
        self.assertEqual(self.request("POST", "/a/demo/api/reports/ages/send",
                                      auth=("w.demo", "bad"))[0], 401)
        self.assertEqual(self.request("PATCH", "/a/demo/api/reports/ages")[0], 405)
        self.assertEqual(self.request("GET", "/a/demo/api/reports/ages/send")[0], 405)
        self.assertEqual(self.request("GET", "/a/demo/api/reports/ages/what")[0], 404)

        before = set(os.listdir(self.smtp_dir)) if self.smtp_dir else set()
        s, task = self.request("POST", "/a/demo/api/reports/ages/send")
        self.assertEqual(s, 202, task)
        self.assertEqual((task["type"], task["domain"]), ("report.send", "demo"))
        t = self.wait_task(task["id"])
        self.assertEqual(t["state"], "succeeded", t["last_error"])
        self.assertEqual(t["result"]["rows"], 5)
        self.assertEqual(self.request("POST", "/a/demo/api/reports/nope/send")[0], 404)
        if not self.smtp:
            if os.environ.get("CI") == "true":
                self.fail("CI=true but COMMCARE_TEST_SMTP is not set")
        else:
            mail = self.wait_task(t["result"]["email_task"])
            self.assertEqual(mail["state"], "succeeded", mail["last_error"])
            self.check_mail(before)

        self.assertEqual(self.request("DELETE", "/a/demo/api/reports/ages"),
                         (200, {"name": "ages", "deleted": True}))
        self.assertEqual(self.request("DELETE", "/a/demo/api/reports/ages")[0], 404)
        self.assertEqual(self.request("GET", "/a/demo/api/reports/ages")[0], 404)

    def check_mail(self, before):
        message = None
        for _ in range(100):
            for name in sorted(set(os.listdir(self.smtp_dir)) - before):
                if name.endswith(".json"):
                    with open(os.path.join(self.smtp_dir, name)) as f:
                        if "rest@example.org" in f.read():
                            with open(os.path.join(self.smtp_dir, name[:-5] + ".eml"), "rb") as f:
                                message = email.message_from_bytes(f.read(),
                                                                   policy=email.policy.default)
            if message:
                break
            time.sleep(0.05)
        self.assertIsNotNone(message, "the report never reached the sink")
        self.assertEqual(message["Subject"], "Ages")
        (attachment,) = list(message.iter_attachments())
        self.assertEqual(attachment.get_filename(), "ages.xlsx")
        with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as z:
            self.assertIn("<t>u2</t>", z.read("xl/sharedStrings.xml").decode())
            self.assertIn("<v>100</v>", z.read("xl/worksheets/sheet1.xml").decode())


if __name__ == "__main__":
    unittest.main()
