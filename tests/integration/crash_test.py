#!/usr/bin/env python3
"""Crash test: kill -9 a submitting `commcare` process at random moments (and right after a
cross-database intent is durable), then check that every acknowledged form is wholly there and
that no form is half there. Single-database and multi-database data directories."""
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

SHARED = [f"shared-{i}" for i in range(6)]
FORMS = 400


def form_xml(i):
    """Form i creates case own-i, updates two shared cases and sets a ledger balance."""
    a, b = SHARED[i % 6], SHARED[(i * 7 + 3) % 6]
    if a == b:
        b = SHARED[(i + 1) % 6]
    blocks = [
        f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="own-{i}" user_id="u1" '
        f'date_modified="2020-01-01T00:00:00Z"><create><case_type>t</case_type><case_name>o{i}</case_name>'
        f'</create><update><n>{i}</n></update></case>']
    for s in (a, b):
        blocks.append(
            f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{s}" user_id="u1" '
            f'date_modified="2020-01-01T00:00:00Z"><update><p_{i}>1</p_{i}></update></case>')
    ledger = (f'<balance xmlns="http://commcarehq.org/ledger/v1" entity-id="own-{i}" section-id="stock" '
              f'date="2020-01-01"><entry id="p" quantity="{i}"/></balance>')
    return (f'<?xml version="1.0"?><data xmlns="http://example.org/crash"><meta>'
            f'<instanceID>form-{i}</instanceID><userID>u1</userID></meta>{"".join(blocks)}{ledger}</data>'), (a, b)


def run(args, check=True):
    p = subprocess.run([CC] + args, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}: {p.stdout} {p.stderr}")
    return p


def submit_round(data, files, env_extra=None, kill_after_acks=None):
    """Submits files; after kill_after_acks acknowledged forms (plus a random 0-3 ms, so the kill
    lands anywhere in the next forms' processing) kills the process with SIGKILL.
    Returns (acked file paths, exit code)."""
    env = dict(os.environ)
    env.update(env_extra or {})
    proc = subprocess.Popen([CC, "submit", "--data", data, "--domain", "demo"] + files,
                            stdout=subprocess.PIPE, text=True, env=env)
    acked = []
    killed = False
    for line in proc.stdout:
        r = json.loads(line)
        if r.get("status") == 201:
            acked.append(r["file"])
        if kill_after_acks is not None and not killed and len(acked) >= kill_after_acks:
            time.sleep(rng.uniform(0, 0.003))
            proc.send_signal(signal.SIGKILL)
            killed = True
    proc.wait()
    return acked, proc.returncode


def verify(data, shared_of, acked_ids):
    p = run(["check", "--data", data], check=False)
    report = json.loads(p.stdout)
    assert p.returncode == 0 and report["ok"], f"check failed: {report}"
    assert report["pending_intents"] == 0, report
    # The change log: a form-sql record per stored form, none twice (the relay's mark keeps a
    # crash between its append and its outbox delete from appending again), and per partition
    # dense offsets.
    changes = [json.loads(l) for l in run(["changes", "--data", data]).stdout.splitlines()]
    form_keys = [c["key"] for c in changes if c["topic"] == "form-sql"]
    assert len(form_keys) == len(set(form_keys)), "a form's change record was relayed twice"
    assert report["outbox_rows"] == 0, f"the writer's open did not relay everything: {report}"
    assert report["logged_changes"] == len(changes), (report, len(changes))
    for c in changes:
        assert c["change"]["document_id"] == c["key"], c
    by_part = {}
    for c in changes:
        by_part.setdefault((c["topic"], c["partition"]), []).append(c["offset"])
    for k, offs in by_part.items():
        assert offs == list(range(len(offs))), f"offsets of {k} are not dense: {offs[:10]}"
    form_ids = set(form_keys)
    cases = {}
    out = run(["case", "list", "--data", data, "--domain", "demo"]).stdout
    for line in out.splitlines():
        c = json.loads(line)
        cases[c["case_id"]] = c
    present = 0
    for i, (a, b) in shared_of.items():
        own = f"own-{i}" in cases
        in_a = a in cases and f"p_{i}" in cases[a]["properties"]
        in_b = b in cases and f"p_{i}" in cases[b]["properties"]
        assert own == in_a == in_b, f"form-{i} is half there: own={own} {a}={in_a} {b}={in_b}"
        if own:
            present += 1
            assert cases[f"own-{i}"]["properties"]["n"] == str(i)
            led = json.loads(run(["ledger", "get", "--data", data, "--domain", "demo", f"own-{i}"]).stdout) \
                if i % 20 == 0 else None
            if led is not None:
                assert led == {"stock": {"p": i}}, led
        if i in acked_ids:
            assert own, f"acknowledged form-{i} is missing after a crash"
        if own:
            assert f"form-{i}" in form_ids, f"form-{i} is stored but has no change record"
    return present


def scenario(databases, tmp):
    data = os.path.join(tmp, f"data-{databases}")
    run(["init", "--data", data, "--shards", "64", "--databases", str(databases)])
    formdir = os.path.join(tmp, f"forms-{databases}")
    os.makedirs(formdir)
    shared_of, files = {}, []
    for i in range(FORMS):
        xml, pair = form_xml(i)
        shared_of[i] = pair
        path = os.path.join(formdir, f"f{i}.xml")
        with open(path, "w") as f:
            f.write(xml)
        files.append(path)
    acked_ids = set()
    pending = list(files)
    rounds = kills = 0
    if databases > 1:
        # Deterministic crash right after a cross-database intent became durable.
        for n in (1, 3):
            acked, rc = submit_round(data, pending[:20], {"COMMCARE_TEST_CRASH_AFTER_INTENT": str(n)})
            assert rc == -signal.SIGKILL, f"expected the injected SIGKILL, got {rc}"
            kills += 1
            acked_ids.update(int(os.path.basename(f)[1:-4]) for f in acked)
            verify(data, shared_of, acked_ids)
    # Deterministic crash right after the relay appended to the change log, before it deleted
    # the outbox rows it appended.
    for _ in range(2):
        acked, rc = submit_round(data, pending[:10], {"COMMCARE_TEST_CRASH_AFTER_RELAY_APPEND": "1"})
        assert rc == -signal.SIGKILL, f"expected the injected SIGKILL, got {rc}"
        kills += 1
        acked_ids.update(int(os.path.basename(f)[1:-4]) for f in acked)
        verify(data, shared_of, acked_ids)
        pending = [f for f in files if int(os.path.basename(f)[1:-4]) not in acked_ids]
    while pending and rounds < 40:
        rounds += 1
        kill_at = rng.randint(1, 40) if rounds < 30 and len(pending) > 1 else None
        acked, rc = submit_round(data, pending, kill_after_acks=kill_at)
        if rc == -signal.SIGKILL:
            kills += 1
        acked_ids.update(int(os.path.basename(f)[1:-4]) for f in acked)
        present = verify(data, shared_of, acked_ids)
        pending = [f for f in files if int(os.path.basename(f)[1:-4]) not in acked_ids]
    assert not pending, f"{len(pending)} forms never acknowledged"
    present = verify(data, shared_of, acked_ids)
    assert present == FORMS
    assert kills >= 5, f"only {kills} kills happened; the test did not exercise crashes"
    print(f"databases={databases}: {rounds} rounds, {kills} kills, all {FORMS} forms intact")


def main():
    tmp = tempfile.mkdtemp(prefix="cc-crash-")
    try:
        scenario(1, tmp)
        scenario(4, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
