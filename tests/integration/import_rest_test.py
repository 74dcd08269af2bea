#!/usr/bin/env python3
"""Case import over REST (/a/{domain}/api/import/cases/) under `commcare serve --task-workers 1`:
a CSV uploaded raw and as multipart; a dry run answering every problem row (row, column,
reason) and writing nothing; the run as an import.cases task with its progress, its result and
its per-row result file; a bad file (a column named twice) refused naming the column, in a dry
run (400) and in a task (dead-lettered); bad options and permissions.
Usage: import_rest_test.py COMMCARE"""
import json
import sys
import time
import unittest
import uuid

import rest_helpers

CC = sys.argv.pop(1)

GOOD_ROWS = 1200  # over the importer's 500-row progress step
CSV = ("name,age,owner_name,close,date_opened\n"
       + "".join(f"p{i},{i % 90},,,\n" for i in range(GOOD_ROWS))
       + "bad-owner,1,nobody,,\n"
       + "bad-close,2,,maybe,\n"
       + "bad-date,3,,,not-a-date\n").encode()
PROBLEMS = [(GOOD_ROWS + 2, "owner_name"), (GOOD_ROWS + 3, "close"),
            (GOOD_ROWS + 4, "date_opened")]


class ImportRestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = rest_helpers.Server(CC, "cc-import-rest-", args=["--task-workers", "1"])
        cls.request = staticmethod(cls.server.request)

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def count_cases(self, want=None):
        """The patient cases the Case API lists (once there are `want`: it reads a pillow's)."""
        for _ in range(200):
            s, body = self.request("GET", "/a/demo/api/case/v2/?case_type=patient&limit=1")
            self.assertEqual(s, 200, body)
            if want is None or body["matching_records"] == want:
                break
            time.sleep(0.05)
        return body["matching_records"]

    def test_1_dry_run_lists_problem_rows_and_writes_nothing(self):
        s, dry = self.request("POST", "/a/demo/api/import/cases/?case_type=patient"
                                      "&create_new=true&dry_run=true", CSV)
        self.assertEqual(s, 200, dry)
        self.assertEqual([(p["row"], p["column"]) for p in dry["problems"]], PROBLEMS)
        self.assertTrue(all(p["reason"] and p["error"] for p in dry["problems"]))
        self.assertEqual((dry["dry_run"], dry["created_count"], dry["failed_count"]),
                         (True, GOOD_ROWS, 3))
        self.assertEqual(self.count_cases(), 0)

    def test_2_run_as_a_task_with_progress_and_result_file(self):
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"case_type\"\r\n\r\n"
                f"patient\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"create_new\""
                f"\r\n\r\ntrue\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"p.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode() + CSV + \
            f"\r\n--{boundary}--\r\n".encode()
        s, task = self.request("POST", "/a/demo/api/import/cases/", body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        self.assertEqual(s, 202, task)
        self.assertEqual((task["type"], task["domain"]), ("import.cases", "demo"))
        s, early = self.request("GET", f"/a/demo/api/import/cases/{task['id']}/result")
        self.assertIn(s, (200, 409), early)  # 409 while it runs: not finished
        t = self.server.wait_task(task["id"])
        self.assertEqual(t["state"], "succeeded", t["last_error"])
        rows = GOOD_ROWS + 3
        self.assertEqual(t["progress"], {"done": rows, "total": rows, "message": "rows"})
        self.assertEqual((t["result"]["created_count"], t["result"]["failed_count"]),
                         (GOOD_ROWS, 3))
        self.assertEqual(self.count_cases(GOOD_ROWS), GOOD_ROWS)
        s, data = self.request("GET", f"/a/demo/api/import/cases/{task['id']}/result")
        self.assertEqual(s, 200)
        lines = [json.loads(x) for x in data.decode().splitlines()]
        self.assertEqual(len(lines), rows)
        self.assertEqual(lines[0]["action"], "created")
        failed = [(x["row"], x["errors"][0]["column"]) for x in lines if x["action"] == "failed"]
        self.assertEqual(failed, PROBLEMS)
        self.assertEqual(self.request("GET", "/a/demo/api/import/cases/999999/result")[0], 404)

    def test_3_bad_file_and_bad_options(self):
        twice = b"name,age,age\nx,1,2\n"
        s, body = self.request("POST", "/a/demo/api/import/cases/?case_type=patient"
                                       "&create_new=true&dry_run=true", twice)
        self.assertEqual(s, 400, body)
        self.assertIn("appears twice", body["error"])
        s, task = self.request("POST", "/a/demo/api/import/cases/?case_type=patient"
                                       "&create_new=true", twice)
        self.assertEqual(s, 202, task)
        t = self.server.wait_task(task["id"])
        self.assertEqual(t["state"], "dead")  # a bad file is not retried
        self.assertIn("appears twice", t["last_error"])
        s, body = self.request("POST", "/a/demo/api/import/cases/?create_new=true", CSV)
        self.assertEqual((s, body["error"]), (400, "case_type: is required"))
        s, body = self.request("POST", "/a/demo/api/import/cases/?case_type=p&colour=red", CSV)
        self.assertEqual((s, body["error"]), (400, "unknown parameter 'colour'"))
        s, body = self.request("POST", "/a/demo/api/import/cases/?case_type=patient", b"")
        self.assertEqual((s, body["error"]), (400, "the file is empty"))
        self.assertEqual(self.request("POST", "/a/demo/api/import/cases/?case_type=patient",
                                      CSV, auth=("w.demo", "wrong"))[0], 401)
        self.assertEqual(self.request("GET", "/a/demo/api/import/cases/")[0], 405)

    def bulk_upload(self, fields, csv=None):
        boundary = uuid.uuid4().hex
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n"
                        f"{v}\r\n".encode() for k, v in fields.items())
        if csv is not None:
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                     f"filename=\"h.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode() + csv + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        return self.request("POST", "/a/demo/importer/excel/bulk_upload_api/", body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"})

    def test_4_hq_bulk_upload_api(self):
        # corehq/apps/case_importer/views.py bulk_case_upload_api / _bulk_case_upload_api:
        # every column a property of its name, name_column the case name, create_new_cases=on,
        # answered {"code": 200, "message": "success", "status_url"}.
        csv = b"external_id,full_name,size\nHH-1,Uwase,4\nHH-2,Mugisha,6\n"
        fields = {"case_type": "household", "search_field": "external_id",
                  "create_new_cases": "on", "name_column": "full_name", "comment": "first"}
        s, out = self.bulk_upload(fields, csv)
        self.assertEqual((s, out["code"], out["message"]), (200, 200, "success"), out)
        self.assertRegex(out["status_url"], r"^http://127\.0\.0\.1:\d+/a/demo/api/tasks/\d+/$")
        task_id = int(out["status_url"].rstrip("/").rsplit("/", 1)[1])
        t = self.server.wait_task(task_id)
        self.assertEqual(t["state"], "succeeded", t["last_error"])
        # The same external ids again update (no create_new_cases: rows that match only).
        s, out = self.bulk_upload({"case_type": "household", "search_field": "external_id",
                                   "name_column": "full_name"},
                                  b"external_id,full_name,size\nHH-1,Uwase,5\nHH-9,Nobody,1\n")
        self.assertEqual(s, 200, out)
        t = self.server.wait_task(int(out["status_url"].rstrip("/").rsplit("/", 1)[1]))
        self.assertEqual((t["state"], t["result"]["match_count"], t["result"]["created_count"]),
                         ("succeeded", 1, 0))
        for _ in range(200):
            s, body = self.request("GET", "/a/demo/api/case/v2/?case_type=household")
            if s == 200 and body["matching_records"] == 2 and any(
                    c["properties"].get("size") == "5" for c in body["cases"]):
                break
            time.sleep(0.05)
        by_ext = {c["external_id"]: c for c in body["cases"]}
        self.assertEqual(sorted(by_ext), ["HH-1", "HH-2"])
        self.assertEqual((by_ext["HH-1"]["case_name"], by_ext["HH-1"]["properties"]["size"]),
                         ("Uwase", "5"))
        self.assertNotIn("full_name", by_ext["HH-2"]["properties"])
        # HQ's refusals, in its {"code": 500, "message"} body.
        s, out = self.bulk_upload({"search_field": "external_id"}, csv)
        self.assertEqual((s, out["code"], out["message"]), (400, 500, "Invalid POST request. "
                         "Both 'file' and 'case_type' are required"))
        s, out = self.bulk_upload({"case_type": "household", "search_field": "phone"}, csv)
        self.assertEqual((s, out["message"]), (400, "Illegal value for search_field: phone"))
        self.assertEqual(self.bulk_upload({"case_type": "household"})[0], 400)  # no file


if __name__ == "__main__":
    unittest.main()
