"""rule.run crash test: a rule over 20,000 cases runs as a rule.run task on the worker of
`commcare serve --task-workers 1` (the writer); the server is killed with SIGKILL while the
rule's forms go in (some cases changed, not all). A restarted server's worker reruns the task
once its lease lapses; afterwards every matching case has the rule's effect exactly once: one
form of the rule's xmlns in its history, never two.

Usage: rules_crash_test.py COMMCARE_BINARY
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CASES = 20000
XMLNS = "http://commcarehq.org/hq_case_update_rule"
RULE = {"name": "flag", "domain": "demo", "case_type": "patient",
        "criteria": [{"property_name": "status", "match_type": "EQUAL", "property_value": "new"}],
        "actions": {"update": [{"name": "flagged", "value": "yes"}]}}


def cc(binary, *args):
    p = subprocess.run([binary] + list(args), capture_output=True, text=True)
    assert p.returncode == 0, f"{args}: exit {p.returncode}: {p.stdout}{p.stderr}"
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


def flagged(engine):
    return sum(1 for c in engine.cases("demo", case_type="patient", limit=CASES)
               if c["properties"].get("flagged") == "yes")


def main(binary):
    import commcare
    root = tempfile.mkdtemp(prefix="cc-rules-crash-")
    data = os.path.join(root, "data")
    workers = []

    def start_worker():
        workers.append(subprocess.Popen(
            [binary, "serve", "--data", data, "--listen", "127.0.0.1:0", "--task-workers", "1",
             "--no-pillows"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    try:
        cc(binary, "init", "--data", data)
        csv_path = os.path.join(root, "patients.csv")
        with open(csv_path, "w") as f:
            f.write("name,status\n")
            f.writelines(f"p{i},{'new' if i % 4 else 'old'}\n" for i in range(CASES))
        subprocess.run([binary, "import", "cases", "--data", data, "--domain", "demo",
                        csv_path, "--case-type", "patient", "--create-new"],
                       check=True, stdout=subprocess.DEVNULL)
        matching = CASES - CASES // 4
        cc(binary, "rules", "add", "--data", data, "--json", json.dumps(RULE))
        [queued] = cc(binary, "rules", "run", "--data", data, "--domain", "demo", "--name",
                      "flag", "--later")
        task_id = queued["task"]
        start_worker()
        with commcare.Engine(data, read_only=True, create=False) as e:
            # The scan reports progress every 1,000 cases; the forms go in after it.
            deadline = time.time() + 120
            while e.task(task_id)["progress"]["done"] < CASES:
                assert time.time() < deadline, f"the scan never finished: {e.task(task_id)}"
                time.sleep(0.05)
            time.sleep(0.7)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            before = flagged(e)
            t = e.task(task_id)
            print(json.dumps({"killed_at_flagged": before, "matching": matching,
                              "state": t["state"]}))
            assert 0 < before < matching, \
                f"{before} of {matching} changed at the kill: not killed mid-run"
            assert t["state"] == "running", t
            started = time.time()
            start_worker()
            deadline = time.time() + 240  # the dead worker's lease (60 s) lapses first
            while (t := e.task(task_id))["state"] not in ("succeeded", "dead"):
                assert time.time() < deadline, f"the task never finished: {t}"
                time.sleep(0.2)
            assert t["state"] == "succeeded", t
            assert t["attempts"] == 2, t
            res = t["result"]  # the rerun finds the cases changed before the kill already done
            assert res["changed"] + res["unchanged"] == matching, res
            assert before <= res["unchanged"] < matching and res["failed"] == 0, res
            print(json.dumps({"rerun_seconds": round(time.time() - started, 1),
                              "result": t["result"]}))
        # The server stopped, the data read afresh: every matching case changed exactly once.
        workers[-1].send_signal(signal.SIGTERM)
        workers[-1].wait(60)
        with commcare.Engine(data, read_only=True, create=False) as e:
            cases = e.cases("demo", case_type="patient", limit=CASES)
            assert len(cases) == CASES
            xmlns_of = {}
            for c in cases:
                want = 1 if c["properties"]["status"] == "new" else 0
                assert c["properties"].get("flagged") == ("yes" if want else None), c
                forms = [tx["form_id"] for tx in e.case_history("demo", c["case_id"])]
                for f in forms:
                    if f not in xmlns_of:
                        xmlns_of[f] = e.form("demo", f)["xmlns"]
                rule_forms = [f for f in forms if xmlns_of[f] == XMLNS]
                assert len(rule_forms) == want, (c["case_id"], rule_forms)
            print(json.dumps({"cases": CASES, "matching": matching,
                              "rule_forms": sum(1 for x in xmlns_of.values() if x == XMLNS)}))
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1])
