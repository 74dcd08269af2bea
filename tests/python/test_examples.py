"""Smoke tests: the Python examples, `python -m commcare`, and `pip install bindings/python`.

Needs COMMCARE_LIBRARY, COMMCARE_SOURCE_DIR and COMMCARE_SAMPLES_DIR (ctest sets them)."""

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

SRC = os.environ["COMMCARE_SOURCE_DIR"]
SAMPLES = os.environ["COMMCARE_SAMPLES_DIR"]
EXAMPLES = os.path.join(SRC, "examples", "python")


def run(*args, env=None, check=True):
    e = dict(os.environ)
    e["PYTHONPATH"] = os.path.join(SRC, "bindings", "python")
    e.update(env or {})
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=e,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


class ExamplesTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cc-examples-")
        self.data = os.path.join(self.dir, "data")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_quickstart(self):
        out = run(os.path.join(EXAMPLES, "quickstart.py")).stdout
        self.assertIn("submitted: 201 submit_success form-1", out)
        self.assertIn("case: Ana {'village': 'Kisumu'}", out)
        self.assertIn("as expected:", out)

    def test_folder_csv_and_summary_pillow(self):
        out = run(os.path.join(EXAMPLES, "submit_folder.py"), self.data, SAMPLES).stdout
        self.assertIn("'normal':", out)
        csv_path = os.path.join(self.dir, "changes.csv")
        out = run(os.path.join(EXAMPLES, "changes_to_csv.py"), self.data, csv_path).stdout
        with open(csv_path) as f:
            rows = list(csv.DictReader(f))
        self.assertGreater(len(rows), 10)
        self.assertIn(f"{len(rows)} changes written", out)
        self.assertTrue({"case-sql", "form-sql"} <= {r["topic"] for r in rows})
        summary = os.path.join(self.dir, "summary.sqlite")
        out = run(os.path.join(EXAMPLES, "summary_pillow.py"), self.data, summary).stdout
        cases = [r for r in rows if r["topic"] == "case-sql"]
        self.assertIn(f"processed {len(cases)} changes", out)
        # Run again: the pillow's checkpoint means nothing is processed twice.
        out = run(os.path.join(EXAMPLES, "summary_pillow.py"), self.data, summary).stdout
        self.assertIn("processed 0 changes", out)

    def test_python_dash_m_commcare(self):
        cc = ["-m", "commcare"]
        self.assertEqual(json.loads(run(*cc, "init", "--data", self.data, "--shards", "16")
                                    .stdout)["shards"], 16)
        form = os.path.join(SAMPLES, "case-v2__basic_close.xml")
        out = run(*cc, "submit", "--data", self.data, "--domain", "demo", form).stdout
        sub = json.loads(out)
        self.assertEqual(sub["status"], 201)
        form_id = sub["form_id"]
        got = json.loads(run(*cc, "form", "get", "--data", self.data, "--domain", "demo",
                             form_id).stdout)
        self.assertEqual(got["form_id"], form_id)
        cases = run(*cc, "case", "list", "--data", self.data, "--domain", "demo").stdout
        self.assertTrue(cases.strip())
        case_id = json.loads(cases.splitlines()[0])["case_id"]
        self.assertEqual(json.loads(run(*cc, "case", "get", "--data", self.data, "--domain",
                                        "demo", case_id).stdout)["case_id"], case_id)
        bad = run(*cc, "case", "get", "--data", self.data, "--domain", "demo", "nope",
                  check=False)
        self.assertEqual(bad.returncode, 2)  # not found
        self.assertEqual(json.loads(bad.stdout)["code"], -1)
        changes = run(*cc, "changes", "--data", self.data).stdout.splitlines()
        self.assertEqual({json.loads(c)["change"]["document_id"] for c in changes},
                         {form_id, case_id})
        one = run(*cc, "changes", "--data", self.data, "--limit", "1").stdout
        self.assertEqual(len(one.splitlines()), 1)
        self.assertGreater(json.loads(run(*cc, "pillows", "run", "--data", self.data)
                                      .stdout)["processed"], 0)
        status = json.loads(run(*cc, "pillows", "status", "--data", self.data).stdout)
        self.assertTrue(all(s["lag"] == 0 for s in status))
        found = json.loads(run(*cc, "search", "--data", self.data, "--domain", "demo").stdout)
        self.assertIn(case_id, [c["case_id"] for c in found["cases"]])
        run(*cc, "admin", "domain", "create", "--data", self.data, "demo")
        run(*cc, "admin", "user", "create", "--data", self.data, "--domain", "demo",
            "--username", "nurse", "--password", "pw12")
        p = run(*cc, "restore", "--data", self.data, "--domain", "demo", "--user", "nurse")
        self.assertIn("ota_restore_success", p.stdout)
        self.assertIn("sync_id", p.stderr)
        usage = run(*cc, "case", "get", "--data", self.data, "--domain", "demo", check=False)
        self.assertEqual(usage.returncode, 64)  # EX_USAGE
        self.assertIn("CASE_ID", usage.stderr)

    def test_pip_install(self):
        venv = os.path.join(self.dir, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
        pip = subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--no-index", "-q",
                              os.path.join(SRC, "bindings", "python")],
                             capture_output=True, text=True, timeout=300)
        self.assertEqual(pip.returncode, 0, pip.stdout + pip.stderr)
        py = os.path.join(venv, "bin", "python")
        probe = ("import commcare, os; e = commcare.Engine(); "
                 "print(commcare.version(), os.path.dirname(commcare.__file__))")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        p = subprocess.run([py, "-c", probe], capture_output=True, text=True, env=env,
                           cwd=self.dir, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("(0, 1, 0)", p.stdout)
        self.assertIn(venv, p.stdout)
        # Without the library anywhere it can look, the import says how to point at it.
        env.pop("COMMCARE_LIBRARY")
        p = subprocess.run([py, "-c", "import commcare"], capture_output=True, text=True,
                           env=env, cwd=self.dir, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("COMMCARE_LIBRARY", p.stderr)


if __name__ == "__main__":
    unittest.main()
