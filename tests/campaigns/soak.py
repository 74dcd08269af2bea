#!/usr/bin/env python3
"""Soak (issue 24 item 5): `commcare serve` on a fresh embedded data directory under mixed,
paced load for a while, its resources sampled, then checked for flatness.

Load (open loop: each kind is started at a fixed rate whatever the answers do, and its latency
is counted from the time it was due, so a server that slows down shows as latency, not as a
lower rate):
  submit    OpenRosa form submissions by mobile workers (one a request, as phones send them),
            each with a case block: a create, an update, or an update that closes the case
            (a closed case's slot is taken by a new case); one in ten multipart with a photo
  restore   incremental OTA restores (`since` = the phone's last sync token)
  restore0  initial OTA restores (a new phone: no token; its token then chains)
  search    Case API v2 lists: by property, owner and status, full text, a second page
  export    an export task (case export, then a form export of the last 10 minutes, in turn):
            POST /api/exports/, follow the task, download the file
Every request opens its own connection, as phones do.

Samples (every --sample seconds, into samples.csv, plotted in soak.svg): the server's VmRSS and
RssAnon, open descriptors (sockets and files), threads, CPU, the machine's load average,
pillow lag (/health/ready) and the pillows' retry and dead-letter queues (/metrics), the
client's backlog, and per kind the requests done, the errors and the latency p50/p99 of the
interval.

Checks (exit 1 naming each failed metric):
  errors       no request answered other than as expected (and no probe failed)
  rss_anon     the median RssAnon of the last third of the load is no more than --rss-growth-pct
               (default 20) percent, or --rss-growth-mib MiB when that is given, over the median
               of the middle third (VmRSS is reported, not checked: it adds the file pages of
               the databases' memory maps, which grow with the data)
  fds, threads the floor (the minimum: what requests in flight do not hold) of the last third
               is no higher than the middle third's (+ --fd-slack); fds counts sockets and
               everything but the SQLite database files (read pools, bounded below) and the
               change log's and blob store's files (one per so many MiB of data)
  db_connections no SQLite database file keeps more connections open throughout the last
               third than the server has threads + 2 (a writer, a checkpointer, and a pool that
               opens a reader only when all of its readers are in use)
  pillow_lag   after the load stops, the lag is back to 0 within --drain seconds
  dead_letters no pillow change was dead-lettered
  shutdown     SIGTERM at the end: the server exits 0

Usage: soak.py COMMCARE [--minutes 30 | --seconds S] [--out DIR] [--sample S]
               [--submit-rate R] [--restore-rate R] [--initial-restore-rate R] [--search-rate R]
               [--export-every S] [--users N] [--cases-per-user N] [--drain S]
               [--rss-growth-pct P] [--rss-growth-mib M] [--fd-slack N] [--seed S] [--keep]
               [--leak-sockets] [--access-log]
"""
import argparse
import csv
import datetime
import http.client
import json
import math
import os
import platform
import queue
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import quote, urlsplit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from cc_server import Server, basic, multipart  # noqa: E402
from crash_campaign import pg_init_args  # noqa: E402

ENV = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="adminpw",
           COMMCARE_DOMAIN="demo")
ADMIN = ("admin", "adminpw")
CASE_NS = "http://commcarehq.org/case/transaction/v2"
XMLNS = "http://example.org/soak/visit"
VILLAGES = [f"village{i}" for i in range(12)]
WORDS = ["fever", "cough", "rash", "headache", "fatigue", "nausea", "referral", "followup"]
KINDS = ["submit", "restore", "restore0", "search", "export"]
SQLITE_FILE = re.compile(r"\.(sqlite|db)(-wal|-shm)?$")
SQLITE_MAIN = re.compile(r"\.(sqlite|db)$")
SUMMARY_KEYS = ("t_s", "rss_mib", "rss_anon_mib", "rss_file_mib", "fds", "fds_checked", "fds_sqlite",
                "fds_store", "db_connections_max", "threads", "pillow_lag")


class Phone:
    """A mobile worker's phone: its credentials, its case slots and its last sync token."""

    def __init__(self, username, password, user_id, slots):
        self.username, self.password, self.user_id = username, password, user_id
        self.auth = basic(username, password)
        self.slots = [None] * slots   # None: free; "busy": a form in flight; else (case_id, visits)
        self.token = None
        self.sync = threading.Lock()  # one restore at a time per phone, as on a device
        self.lock = threading.Lock()


class Stats:
    """Per kind: the latencies and errors of the current sampling interval, and totals."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lat = {k: [] for k in KINDS}
        self.err = {k: 0 for k in KINDS}
        self.total = {k: 0 for k in KINDS}
        self.total_err = {k: 0 for k in KINDS}
        self.all_lat = {k: [] for k in KINDS}
        self.messages = []
        self.bytes = {}  # restore payload sizes of the interval

    def ok(self, kind, ms):
        with self.lock:
            self.lat[kind].append(ms)
            self.all_lat[kind].append(ms)
            self.total[kind] += 1

    def size(self, kind, n):
        with self.lock:
            self.bytes.setdefault(kind, []).append(n)

    def error(self, kind, msg):
        with self.lock:
            self.err[kind] += 1
            self.total[kind] += 1
            self.total_err[kind] += 1
            if len(self.messages) < 50:
                self.messages.append(f"{kind}: {msg}")

    def take(self):
        with self.lock:
            lat, err, size = self.lat, self.err, self.bytes
            self.lat = {k: [] for k in KINDS}
            self.err = {k: 0 for k in KINDS}
            self.bytes = {}
        return lat, err, size


def pct(values, p):
    """The p-th percentile (nearest rank) of values, or None."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.rng_lock = threading.Lock()
        self.stats = Stats()
        self.stop_load = threading.Event()
        self.queues = {k: queue.Queue() for k in KINDS}
        self.phones = []
        self.samples = []
        self.srv = None
        self.t0 = None
        self.load_end = None
        self.probe_errors = 0
        self.export_n = 0

    # ---- requests ----
    def http(self, method, path, auth, body=None, headers=None, timeout=120):
        """(status, body bytes) on a connection of its own."""
        h = dict(headers or {})
        h["Authorization"] = auth
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def rand(self, fn, *a):
        with self.rng_lock:
            return getattr(self.rng, fn)(*a)

    def do_submit(self):
        ph = self.rand("choice", self.phones)
        with ph.lock:
            i = self.rand("randrange", len(ph.slots))
            for _ in range(len(ph.slots)):   # the next slot without a form in flight
                if ph.slots[i] != "busy":
                    break
                i = (i + 1) % len(ph.slots)
            prev = ph.slots[i]
            ph.slots[i] = "busy"
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        village = self.rand("choice", VILLAGES)
        words = " ".join(self.rand("sample", WORDS, 2))
        if prev is None:
            case_id, visits = uuid.uuid4().hex, 1
            block = (f'<create><case_type>patient</case_type><case_name>patient {case_id[:8]}</case_name>'
                     f'<owner_id>{ph.user_id}</owner_id></create>'
                     f'<update><village>{village}</village><age>{self.rand("randint", 0, 90)}</age>'
                     f'<visits>1</visits><notes>{words}</notes></update>')
            closing = False
        else:
            case_id, visits = prev[0], prev[1] + 1
            closing = self.rand("random") < 0.1
            block = (f'<update><visits>{visits}</visits><last_visit>{now[:10]}</last_visit>'
                     f'<village>{village}</village><notes>{words}</notes></update>'
                     + ("<close/>" if closing else ""))
        fid = uuid.uuid4().hex
        xml = (f'<?xml version="1.0"?><data xmlns="{XMLNS}" name="Visit" uiVersion="1" version="7">'
               f'<visit_type>{"new" if prev is None else "followup"}</visit_type>'
               f'<weight>{self.rand("randint", 2, 90)}</weight><symptoms>{words}</symptoms>'
               f'<case xmlns="{CASE_NS}" case_id="{case_id}" date_modified="{now}" '
               f'user_id="{ph.user_id}">{block}</case>'
               f'<meta xmlns="http://openrosa.org/jr/xforms"><deviceID>soak-{ph.username}</deviceID>'
               f'<timeStart>{now}</timeStart><timeEnd>{now}</timeEnd><username>{ph.username}</username>'
               f'<userID>{ph.user_id}</userID><instanceID>{fid}</instanceID></meta></data>').encode()
        if self.rand("random") < 0.1:
            body, headers = multipart(xml, [("photo.jpg", os.urandom(self.rand("randint", 2, 16) * 512))])
        else:
            body, headers = xml, {"Content-Type": "text/xml"}
        headers["X-OpenRosa-Version"] = "3.0"
        ok = False
        try:
            status, resp = self.http("POST", "/a/demo/receiver/", ph.auth, body, headers)
            ok = status == 201
            return None if ok else f"{status} {resp[:200]!r}"
        finally:
            with ph.lock:
                if ok:
                    ph.slots[i] = None if closing else (case_id, visits)
                else:
                    ph.slots[i] = prev   # unknown outcome: a later form creates or updates anew

    def do_restore(self, initial):
        # The phone after the last one restored whose restore is not under way.
        with self.rng_lock:
            start = self.rng.randrange(len(self.phones))
        for k in range(len(self.phones)):
            ph = self.phones[(start + k) % len(self.phones)]
            if ph.sync.acquire(blocking=False):
                break
        else:
            ph = self.phones[start]
            ph.sync.acquire()
        try:
            since = "" if initial or not ph.token else f"&since={ph.token}"
            status, body = self.http("GET", f"/a/demo/phone/restore/?version=2.0&device_id=soak-{ph.username}"
                                     f"{since}", ph.auth, headers={"X-OpenRosa-Version": "3.0"})
            if status != 200:
                return f"{status} since={ph.token if since else ''} {body[:200]!r}"
            m = re.search(rb"<restore_id>([^<]+)</restore_id>", body)
            if not m or not body.rstrip().endswith(b"</OpenRosaResponse>"):
                return f"200 without a sync token or cut short ({len(body)} bytes)"
            ph.token = m.group(1).decode()
            self.stats.size("restore0" if initial else "restore", len(body))
            return None
        finally:
            ph.sync.release()

    def do_search(self):
        r = self.rand("random")
        if r < 0.4:
            q = f"case_type=patient&properties.village={self.rand('choice', VILLAGES)}&limit=20"
        elif r < 0.7:
            q = f"owner_id={self.rand('choice', self.phones).user_id}&closed=false&limit=50"
        elif r < 0.9:
            q = f"q={quote(self.rand('choice', WORDS))}&limit=20"
        else:
            q = f"case_type=patient&properties.visits.gte={self.rand('randint', 2, 6)}&limit=25"
        status, body = self.http("GET", f"/a/demo/api/case/v2/?{q}", basic(*ADMIN))
        if status != 200:
            return f"{status} {q} {body[:200]!r}"
        try:
            page = json.loads(body)
        except ValueError:
            return f"200 not JSON {q}"
        if "cases" not in page:
            return f"200 without cases {q}"
        if page.get("next") and self.rand("random") < 0.5:
            nxt = urlsplit(page["next"])
            status, body = self.http("GET", nxt.path + "?" + nxt.query, basic(*ADMIN))
            if status != 200:
                return f"{status} next page {body[:200]!r}"
        return None

    def do_export(self):
        self.export_n += 1
        if self.export_n % 2:
            d = {"kind": "case", "filters": {"case_type": "patient"}, "expiry_seconds": 3600}
        else:
            since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=10))
            d = {"kind": "form", "filters": {"xmlns": XMLNS,
                                             "received_from": since.strftime("%Y-%m-%dT%H:%M:%SZ")},
                 "format": "xlsx" if self.export_n % 4 == 0 else "csv", "expiry_seconds": 3600}
        auth = basic(*ADMIN)
        status, body = self.http("POST", "/a/demo/api/exports/", auth, json.dumps(d).encode(),
                                 {"Content-Type": "application/json"})
        if status != 202:
            return f"POST {status} {body[:200]!r}"
        tid = json.loads(body)["id"]
        deadline = time.time() + 600
        while True:
            status, body = self.http("GET", f"/a/demo/api/tasks/{tid}/", auth)
            if status != 200:
                return f"task {tid}: {status} {body[:200]!r}"
            t = json.loads(body)
            if t["state"] == "succeeded":
                break
            if t["state"] in ("dead", "cancelled"):
                return f"task {tid} {t['state']}: {str(t)[:300]}"
            if time.time() > deadline:
                return f"task {tid} not done in 600 s: {t['state']}"
            time.sleep(0.5)
        status, body = self.http("GET", f"/a/demo/api/exports/{tid}/download", auth)
        if status != 200 or len(body) != t["result"]["size"]:
            return f"download {tid}: {status}, {len(body)} bytes of {t['result'].get('size')}"
        return None

    # ---- pacing ----
    def pacer(self, kind, rate):
        """Puts the due time of each request of `kind` on its queue, `rate` a second."""
        if rate <= 0:
            return
        n, start = 0, time.monotonic()
        while not self.stop_load.is_set():
            due = start + n / rate
            wait = due - time.monotonic()
            if wait > 0 and self.stop_load.wait(wait):
                break
            self.queues[kind].put(due)
            n += 1

    def worker(self, kind, fn):
        while True:
            due = self.queues[kind].get()
            if due is None:
                return
            try:
                err = fn()
            except Exception as e:  # noqa: BLE001 - a failed request, counted as an error
                err = f"{type(e).__name__}: {e}"
            ms = (time.monotonic() - due) * 1000
            if err:
                self.stats.error(kind, err)
            else:
                self.stats.ok(kind, ms)

    def leak_sockets(self):
        """The checks' own test (--leak-sockets): one more idle keep-alive connection a second,
        never closed while the load runs, as a server that leaked a socket per request would
        hold them (the server closes an idle one after --idle-timeout-ms, 60 s)."""
        while not self.stop_load.wait(1):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=30)
                conn.request("GET", "/health")
                conn.getresponse().read()
                self.held.append(conn)
            except (OSError, http.client.HTTPException):
                pass

    # ---- sampling ----
    def proc_status(self):
        out = {}
        with open(f"/proc/{self.srv.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                    out[k] = int(v.split()[0])
        return out

    def fd_counts(self):
        """Open descriptors by kind: sockets; SQLite database files (writers, and read pools
        that keep the readers opened at the highest concurrency seen); store files that grow
        with the data (the change log's RocksDB files, blob volumes); the rest (pipes, event
        fds, temporary and spool files, restore cache, exports, logs). Also the most
        descriptors on one SQLite database file (its open connections)."""
        base = f"/proc/{self.srv.pid}/fd"
        kinds = {"socket": 0, "sqlite": 0, "store": 0, "other": 0}
        per_db = {}
        for fd in os.listdir(base):
            try:
                target = os.readlink(f"{base}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:"):
                kinds["socket"] += 1
            elif target.startswith(self.srv.data) and SQLITE_FILE.search(target):
                kinds["sqlite"] += 1
                if SQLITE_MAIN.search(target):
                    per_db[target] = per_db.get(target, 0) + 1
            elif target.startswith(os.path.join(self.srv.data, "changes") + "/") or \
                    target.startswith(os.path.join(self.srv.data, "blobs") + "/"):
                kinds["store"] += 1
            else:
                kinds["other"] += 1
        return kinds, max(per_db.values(), default=0)

    def cpu_ticks(self):
        with open(f"/proc/{self.srv.pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])

    def probe(self):
        """(pillow lag, lag seconds, retries waiting, dead letters), or Nones when it failed."""
        try:
            status, body = self.http("GET", "/health/ready", basic(*ADMIN), timeout=30)
            h = json.loads(body)
            lag, lag_s = int(h["pillow_lag"]), float(h["pillow_lag_seconds"])
            status, body = self.http("GET", "/metrics", basic(*ADMIN), timeout=30)
            waiting = dead = 0
            for line in body.decode().splitlines():
                if line.startswith("commcare_pillow_retry_queue{"):
                    v = int(float(line.rsplit(" ", 1)[1]))
                    if 'state="dead"' in line:
                        dead += v
                    else:
                        waiting += v
            return lag, lag_s, waiting, dead
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            self.probe_errors += 1
            self.stats.messages.append(f"probe: {type(e).__name__}: {e}")
            return None, None, None, None

    def sample(self, phase, ticks_before):
        st = self.proc_status()
        fds, db_conns = self.fd_counts()
        # CPU over the time between two readings of the ticks (not between samples: a slow
        # probe would otherwise shrink the interval the ticks are divided by).
        now = time.monotonic()
        ticks = self.cpu_ticks()
        interval_s, self.ticks_at = max(1e-3, now - self.ticks_at), now
        lag, lag_s, waiting, dead = self.probe()
        lat, err, size = self.stats.take()
        row = {"t_s": round(time.monotonic() - self.t0, 1), "phase": phase,
               "rss_mib": round(st["VmRSS"] / 1024, 1), "rss_anon_mib": round(st["RssAnon"] / 1024, 1),
               "rss_file_mib": round(st["RssFile"] / 1024, 1), "threads": st["Threads"],
               "fds": sum(fds.values()), "fds_socket": fds["socket"], "fds_sqlite": fds["sqlite"],
               "fds_store": fds["store"], "fds_other": fds["other"],
               "fds_checked": fds["socket"] + fds["other"], "db_connections_max": db_conns,
               "cpu_pct": round(100 * (ticks - ticks_before) / os.sysconf("SC_CLK_TCK") / interval_s, 1),
               "loadavg1": float(open("/proc/loadavg").read().split()[0]),
               "pillow_lag": lag, "pillow_lag_s": lag_s, "retries_waiting": waiting,
               "dead_letters": dead, "backlog": sum(q.qsize() for q in self.queues.values())}
        for k in KINDS:
            row[f"{k}_n"] = len(lat[k]) + err[k]
            row[f"{k}_err"] = err[k]
            p50, p99 = pct(lat[k], 50), pct(lat[k], 99)
            row[f"{k}_p50_ms"] = None if p50 is None else round(p50, 1)
            row[f"{k}_p99_ms"] = None if p99 is None else round(p99, 1)
        for k in ("restore", "restore0"):
            row[f"{k}_kib"] = round(statistics.mean(size[k]) / 1024, 1) if size.get(k) else None
        self.samples.append(row)
        return ticks

    # ---- the run ----
    def setup(self):
        flags = ["--access-log", os.path.join(self.args.out, "access.log")] if self.args.access_log else []
        data = None
        if self.args.backends == "pg":  # PostgreSQL + S3 + Kafka, as the crash campaign's pg
            data = os.path.join(self.args.out, "data")
            tag = f"soak_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            p = subprocess.run([self.args.commcare, *pg_init_args(data, tag)], env=ENV,
                               capture_output=True, text=True)
            assert p.returncode == 0, f"init: {p.stdout[-1500:]} {p.stderr[-1500:]}"
        self.srv = Server(self.args.commcare, *flags, pillows=True, env=ENV, data=data)
        for i in range(self.args.users):
            pw = f"pw-m{i}"
            uid = self.srv.make_user("demo", f"m{i}", pw)["user_id"]
            self.phones.append(Phone(f"m{i}", pw, uid, self.args.cases_per_user))
        # Every credential once, so that the soak measures requests, not first logins (PBKDF2).
        for ph in self.phones:
            status, body = self.http("GET", "/a/demo/phone/restore/?version=2.0", ph.auth)
            assert status == 200, (ph.username, status, body[:300])
        status, _ = self.http("GET", "/a/demo/api/case/v2/?limit=1", basic(*ADMIN))
        assert status == 200, status

    def run(self):
        a = self.args
        duration = a.seconds if a.seconds else a.minutes * 60
        rates = {"submit": a.submit_rate, "restore": a.restore_rate, "restore0": a.initial_restore_rate,
                 "search": a.search_rate, "export": 1 / a.export_every if a.export_every > 0 else 0}
        fns = {"submit": self.do_submit, "restore": lambda: self.do_restore(False),
               "restore0": lambda: self.do_restore(True), "search": self.do_search,
               "export": self.do_export}
        nworkers = {"submit": 8, "restore": 4, "restore0": 2, "search": 4, "export": 1}
        workers = [threading.Thread(target=self.worker, args=(k, fns[k]), daemon=True)
                   for k in KINDS for _ in range(nworkers[k])]
        pacers = [threading.Thread(target=self.pacer, args=(k, rates[k]), daemon=True) for k in KINDS]
        self.held = []
        if a.leak_sockets:
            pacers.append(threading.Thread(target=self.leak_sockets, daemon=True))
        for t in workers:
            t.start()
        self.t0 = self.ticks_at = time.monotonic()
        ticks = self.cpu_ticks()
        for t in pacers:
            t.start()
        print(f"soak: load for {duration:g} s: {json.dumps({k: round(v, 3) for k, v in rates.items()})}/s "
              f"(server pid {self.srv.pid}, data {self.srv.data})", flush=True)
        next_sample = self.t0 + a.sample
        end = self.t0 + duration
        while True:
            now = time.monotonic()
            if now >= end:
                break
            time.sleep(max(0, min(next_sample, end) - now))
            if time.monotonic() >= next_sample:
                ticks = self.sample("load", ticks)
                next_sample += a.sample
                self.progress()
        self.stop_load.set()
        for t in pacers:
            t.join()
        self.load_end = time.monotonic() - self.t0
        # Drain: requests already due are still sent; then wait for the pillows to catch up.
        for k in KINDS:
            for _ in range(nworkers[k]):
                self.queues[k].put(None)
        for t in workers:
            t.join(max(1, end + 600 - time.monotonic()))
        drain_end = time.monotonic() + a.drain
        self.lag_end = None
        while True:
            lag = self.probe()[0]
            if lag == 0 or time.monotonic() >= drain_end:
                self.lag_end = lag
                break
            if time.monotonic() >= next_sample:
                ticks = self.sample("drain", ticks)
                next_sample += a.sample
                self.progress()
            time.sleep(0.5)
        self.drain_s = round(time.monotonic() - self.t0 - self.load_end, 1)
        ticks = self.sample("end", ticks)
        self.progress()
        for conn in self.held:
            conn.close()

    def progress(self):
        s = self.samples[-1]
        lat = " ".join(f"{k} {s[f'{k}_n']}/{s[f'{k}_err']}e p99 {s[f'{k}_p99_ms']}" for k in KINDS
                       if s[f"{k}_n"])
        print(f"[{s['t_s']:7.1f}s {s['phase']}] rss {s['rss_mib']} anon {s['rss_anon_mib']} MiB, "
              f"fds {s['fds']}, thr {s['threads']}, lag {s['pillow_lag']}, cpu {s['cpu_pct']}%, "
              f"backlog {s['backlog']} | {lat}", flush=True)

    # ---- checks ----
    def checks(self, shutdown_rc):
        a = self.args
        load = [s for s in self.samples if s["phase"] == "load"]
        n = len(load)
        mid, last = load[n // 3: 2 * n // 3], load[2 * n // 3:]
        failed, figures = [], {}
        errors = sum(self.stats.total_err.values()) + self.probe_errors
        figures["errors"] = errors
        if errors:
            failed.append(f"errors: {errors} requests failed "
                          f"({json.dumps(self.stats.total_err)}, probes {self.probe_errors}); first: "
                          + " | ".join(self.stats.messages[:5]))
        if len(mid) < 2 or len(last) < 2:
            failed.append(f"samples: {n} load samples, too few for thirds (use a longer run or "
                          f"a shorter --sample)")
        else:
            for key in ("rss_mib", "rss_anon_mib"):
                m, l = statistics.median(s[key] for s in mid), statistics.median(s[key] for s in last)
                growth = round(l - m, 1)
                figures[key] = {"middle_median": m, "last_median": l, "growth_mib": growth,
                                "growth_pct": round(100 * growth / m, 1)}
            # The check is on anonymous memory (the heap, where a leak lands). VmRSS adds
            # RssFile, the pages of the SQLite databases' memory maps (mmap_size 256 MiB a
            # database): file pages the kernel may drop, which grow with the databases.
            f = figures["rss_anon_mib"]
            limit = (a.rss_growth_mib if a.rss_growth_mib is not None
                     else f["middle_median"] * a.rss_growth_pct / 100)
            f["limit_mib"] = round(limit, 1)
            if f["growth_mib"] > limit:
                failed.append(f"rss_anon: the last third's median {f['last_median']} MiB is "
                              f"{f['growth_mib']} MiB ({f['growth_pct']}%) over the middle third's "
                              f"{f['middle_median']} MiB (limit {limit:.1f} MiB: "
                              + (f"--rss-growth-mib" if a.rss_growth_mib is not None
                                 else f"{a.rss_growth_pct:g}%") + ")")
            for key, name in (("fds_checked", "fds"), ("threads", "threads")):
                m, l = min(s[key] for s in mid), min(s[key] for s in last)
                figures[name] = {"middle_floor": m, "last_floor": l}
                if l > m + a.fd_slack:
                    what = "sockets and other descriptors" if name == "fds" else "threads"
                    failed.append(f"{name}: the last third's floor of {what}, {l}, is over the "
                                  f"middle third's {m}" + (f" + {a.fd_slack}" if a.fd_slack else ""))
            # A pool opens a connection only when every pooled one is in use, so a database
            # file has at most its writer, a checkpointer and one reader per server thread.
            conns = min(s["db_connections_max"] for s in last)
            limit = min(s["threads"] for s in last) + 2
            figures["db_connections"] = {"last_floor": conns, "limit": limit}
            if conns > limit:
                failed.append(f"db_connections: a SQLite database kept {conns} connections open "
                              f"throughout the last third, more than the server's threads + 2 ({limit})")
        figures["pillow_lag_end"] = self.lag_end
        if self.lag_end != 0:
            failed.append(f"pillow_lag: {self.lag_end} changes behind {a.drain:g} s after the load "
                          f"stopped")
        dead = max((s["dead_letters"] or 0) for s in self.samples)
        figures["dead_letters"] = dead
        if dead:
            failed.append(f"dead_letters: {dead} pillow changes dead-lettered")
        figures["shutdown_rc"] = shutdown_rc
        if shutdown_rc != 0:
            failed.append(f"shutdown: the server exited {shutdown_rc} on SIGTERM")
        return failed, figures

    def summary(self, figures):
        a = self.args
        s0, s1 = self.samples[0], self.samples[-1]
        load = [s for s in self.samples if s["phase"] == "load"]
        out = {"command": " ".join(sys.argv), "seed": a.seed,
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": machine(), "load_s": round(self.load_end, 1), "drain_s": self.drain_s,
               "first_sample": {k: s0[k] for k in SUMMARY_KEYS},
               "last_load_sample": {k: load[-1][k] for k in SUMMARY_KEYS},
               "end": {k: s1[k] for k in SUMMARY_KEYS},
               "peak_rss_mib": max(s["rss_mib"] for s in self.samples),
               "peak_pillow_lag": max((s["pillow_lag"] or 0) for s in load),
               "max_backlog": max(s["backlog"] for s in load),
               "mean_loadavg1": round(statistics.mean(s["loadavg1"] for s in load), 2),
               "mean_server_cpu_pct": round(statistics.mean(s["cpu_pct"] for s in load), 1),
               "requests": {}, "checks": figures,
               "p50_ms_by_third": {}}
        n = len(load)
        thirds = (load[:n // 3], load[n // 3: 2 * n // 3], load[2 * n // 3:])
        for k in KINDS:
            # The median over the third's intervals of each interval's p50.
            out["p50_ms_by_third"][k] = [
                round(statistics.median(v), 1) if v else None
                for v in ([s[f"{k}_p50_ms"] for s in t if s[f"{k}_p50_ms"] is not None] for t in thirds)]
        for k in KINDS:
            lat = self.stats.all_lat[k]
            out["requests"][k] = {"n": self.stats.total[k], "errors": self.stats.total_err[k],
                                  "rate_per_s": round(self.stats.total[k] / self.load_end, 2),
                                  "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                                  "max_ms": max(lat) if lat else None}
            for q in ("p50_ms", "p99_ms", "max_ms"):
                if out["requests"][k][q] is not None:
                    out["requests"][k][q] = round(out["requests"][k][q], 1)
        return out

    def write_csv(self, path):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(self.samples[0]))
            w.writeheader()
            for s in self.samples:
                w.writerow({k: "" if v is None else v for k, v in s.items()})


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 1024 / 1024
    except OSError:
        mem = 0
    return f"{os.cpu_count()} CPU {model}, {mem:.1f} GiB, Linux {platform.release()}"


# ---- the plot: one small SVG chart per metric against time, written by hand ----
def _ticks(lo, hi, n=4):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v <= hi + step * 0.001:
        ticks.append(round(v, 10))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt(v):
    if abs(v) >= 10000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def chart(x0, y0, w, h, title, times, series, marks, ylog=False):
    """SVG of one chart at (x0, y0): series = [(label, [value or None])], marks = [(t, label)]."""
    left, right, top, bottom = 52, 10, 32, 22
    pw, ph = w - left - right, h - top - bottom
    vals = [v for _, ys in series for v in ys if v is not None]
    lo = 0
    hi = max(vals) if vals else 1
    if ylog:
        lo_v = max(min([v for v in vals if v > 0] or [1]), 0.1)
        lo, hi = math.floor(math.log10(lo_v)), math.ceil(math.log10(max(hi, lo_v * 10)))
        yt = list(range(lo, hi + 1))
    else:
        yt = _ticks(0, hi * 1.05 if hi > 0 else 1)
        hi = yt[-1]
    tmax = max(times) if times else 1
    xt = [v for v in _ticks(0, tmax / 60, 6) if v <= tmax / 60 + 1e-9]
    tspan = tmax or 1

    def X(t):
        return x0 + left + pw * t / tspan

    def Y(v):
        if ylog:
            v = math.log10(max(v, 10 ** lo))
        return y0 + top + ph * (1 - (v - lo) / ((hi - lo) or 1))

    out = [f'<text x="{x0 + left}" y="{y0 + 14}" font-weight="bold">{title}</text>']
    for v in yt:
        y = Y(10 ** v if ylog else v)
        out.append(f'<line x1="{x0 + left}" x2="{x0 + left + pw}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e5e5e5"/>')
        out.append(f'<text x="{x0 + left - 4}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{_fmt(10 ** v) if ylog else _fmt(v)}</text>')
    for v in xt:
        x = X(v * 60)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0 + top}" y2="{y0 + top + ph}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 + top + ph + 14}" text-anchor="middle">{_fmt(v)}</text>')
    out.append(f'<text x="{x0 + 4}" y="{y0 + top + ph + 14}" fill="#666">min</text>')
    for t, label in marks:
        x = X(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0 + top}" y2="{y0 + top + ph}" '
                   f'stroke="#999" stroke-dasharray="3,3"/>')
        if label:
            right_edge = x > x0 + left + pw - 40
            anchor = ' text-anchor="end"' if right_edge else ""
            out.append(f'<text x="{x - 2 if right_edge else x + 2:.1f}" y="{y0 + top + 9}" fill="#888" '
                       f'font-size="9"{anchor}>{label}</text>')
    out.append(f'<rect x="{x0 + left}" y="{y0 + top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    lx = x0 + left
    for i, (label, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        pts = [(X(t), Y(v)) for t, v in zip(times, ys) if v is not None]
        dense = sum(1 for v in ys if v is not None) > len(ys) / 2
        if dense and len(pts) > 1:
            d = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.3"/>')
        else:
            out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}"/>' for x, y in pts)
        out.append(f'<rect x="{lx}" y="{y0 + 22}" width="10" height="3" fill="{color}"/>'
                   f'<text x="{lx + 13}" y="{y0 + 27}" font-size="10">{label}</text>')
        lx += 6 * len(label) + 24
    return "\n".join(out)


def write_svg(path, samples, load_end, caption, store="embedded store"):
    times = [s["t_s"] for s in samples]
    load = [s for s in samples if s["phase"] == "load"]
    n = len(load)
    marks = []
    if n >= 3:
        marks += [(load[n // 3]["t_s"], "middle third"), (load[2 * n // 3]["t_s"], "last third")]
    marks.append((load_end, "drain"))

    def col(key, scale=1.0):
        return [None if s[key] is None or s[key] == "" else s[key] * scale for s in samples]

    def rate(kind):
        out, prev = [], 0
        for s in samples:
            dt = s["t_s"] - prev
            prev = s["t_s"]
            out.append(round(s[f"{kind}_n"] / dt, 2) if dt > 0 else None)
        return out

    charts = [
        ("Server memory (MiB)", [("VmRSS", col("rss_mib")), ("RssAnon (checked)", col("rss_anon_mib")),
                                 ("RssFile", col("rss_file_mib"))], False),
        ("Open file descriptors", [("all", col("fds")), ("SQLite", col("fds_sqlite")),
                                   ("sockets+other (checked)", col("fds_checked")),
                                   ("log+blobs", col("fds_store"))], False),
        ("Pillow lag (changes)", [("lag", col("pillow_lag"))], False),
        ("Pillow lag (seconds)", [("lag", col("pillow_lag_s"))], False),
        ("Submission latency (ms)", [("p50", col("submit_p50_ms")), ("p99", col("submit_p99_ms"))], True),
        ("Case API search latency (ms)", [("p50", col("search_p50_ms")),
                                          ("p99", col("search_p99_ms"))], True),
        ("Incremental restore latency (ms)", [("p50", col("restore_p50_ms")),
                                              ("p99", col("restore_p99_ms"))], True),
        ("Initial restore latency (ms)", [("p50", col("restore0_p50_ms")),
                                          ("p99", col("restore0_p99_ms"))], True),
        ("Restore payload, mean (KiB)", [("incremental", col("restore_kib")),
                                        ("initial", col("restore0_kib"))], False),
        ("Export latency, POST to downloaded (ms)", [("each", col("export_p99_ms"))], True),
        ("Requests per second", [(k, rate(k)) for k in ("submit", "restore", "restore0", "search")], True),
        ("Errors per interval", [(k, col(f"{k}_err")) for k in KINDS], False),
        ("Server threads", [("threads", col("threads"))], False),
        ("Server CPU (% of one core)", [("cpu", col("cpu_pct"))], False),
        ("Machine load average (1 min)", [("loadavg", col("loadavg1"))], False),
        ("Client backlog (requests due, not yet started)", [("backlog", col("backlog"))], False),
    ]
    w, h, cols = 460, 190, 2
    rows = (len(charts) + cols - 1) // cols
    head = 46
    width, height = w * cols + 20, head + rows * h + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="12" y="18" font-size="14" font-weight="bold">libcommcare soak: commcare serve, '
             f'{store}</text>']
    for i, line in enumerate(caption[:2]):
        parts.append(f'<text x="12" y="{32 + 12 * i}" font-size="10" fill="#444">{_esc(line)}</text>')
    for i, (title, series, ylog) in enumerate(charts):
        parts.append(chart(10 + (i % cols) * w, head + (i // cols) * h, w, h, _esc(title), times, series,
                           marks, ylog))
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def _esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("commcare")
    ap.add_argument("--minutes", type=float, default=30, help="load duration (default 30)")
    ap.add_argument("--seconds", type=float, default=0, help="load duration in seconds (overrides --minutes)")
    ap.add_argument("--out", default=None, help="output directory (default: a new one under /tmp)")
    ap.add_argument("--sample", type=float, default=10, help="seconds between samples (default 10)")
    ap.add_argument("--submit-rate", type=float, default=50, help="form submissions per second")
    ap.add_argument("--restore-rate", type=float, default=2, help="incremental restores per second")
    ap.add_argument("--initial-restore-rate", type=float, default=0.2, help="initial restores per second")
    ap.add_argument("--search-rate", type=float, default=3, help="Case API searches per second")
    ap.add_argument("--export-every", type=float, default=120, help="seconds between exports (0: none)")
    ap.add_argument("--users", type=int, default=10, help="mobile workers (phones)")
    ap.add_argument("--cases-per-user", type=int, default=200, help="open cases a phone keeps at most")
    ap.add_argument("--drain", type=float, default=60, help="seconds allowed for the pillow lag to reach 0")
    ap.add_argument("--rss-growth-pct", type=float, default=20,
                    help="RssAnon growth allowed, last third over middle third (default 20%%)")
    ap.add_argument("--rss-growth-mib", type=float, default=None,
                    help="RssAnon growth allowed in MiB (replaces --rss-growth-pct)")
    ap.add_argument("--fd-slack", type=int, default=0, help="descriptors (and threads) the floor may grow by")
    ap.add_argument("--leak-sockets", action="store_true",
                    help="test the checks: hold one more idle connection a second (fds must fail)")
    ap.add_argument("--access-log", action="store_true", help="keep the server's access log in --out")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("SOAK_SEED", random.randrange(1 << 30))))
    ap.add_argument("--keep", action="store_true", help="keep the server's data directory")
    ap.add_argument("--backends", choices=["embedded", "pg"], default="embedded",
                    help="pg: PostgreSQL (2 databases), S3 and Kafka of scripts/with-test-servers")
    args = ap.parse_args()
    if args.cases_per_user < 10:
        ap.error("--cases-per-user must be at least 10 (8 submitters may hold a slot each)")
    if not args.out:
        args.out = f"/tmp/soak-{os.getpid()}"
    os.makedirs(args.out, exist_ok=True)
    print(f"soak: seed {args.seed}, output in {args.out}", flush=True)
    soak = Soak(args)
    soak.setup()
    shutdown_rc = None
    try:
        soak.run()
    finally:
        soak.srv.stop(cleanup=not args.keep)
        shutdown_rc = soak.srv.proc.returncode
        if args.keep:
            print(f"soak: data kept in {soak.srv.data}")
    failed, figures = soak.checks(shutdown_rc)
    summary = soak.summary(figures)
    summary["failed"] = failed
    soak.write_csv(os.path.join(args.out, "samples.csv"))
    caption = [f"{summary['date']}; {summary['machine']}; load {summary['load_s']:g} s, drain "
               f"{summary['drain_s']:g} s; mean load average {summary['mean_loadavg1']}",
               "rates/s: " + ", ".join(f"{k} {v['rate_per_s']:g}" for k, v in summary["requests"].items())
               + f"; seed {args.seed}"]
    write_svg(os.path.join(args.out, "soak.svg"), soak.samples, soak.load_end, caption,
              "PostgreSQL + S3 + Kafka" if args.backends == "pg" else "embedded store")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))
    print(f"soak: wrote {args.out}/samples.csv, soak.svg, summary.json")
    for f in failed:
        print("FAILED", f)
    print("soak: " + ("FAILED (" + ", ".join(f.split(":")[0] for f in failed) + ")" if failed else "passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
