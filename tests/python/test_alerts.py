"""Reminders (conditional alerts) through the Python binding: an alert saved with its check
schedule, bad ones refused naming the field, a check queueing each due message once, the
message log with its filters and pages, a reminder.check task, delete."""
import os
import shutil
import tempfile
import time
import unittest

import commcare
from test_binding import case_form, create


class AlertsTest(unittest.TestCase):
    ALERT = {"name": "visit", "domain": "demo", "case_type": "patient",
             "criteria": [{"property_name": "status", "match_type": "EQUAL",
                           "property_value": "new"}],
             "start": {"property": "visit", "time": "00:00"},
             "recipient": "nurse@example.org", "message": "Visit {case_name} on {visit}"}

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cc-py-alerts-")
        self.engine = commcare.Engine(os.path.join(self.dir, "data"))
        today = time.strftime("%Y-%m-%d", time.gmtime())
        for cid, status in (("a1", "new"), ("a2", "new"), ("a3", "old")):
            self.engine.submit(case_form(
                "f" + cid, cid, create(cid, name=cid.upper(),
                                       props="<status>%s</status><visit>%s</visit>"
                                       % (status, today))), "demo")
        self.today = today

    def tearDown(self):
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_saved_checked_and_logged(self):
        e = self.engine
        with self.assertRaises(commcare.InvalidArgumentError) as bad:
            e.set_alert(dict(self.ALERT, criteria=[{"property_name": "status",
                                                    "match_type": "SOON"}]))
        self.assertIn("criteria[0].match_type", str(bad.exception))
        with self.assertRaises(commcare.InvalidArgumentError) as bad:
            e.set_alert(dict(self.ALERT, check="every hour"))
        self.assertIn("check", str(bad.exception))
        self.assertEqual(e.alerts("demo"), [])
        saved = e.set_alert(self.ALERT)
        self.assertEqual(saved["schedule"], "alert:demo:visit")
        self.assertEqual(e.alert("demo", "visit")["alert"]["message"], self.ALERT["message"])
        self.assertEqual([a["alert"]["name"] for a in e.alerts("demo")], ["visit"])
        with self.assertRaises(commcare.NotFoundError) as missing:
            e.alert("demo", "nope")
        self.assertIn("nope", str(missing.exception))

        first = e.check_alert("demo", "visit")
        self.assertEqual((first["scanned"], first["matched"], first["queued"]), (3, 2, 2))
        self.assertEqual(e.check_alert("demo", "visit")["queued"], 0)  # each message once
        log = e.alert_messages("demo")
        self.assertEqual(sorted(m["case_id"] for m in log), ["a1", "a2"])
        self.assertEqual({m["message"] for m in log},
                         {"Visit A1 on %s" % self.today, "Visit A2 on %s" % self.today})
        self.assertTrue(all(m["outcome"] == "queued" for m in log))
        self.assertEqual([m["case_id"] for m in e.alert_messages("demo", case_id="a2")], ["a2"])
        self.assertEqual(e.alert_messages("demo", outcome="skipped"), [])
        self.assertEqual(e.alert_messages("demo", alert="other"), [])
        page = e.alert_messages("demo", limit=1, offset=1)
        self.assertEqual(page, log[1:])
        with self.assertRaises(commcare.InvalidArgumentError) as bad:
            e.alert_messages("demo", outcome="sent")
        self.assertIn("outcome", str(bad.exception))
        tasks = e.tasks(type="email.send")
        self.assertEqual(len(tasks), 2)
        self.assertEqual(e.check_alert_later("demo", "visit")["type"], "reminder.check")

        e.delete_alert("demo", "visit")
        with self.assertRaises(commcare.NotFoundError):
            e.delete_alert("demo", "visit")
        self.assertEqual(len(e.alert_messages("demo")), 2)  # the log stays


if __name__ == "__main__":
    unittest.main()
