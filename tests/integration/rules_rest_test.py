#!/usr/bin/env python3
"""Case update rules through the CLI (`commcare rules add|list|show|run|delete`, alone on a data
directory: bad rules exit 64 naming the field, a dry run changes nothing, a run does, a rerun
does not) and over REST (/a/{domain}/api/rules/: POST/PUT/GET/DELETE, dry_run, run as a
rule.run task, auth and errors), and a rule that runs on each case change under `commcare serve`.
Usage: rules_rest_test.py COMMCARE"""
import functools
import json
import os
import shutil
import sys
import tempfile
import time
import unittest

import rest_helpers

CC = sys.argv.pop(1)
cc = functools.partial(rest_helpers.cc, CC)

RULE = {"name": "flag", "domain": "demo", "case_type": "patient",
        "criteria": [{"property_name": "status", "match_type": "EQUAL", "property_value": "new"}],
        "actions": {"update": [{"name": "flagged", "value": "yes"},
                               {"name": "copy", "value_type": "CASE_PROPERTY",
                                "value": "status"}]},
        "schedule": "15 1 * * *", "time_zone": "America/New_York"}


def case_form(i, status="new", form=None):
    return (
        '<?xml version="1.0"?><data xmlns="http://example.org/form">'
        '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>%s</instanceID>'
        "<userID>u1</userID><timeStart>2020-01-01T00:00:00Z</timeStart>"
        "<timeEnd>2020-01-01T00:01:00Z</timeEnd></meta>"
        '<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="rc%d" '
        'date_modified="2020-01-01T00:01:00Z" user_id="u1"><create><case_type>patient</case_type>'
        "<case_name>P%d</case_name><owner_id>u1</owner_id></create>"
        "<update><status>%s</status></update></case></data>"
        % (form or "rf%d" % i, i, i, status)).encode()


class RulesCliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cc-rules-cli-")
        self.data = os.path.join(self.tmp, "data")
        cc("init", "--data", self.data)
        files = []
        for i, status in enumerate(["new", "new", "old"]):
            path = os.path.join(self.tmp, f"f{i}.xml")
            with open(path, "wb") as f:
                f.write(case_form(i, status))
            files.append(path)
        cc("submit", "--data", self.data, "--domain", "demo", *files)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def case(self, i):
        [c] = cc("case", "get", "--data", self.data, "--domain", "demo", f"rc{i}")
        return c

    def test_add_list_run_and_delete(self):
        d = ["--data", self.data]
        bad = dict(RULE, criteria=[{"property_name": "status", "match_type": "REGEX",
                                    "property_value": "(new"}])
        [err] = cc("rules", "add", *d, "--json", json.dumps(bad), expect=64)
        self.assertIn("criteria[0].property_value", err["error"])
        [err] = cc("rules", "add", *d, "--json", json.dumps(dict(RULE, colour="red")), expect=64)
        self.assertIn("colour", err["error"])
        self.assertEqual(cc("rules", "list", *d, "--domain", "demo"), [])
        rule = {k: v for k, v in RULE.items() if k != "domain"}
        [saved] = cc("rules", "add", *d, "--domain", "demo", "--json", json.dumps(rule))
        self.assertEqual(saved["schedule"], "rule:demo:flag")
        self.assertRegex(saved["next_run_at"], r"T0[56]:15:00")  # 01:15 in New York
        [shown] = cc("rules", "show", *d, "--domain", "demo", "--name", "flag")
        self.assertEqual(shown["rule"]["time_zone"], "America/New_York")
        self.assertEqual(len(cc("rules", "list", *d)), 1)

        *changes, summary = cc("rules", "run", *d, "--domain", "demo", "--name", "flag",
                               "--dry-run")
        self.assertEqual(sorted(c["case_id"] for c in changes), ["rc0", "rc1"])
        self.assertEqual(changes[0]["update"], {"copy": "new", "flagged": "yes"})
        self.assertEqual((summary["matched"], summary["changed"], summary["dry_run"]),
                         (2, 2, True))
        self.assertNotIn("flagged", self.case(0)["properties"])

        *changes, summary = cc("rules", "run", *d, "--domain", "demo", "--name", "flag")
        self.assertEqual(summary["changed"], 2)
        self.assertTrue(all(len(c["form_id"]) == 32 for c in changes))
        self.assertEqual(self.case(0)["properties"]["flagged"], "yes")
        self.assertNotIn("flagged", self.case(2)["properties"])
        [form] = cc("form", "get", *d, "--domain", "demo", changes[0]["form_id"])
        self.assertEqual(form["xmlns"], "http://commcarehq.org/hq_case_update_rule")
        [summary] = cc("rules", "run", *d, "--domain", "demo", "--name", "flag")
        self.assertEqual((summary["changed"], summary["unchanged"]), (0, 2))

        cc("rules", "delete", *d, "--domain", "demo", "--name", "flag")
        cc("rules", "delete", *d, "--domain", "demo", "--name", "flag", expect=2)
        cc("rules", "run", *d, "--domain", "demo", "--name", "flag", expect=2)


class RulesRestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = rest_helpers.Server(CC, "cc-rules-rest-")
        cls.request = staticmethod(cls.server.request)
        cls.wait_task = staticmethod(cls.server.wait_task)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def case(self, i):
        s, body = self.request("GET", f"/a/demo/api/case/v2/rc{i}")
        self.assertEqual(s, 200, body)
        return body

    def test_rules_api(self):
        for i, status in enumerate(["new", "old"]):
            s, body = self.request("POST", "/a/demo/receiver/", case_form(i, status))
            self.assertEqual(s, 201, body)
        self.assertEqual(self.request("GET", "/a/demo/api/rules/"), (200, {"objects": []}))
        s, body = self.request("POST", "/a/demo/api/rules/",
                               dict(RULE, criteria=[{"property_name": "s", "match_type": "LIKE"}]))
        self.assertEqual(s, 400)
        self.assertIn("criteria[0].match_type", body["error"])
        self.assertEqual(self.request("POST", "/a/demo/api/rules/", dict(RULE, domain="x"))[0], 403)
        self.assertEqual(self.request("PUT", "/a/demo/api/rules/flag",
                                      dict(RULE, name="other"))[0], 400)
        s, body = self.request("POST", "/a/demo/api/rules/", RULE)
        self.assertEqual(s, 201, body)
        self.assertEqual(body["rule"], RULE)
        s, body = self.request("PUT", "/a/demo/api/rules/flag", dict(RULE, active=True))
        self.assertEqual(s, 200, body)
        s, body = self.request("GET", "/a/demo/api/rules/flag/")
        self.assertEqual((s, body["schedule"]), (200, "rule:demo:flag"))
        self.assertEqual(self.request("GET", "/a/demo/api/rules/nope")[0], 404)

        s, dry = self.request("GET", "/a/demo/api/rules/flag/dry_run")
        self.assertEqual(s, 200, dry)
        self.assertEqual([c["case_id"] for c in dry["changes"]], ["rc0"])
        self.assertEqual(dry["summary"]["scanned"], 2)
        self.assertNotIn("flagged", self.case(0)["properties"])

        s, task = self.request("POST", "/a/demo/api/rules/flag/run")
        self.assertEqual(s, 202, task)
        self.assertEqual((task["type"], task["domain"]), ("rule.run", "demo"))
        t = self.wait_task(task["id"])
        self.assertEqual(t["state"], "succeeded", t["last_error"])
        self.assertEqual(t["result"]["changed"], 1)
        self.assertEqual(self.case(0)["properties"]["flagged"], "yes")
        self.assertEqual(self.request("POST", "/a/demo/api/rules/nope/run")[0], 404)

        # Auth: reading needs API access, changing edit-data.
        self.assertEqual(self.request("GET", "/a/demo/api/rules/", auth=None)[0], 401)
        self.assertEqual(self.request("GET", "/a/demo/api/rules/",
                                      auth=("w.demo", "pw-demo"))[0], 403)
        self.assertEqual(self.request("PATCH", "/a/demo/api/rules/flag")[0], 405)
        self.assertEqual(self.request("GET", "/a/demo/api/rules/flag/run")[0], 405)
        self.assertEqual(self.request("GET", "/a/demo/api/rules/flag/what")[0], 404)

        # A rule that runs on each case change: a new matching case is flagged by the server's
        # case-rules pillow and workers without any run being asked for.
        s, body = self.request("PUT", "/a/demo/api/rules/onchange",
                               dict(RULE, name="onchange", run_on_change=True,
                                    actions={"update": [{"name": "seen", "value": "1"}]}))
        self.assertEqual(s, 201, body)
        time.sleep(5.5)  # the pillow reads the rules at most every 5 s
        s, body = self.request("POST", "/a/demo/receiver/", case_form(7, "new"))
        self.assertEqual(s, 201, body)
        for _ in range(300):
            if self.case(7)["properties"].get("seen") == "1":
                break
            time.sleep(0.05)
        self.assertEqual(self.case(7)["properties"].get("seen"), "1")

        self.assertEqual(self.request("DELETE", "/a/demo/api/rules/flag"),
                         (200, {"name": "flag", "deleted": True}))
        self.assertEqual(self.request("DELETE", "/a/demo/api/rules/flag")[0], 404)


if __name__ == "__main__":
    unittest.main()
