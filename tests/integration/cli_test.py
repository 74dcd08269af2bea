#!/usr/bin/env python3
"""The `commcare` command end to end: every subcommand, JSON output, exit codes, errors."""
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

CC = sys.argv.pop(1)
SAMPLES = sys.argv.pop(1)


def cc(*args, expect=0):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if expect is not None and p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode} (wanted {expect}): {p.stdout}{p.stderr}")
    return p


def lines(p):
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cc-cli-")
        self.data = os.path.join(self.tmp, "data")
        out = lines(cc("init", "--data", self.data, "--shards", "32", "--databases", "2"))
        self.assertEqual(out, [{"data": self.data, "shards": 32, "databases": 2, "blob_store": "pack"}])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def submit(self, *files, **kw):
        args = ["submit", "--data", self.data, "--domain", kw.get("domain", "demo")]
        if "version" in kw:
            args += ["--openrosa-version", kw["version"]]
        return lines(cc(*args, *files, expect=kw.get("expect", 0)))

    def test_submit_all_samples_and_read_back(self):
        files = sorted(glob.glob(os.path.join(SAMPLES, "*.xml")))
        self.assertGreaterEqual(len(files), 30)
        out = self.submit(*files)
        self.assertEqual(len(out), len(files))
        for r in out:
            self.assertEqual(set(r), {"file", "status", "nature", "message", "form_id", "state"})
        by_name = {os.path.basename(r["file"]): r for r in out}
        self.assertEqual(by_name["receiverwrapper__missing_xmlns.xml"]["status"], 500)
        self.assertEqual(by_name["receiverwrapper__missing_xmlns.xml"]["state"], "submission_error_log")
        self.assertEqual(by_name["case-bugs__empty_id.xml"]["state"], "error")
        self.assertEqual(by_name["case-v2__basic_create.xml"]["nature"], "submit_success")

        case = lines(cc("case", "get", "--data", self.data, "--domain", "demo",
                        "ad38211be256653bceac8e2156475667"))[0]
        for key in ("case_id", "case_type", "case_name", "external_id", "owner_id", "date_opened",
                    "last_modified", "server_last_modified", "closed", "date_closed", "properties",
                    "indices", "opened_by", "closed_by", "modified_by", "deleted"):
            self.assertIn(key, case)
        self.assertEqual(case["external_id"], "someexternal")

        listed = lines(cc("case", "list", "--data", self.data, "--domain", "demo",
                          "--type", "cc_shine_client"))
        self.assertEqual(len(listed), 4)
        closed = lines(cc("case", "list", "--data", self.data, "--domain", "demo", "--closed", "true"))
        self.assertTrue(all(c["closed"] for c in closed) and closed)
        owned = lines(cc("case", "list", "--data", self.data, "--domain", "demo", "--owner",
                         "91cadfa4cb957cf021c76dfe31d206a6"))
        # simple_form.xml reuses case_ledger_form's instance id: it is an edit that drops both
        # cases; ...b stays live through case_ledger_form_2's update, ...c is deleted.
        self.assertEqual({c["case_id"][-1] for c in owned}, {"b"})
        self.assertEqual(lines(cc("case", "list", "--data", self.data, "--domain", "other")), [])

        hist = lines(cc("case", "history", "--data", self.data, "--domain", "demo",
                        "fbb69a88-1eca-463a-883e-1148b96fb03b"))
        self.assertIn("case_create", hist[0]["types"])

        form = lines(cc("form", "get", "--data", self.data, "--domain", "demo",
                        "ad38211be256653bceac8e2156475666"))[0]
        self.assertEqual(form["xmlns"], "http://commcarehq.org/test/submit")
        self.assertEqual(form["state"], "normal")
        xml = cc("form", "get", "--data", self.data, "--domain", "demo",
                 "ad38211be256653bceac8e2156475666", "--xml").stdout
        with open(os.path.join(SAMPLES, "receiverwrapper__form_with_case.xml")) as f:
            self.assertEqual(xml, f.read())

        check = lines(cc("check", "--data", self.data))[0]
        self.assertTrue(check["ok"], check)
        self.assertEqual(check["forms"], len(files))

    def test_archive_and_ledger(self):
        self.submit(os.path.join(SAMPLES, "receiverwrapper__case_ledger_form.xml"))
        led = lines(cc("ledger", "get", "--data", self.data, "--domain", "demo",
                       "fbb69a88-1eca-463a-883e-1148b96fb03b"))[0]
        self.assertEqual(led, {"stock": {"fbb69a88-1eca-463a-883e-1148b96fb03b": 10}})
        fid = "ad38211be256653bceac8e2156475664"
        out = lines(cc("form", "archive", "--data", self.data, "--domain", "demo", fid))[0]
        self.assertEqual(out["state"], "archived")
        case = lines(cc("case", "get", "--data", self.data, "--domain", "demo",
                        "fbb69a88-1eca-463a-883e-1148b96fb03b"))[0]
        self.assertTrue(case["deleted"])
        led = lines(cc("ledger", "get", "--data", self.data, "--domain", "demo",
                       "fbb69a88-1eca-463a-883e-1148b96fb03b"))[0]
        self.assertEqual(led["stock"]["fbb69a88-1eca-463a-883e-1148b96fb03b"], 0)
        err = lines(cc("form", "archive", "--data", self.data, "--domain", "demo", fid, expect=3))[0]
        self.assertIn("is archived, not normal", err["error"])
        out = lines(cc("form", "unarchive", "--data", self.data, "--domain", "demo", fid))[0]
        self.assertEqual(out["state"], "normal")
        case = lines(cc("case", "get", "--data", self.data, "--domain", "demo",
                        "fbb69a88-1eca-463a-883e-1148b96fb03b"))[0]
        self.assertFalse(case["deleted"])
        self.assertTrue(case["closed"])

    def test_openrosa_v3_and_errors(self):
        r = self.submit(os.path.join(SAMPLES, "case-bugs__empty_id.xml"), version="3.0")[0]
        self.assertEqual((r["status"], r["nature"]), (422, "processing_failure"))
        r = self.submit(os.path.join(SAMPLES, "case-v2__basic_create.xml"), version="7")[0]
        self.assertEqual(r["status"], 400)
        self.assertIn("X-OpenRosa-Version", r["message"])
        missing = self.submit("/nonexistent.xml", expect=1)[0]
        self.assertEqual(missing["error"], "cannot read file")

    def test_errors_are_json_with_nonzero_exit(self):
        e = lines(cc("case", "get", "--data", self.data, "--domain", "demo", "nope", expect=2))[0]
        self.assertIn("case 'nope' not found", e["error"])
        e = lines(cc("form", "get", "--data", self.data, "--domain", "demo", "nope", expect=2))[0]
        self.assertIn("form 'nope' not found", e["error"])
        e = lines(cc("case", "get", "--domain", "demo", "x", expect=1))[0]
        self.assertIn("--data", e["error"])
        e = lines(cc("frobnicate", "--data", self.data, expect=1))[0]
        self.assertIn("unknown command", e["error"])
        e = lines(cc("init", "--data", self.data, expect=1))[0]
        self.assertIn("already initialised", e["error"])
        e = lines(cc("case", "list", "--data", self.data, "--domain", "d", "--closed", "maybe", expect=1))[0]
        self.assertIn("--closed", e["error"])
        e = lines(cc("case", "get", "--data", os.path.join(self.tmp, "nothing"), "--domain", "d", "x",
                     expect=2))[0]
        self.assertIn("not a libcommcare data directory", e["error"])

    def test_second_writer_is_refused_readers_are_not(self):
        self.submit(os.path.join(SAMPLES, "case-v2__basic_create.xml"))
        with open(os.path.join(self.data, "LOCK"), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            e = lines(cc("submit", "--data", self.data, "--domain", "demo",
                         os.path.join(SAMPLES, "case-v2__basic_update.xml"), expect=3))[0]
            self.assertIn("locked by another writing process", e["error"])
            c = lines(cc("case", "get", "--data", self.data, "--domain", "demo", "foo-case-id"))[0]
            self.assertEqual(c["case_id"], "foo-case-id")
            check = lines(cc("check", "--data", self.data))[0]
            self.assertTrue(check["ok"])

    def test_production_backends_across_processes(self):
        """commcare init --config with PostgreSQL (2 databases), S3 and Kafka from
        scripts/with-test-servers; every command below is its own process."""
        env = {k: os.environ.get(k) for k in ("COMMCARE_TEST_PG", "COMMCARE_TEST_S3",
                                               "COMMCARE_TEST_KAFKA", "COMMCARE_TEST_KAFKA_CONTROL")}
        if not all(env.values()):
            if os.environ.get("CI") == "true":
                self.fail(f"CI=true but the test servers are not all set: {env}")
            self.skipTest("no test servers (run under scripts/with-test-servers)")
        tag = f"cli{os.getpid()}"
        dbs = []
        for i in range(2):
            db = f"{tag}_{i}"
            subprocess.run(["psql", "-q", env["COMMCARE_TEST_PG"] + " dbname=postgres", "-c",
                            f"CREATE DATABASE {db}"], check=True)
            dbs.append(env["COMMCARE_TEST_PG"] + f" dbname={db}")
        host = os.path.join(self.tmp, "host.json")
        with open(host, "w") as f:
            json.dump({"shards": 16, "databases": 2,
                       "primary": {"kind": "postgres", "databases": dbs},
                       "blob_store": {"kind": "s3", "endpoint": env["COMMCARE_TEST_S3"],
                                      "bucket": "blobs", "access_key": "S3RVER",
                                      "secret_key": "S3RVER", "prefix": tag + "/"},
                       "change_log": {"kind": "kafka",
                                      "bootstrap_servers": env["COMMCARE_TEST_KAFKA"],
                                      "topic_control": env["COMMCARE_TEST_KAFKA_CONTROL"],
                                      "topic_prefix": tag + ".", "partitions": 4}}, f)
        data = os.path.join(self.tmp, "prod")
        out = lines(cc("init", "--data", data, "--config", host))[0]
        self.assertEqual((out["shards"], out["databases"]), (16, 2))
        with open(os.path.join(data, "commcare.json")) as f:
            stored = json.load(f)
        self.assertEqual(stored["primary"]["databases"], dbs)
        bad = os.path.join(self.tmp, "bad.json")
        with open(bad, "w") as f:
            json.dump({"shards": 16, "colour": "red"}, f)
        err = lines(cc("init", "--data", data + "-bad", "--config", bad, expect=1))[0]
        self.assertIn("colour", err["error"])
        files = sorted(glob.glob(os.path.join(SAMPLES, "*.xml")))
        half = len(files) // 2
        sub = lines(cc("submit", "--data", data, "--domain", "demo", *files[:half]))
        sub += lines(cc("submit", "--data", data, "--domain", "demo", *files[half:]))
        stored_forms = [r for r in sub if r.get("form_id")]
        self.assertGreater(len(stored_forms), 10)
        first = stored_forms[0]
        xml = cc("form", "get", "--data", data, "--domain", "demo", first["form_id"], "--xml").stdout
        self.assertIn("<", xml)  # read back from the bucket
        live = {c["case_id"] for c in lines(cc("case", "list", "--data", data, "--domain", "demo"))}
        self.assertTrue(live)
        changes = lines(cc("changes", "--data", data, "--topic", "form-sql"))
        self.assertTrue({c["key"] for c in changes} >= {r["form_id"] for r in stored_forms})
        ran = lines(cc("pillows", "run", "--data", data, "--once"))[0]
        self.assertGreater(ran["processed"], 0)
        status = lines(cc("pillows", "status", "--data", data))[0]
        self.assertTrue(all(p["lag"] == 0 for p in status), status)
        found = json.loads(cc("search", "--data", data, "--domain", "demo", "--limit", "5000").stdout)
        self.assertEqual({c["case_id"] for c in found["cases"]}, live)
        check = lines(cc("check", "--data", data))[0]
        self.assertTrue(check["ok"], check)

    def test_changes_pillows_search_and_ucr_on_the_samples(self):
        files = sorted(glob.glob(os.path.join(SAMPLES, "*.xml")))
        out = self.submit(*files)
        stored = {r["form_id"] for r in out if r.get("form_id")}
        # The submit process relayed everything before it exited: one form-sql record per form.
        changes = lines(cc("changes", "--data", self.data, "--topic", "form-sql"))
        self.assertTrue({c["key"] for c in changes} >= stored)
        deprecated = [c for c in changes if c["change"]["document_type"] == "XFormDeprecated"]
        self.assertEqual(len(deprecated), 2)  # the two edits' originals, moved aside
        self.assertEqual(changes[0]["change"]["data_source_type"], "sql")
        one = lines(cc("changes", "--data", self.data, "--topic", "form-sql", "--partition", "0",
                       "--limit", "1"))
        self.assertLessEqual(len(one), 1)
        # Pillows beside another writer: read-only engine, secondary change log.
        config = os.path.join(self.tmp, "ucr.json")
        with open(config, "w") as f:
            json.dump({"domain": "demo", "table_id": "by_owner", "referenced_doc_type": "CommCareCase",
                       "configured_indicators": [{"type": "raw", "column_id": "owner",
                                                  "property_name": "owner_id"}]}, f)
        with open(os.path.join(self.data, "LOCK"), "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            ran = lines(cc("pillows", "run", "--data", self.data, "--once"))[0]
            self.assertGreater(ran["processed"], 0)
            self.assertEqual(lines(cc("ucr", "load", "--data", self.data, config))[0]["rows"] > 0, True)
        status = lines(cc("pillows", "status", "--data", self.data))[0]
        self.assertEqual({p["pillow"] for p in status}, {"case-search", "read-copy", "ucr"})
        self.assertTrue(all(p["lag"] == 0 for p in status), status)
        # The index holds every live case of the domain.
        live = {c["case_id"] for c in lines(cc("case", "list", "--data", self.data, "--domain", "demo"))}
        found = json.loads(cc("search", "--data", self.data, "--domain", "demo", "--limit", "5000").stdout)
        self.assertEqual({c["case_id"] for c in found["cases"]}, live)
        self.assertIsNone(found["next"])
        rows = lines(cc("ucr", "rows", "--data", self.data, "--domain", "demo", "--table", "by_owner"))
        self.assertEqual({r["doc_id"] for r in rows}, live)
        # Bad input names the problem.
        e = lines(cc("changes", "--data", self.data, "--partition", "x", expect=1))[0]
        self.assertIn("--partition", e["error"])
        e = lines(cc("pillows", "frob", "--data", self.data, expect=1))[0]
        self.assertIn("frob", e["error"])
        e = lines(cc("pillows", "requeue", "--data", self.data, expect=1))[0]
        self.assertIn("--pillow", e["error"])
        e = lines(cc("search", "--data", self.data, expect=1))[0]
        self.assertIn("--domain", e["error"])
        e = lines(cc("search", "--data", self.data, "--domain", "demo", "--range", "age", expect=1))[0]
        self.assertIn("key:op:value", e["error"])
        with open(config, "w") as f:
            f.write('{"domain":"demo","table_id":"t","referenced_doc_type":"CommCareCase",'
                    '"configured_indicators":[{"type":"expression","column_id":"a","datatype":"string",'
                    '"expression":{"type":"bogus"}}]}')
        e = lines(cc("ucr", "load", "--data", self.data, config, expect=1))[0]
        self.assertEqual(e["error"], "configured_indicators[0].expression.type: unknown expression type 'bogus'")
        e = lines(cc("ucr", "rows", "--data", self.data, "--domain", "demo", "--table", "none", expect=2))[0]
        self.assertIn("no UCR data source", e["error"])
        e = lines(cc("pillows", "retries", "--data", self.data, "--pillow", "nope", expect=2))[0]
        self.assertIn("no pillow named nope", e["error"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
