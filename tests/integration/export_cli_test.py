#!/usr/bin/env python3
"""`commcare export cases|forms` end to end: JSON line, CSV content, XLSX sheets, usage errors."""
import csv
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


if __name__ == "__main__":
    unittest.main()
