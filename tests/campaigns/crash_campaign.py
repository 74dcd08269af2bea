#!/usr/bin/env python3
"""Crash campaign (issue 24 item 1): `kill -9` of `commcare serve` under concurrent HTTP load,
round after round on the same data, in three configurations:

  single  embedded store, one SQLite database (pack blob volumes, embedded change log)
  multi4  embedded store, four SQLite databases (cross-database intents)
  pg      PostgreSQL 2 databases (+ meta and pillows on PostgreSQL), S3 blobs, Kafka change log
          (the servers of scripts/with-test-servers: COMMCARE_TEST_PG, _S3, _KAFKA)

Each round: start the server on the data directory, run submitter threads (OpenRosa multipart
forms, each creating a case, updating two shared cases, setting a ledger balance and carrying an
attachment) and a restore thread (incremental restores with sync tokens) for a random time,
`kill -9` the server, then check with the server down:
  - `commcare check` is clean (it opens as the writer: recovery, relay) and no intent is pending;
  - every form answered 201 is there, wholly: its case, both shared-case updates, the ledger and
    the attachment; every form sent but not acknowledged is wholly there or wholly absent;
  - the change log (`commcare changes`) has a form-sql record for every stored form, a case-sql
    record for every case and a ledger record for every stored ledger, no form twice (on
    librdkafka's mock cluster, less a killed server's unfinished transaction: see
    Campaign.mock_uncommitted_windows);
  - the secondary stores equal the primary after the pillows resume from the checkpoints the
    killed server left (`commcare pillows run --once`): the case-search index holds exactly the
    primary's cases with the same properties, the UCR table equals its rebuild from the
    primary, and (after the restart) the form read copy (form API) counts the primary's forms;
and after the restart: every sync token issued before the kill answers an incremental restore
with 200, not 412.

Usage: crash_campaign.py COMMCARE [--rounds N] [--configs single,multi4,pg] [--seed S]
                         [--pg-rounds N] [--max-minutes M] [--keep]
Exit 0 when every round of every configuration passed.
"""
import argparse
import base64
import datetime
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from cc_server import Server, multipart  # noqa: E402

ENV = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="adminpw",
           COMMCARE_DOMAIN="demo")
ADMIN = ("admin", "adminpw")
CASE_NS = "http://commcarehq.org/case/transaction/v2"
SYNC_NS = {"sync": "http://commcarehq.org/sync"}
UCR = {"domain": "demo", "table_id": "crash_cases", "referenced_doc_type": "CommCareCase",
       "configured_filter": {"type": "boolean_expression", "operator": "eq",
                             "expression": {"type": "property_name", "property_name": "kind"},
                             "property_value": "own"},
       "configured_indicators": [
           {"type": "raw", "column_id": "owner", "property_name": "owner_id"},
           {"type": "expression", "column_id": "n", "datatype": "integer",
            "expression": {"type": "property_name", "property_name": "n"}}]}


class Failure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def pg_init_args(data, tag):
    """`commcare init` arguments for PostgreSQL (2 primary databases, meta, pillows), S3 and
    Kafka: the servers of scripts/with-test-servers, every name under tag (its databases are
    created here)."""
    pg, s3, kafka = (os.environ.get(k) for k in
                     ("COMMCARE_TEST_PG", "COMMCARE_TEST_S3", "COMMCARE_TEST_KAFKA"))
    check(pg and s3 and kafka, "the pg configuration needs COMMCARE_TEST_PG, _S3 and _KAFKA "
          "(run under scripts/with-test-servers)")
    dbs = [f"{tag}_p0", f"{tag}_p1", f"{tag}_meta", f"{tag}_pillows"]
    for db in dbs:
        subprocess.run(["psql", "-q", f"{pg} dbname=postgres", "-c", f"CREATE DATABASE {db}"],
                       check=True, capture_output=True)
    return ["init", "--data", data, "--shards", "64", "--databases", "2",
            "--primary", json.dumps({"kind": "postgres",
                                     "databases": [f"{pg} dbname={d}" for d in dbs[:2]]}),
            "--meta", json.dumps({"kind": "postgres", "database": f"{pg} dbname={dbs[2]}"}),
            "--pillows", json.dumps({"kind": "postgres", "database": f"{pg} dbname={dbs[3]}"}),
            "--blob-store", json.dumps({"kind": "s3", "endpoint": s3, "bucket": "blobs",
                                        "access_key": "S3RVER", "secret_key": "S3RVER",
                                        "prefix": f"{tag}/"}),
            "--change-log", json.dumps({"kind": "kafka", "bootstrap_servers": kafka,
                                        "topic_control": os.environ.get("COMMCARE_TEST_KAFKA_CONTROL", ""),
                                        "topic_prefix": f"{tag}.", "partitions": 2,
                                        "session_timeout_ms": 4000})]


def ucr_rows(run, data, table):
    """The rows of UCR table `table` of domain demo, each as sorted JSON, sorted."""
    out = run("ucr", "rows", "--data", data, "--domain", "demo", "--table", table,
              "--limit", "1000000")
    rows = []
    for line in out.splitlines():
        r = json.loads(line)
        r.pop("inserted_at", None)
        rows.append(json.dumps(r, sort_keys=True))
    return sorted(rows)


def verify_secondary(run, data, cases, table, ucr_expected):
    """The secondary stores of data, once `pillows run --once` has caught them up, against the
    primary's cases (case_id -> case, from `case list`): the case-search index holds exactly
    them with their properties and closed flags; UCR table `table` has ucr_expected rows and
    equals its rebuild from the primary (not checked when ucr_expected is None). run(*args)
    runs `commcare` and answers its stdout, raising Failure when it fails."""
    run("pillows", "run", "--data", data, "--once")
    index, cursor = {}, None
    while True:
        args = ["search", "--data", data, "--domain", "demo", "--limit", "5000"]
        if cursor:
            args += ["--cursor", cursor]
        page = json.loads(run(*args))
        for c in page["cases"]:
            check(c["case_id"] not in index, f"{c['case_id']} listed twice by the index")
            index[c["case_id"]] = c
        cursor = page["next"]
        if not cursor:
            break
    check(set(index) == set(cases),
          f"case search index differs from the primary: missing {sorted(set(cases) - set(index))[:5]}, "
          f"extra {sorted(set(index) - set(cases))[:5]}")
    for cid, c in cases.items():
        check(index[cid]["properties"] == c["properties"] and index[cid]["closed"] == c["closed"],
              f"case {cid} in the index differs from the primary")
    if ucr_expected is None:
        return
    rows = ucr_rows(run, data, table)
    check(len(rows) == ucr_expected, f"UCR has {len(rows)} rows, {ucr_expected} expected")
    run("ucr", "rebuild", "--data", data, "--domain", "demo", "--table", table)
    check(ucr_rows(run, data, table) == rows,
          "UCR rows after the crash differ from a rebuild from the primary")


class Campaign:
    def __init__(self, cc, config, rng, tmp, threads):
        self.cc, self.config, self.rng, self.threads = cc, config, rng, threads
        self.data = os.path.join(tmp, f"data-{config}")
        self.forms = {}       # n -> dict(id, case, shared, qty, att_md5)
        self.acked = set()    # n answered 201
        self.sent = set()     # n whose request was started
        self.tokens = []      # sync tokens received (200 answers) before a kill
        self.counter = 0
        self.lock = threading.Lock()
        self.stats = {"rounds": 0, "kills": 0, "acked": 0, "restores": 0, "tokens_checked": 0,
                      "sent_unacked_present": 0, "sent_unacked_absent": 0, "log_waits": 0, "log_fenced": 0,
                      "log_wait_max_s": 0, "mock_uncommitted": 0}
        self.kills_ms = []    # when each killed server was gone (ms since the epoch)
        self.tag = None       # the pg configuration's namespace (databases, blobs, topics)
        self.user_id = None
        self.whole_unacked = set()
        self.timing = {}

    # ---- the data directory ----
    def cli(self, *args, check_rc=True):
        t0 = time.time()
        p = subprocess.run([self.cc, *args], capture_output=True, text=True, env=ENV)
        k = " ".join(args[:2])
        self.timing[k] = self.timing.get(k, 0) + time.time() - t0
        if check_rc and p.returncode != 0:
            raise Failure(f"{args[:3]} exited {p.returncode}: {p.stdout[-1500:]} {p.stderr[-1500:]}")
        return p

    def init(self):
        if self.config == "single":
            self.cli("init", "--data", self.data, "--shards", "64")
        elif self.config == "multi4":
            self.cli("init", "--data", self.data, "--shards", "64", "--databases", "4")
        else:
            self.tag = f"crash_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            self.cli(*pg_init_args(self.data, self.tag))
        config = os.path.join(os.path.dirname(self.data), f"ucr-{self.config}.json")
        with open(config, "w") as f:
            json.dump(UCR, f)
        self.cli("ucr", "load", "--data", self.data, config)

    def start(self):
        t0 = time.time()
        srv = Server(self.cc, "--task-workers", "0", pillows=True, env=ENV, data=self.data)
        self.timing["serve start"] = self.timing.get("serve start", 0) + time.time() - t0
        return srv

    def stop(self, srv):
        t0 = time.time()
        srv.stop(cleanup=True)
        self.timing["serve stop"] = self.timing.get("serve stop", 0) + time.time() - t0

    # ---- load ----
    def form(self, n):
        pool = n // 40
        a, b = f"sh-{pool}-{n % 3}", f"sh-{pool}-{(n + 1) % 3}"
        fid = uuid.uuid4().hex
        att = os.urandom(self.rng.randint(1, 24) * 1024)
        own = f"c{n}"
        blocks = [f'<case xmlns="{CASE_NS}" case_id="{own}" user_id="{self.user_id}" '
                  f'date_modified="2024-01-01T00:00:00Z"><create><case_type>t</case_type>'
                  f'<case_name>own {n}</case_name><owner_id>{self.user_id}</owner_id></create>'
                  f'<update><kind>own</kind><n>{n}</n></update></case>']
        for s in (a, b):
            blocks.append(f'<case xmlns="{CASE_NS}" case_id="{s}" user_id="{self.user_id}" '
                          f'date_modified="2024-01-01T00:00:00Z"><create><case_type>shared</case_type>'
                          f'<case_name>{s}</case_name><owner_id>{self.user_id}</owner_id></create>'
                          f'<update><p_{n}>1</p_{n}></update></case>')
        ledger = (f'<balance xmlns="http://commcarehq.org/ledger/v1" entity-id="{own}" '
                  f'section-id="stock" date="2024-01-01"><entry id="p" quantity="{n}"/></balance>')
        xml = (f'<?xml version="1.0"?><data xmlns="http://example.org/crash">'
               f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{fid}</instanceID>'
               f'<userID>{self.user_id}</userID></meta>{"".join(blocks)}{ledger}'
               f'<photo>photo.jpg</photo></data>').encode()
        self.forms[n] = {"id": fid, "case": own, "shared": (a, b), "qty": n,
                         "att_md5": hashlib.md5(att).hexdigest()}
        return multipart(xml, [("photo.jpg", att)])

    def submitter(self, port, stop):
        while not stop.is_set():
            with self.lock:
                n = self.counter
                self.counter += 1
                body, headers = self.form(n)
                self.sent.add(n)
            headers["Authorization"] = _basic(*ADMIN)
            headers["X-OpenRosa-Version"] = "3.0"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/a/demo/receiver/", body=body, headers=headers)
                r = conn.getresponse()
                r.read()
                conn.close()
            except (OSError, http.client.HTTPException):
                return  # the server is gone
            if r.status == 201:
                with self.lock:
                    self.acked.add(n)
            else:
                raise Failure(f"form {n} answered {r.status}")

    def restorer(self, port, stop):
        token = None
        while not stop.is_set():
            path = "/a/demo/phone/restore/?version=2.0" + (f"&since={token}" if token else "")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", path, headers={"Authorization": _basic("w0", "pw-w0")})
                r = conn.getresponse()
                body = r.read()
                conn.close()
            except (OSError, http.client.HTTPException):
                return
            if r.status != 200:
                self.errors.append(f"restore since={token} answered {r.status} {body[:200]!r}")
                return
            try:
                token = ET.fromstring(body).find("sync:Sync/sync:restore_id", SYNC_NS).text
            except ET.ParseError:
                return  # cut short by the kill
            with self.lock:
                self.tokens.append(token)
                self.stats["restores"] += 1
            time.sleep(0.05)

    # ---- checks ----
    def verify_primary(self):
        p = self.cli("check", "--data", self.data, check_rc=False)
        try:
            rep = json.loads(p.stdout)
        except ValueError:
            raise Failure(f"check printed no JSON: {p.stdout} {p.stderr[-2000:]}")
        check(p.returncode == 0 and rep["ok"], f"check failed: {str(rep)[:2000]}")
        check(rep["pending_intents"] == 0, rep)
        cases = {}
        for line in self.cli("case", "list", "--data", self.data, "--domain", "demo").stdout.splitlines():
            c = json.loads(line)
            cases[c["case_id"]] = c
        # The change log. On a real Kafka broker a read_committed reader sees nothing past a
        # transaction the killed relay left open until the next producer fences it or it times
        # out (the change log's timeout_ms, 10 s): records may show up late, never be missing,
        # so the campaign waits up to 60 s for them and reports how long it waited. (The mock
        # cluster has no such wait: it shows uncommitted records at once, see read_changes.)
        t0, waited, fenced = time.time(), False, False
        while True:
            form_keys, case_keys, ledger_keys = self.read_changes()
            missing = [cid for cid in cases if cid not in case_keys]
            missing += [f"{f['case']}/stock/p" for n, f in self.forms.items()
                        if n in self.sent and f["case"] in cases and (
                            f["id"] not in form_keys or f"{f['case']}/stock/p" not in ledger_keys)]
            if not missing or self.config != "pg":
                break
            if time.time() - t0 > 60:
                if fenced:
                    break
                # Still hidden: a writer that relays fences the dead producer (init_transactions
                # aborts its open transaction), after which the records must be readable.
                self.stop(self.start())
                fenced = True
                self.stats["log_fenced"] += 1
            time.sleep(2)
            waited = True
        if waited:
            self.stats["log_waits"] += 1
            self.stats["log_wait_max_s"] = max(self.stats["log_wait_max_s"], round(time.time() - t0))
        for cid in cases:
            check(cid in case_keys, f"case {cid} has no change record")
        unacked = self.sent - self.acked
        sample = set(self.rng.sample(sorted(self.acked), min(2, len(self.acked))))
        for n in sorted(self.sent):
            f = self.forms[n]
            a, b = f["shared"]
            own = f["case"] in cases
            in_a = a in cases and f"p_{n}" in cases[a]["properties"]
            in_b = b in cases and f"p_{n}" in cases[b]["properties"]
            check(own == in_a == in_b, f"form {n} is half there: own={own} {a}={in_a} {b}={in_b}")
            if n in self.acked:
                check(own, f"acknowledged form {n} ({f['id']}) is missing after kill -9")
            if not own:
                continue
            check(f["id"] in form_keys, f"form {n} is stored but has no change record")
            check(f"{f['case']}/stock/p" in ledger_keys, f"form {n}'s ledger has no change record")
            newly_whole = n in unacked and n not in self.whole_unacked
            if newly_whole or n in sample:
                if newly_whole:
                    self.whole_unacked.add(n)
                    self.stats["sent_unacked_present"] += 1
                led = json.loads(self.cli("ledger", "get", "--data", self.data, "--domain", "demo",
                                          f["case"]).stdout)
                check(led == {"stock": {"p": f["qty"]}}, f"form {n}'s ledger: {led}")
                f["check_att"] = True
        for n in unacked:
            if self.forms[n]["case"] not in cases:
                self.stats["sent_unacked_absent"] += 1
                self.sent.discard(n)  # never to be checked again: it is not there
        self.primary_cases = cases
        self.stored_forms = len([n for n in self.sent if self.forms[n]["case"] in cases])

    def read_changes(self):
        changes = [json.loads(l) for l in self.cli("changes", "--data", self.data).stdout.splitlines()]
        uncommitted = self.mock_uncommitted_windows()
        keys, discounted = {}, 0
        for c in changes:
            if c["topic"] in ENGINE_TOPICS and uncommitted:
                t = _ms(c["timestamp"])
                if any(lo < t <= hi for lo, hi in uncommitted):
                    discounted += 1
                    continue
            keys.setdefault(c["topic"], []).append(c["key"])
        self.stats["mock_uncommitted"] = discounted
        form_keys = keys.get("form-sql", [])
        check(len(form_keys) == len(set(form_keys)), "a form's change record was relayed twice")
        return set(form_keys), set(keys.get("case-sql", [])), set(keys.get("ledger", []))

    def mock_uncommitted_windows(self):
        """On librdkafka's mock cluster (before 2.15) a reader sees every record as soon as it
        is produced, committed or not, where Kafka's read_committed reader never sees a
        transaction that did not commit (docs/reliability.md, "Crash campaign"). The records of
        the killed server's last, unfinished transaction stay there, and its successor relays
        them again. Such records are told apart by time: the engine's relay runs one
        transaction at a time and sends its mark (relay-dbN) only after every record before it
        was acknowledged, so engine records produced after a killed server's last mark and
        before the kill belong to a transaction that never committed. Returns those
        (last mark, kill] windows in ms; none on a real broker."""
        if self.config != "pg" or not os.environ.get("COMMCARE_TEST_KAFKA_CONTROL"):
            return []
        p = subprocess.run(["kcat", "-C", "-b", os.environ["COMMCARE_TEST_KAFKA"], "-t",
                            f"{self.tag}.__commcare_producer_marks", "-p", "0", "-o", "beginning",
                            "-e", "-q", "-f", "%T %k\\n"], capture_output=True, text=True)
        check(p.returncode == 0, f"kcat could not read the marks: {p.stderr[-500:]}")
        marks = sorted(int(t) for t, k in (l.split(" ", 1) for l in p.stdout.splitlines())
                       if k.startswith("relay-db"))
        return [(max([m for m in marks if m <= kill] or [0]), kill) for kill in self.kills_ms]

    def verify_secondary(self):
        own = len([c for c in self.primary_cases.values() if c["properties"].get("kind") == "own"])
        verify_secondary(lambda *a: self.cli(*a).stdout, self.data, self.primary_cases,
                         "crash_cases", own)

    def verify_after_restart(self, srv):
        # The form read copy: the form API counts every stored form (the setup form included).
        r = srv.request("GET", "/a/demo/api/v0.5/form/?limit=1", auth=ADMIN)
        check(r.status == 200, f"form API: {r}")
        total = r.json()["meta"]["total_count"]
        check(total == self.stored_forms + 1, f"form read copy has {total} forms, the primary "
              f"{self.stored_forms + 1}")
        # Attachments of the forms checked above read back byte for byte.
        for n in sorted(self.sent):
            f = self.forms[n]
            if f.pop("check_att", False):
                r = srv.request("GET", f"/a/demo/api/form/attachment/{f['id']}/photo.jpg", auth=ADMIN)
                check(r.status == 200 and hashlib.md5(r.body).hexdigest() == f["att_md5"],
                      f"form {n}'s attachment: {r.status}")
        # Sync tokens issued before the kill: the last few and a random older one.
        toks = self.tokens[-3:] + ([self.rng.choice(self.tokens)] if self.tokens else [])
        for t in toks:
            r = srv.request("GET", f"/a/demo/phone/restore/?version=2.0&since={t}", auth=("w0", "pw-w0"))
            check(r.status == 200, f"sync token {t} issued before the kill answered {r.status}: "
                  f"{r.body[:300]!r}")
            self.stats["tokens_checked"] += 1

    # ---- rounds ----
    def setup(self):
        self.init()
        srv = self.start()
        try:
            self.user_id = srv.make_user("demo", "w0", "pw-w0")["user_id"]
            # One form so the restore user has a case from the start.
            xml = (f'<?xml version="1.0"?><data xmlns="http://example.org/crash">'
                   f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{uuid.uuid4().hex}</instanceID>'
                   f'</meta><case xmlns="{CASE_NS}" case_id="first" user_id="{self.user_id}" '
                   f'date_modified="2024-01-01T00:00:00Z"><create><case_type>t</case_type>'
                   f'<case_name>first</case_name><owner_id>{self.user_id}</owner_id></create></case></data>')
            r = srv.submit(xml.encode(), "demo", ADMIN)
            check(r.status == 201, r)
        finally:
            self.stop(srv)

    errors = []

    def round(self, rnd):
        srv = self.start()
        self.errors = []
        stop = threading.Event()
        workers = [threading.Thread(target=self._guard, args=(self.submitter, srv.port, stop))
                   for _ in range(self.threads)]
        workers.append(threading.Thread(target=self._guard, args=(self.restorer, srv.port, stop)))
        for w in workers:
            w.start()
        # The kill lands a random 0.3-1.5 s after the server acknowledged its first form of the
        # round (a PostgreSQL/Kafka server can take a while before its first answer).
        start_acks = len(self.acked)
        deadline = time.time() + 30
        while len(self.acked) == start_acks and time.time() < deadline and not self.errors:
            time.sleep(0.01)
        check(len(self.acked) > start_acks or self.errors, "no form acknowledged within 30 s")
        time.sleep(self.rng.uniform(0.3, 1.5))
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait()
        self.kills_ms.append(int(time.time() * 1000) + 1)
        self.stats["kills"] += 1
        stop.set()
        for w in workers:
            w.join(60)
        self.stop(srv)
        check(not self.errors, "; ".join(self.errors))
        self.verify_primary()
        self.verify_secondary()
        srv = self.start()
        try:
            self.verify_after_restart(srv)
        finally:
            self.stop(srv)
        self.stats["rounds"] += 1
        self.stats["acked"] = len(self.acked)

    def _guard(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported by the round
            self.errors.append(f"{fn.__name__}: {e!r}")


ENGINE_TOPICS = ("form-sql", "case-sql", "ledger")


def _ms(iso):
    """A change's timestamp ("2026-12-07T05:14:47.152000Z") in ms since the epoch."""
    d = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return round(d.timestamp() * 1000)


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("commcare")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--pg-rounds", type=int, default=None,
                    help="rounds of the pg configuration (default: --rounds)")
    ap.add_argument("--configs", default="single,multi4,pg")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CRASH_TEST_SEED",
                                                                   random.randrange(1 << 30))))
    ap.add_argument("--keep", action="store_true", help="keep the data directories")
    ap.add_argument("--max-minutes", type=float, default=0,
                    help="stop a configuration after this long (the rounds done are reported)")
    args = ap.parse_args()
    print(f"seed {args.seed}", flush=True)
    tmp = tempfile.mkdtemp(prefix="cc-crash-campaign-")
    failed = []
    try:
        for config in args.configs.split(","):
            if config == "pg" and not os.environ.get("COMMCARE_TEST_PG"):
                if os.environ.get("CI") == "true":
                    failed.append("pg: CI=true but COMMCARE_TEST_PG is not set")
                else:
                    print("pg: skipped (run under scripts/with-test-servers)")
                continue
            rng = random.Random(f"{args.seed}-{config}")
            c = Campaign(args.commcare, config, rng, tmp, args.threads)
            t0 = time.time()
            try:
                c.setup()
                rounds = args.pg_rounds if config == "pg" and args.pg_rounds is not None else args.rounds
                for rnd in range(rounds):
                    if args.max_minutes and time.time() - t0 > args.max_minutes * 60:
                        print(f"{config}: stopped by --max-minutes after {rnd} rounds", flush=True)
                        break
                    c.round(rnd)
            except Failure as e:
                failed.append(f"{config} round {c.stats['rounds'] + 1}: {e}")
            s = c.stats
            if os.environ.get("CRASH_CAMPAIGN_TIMING"):
                print(json.dumps({k: round(v, 1) for k, v in sorted(c.timing.items())}))
            print(json.dumps({"config": config, "rounds": s["rounds"], "kills": s["kills"],
                              "forms_acknowledged": s["acked"], "forms_sent": c.counter,
                              "unacked_found_whole": s["sent_unacked_present"],
                              "unacked_found_absent": s["sent_unacked_absent"],
                              "restores": s["restores"], "tokens_checked": s["tokens_checked"],
                              "change_log_waits": s["log_waits"], "longest_wait_s": s["log_wait_max_s"],
                              "change_log_unblocked_by_a_new_writer": s["log_fenced"],
                              "mock_uncommitted_records": s["mock_uncommitted"],
                              "seconds": round(time.time() - t0, 1)}), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"data kept in {tmp}")
    for f in failed:
        print("FAILED", f)
    print(f"{0 if failed else 1} passed, {1 if failed else 0} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
