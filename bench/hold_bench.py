#!/usr/bin/env python3
"""Submissions while long-polls and slow readers are held (security issue, D4's load test).

    python3 bench/hold_bench.py COMMCARE [--seconds 20] [--rate 100] [--polls 64] [--slow 64]
                                         [--baseline-seconds 5] [--cases 2000] [--poll-domain quiet]
                                         [-- extra serve flags]

Goal: "submissions still answered within 100 ms p99 while 64 long-polls and 64 slow readers are
held open".

1. Starts `COMMCARE serve` (pillows on) on 127.0.0.1:0 in a temporary directory.
2. Makes 16 web users with access_api (the long-pollers, 4 polls each) in a quiet domain
   (`benchpoll`: nothing is written there, so a poll waits its full timeout; `--poll-domain
   busy` puts them in the submitting domain instead, where every submission answers them),
   16 mobile workers in `bench` owning --cases cases of ~2.5 KB each, and one mobile worker that
   submits. Restores are ~5 MB with the default 2000 cases: a restore smaller than what the
   kernel's socket buffers take (the server's send buffer grows up to tcp_wmem's max, 4 MB by
   default; ~2.8 MB per connection was seen) is written whole into them, its stream ends and its slot is freed, so the "slow reader" would hold no
   server resource at all (that is what --cases 600, ~1.5 MB, shows). Each worker's restore
   cache is warmed by one full restore.
3. Baseline: paced submissions for --baseline-seconds with nothing held.
4. Holds --polls long-polls (GET /a/{d}/api/changes/?timeout=30&since=<end of the log>,
   re-issued when answered) and --slow restores over raw sockets with SO_RCVBUF=4096, 4 per
   worker; half of them trickle 2 bytes every 0.5 s, half read nothing. (The server closes a
   stream whose 64 KB write makes no progress for --body-timeout-ms, 60 s: with --seconds much
   over 50 the readers are cut before the end and the run reports them as not held.)
5. Open-loop paced submitter at --rate for --seconds from several keep-alive connections;
   latency counts from each submission's scheduled time (so queueing in the client counts).
6. Checks the polls and readers are still open (both ends ESTABLISHED in /proc/net/tcp; the
   server still refuses a 5th long-poll and a 5th restore of each held worker with 429).

Prints one JSON object (progress goes to stderr); exit 0 when p99 <= --p99-ms (100), no
submission failed and every poll and reader was still held at the end, else 1.
Everything is on 127.0.0.1; the whole run is bounded (a watchdog ends it after --max-run s).
"""
import argparse
import base64
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ADMIN = ("admin", "adminpw")
DOMAIN = "bench"
POLL_DOMAIN = "benchpoll"
CASE_NS = "http://commcarehq.org/case/transaction/v2"


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return round(s[k], 2)


def form_xml(cases=""):
    return (f'<?xml version="1.0"?><data xmlns="http://example/bench">'
            f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{uuid.uuid4().hex}</instanceID>'
            f'</meta>{cases}</data>').encode()


def case_block(case_id, user_id, props):
    upd = "".join(f"<{k}>{v}</{k}>" for k, v in props.items())
    return (f'<case xmlns="{CASE_NS}" case_id="{case_id}" date_modified="2024-01-01T00:00:00Z" '
            f'user_id="{user_id}"><create><case_type>patient</case_type><case_name>{case_id}</case_name>'
            f'<owner_id>{user_id}</owner_id></create><update>{upd}</update></case>')


def big_props(seed):
    # ~2 KB: 8 properties of 256 characters, different per case.
    h = uuid.uuid5(uuid.NAMESPACE_OID, seed).hex
    return {f"p{i}": (h[i:] + h[:i]) * 8 for i in range(8)}


# -------------------------------------------------------------------------------------------------
class Server:
    def __init__(self, cc, tmp, extra, server_tmpdir=None):
        self.tmp = tmp
        self.data = os.path.join(tmp, "data")
        env = dict(os.environ, COMMCARE_ADMIN_USER=ADMIN[0], COMMCARE_ADMIN_PASSWORD=ADMIN[1],
                   COMMCARE_DOMAIN=DOMAIN)
        if server_tmpdir:
            env["TMPDIR"] = server_tmpdir
        self.errpath = os.path.join(tmp, "stderr.log")
        self.errf = open(self.errpath, "w")
        cmd = [cc, "serve", "--data", self.data, "--listen", "127.0.0.1:0"] + list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errf, text=True, env=env)
        self.pid = self.proc.pid
        hello = None
        t0 = time.time()
        while time.time() - t0 < 30:
            line = self.proc.stdout.readline()
            if not line:
                break
            try:
                hello = json.loads(line)
            except ValueError:
                continue
            if "listening" in hello:
                break
        if not hello or "listening" not in hello:
            self.stop()
            raise RuntimeError(f"server did not start: {cmd}: {hello}: {self.stderr_tail()}")
        self.port = int(hello["listening"].rsplit(":", 1)[1])
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            for _ in self.proc.stdout:
                pass
        except (OSError, ValueError):
            pass

    def stderr_text(self):
        try:
            with open(self.errpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stderr_tail(self, n=2000):
        return self.stderr_text()[-n:]

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errf.close()

    def proc_status(self, key):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return None

    def cpu_seconds(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                data = f.read()
        except OSError:
            return None
        rest = data[data.rindex(")") + 2:].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")

    def threads(self):
        return self.proc_status("Threads")

    def request(self, method, path, body=None, auth=ADMIN, headers=None, timeout=60):
        h = dict(headers or {})
        if auth:
            h["Authorization"] = basic(*auth)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def metrics(self):
        try:
            st, _, body = self.request("GET", "/metrics", auth=None, timeout=10)
        except OSError:
            return {}
        if st != 200:
            return {}
        out = {}
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, val = line.rpartition(" ")
            try:
                out[name] = float(val)
            except ValueError:
                pass
        return out


def must(status, want, what, body=b""):
    if status != want:
        raise RuntimeError(f"{what}: HTTP {status} (wanted {want}): {body[:300]!r}")


def in_threads(fn, jobs):
    """fn(*job) for each job, each on a thread of its own; raises the first failure."""
    errs = []

    def run(job):
        try:
            fn(*job)
        except Exception as e:  # noqa: BLE001
            errs.append(repr(e))

    ts = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise RuntimeError(errs[0])


# -------------------------------------------------------------------------------------------------
def proc_tcp():
    """(local port, remote port, state, bytes queued to send) of each TCP socket of the machine,
    from /proc/net/tcp and tcp6 (state in hex: 01 ESTABLISHED, 04 FIN_WAIT1, 08 CLOSE_WAIT, ...)."""
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    yield (int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16),
                           parts[3], int(parts[4].split(":")[0], 16))
        except (OSError, StopIteration):
            pass


def tcp_states(ports):
    """State of our local ports."""
    want = set(ports)
    return {local: state for local, _, state, _ in proc_tcp() if local in want}


def server_side(server_port, peer_ports):
    """(state, bytes queued to send) of the server's end of each connection to one of peer_ports.
    The client's end cannot tell: a server that closed a connection with unsent data leaves it
    FIN_WAIT1 (04) on its side while the client's end, which never gets the FIN, stays
    ESTABLISHED."""
    want = set(peer_ports)
    return {remote: (state, queued) for local, remote, state, queued in proc_tcp()
            if local == server_port and remote in want}


class Submitter:
    """Open-loop paced submissions: submission i is due at t0 + i/rate; its latency is the time
    from then to its answer, whichever of the connections sends it."""

    def __init__(self, server, auth, user_id, rate, seconds, threads):
        self.s, self.auth, self.user_id = server, auth, user_id
        self.rate, self.seconds, self.nthreads = rate, seconds, threads
        self.lock = threading.Lock()
        self.next = 0
        self.lat = []          # ms, from schedule to answer
        self.when = []         # s, scheduled time from the start
        self.service = []      # ms, from send to answer
        self.late = []         # ms, from schedule to send
        self.statuses = {}
        self.errors = []

    def _one(self, conn_box, body):
        hdr = {"Authorization": basic(*self.auth), "Content-Type": "text/xml"}
        for attempt in (0, 1):
            conn = conn_box[0]
            if conn is None:
                conn = conn_box[0] = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=30)
            try:
                conn.request("POST", f"/a/{DOMAIN}/receiver/", body=body, headers=hdr)
                r = conn.getresponse()
                data = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn_box[0] = None
                return r.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                conn.close()
                conn_box[0] = None
                if attempt:  # a kept-alive connection the server closed: one retry on a new one
                    raise
            except Exception:
                conn.close()
                conn_box[0] = None
                raise

    def _worker(self):
        conn_box = [None]
        while True:
            with self.lock:
                i = self.next
                self.next += 1
            due = self.t0 + i / self.rate
            if due >= self.t_end:
                break
            body = form_xml(case_block(f"sub-{uuid.uuid4().hex}", self.user_id,
                                       {"visit": str(i), "note": "paced submission"}))
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            sent = time.monotonic()
            try:
                status, data = self._one(conn_box, body)
                err = None if status == 201 else f"HTTP {status}: {data[:200]!r}"
            except Exception as e:  # noqa: BLE001 - reported, not raised
                status, err = "exception", repr(e)
            done = time.monotonic()
            with self.lock:
                self.lat.append((done - due) * 1000)
                self.when.append(round(due - self.t0, 2))
                self.service.append((done - sent) * 1000)
                self.late.append((sent - due) * 1000)
                self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
                if err:
                    self.errors.append(err)
        if conn_box[0]:
            conn_box[0].close()

    def run(self):
        cpu0 = self.s.cpu_seconds()
        self.t0 = time.monotonic() + 0.05
        self.t_end = self.t0 + self.seconds
        ts = [threading.Thread(target=self._worker, daemon=True) for _ in range(self.nthreads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(self.seconds + 60)
        wall = time.monotonic() - self.t0
        cpu1 = self.s.cpu_seconds()
        self.server_cpu_cores = round((cpu1 - cpu0) / wall, 2) if cpu0 is not None and cpu1 else None
        return self

    def summary(self):
        return {"submissions": len(self.lat), "p50_ms": pct(self.lat, 50), "p99_ms": pct(self.lat, 99),
                "p999_ms": pct(self.lat, 99.9), "max_ms": round(max(self.lat), 2) if self.lat else None,
                "service_p99_ms": pct(self.service, 99), "send_late_p99_ms": pct(self.late, 99),
                "statuses": self.statuses, "errors": len(self.errors),
                "slowest": [f"{l:.1f} ms at {w:.2f} s" for w, l in
                            sorted(zip(self.when, self.lat), key=lambda x: -x[1])[:6]],
                "server_cpu_cores": self.server_cpu_cores}


class Poller(threading.Thread):
    """One long-poll, re-issued when answered."""

    def __init__(self, server, auth, domain, token, stop):
        super().__init__(daemon=True)
        self.s, self.auth, self.domain, self.token, self.stop_ev = server, auth, domain, token, stop
        self.conn = None
        self.waiting = False
        self.started_at = None
        self.answers = {}  # "empty" / "changes" / "429" / other status / exception name
        self.errors = []
        self.sport = None
        self.last_answer = 0.0

    def count(self, k):
        self.answers[k] = self.answers.get(k, 0) + 1
        self.last_answer = time.monotonic()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=45)
                    self.conn.connect()
                    self.sport = self.conn.sock.getsockname()[1]
                self.waiting = True
                self.started_at = time.monotonic()
                self.conn.request("GET", f"/a/{self.domain}/api/changes/?timeout=30&since={self.token}",
                                  headers={"Authorization": basic(*self.auth)})
                r = self.conn.getresponse()
                body = r.read()
                self.waiting = False
                if self.stop_ev.is_set():
                    break
                if r.status == 200:
                    page = json.loads(body)
                    self.token = page["next_since"]
                    self.count("changes" if page["changes"] else "empty")
                elif r.status == 429:
                    self.count("429")
                    self.stop_ev.wait(float(r.getheader("Retry-After", "1")))
                else:
                    self.count(str(r.status))
                    self.errors.append(f"HTTP {r.status}: {body[:200]!r}")
                    self.stop_ev.wait(1)
            except Exception as e:  # noqa: BLE001
                self.waiting = False
                if self.stop_ev.is_set():
                    break
                self.count(type(e).__name__)
                self.errors.append(repr(e))
                if self.conn:
                    self.conn.close()
                self.conn = None
                self.stop_ev.wait(0.5)

    def shutdown(self):
        c = self.conn
        if c and c.sock:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SlowReaders(threading.Thread):
    """Raw-socket restores with a 4 KB receive buffer; `trickle` ones take 2 bytes each 0.5 s,
    the others nothing."""

    def __init__(self, server, workers, per_worker, stop):
        super().__init__(daemon=True)
        self.s, self.stop_ev = server, stop
        self.socks = []  # [sock, auth, trickle, bytes_read, eof]
        for k in range(per_worker):
            for auth in workers:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.settimeout(10)
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(f"GET /a/{DOMAIN}/phone/restore/ HTTP/1.1\r\nHost: bench\r\n"
                             f"Authorization: {basic(*auth)}\r\n\r\n".encode())
                self.socks.append([sock, auth, len(self.socks) % 2 == 0, 0, False])
        self.heads = {}

    def wait_heads(self, deadline):
        """Peeks at each answer's status line (nothing consumed)."""
        for i, entry in enumerate(self.socks):
            sock = entry[0]
            while i not in self.heads and time.monotonic() < deadline:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    head = sock.recv(12, socket.MSG_PEEK | socket.MSG_WAITALL)
                except (socket.timeout, TimeoutError):
                    break
                except OSError as e:
                    head = repr(e).encode()
                self.heads[i] = head.decode(errors="replace")
        return self.heads

    def run(self):
        while not self.stop_ev.wait(0.5):
            for entry in self.socks:
                sock, _, trickle, _, eof = entry
                if not trickle or eof:
                    continue
                try:
                    got = sock.recv(2, socket.MSG_DONTWAIT)
                    if got:
                        entry[3] += len(got)
                    else:
                        entry[4] = True
                except BlockingIOError:
                    pass
                except OSError:
                    entry[4] = True

    def ports(self):
        return [e[0].getsockname()[1] for e in self.socks]

    def close(self):
        for e in self.socks:
            try:
                e[0].close()
            except OSError:
                pass


# -------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commcare")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--polls", type=int, default=64)
    ap.add_argument("--slow", type=int, default=64)
    ap.add_argument("--baseline-seconds", type=float, default=5)
    ap.add_argument("--cases", type=int, default=2000,
                    help="cases per restoring worker (2000: ~5 MB restores, more than the kernel's "
                         "4 MB send buffer can swallow, so the server keeps each stream)")
    ap.add_argument("--cases-per-form", type=int, default=100)
    ap.add_argument("--threads", type=int, default=8, help="submitting connections")
    ap.add_argument("--poll-domain", choices=["quiet", "busy"], default="quiet")
    ap.add_argument("--p99-ms", type=float, default=100)
    ap.add_argument("--max-run", type=float, default=None,
                    help="watchdog, seconds (default 150 + --seconds + --baseline-seconds)")
    ap.add_argument("--server-tmpdir", help="TMPDIR of the server (where restores spool); "
                    "default: inherited")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("serve_flags", nargs="*", help="extra `serve` flags (after --)")
    args = ap.parse_args()
    if args.max_run is None:
        args.max_run = 150 + args.seconds + args.baseline_seconds

    n_pollers = max(1, (args.polls + 3) // 4)
    n_workers = 16 if args.cases > 0 else 0
    per_worker = (args.slow + n_workers - 1) // n_workers if n_workers else 0
    poll_domain = POLL_DOMAIN if args.poll_domain == "quiet" else DOMAIN

    tmp = tempfile.mkdtemp(prefix="cc-hold-bench-")
    server = None
    stop = threading.Event()
    pollers, readers = [], None
    t_start = time.monotonic()
    phases = {}

    done = threading.Event()

    def watchdog():
        if done.wait(args.max_run):
            return
        sys.stderr.write(f"hold_bench: watchdog: over {args.max_run} s, giving up\n")
        if server and server.alive():
            server.proc.kill()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()

    def log(msg):
        sys.stderr.write(f"[{time.monotonic() - t_start:6.1f}s] {msg}\n")
        sys.stderr.flush()

    try:
        server = Server(args.commcare, tmp, args.serve_flags, args.server_tmpdir)
        s = server
        log(f"server pid {s.pid} on port {s.port}")
        st, _, body = s.request("POST", "/api/domains/", {"name": POLL_DOMAIN})
        must(st, 201, "create domain", body)

        # Users (PBKDF2 each: done in parallel).
        pollers_auth = [(f"poller{i}", f"pw-poller-{i}") for i in range(n_pollers)]
        workers_auth = [(f"worker{i}", f"pw-worker-{i}") for i in range(n_workers)]
        sub_auth = ("submitter", "pw-submitter")
        ids = {}

        def make_user(domain, auth, web):
            body = {"username": auth[0], "password": auth[1]}
            if web:
                body.update(web_user=True, permissions=["access_api"])
            st, _, b = s.request("POST", f"/a/{domain}/api/users/", body)
            must(st, 201, f"create user {auth[0]}", b)
            ids[auth[0]] = json.loads(b)["user_id"]

        jobs = ([(poll_domain, a, True) for a in pollers_auth] + [(DOMAIN, a, False) for a in workers_auth]
                + [(DOMAIN, sub_auth, False)])
        in_threads(make_user, jobs)
        phases["users_s"] = round(time.monotonic() - t_start, 1)
        log(f"{len(jobs)} users made")

        # Cases: --cases per worker, --cases-per-form case blocks per form, 4 connections.
        t0 = time.monotonic()
        forms = []
        for u, p in workers_auth:
            uid = ids[u]
            for start in range(0, args.cases, args.cases_per_form):
                blocks = "".join(case_block(f"{u}-case-{j}", uid, big_props(f"{u}-{j}"))
                                 for j in range(start, min(args.cases, start + args.cases_per_form)))
                forms.append(((u, p), form_xml(blocks)))
        lock = threading.Lock()

        def load():
            while True:
                with lock:
                    if not forms:
                        return
                    auth, xml = forms.pop()
                st, _, b = s.request("POST", f"/a/{DOMAIN}/receiver/", xml, auth=auth,
                                     headers={"Content-Type": "text/xml"}, timeout=120)
                must(st, 201, f"case form of {auth[0]}", b)

        in_threads(load, [()] * 4)
        phases["cases_s"] = round(time.monotonic() - t0, 1)
        phases["rss_after_cases_mb"] = round((s.proc_status("VmRSS") or 0) / 1024, 1)
        log(f"{n_workers * args.cases} cases in {phases['cases_s']} s")

        # Warm the restore caches (and check each restore is > 1 MB).
        t0 = time.monotonic()
        sizes = []

        def warm(auth):
            st, _, b = s.request("GET", f"/a/{DOMAIN}/phone/restore/", auth=auth, timeout=120)
            must(st, 200, f"restore of {auth[0]}", b)
            sizes.append(len(b))

        in_threads(warm, [(a,) for a in workers_auth])
        phases["restore_warm_s"] = round(time.monotonic() - t0, 1)
        phases["rss_after_restores_mb"] = round((s.proc_status("VmRSS") or 0) / 1024, 1)
        restore_mb = round(min(sizes) / 1e6, 2) if sizes else 0
        log(f"restores {restore_mb}..{round(max(sizes) / 1e6, 2) if sizes else 0} MB")

        # Let the pillows catch up (bounded), so the baseline does not pay for the case load.
        t0 = time.monotonic()
        lag = None
        while time.monotonic() - t0 < 60:
            st, _, b = s.request("GET", "/health/ready", auth=None)
            try:
                lag = json.loads(b).get("pillow_lag")
            except ValueError:
                lag = None
            if st == 200 and lag == 0:
                break
            time.sleep(0.5)
        phases["pillow_catchup_s"] = round(time.monotonic() - t0, 1)
        phases["rss_after_pillows_mb"] = round((s.proc_status("VmRSS") or 0) / 1024, 1)
        log(f"pillow lag {lag} after {phases['pillow_catchup_s']} s")

        # The submitter's credential is verified once (PBKDF2) before any timing.
        st, _, b = s.request("POST", f"/a/{DOMAIN}/receiver/", form_xml(), auth=sub_auth,
                             headers={"Content-Type": "text/xml"})
        must(st, 201, "first submission", b)

        # 3. Baseline.
        log(f"baseline: {args.rate}/s for {args.baseline_seconds} s")
        m0 = s.metrics()
        base = Submitter(s, sub_auth, ids["submitter"], args.rate, args.baseline_seconds, args.threads).run()
        base_m = s.metrics()

        rss_before_hold = round((s.proc_status("VmRSS") or 0) / 1024, 1)
        # 4. The hold. Changes token at the end of the poll domain's log.
        t0 = time.monotonic()
        token, same = "", 0
        for _ in range(500):
            st, _, b = s.request("GET", f"/a/{poll_domain}/api/changes/?limit=1000&timeout=0&since={token}",
                                 auth=pollers_auth[0])
            must(st, 200, "changes", b)
            page = json.loads(b)
            same = same + 1 if not page["changes"] and page["next_since"] == token else 0
            token = page["next_since"]
            if same >= 2:
                break
        for a in pollers_auth[1:]:  # each poller's credential verified once, outside the hold
            st, _, b = s.request("GET", f"/a/{poll_domain}/api/changes/?limit=1&since={token}", auth=a)
            must(st, 200, f"changes as {a[0]}", b)
        for i in range(args.polls):
            p = Poller(s, pollers_auth[i % n_pollers], poll_domain, token, stop)
            p.start()
            pollers.append(p)
        readers = SlowReaders(s, workers_auth, per_worker, stop) if n_workers and args.slow else None
        if readers:
            readers.socks = readers.socks[:args.slow]
            heads = readers.wait_heads(time.monotonic() + 30)
            readers.start()
        else:
            heads = {}
        deadline = time.monotonic() + 10
        while sum(p.waiting for p in pollers) < len(pollers) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # let restore spooling and the polls' first reads settle
        phases["hold_setup_s"] = round(time.monotonic() - t0, 1)
        head_ok = sum(1 for h in heads.values() if h.startswith("HTTP/1.1 200"))
        other_heads = sorted(set(h for h in heads.values() if not h.startswith("HTTP/1.1 200")))
        log(f"held: {sum(p.waiting for p in pollers)} polls waiting, {head_ok}/{len(heads)} restores "
            f"answered 200 (other heads: {other_heads}); server threads {s.threads()}, "
            f"rss {round((s.proc_status('VmRSS') or 0) / 1024)} MB")
        answers_before = sum(sum(p.answers.values()) for p in pollers)
        for p in pollers:
            p.errors_at_hold = len(p.errors)

        # 5. Paced submissions while held.
        log(f"held run: {args.rate}/s for {args.seconds} s")
        m1 = s.metrics()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = time.monotonic()
        run = Submitter(s, sub_auth, ids["submitter"], args.rate, args.seconds, args.threads).run()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = round((ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime)
                           / (time.monotonic() - w0), 2)
        m2 = s.metrics()
        rss_mb = round((s.proc_status("VmRSS") or 0) / 1024, 1)
        hwm_mb = round((s.proc_status("VmHWM") or 0) / 1024, 1)

        # 6. Still held?
        poll_ports = [p.sport for p in pollers if p.sport]
        reader_ports = readers.ports() if readers else []
        states = tcp_states(poll_ports + reader_ports)
        theirs = server_side(s.port, poll_ports + reader_ports)
        est = lambda port: states.get(port) == "01" and theirs.get(port, ("",))[0] == "01"
        # A poll is held when its thread runs, its connection is ESTABLISHED and it waits now (or,
        # in a busy domain, was answered within the last second and is being re-issued), with no
        # error since the hold began.
        now = time.monotonic()
        polls_open = sum(1 for p in pollers
                         if p.is_alive() and est(p.sport) and p.errors_at_hold == len(p.errors)
                         and (p.waiting or now - p.last_answer < 1.0))
        polls_waiting = sum(1 for p in pollers if p.waiting)
        readers_open = sum(1 for e in (readers.socks if readers else [])
                           if not e[4] and est(e[0].getsockname()[1]))
        answers_during = sum(sum(p.answers.values()) for p in pollers) - answers_before
        # The server's side: a 5th long-poll and a 5th restore of a held user are refused.
        try:
            st, h, _ = s.request("GET", f"/a/{poll_domain}/api/changes/?timeout=1&since={token}",
                                 auth=pollers_auth[0], timeout=10)
            extra_poll = st
        except OSError as e:
            extra_poll = repr(e)
        # A 5th restore of each held worker: 429 while its 4 streams still hold their slots
        # (a restore the kernel's socket buffers swallowed whole holds no slot any more).
        tx = {port: theirs[port][1] for port in reader_ports if port in theirs}
        reader_server_states = {}
        for port in reader_ports:
            st_ = theirs.get(port, ("gone",))[0]
            reader_server_states[st_] = reader_server_states.get(st_, 0) + 1
        restore_probe = {}
        if readers and per_worker >= 4:
            for a in workers_auth:
                try:
                    st, h, _ = s.request("GET", f"/a/{DOMAIN}/phone/restore/", auth=a, timeout=30)
                except OSError as e:
                    st = type(e).__name__
                restore_probe[str(st)] = restore_probe.get(str(st), 0) + 1

        def route_delta(ma, mb, route):
            cnt = mb.get(f'commcare_http_request_seconds_count{{route="{route}"}}', 0) - \
                ma.get(f'commcare_http_request_seconds_count{{route="{route}"}}', 0)
            tot = mb.get(f'commcare_http_request_seconds_sum{{route="{route}"}}', 0) - \
                ma.get(f'commcare_http_request_seconds_sum{{route="{route}"}}', 0)
            return {"n": int(cnt), "mean_ms": round(1000 * tot / cnt, 2) if cnt else None}

        try:
            _, _, b = s.request("GET", "/health/ready", auth=None, timeout=10)
            lag_end = json.loads(b).get("pillow_lag")
        except (OSError, ValueError):
            lag_end = None
        stderr = s.stderr_text()
        err_lines = [l for l in stderr.splitlines() if re.search(r"error|fail|warn|abort|exception", l, re.I)]
        res = run.summary()
        bsum = base.summary()
        out = {
            "submissions": res["submissions"], "rate": args.rate, "seconds": args.seconds,
            "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"], "p999_ms": res["p999_ms"],
            "max_ms": res["max_ms"], "errors": res["errors"] + bsum["errors"],
            "statuses": res["statuses"],
            "slowest": res["slowest"],
            "service_p99_ms": res["service_p99_ms"], "send_late_p99_ms": res["send_late_p99_ms"],
            "baseline": {k: bsum[k] for k in ("submissions", "p50_ms", "p99_ms", "p999_ms", "max_ms",
                                              "errors", "server_cpu_cores")},
            "baseline_p50_ms": bsum["p50_ms"], "baseline_p99_ms": bsum["p99_ms"],
            "long_polls_held": polls_open, "long_polls": args.polls, "long_polls_waiting_at_end": polls_waiting,
            "long_poll_answers_during_run": answers_during,
            "long_poll_answers": _merge([p.answers for p in pollers]),
            "slow_readers_held": readers_open, "slow_readers": len(readers.socks) if readers else 0,
            "slow_reader_heads_200": head_ok,
            "slow_reader_bytes_read": sum(e[3] for e in readers.socks) if readers else 0,
            "extra_long_poll_status": extra_poll, "extra_restore_status_by_worker": restore_probe,
            "slow_reader_server_tx_queue_mb": round(sum(tx.values()) / 1e6, 1),
            "slow_reader_server_tcp_states": reader_server_states,
            "restore_mb": restore_mb, "poll_domain": poll_domain,
            "server_rss_mb": rss_mb, "server_rss_before_hold_mb": rss_before_hold,
            "server_rss_peak_mb": hwm_mb, "server_threads": s.threads(),
            "server_cpu_cores_during_run": res["server_cpu_cores"], "client_cpu_cores_during_run": client_cpu,
            "server_receiver_mean_ms": {"baseline": route_delta(m0, base_m, "receiver")["mean_ms"],
                                        "held": route_delta(m1, m2, "receiver")["mean_ms"]},
            "server_changes_api_calls_during_run": route_delta(m1, m2, "changes_api")["n"],
            "pillow_lag_end": lag_end, "server_alive": s.alive(),
            "server_stderr_suspicious_lines": len(err_lines),
            "setup": phases,
            "machine": f"{len(os.sched_getaffinity(0))} cores",
        }
        if err_lines:
            out["server_stderr_sample"] = err_lines[:5]
        sub_errs = base.errors + run.errors
        if sub_errs:
            out["error_sample"] = sub_errs[:5]
        poll_errs = [e for p in pollers for e in p.errors]
        if poll_errs:
            out["long_poll_error_sample"] = poll_errs[:3]
        holds_ok = polls_open == args.polls and readers_open == out["slow_readers"]
        ok = (res["p99_ms"] is not None and res["p99_ms"] <= args.p99_ms and out["errors"] == 0
              and res["submissions"] > 0 and holds_ok)
        out["holds_ok"] = holds_ok
        out["ok"] = ok
        print(json.dumps(out, indent=1))
        return 0 if ok else 1
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"error": repr(e), "server_stderr_tail": server.stderr_tail() if server else ""}))
        return 1
    finally:
        stop.set()
        for p in pollers:
            p.shutdown()
        if readers:
            readers.close()
        if server:
            server.stop()
        for p in pollers:
            p.join(2)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            sys.stderr.write(f"kept {tmp}\n")
        done.set()


def _merge(dicts):
    out = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


if __name__ == "__main__":
    sys.exit(main())
