#!/usr/bin/env python3
"""`commcare import cases` and `commcare import edit` end to end: HQ's importer semantics
(create, update by case_id and external_id, owner by username, parent_id/parent_external_id,
blank cells and ---, close), dry runs that report every problem row and write nothing, bad
headers, idempotent reruns, the import and bulk edit as tasks run by `commcare tasks run`, and a
worker killed with SIGKILL mid-import (each row's effect exactly once after the rerun); and
`commcare lookup-tables upload` (HQ's fixture upload)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from xlsx_helper import xlsx

CC = sys.argv.pop(1)


def run(*args):
    return subprocess.run([CC] + list(args), capture_output=True, text=True)


def cc(*args, expect=0):
    p = run(*args)
    if p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode} (wanted {expect}): {p.stdout}{p.stderr}")
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


class ImportCliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cc-import-cli-")
        self.data = os.path.join(self.tmp, "data")
        cc("init", "--data", self.data)
        cc("admin", "domain", "create", "--data", self.data, "demo")
        cc("admin", "user", "create", "--data", self.data, "--username", "amina@demo.commcarehq.org",
           "--password", "pw-amina", "--domain", "demo")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w", newline="") as f:
            f.write(text)
        return path

    def imp(self, path, *extra, expect=0):
        lines = cc("import", "cases", "--data", self.data, "--domain", "demo", path,
                   "--case-type", "patient", *extra, expect=expect)
        return lines[:-1], lines[-1]

    def cases(self, *extra):
        return cc("case", "list", "--data", self.data, "--domain", "demo", *extra)

    def get(self, case_id):
        [c] = cc("case", "get", "--data", self.data, "--domain", "demo", case_id)
        return c

    def test_create_then_update_by_case_id(self):
        path = self.write("new.csv", 'name,age,owner_name,village\r\n'
                                     'Amina,31,amina,"Kisumu, West"\r\n'
                                     'Baraka,12.0,,Nakuru\r\n\r\n')
        problems, s = self.imp(path, "--create-new")
        self.assertEqual(problems, [])
        self.assertEqual((s["created_count"], s["match_count"], s["failed_count"],
                          s["blank_count"], s["num_chunks"]), (2, 0, 0, 1, 1))
        by_name = {c["case_name"]: c for c in self.cases()}
        amina, baraka = by_name["Amina"], by_name["Baraka"]
        self.assertEqual(amina["properties"]["village"], "Kisumu, West")
        self.assertEqual(amina["properties"]["age"], "31")
        self.assertEqual(baraka["properties"]["age"], "12.0")  # CSV text is kept as it is
        self.assertEqual(baraka["owner_id"], "system")          # default: the importing user
        self.assertNotEqual(amina["owner_id"], "system")        # owner_name: the user's id
        # Updates: a blank cell and --- clear, close=yes closes, an unknown id is skipped.
        upd = self.write("upd.csv", "case_id,age,village,close\n"
                                    f"{amina['case_id']},32,,\n"
                                    f"{baraka['case_id']},---,Eldoret,yes\n"
                                    "no-such-case,1,x,\n")
        problems, s = self.imp(upd)
        self.assertEqual((s["created_count"], s["match_count"], s["skipped_count"]), (0, 2, 1))
        a, b = self.get(amina["case_id"]), self.get(baraka["case_id"])
        self.assertEqual((a["properties"]["age"], a["properties"]["village"]), ("32", ""))
        self.assertEqual((b["properties"]["age"], b["properties"]["village"]), ("", "Eldoret"))
        self.assertEqual((a["closed"], b["closed"]), (False, True))

    def test_external_id_create_and_update_in_one_file(self):
        # hq-fidelity §5.4: (new case by external id E1), (update E1: prop=2), (blank row).
        path = self.write("ext.csv", "external_id,name,prop\nE1,first,1\nE1,,2\n,,\n")
        problems, s = self.imp(path, "--search-field", "external_id", "--create-new")
        self.assertEqual(problems, [])
        self.assertEqual((s["created_count"], s["match_count"], s["num_chunks"]), (1, 1, 2))
        [c] = self.cases()
        self.assertEqual((c["external_id"], c["properties"]["prop"]), ("E1", "2"))
        # A numeric search id is normalised as HQ does (int(float(x))): 7.0 finds 7.
        cc("import", "cases", "--data", self.data, "--domain", "demo",
           self.write("n1.csv", "external_id,name\n7,seven\n"), "--case-type", "patient",
           "--search-field", "external_id", "--create-new")
        _, s = self.imp(self.write("n2.csv", "external_id,kind\n7.0,number\n"),
                        "--search-field", "external_id")
        self.assertEqual(s["match_count"], 1)

    def test_parents(self):
        _, s = self.imp(self.write("hh.csv", "external_id,name\nHH1,household\n"),
                        "--search-field", "external_id", "--create-new")
        [hh] = self.cases()
        kids = self.write("kids.csv", "name,parent_external_id,parent_type,parent_id\n"
                                      "kid1,HH1,patient,\n"
                                      f"kid2,,,{hh['case_id']}\n")
        problems, s = self.imp(kids, "--create-new")
        self.assertEqual((problems, s["created_count"]), ([], 2))
        for c in self.cases():
            if c["case_name"].startswith("kid"):
                self.assertEqual(c["indices"]["parent"]["case_id"], hh["case_id"])

    def test_dry_run_reports_every_problem_and_writes_nothing(self):
        path = self.write("bad.csv", "name,owner_name,close,parent_id,date_opened\n"
                                     "ok,,,,2026-01-02\n"
                                     "x,nobody,,,\n"
                                     "y,,maybe,,\n"
                                     "z,,,missing-parent,\n"
                                     "w,,,,not-a-date\n")
        problems, s = self.imp(path, "--create-new", "--dry-run", expect=4)
        self.assertEqual([(p["row"], p["column"]) for p in problems],
                         [(3, "owner_name"), (4, "close"), (5, "parent_id"), (6, "date_opened")])
        self.assertTrue(all(p["reason"] for p in problems))
        self.assertEqual((s["dry_run"], s["created_count"], s["failed_count"]), (True, 1, 4))
        self.assertEqual(s["errors"]["Invalid Owner Name"]["owner_name"]["rows"], [3])
        self.assertEqual(self.cases(), [])
        # The real run writes the good row and reports the same problems.
        problems2, s2 = self.imp(path, "--create-new", expect=4)
        self.assertEqual(problems2, problems)
        self.assertEqual(len(self.cases()), 1)

    def test_bad_headers_write_nothing(self):
        for header, needle in [("name,age,age", "appears twice"),
                               ("name,parent_ref", "parent_ref"),
                               ("name,closed", "reserved"),
                               ("name,1bad", "not a valid case property"),
                               ("", "empty")]:
            path = self.write("h.csv", header + ("\nv,1,2\n" if header else ""))
            p = run("import", "cases", "--data", self.data, "--domain", "demo", path,
                    "--case-type", "patient", "--create-new")
            self.assertEqual(p.returncode, 1, header)
            self.assertIn(needle, json.loads(p.stdout)["error"], header)
        p = run("import", "cases", "--data", self.data, "--domain", "demo",
                self.write("e.csv", "name\nx\n"), "--case-type", "patient",
                "--search-field", "external_id")
        self.assertIn("no column 'external_id'", json.loads(p.stdout)["error"])
        self.assertEqual(self.cases(), [])

    def test_rerun_changes_nothing(self):
        rows = "".join(f"P{i},name{i},{i}\n" for i in range(250))
        path = self.write("many.csv", "external_id,name,n\n" + rows)
        _, s1 = self.imp(path, "--search-field", "external_id", "--create-new", "--chunk-size", "100")
        self.assertEqual((s1["created_count"], s1["num_chunks"], s1["chunks_already_applied"]),
                         (250, 3, 0))
        _, s2 = self.imp(path, "--search-field", "external_id", "--create-new", "--chunk-size", "100")
        self.assertEqual((s2["created_count"], s2["chunks_already_applied"]), (250, 3))
        cases = self.cases()
        self.assertEqual(len(cases), 250)
        hist = cc("case", "history", "--data", self.data, "--domain", "demo", cases[0]["case_id"])
        self.assertEqual(len(hist), 1)

    def test_lookup_tables_upload(self):
        # corehq/apps/fixtures/upload/workbook.py and run_upload.py: a types sheet, a sheet per
        # table; the second upload changes nothing; --replace deletes the row the sheet lacks.
        types = [["table_id", "is_global?", "field 1"], ["city", "yes", "name"]]
        path = os.path.join(self.tmp, "tables.xlsx")

        def upload(rows, *extra, expect=0):
            with open(path, "wb") as f:
                f.write(xlsx({"types": types, "city": [["field: name", "user 1"]] + rows}))
            return cc("lookup-tables", "upload", "--data", self.data, "--domain", "demo", path,
                      *extra, expect=expect)[-1]
        out = upload([["Lyon", ""], ["Nice", "amina"]])
        self.assertEqual((out["tables_created"], out["rows_created"]), (1, 2), out)
        out = upload([["Lyon", ""], ["Nice", "amina"]])
        self.assertEqual((out["rows_unchanged"], out["rows_created"]), (2, 0), out)
        out = upload([["Lyon", ""]])
        self.assertEqual(out["rows_deleted"], 0, out)
        out = upload([["Lyon", ""]], "--replace")
        self.assertEqual(out["rows_deleted"], 1, out)
        out = upload([["Lyon", "nobody"]], expect=1)
        self.assertEqual(out["problems"],
                         ["sheet 'city', row 2, column 'user 1': Unknown user: 'nobody'"])

    def test_bulk_edit(self):
        path = self.write("b.csv", "external_id,name,status\n"
                          + "".join(f"B{i},n{i},{'a' if i % 2 else 'b'}\n" for i in range(30)))
        self.imp(path, "--search-field", "external_id", "--create-new")
        [prev] = cc("import", "edit", "--data", self.data, "--domain", "demo", "--preview",
                    "--where", "case_type=patient", "--where", "properties.status=a")
        self.assertEqual(prev["matched"], 15)
        self.assertEqual(len([c for c in self.cases() if c["properties"].get("flag")]), 0)
        [r] = cc("import", "edit", "--data", self.data, "--domain", "demo", "--where",
                 "properties.status=a", "--set", "flag=yes", "--close")
        self.assertEqual((r["matched"], r["updated"]), (15, 15))
        flagged = [c for c in self.cases() if c["properties"].get("flag") == "yes"]
        self.assertEqual(len(flagged), 15)
        self.assertTrue(all(c["closed"] for c in flagged))
        # Again: the same matches and changes make the same forms, already stored.
        [r2] = cc("import", "edit", "--data", self.data, "--domain", "demo", "--where",
                  "properties.status=a", "--set", "flag=yes", "--close")
        self.assertEqual(r2["chunks_already_applied"], r2["num_chunks"])
        hist = cc("case", "history", "--data", self.data, "--domain", "demo", flagged[0]["case_id"])
        self.assertEqual(len(hist), 2)
        p = run("import", "edit", "--data", self.data, "--domain", "demo", "--where",
                "colour=red", "--set", "x=1")
        self.assertEqual(p.returncode, 64)
        self.assertIn("colour", p.stdout)

    def test_writing_tasks_wait_for_the_writer(self):
        # `commcare tasks run` beside a server is a reader: it must leave the kinds that submit
        # forms (rule.run here) queued for a writer rather than fail them into dead letters;
        # alone, it is the writer and runs them.
        self.imp(self.write("p.csv", "external_id,name,status\nA1,a,new\nA2,b,new\nA3,c,old\n"),
                 "--search-field", "external_id", "--create-new")
        rule = {"name": "flag", "domain": "demo", "case_type": "patient",
                "criteria": [{"property_name": "status", "match_type": "EQUAL",
                              "property_value": "new"}],
                "actions": {"update": [{"name": "flagged", "value": "yes"}]}}
        cc("rules", "add", "--data", self.data, "--json", json.dumps(rule))
        [queued] = cc("rules", "run", "--data", self.data, "--domain", "demo", "--name", "flag",
                      "--later")
        server = subprocess.Popen([CC, "serve", "--data", self.data, "--listen", "127.0.0.1:0",
                                   "--task-workers", "0", "--no-pillows"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            self.assertIn("listening", server.stdout.readline())
            p = subprocess.run([CC, "tasks", "run", "--data", self.data, "--until-idle"],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("rule.run", p.stderr)  # names what it leaves to the server
            [t] = cc("tasks", "show", "--data", self.data, str(queued["task"]))
            self.assertEqual((t["state"], t["attempts"]), ("queued", 0))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        cc("tasks", "run", "--data", self.data, "--until-idle")
        [t] = cc("tasks", "show", "--data", self.data, str(queued["task"]))
        self.assertEqual((t["state"], t["attempts"]), ("succeeded", 1))
        flags = {c["external_id"]: c["properties"].get("flagged") for c in self.cases()}
        self.assertEqual(flags, {"A1": "yes", "A2": "yes", "A3": None})

    def test_import_task_killed_mid_way_applies_each_row_once(self):
        if not os.environ.get("COMMCARE_LIBRARY"):
            self.skipTest("the Python binding is not set up (COMMCARE_LIBRARY)")
        n = 4000
        path = self.write("big.csv", "external_id,name,n\n"
                          + "".join(f"K{i},k{i},{i}\n" for i in range(n)))
        # A writer process running a worker pool (tasks that write need the writer's engine).
        worker = ("import commcare, sys, time\n"
                  "e = commcare.Engine(sys.argv[1])\n"
                  "w = e.workers(workers=1)\n"
                  "w.start()\n"
                  "if sys.argv[2] == 'enqueue':\n"
                  "    t = e.enqueue_import(sys.argv[3], {'domain': 'demo', 'case_type': 'patient',"
                  " 'search_field': 'external_id', 'create_new': True, 'chunk_size': 1})\n"
                  "    print(t['id'], flush=True)\n"
                  "    time.sleep(600)\n"
                  "else:\n"
                  "    print(e.wait_task(int(sys.argv[3]), timeout=120)['state'], flush=True)\n")
        p = subprocess.Popen([sys.executable, "-c", worker, self.data, "enqueue", path],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        tid = int(p.stdout.readline())
        deadline = time.time() + 60
        while time.time() < deadline:
            r = run("case", "list", "--data", self.data, "--domain", "demo")
            if r.returncode == 0 and r.stdout.count("\n") >= 300:
                break  # some chunks are in, most are not
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
        p.wait()
        before = run("case", "list", "--data", self.data, "--domain", "demo").stdout.count("\n")
        self.assertLess(before, n)
        # Another worker rescues the task once its lease lapses and runs it again.
        r = subprocess.run([sys.executable, "-c", worker, self.data, "wait", str(tid)],
                           capture_output=True, text=True, timeout=180)
        self.assertEqual(r.stdout.strip(), "succeeded", r.stderr)
        [t] = cc("tasks", "show", "--data", self.data, str(tid))
        self.assertEqual(t["result"]["created_count"], n)
        self.assertGreater(t["result"]["chunks_already_applied"], 0)
        self.assertGreaterEqual(t["attempts"], 2)
        cases = self.cases()
        self.assertEqual(len(cases), n)
        self.assertEqual(len({c["external_id"] for c in cases}), n)
        for c in cases[:50]:
            hist = cc("case", "history", "--data", self.data, "--domain", "demo", c["case_id"])
            self.assertEqual(len(hist), 1)


if __name__ == "__main__":
    unittest.main()
