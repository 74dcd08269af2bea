#!/usr/bin/env python3
"""Pillow crash test: kill -9 a `commcare pillows run` worker at random moments, restart it,
and check that the case search index ends equal to a rebuild from scratch; also SIGTERM stops a
worker gracefully and a second worker with the same (n, k) is refused."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CC = sys.argv[1]
SEED = int(os.environ.get("CRASH_TEST_SEED", str(random.randrange(1 << 30))))
rng = random.Random(SEED)
print(f"seed {SEED}")


def run(args, check=True):
    p = subprocess.run([CC] + args, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}: {p.stdout} {p.stderr}")
    return p


def form(i, case):
    props = "".join(f"<p{k}>value {k} of {i}</p{k}>" for k in range(8))
    return (f'<?xml version="1.0"?><data xmlns="http://example.org/crash">'
            f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>form-{i}</instanceID>'
            f'<userID>u1</userID><timeStart>2020-01-01T00:00:00Z</timeStart>'
            f'<timeEnd>2020-01-01T00:01:00Z</timeEnd></meta>'
            f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="case-{case}" '
            f'date_modified="2020-01-01T00:00:00Z" user_id="u1"><create><case_type>t</case_type>'
            f'<case_name>case {case}</case_name><owner_id>u{case % 3}</owner_id></create>'
            f'<update>{props}<n>{i}</n></update>{"<close/>" if i % 11 == 0 else ""}</case></data>')


def submit(data, tmp, lo, hi):
    d = os.path.join(tmp, f"forms-{lo}")
    os.makedirs(d)
    files = []
    for i in range(lo, hi):
        path = os.path.join(d, f"{i}.xml")
        with open(path, "w") as f:
            f.write(form(i, i % 700))
        files.append(path)
    out = run(["submit", "--data", data, "--domain", "demo"] + files).stdout
    assert all(json.loads(l)["status"] == 201 for l in out.splitlines())


def snapshot(data):
    cases, cursor = {}, None
    while True:
        args = ["search", "--data", data, "--domain", "demo", "--limit", "5000"]
        if cursor:
            args += ["--cursor", cursor]
        page = json.loads(run(args).stdout)
        for c in page["cases"]:
            c.pop("indexed_on")
            assert c["case_id"] not in cases, f"{c['case_id']} listed twice"
            cases[c["case_id"]] = c
        cursor = page["next"]
        if not cursor:
            return cases


def ucr_rows(data):
    out = run(["ucr", "rows", "--data", data, "--domain", "demo", "--table", "open_cases",
               "--limit", "100000"]).stdout
    rows = []
    for line in out.splitlines():
        r = json.loads(line)
        r.pop("inserted_at")
        rows.append(json.dumps(r, sort_keys=True))
    return sorted(rows)


def main():
    tmp = tempfile.mkdtemp(prefix="cc-pcrash-")
    try:
        data = os.path.join(tmp, "data")
        run(["init", "--data", data, "--shards", "64", "--databases", "2"])
        submit(data, tmp, 0, 1500)
        config = os.path.join(tmp, "ucr.json")
        with open(config, "w") as f:
            json.dump({"domain": "demo", "table_id": "open_cases", "referenced_doc_type": "CommCareCase",
                       "configured_filter": {"type": "boolean_expression", "operator": "eq",
                                             "expression": {"type": "property_name", "property_name": "closed"},
                                             "property_value": False},
                       "configured_indicators": [
                           {"type": "raw", "column_id": "owner", "property_name": "owner_id"},
                           {"type": "expression", "column_id": "n", "datatype": "integer",
                            "expression": {"type": "property_name", "property_name": "n"}}]}, f)
        # Loaded before any pillow ran: filled from the primary store, then kept by the pillow.
        run(["ucr", "load", "--data", data, config])
        kills = 0
        for rnd in range(8):
            worker = subprocess.Popen([CC, "pillows", "run", "--data", data],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.05, 0.6))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            kills += 1
            if rnd % 3 == 0:
                submit(data, tmp, 1500 + rnd * 100, 1600 + rnd * 100)
        # A graceful stop: SIGTERM finishes the batch, checkpoints and exits 0.
        worker = subprocess.Popen([CC, "pillows", "run", "--data", data],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Started (its locks taken) once it says so: after kill -9 rounds, recovery can take
        # longer than any fixed pause.
        line = worker.stderr.readline()
        assert line.startswith("pillows running"), line + worker.stderr.read()
        # A second worker with the same (n, k) is refused while this one runs.
        dup = run(["pillows", "run", "--data", data, "--once"], check=False)
        assert dup.returncode != 0 and "already running" in dup.stdout, dup.stdout
        st = json.loads(run(["pillows", "status", "--data", data]).stdout)
        assert {p["pillow"] for p in st} == {"case-search", "read-copy", "ucr", "forwarding"}, st
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, (worker.returncode, out, err)
        assert json.loads(out)["stopped"] is True
        run(["pillows", "run", "--data", data, "--once"])
        st = json.loads(run(["pillows", "status", "--data", data]).stdout)
        for p in st:
            assert p["lag"] == 0 and p["retries"] == 0 and p["dead_letters"] == 0, p
        after_crashes = snapshot(data)
        ucr_after = ucr_rows(data)
        assert len(ucr_after) == len([c for c in after_crashes.values() if not c["closed"]])
        run(["ucr", "rebuild", "--data", data, "--domain", "demo", "--table", "open_cases"])
        assert ucr_rows(data) == ucr_after, "UCR rows after crashes differ from a rebuild"
        assert len(after_crashes) == 700, len(after_crashes)
        run(["pillows", "reset", "--data", data, "--pillow", "case-search"])
        assert snapshot(data) == {}
        run(["pillows", "run", "--data", data, "--once"])
        rebuilt = snapshot(data)
        assert rebuilt == after_crashes, "the index after crashes differs from a rebuild"
        # Every case's latest form is what the index holds.
        for cid, c in rebuilt.items():
            case = json.loads(run(["case", "get", "--data", data, "--domain", "demo", cid]).stdout)
            assert c["properties"] == case["properties"], cid
        print(f"{kills} kills; index equals a rebuild ({len(rebuilt)} cases)")
        print("1 passed, 0 failed")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
