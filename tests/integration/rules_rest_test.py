#!/usr/bin/env python3
"""Case update rules through the CLI (`commcare rules add|list|show|run|delete`, alone on a data
directory: bad rules exit 64 naming the field, a dry run changes nothing, a run does, a rerun
does not) and over REST (/a/{domain}/api/rules/: POST/PUT/GET/DELETE, dry_run, run as a
rule.run task, auth and errors), and a rule that runs on each case change under `commcare serve`.
Usage: rules_rest_test.py COMMCARE"""
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

CC = sys.argv.pop(1)

RULE = {"name": "flag", "domain": "demo", "case_type": "patient",
        "criteria": [{"property_name": "status", "match_type": "EQUAL", "property_value": "new"}],
        "actions": {"update": [{"name": "flagged", "value": "yes"},
                               {"name": "copy", "value_type": "CASE_PROPERTY",
                                "value": "status"}]},
        "schedule": "15 1 * * *", "time_zone": "America/New_York"}


def cc(*args, expect=0):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode} (wanted {expect}): {p.stdout}{p.stderr}")
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


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
        cls.tmp = tempfile.mkdtemp(prefix="cc-rules-rest-")
        cls.data = os.path.join(cls.tmp, "data")
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo")
        cls.proc = subprocess.Popen(
            [CC, "serve", "--data", cls.data, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = cls.proc.stdout.readline()
        assert line, cls.proc.stderr.read()
        cls.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        cc("admin", "user", "create", "--data", cls.data, "--domain", "demo", "--username",
           "w.demo", "--password", "pw-demo")

    @classmethod
    def tearDownClass(cls):
        cls.proc.kill()
        cls.proc.wait()
        cls.proc.stdout.close()
        cls.proc.stderr.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def request(self, method, path, body=None, auth=("admin", "s3cret")):
        h = {}
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode(
                f"{auth[0]}:{auth[1]}".encode()).decode()
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, json.loads(data) if data.startswith(b"{") else data

    def wait_task(self, task_id):
        for _ in range(400):
            s, t = self.request("GET", f"/a/demo/api/tasks/{task_id}/")
            self.assertEqual(s, 200, t)
            if t["state"] in ("succeeded", "dead", "cancelled"):
                return t
            time.sleep(0.05)
        self.fail(f"task {task_id} never finished: {t}")

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
