#!/usr/bin/env python3
"""A libcommcare built without some production backends (COMMCARE_WITH_<X>=OFF): a deployment
that asks for one fails to be set up, and a data directory whose commcare.json names one fails
to open, each with exit 3 (precondition) and an error naming the option; a failed set-up leaves
no commcare.json behind. The backends built without are the arguments after the binary.

Usage: without_backends_test.py COMMCARE_BINARY BACKEND...   (POSTGRES, KAFKA, S3)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

CC = sys.argv[1] if len(sys.argv) > 1 else "build/bin/commcare"
OFF = sys.argv[2:]
NAMES = {"POSTGRES": "PostgreSQL", "KAFKA": "Kafka", "S3": "S3"}
# The commcare.json sections that ask for each backend.
SECTIONS = {
    "POSTGRES": {
        "primary": {"kind": "postgres", "databases": ["host=db.invalid dbname=p"]},
        "meta": {"kind": "postgres", "database": "host=db.invalid dbname=m"},
        "pillows": {"kind": "postgres", "database": "host=db.invalid dbname=q"},
    },
    "KAFKA": {"change_log": {"kind": "kafka", "bootstrap_servers": "kafka.invalid:9092"}},
    "S3": {"blob_store": {"kind": "s3", "endpoint": "http://s3.invalid", "bucket": "b",
                          "access_key": "k", "secret_key": "k"}},
}
FLAGS = {"primary": "--primary", "meta": "--meta", "pillows": "--pillows",
         "change_log": "--change-log", "blob_store": "--blob-store"}


def cc(*args):
    return subprocess.run([CC, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=60)


class WithoutBackends(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cc-without-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def assert_refused(self, p, backend):
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        error = json.loads(p.stdout)["error"]
        self.assertIn(f"this libcommcare was built without {NAMES[backend]} "
                      f"(COMMCARE_WITH_{backend}=OFF)", error)

    def test_the_backends_built_still_work(self):
        data = os.path.join(self.tmp, "plain")
        self.assertEqual(cc("init", "--data", data, "--shards", "16").returncode, 0)
        p = cc("check", "--data", data)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_init_asking_for_a_missing_backend_is_refused(self):
        for backend in OFF:
            for section, value in SECTIONS[backend].items():
                with self.subTest(backend=backend, section=section):
                    data = os.path.join(self.tmp, f"init-{section}")
                    self.assert_refused(
                        cc("init", "--data", data, FLAGS[section], json.dumps(value)), backend)
                    self.assertFalse(os.path.exists(os.path.join(data, "commcare.json")))

    def test_a_directory_set_up_for_a_missing_backend_does_not_open(self):
        for backend in OFF:
            for section, value in SECTIONS[backend].items():
                with self.subTest(backend=backend, section=section):
                    data = os.path.join(self.tmp, f"open-{section}")
                    os.makedirs(data)
                    with open(os.path.join(data, "commcare.json"), "w") as f:
                        json.dump({"format_version": 1, "shards": 16, "databases": 1,
                                   "blob_store": "pack", section: value}, f)
                    self.assert_refused(cc("check", "--data", data), backend)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
