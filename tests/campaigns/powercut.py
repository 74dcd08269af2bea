#!/usr/bin/env python3
"""Power-cut simulation for the embedded store (issue 24 item 1), the replaying half.

1. Record: `commcare init` and then several `commcare submit` processes (OpenRosa multipart
   forms, each creating a case, updating two shared cases, setting a ledger balance, with an
   attachment) run under powercut_shim.so, which journals every write, truncate, hole punch,
   create, rename, unlink, mkdir and flush under the data directory, and the JSON line
   `commcare submit` prints for each answered form (the acknowledgement).
2. Replay: for each cut point P (an index into the journal) build the directory a power cut at P
   would leave. The file-system model is POSIX's, not one file system's: a file's data (writes,
   truncates, punches) is durable once an fsync/fdatasync of that file that *began* after it
   has *ended* before P; a name (create, rename, unlink, mkdir) is durable once an fsync of its
   directory did the same. Of what was not durable at P, a "strict" cut keeps nothing; a
   "random" cut keeps a random subset of the un-flushed data writes (one of them torn at a
   512-byte boundary) and a random prefix of the un-flushed name operations. SQLite's -shm
   (shared memory, mmap'd, rebuilt on open) is left out.
3. Check: `commcare check` on the result (it opens as the writer: redo log replay, blob
   recovery, intent roll-forward, relay) must be clean, and every form acknowledged before P
   must be wholly there (its case, both shared-case updates, its ledger, its attachment), and
   no form may be half there. Before the first acknowledgement the directory need not open.
   After the forms, `commcare tasks enqueue` and `commcare admin domain create` run in turn
   (the task queue's tasks.db and the meta store's meta.sqlite): a task or a domain
   acknowledged before P must be there, and both databases must pass integrity_check.

With --serve the recording is of `commcare serve` instead, with its pillows (case search, a UCR
data source, the form read copy) and relay writing beside the receiver, and forms submitted
over HTTP by several clients at once; the harness appends each 201 to the journal as a mark.
Each cut is then also checked for its secondary stores: once `commcare pillows run --once` has
caught them up from what survived, the case-search index holds exactly the primary's cases
with their properties, and the UCR table equals its rebuild from the primary.

Usage: powercut.py COMMCARE SHIM [--cuts N] [--seed S] [--forms-per-run F] [--runs R] [--serve]
"""
import argparse
import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from cc_server import Server, multipart  # noqa: E402
from crash_campaign import Failure, verify_secondary  # noqa: E402

HDR = struct.Struct("<IBBHiiqqII")
(OPEN, WRITE, TRUNC, PUNCH, SYNC_BEGIN, SYNC_END, RENAME, UNLINK, MKDIR, RMDIR, LINK, CLOSE,
 MARK, MMAP, EXTEND, DUP) = range(1, 17)
O_CREAT, O_TRUNC, O_DIRECTORY, O_TMPFILE = 0o100, 0o1000, 0o200000, 0o20200000
PAGE = 4096
CASE_NS = "http://commcarehq.org/case/transaction/v2"
BOUNDARY = "pcutboundary7f3a"




# ---- the forms ----
def form_body(i):
    a, b = f"sh-{i % 5}", f"sh-{(i + 2) % 5}"
    blocks = [f'<case xmlns="{CASE_NS}" case_id="own-{i}" user_id="u1" date_modified="2024-01-01T00:00:00Z">'
              f'<create><case_type>t</case_type><case_name>o{i}</case_name><owner_id>u1</owner_id></create>'
              f'<update><n>{i}</n></update></case>']
    for s in (a, b):
        blocks.append(f'<case xmlns="{CASE_NS}" case_id="{s}" user_id="u1" date_modified="2024-01-01T00:00:00Z">'
                      f'<create><case_type>shared</case_type><case_name>{s}</case_name><owner_id>u1</owner_id>'
                      f'</create><update><p_{i}>1</p_{i}></update></case>')
    ledger = (f'<balance xmlns="http://commcarehq.org/ledger/v1" entity-id="own-{i}" section-id="stock" '
              f'date="2024-01-01"><entry id="p" quantity="{i}"/></balance>')
    xml = (f'<?xml version="1.0"?><data xmlns="http://example.org/pcut"><meta xmlns="http://openrosa.org/jr/xforms">'
           f'<instanceID>form-{i}</instanceID><userID>u1</userID></meta>{"".join(blocks)}{ledger}</data>').encode()
    att = bytes((i * 7 + k) % 251 for k in range(2048 + (i % 7) * 1024))
    body, headers = multipart(xml, [("photo.jpg", att)])
    # One boundary for every file: `commcare submit --content-type` names it once.
    old = headers["Content-Type"].split("boundary=")[1]
    return body.replace(old.encode(), BOUNDARY.encode()), (a, b)


# ---- recording ----
def record(cc, shim, work, runs, per_run, meta_ops):
    root = os.path.join(work, "root")
    os.makedirs(root)
    journal = os.path.join(work, "journal")
    env = dict(os.environ, LD_PRELOAD=shim, PCUT_JOURNAL=journal, PCUT_ROOT=root)
    data = os.path.join(root, "data")
    p = subprocess.run([cc, "init", "--data", data, "--shards", "16", "--databases", "2"],
                       env=env, capture_output=True, text=True)
    if p.returncode:
        raise Failure(f"init: {p.stdout} {p.stderr}")
    forms = os.path.join(work, "forms")
    os.makedirs(forms)
    pairs = {}
    for r in range(runs):
        files = []
        for i in range(r * per_run, (r + 1) * per_run):
            body, pairs[i] = form_body(i)
            path = os.path.join(forms, f"f{i}.bin")
            with open(path, "wb") as f:
                f.write(body)
            files.append(path)
        p = subprocess.run([cc, "submit", "--data", data, "--domain", "demo", "--content-type",
                            f"multipart/form-data; boundary={BOUNDARY}"] + files,
                           env=dict(env, PCUT_MARK_STDOUT="1"), capture_output=True, text=True)
        if p.returncode:
            raise Failure(f"submit: {p.stdout[-2000:]} {p.stderr[-2000:]}")
        for line in p.stdout.splitlines():
            if json.loads(line).get("status") != 201:
                raise Failure(f"submit answered {line}")
    for k in range(meta_ops):
        args = (["tasks", "enqueue", "--data", data, "--type", "forward.sweep"] if k % 2 == 0
                else ["admin", "domain", "create", "--data", data, f"pc{k}"])
        p = subprocess.run([cc] + args, env=dict(env, PCUT_MARK_STDOUT="1"), capture_output=True,
                           text=True)
        if p.returncode:
            raise Failure(f"{args[:2]}: {p.stdout} {p.stderr}")
    return journal, pairs


UCR = {"domain": "demo", "table_id": "pcut_cases", "referenced_doc_type": "CommCareCase",
       "configured_filter": {},
       "configured_indicators": [
           {"type": "raw", "column_id": "owner", "property_name": "owner_id"},
           {"type": "expression", "column_id": "n", "datatype": "integer",
            "expression": {"type": "property_name", "property_name": "n"}}]}
SERVE_ENV = {"COMMCARE_ADMIN_USER": "admin", "COMMCARE_ADMIN_PASSWORD": "adminpw",
             "COMMCARE_DOMAIN": "demo"}


BINDING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings",
                       "python")
UCR_LOADER = """
import sys, time
sys.path.insert(0, sys.argv[1])
import commcare
pillows = commcare.Engine(sys.argv[2], create=False).pillows()
with open(sys.argv[3]) as f:
    pillows.ucr_load(f.read())
print("loaded", flush=True)
time.sleep(600)
"""


def append_mark(jfd, obj):
    """An acknowledgement this process saw, as the shim records one (one write(2) on O_APPEND:
    after every record a server wrote before it answered)."""
    line = json.dumps(obj).encode() + b"\n"
    os.write(jfd, HDR.pack(0x43435043, MARK, 0, 0, os.getpid(), 1, 0, len(line), 0, len(line))
             + line)


def record_serve(cc, shim, work, nforms, clients):
    """`commcare serve` (pillows on) under the shim, nforms submitted over HTTP by `clients`
    threads; each 201 is appended to the journal as a mark record by this process, after every
    record the server wrote before answering (one write(2) to the O_APPEND journal)."""
    root = os.path.join(work, "root")
    os.makedirs(root)
    journal = os.path.join(work, "journal")
    env = dict(os.environ, LD_PRELOAD=shim, PCUT_JOURNAL=journal, PCUT_ROOT=root, **SERVE_ENV)
    data = os.path.join(root, "data")
    config = os.path.join(work, "ucr.json")
    with open(config, "w") as f:
        json.dump(UCR, f)
    p = subprocess.run([cc, "init", "--data", data, "--shards", "16", "--databases", "2"],
                       env=env, capture_output=True, text=True)
    if p.returncode:
        raise Failure(f"init: {p.stdout} {p.stderr}")
    jfd = os.open(journal, os.O_WRONLY | os.O_APPEND)
    # The data source is loaded by an embedding program that stays open (the Python binding),
    # as a long-lived host does: its acknowledgement must not wait for the process to end.
    lib = os.environ.get("COMMCARE_LIBRARY") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(cc))), "lib", "libcommcare_c.so")
    loader = subprocess.Popen([sys.executable, "-c", UCR_LOADER, BINDING, data, config],
                              env=dict(env, COMMCARE_LIBRARY=lib), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    line = loader.stdout.readline()
    if line.strip() != "loaded":
        loader.kill()
        raise Failure(f"the UCR loader: {line} {loader.communicate()[1][-1500:]}")
    append_mark(jfd, {"ucr_loaded": True})  # acknowledged: the data source must survive
    loader.kill()  # a crash: no close, no checkpoint
    loader.wait()
    srv = Server(cc, "--task-workers", "1", pillows=True, env=env, data=data)
    pairs, lock, errors, nxt = {}, threading.Lock(), [], iter(range(nforms))

    def client():
        while not errors:
            with lock:
                i = next(nxt, None)
            if i is None:
                return
            body, pair = form_body(i)
            with lock:
                pairs[i] = pair
            r = srv.submit(body, "demo", ("admin", "adminpw"), headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
            if r.status != 201:
                errors.append(f"form-{i} answered {r.status}: {r.body[:300]!r}")
                return
            append_mark(jfd, {"status": 201, "form": i})

    try:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise Failure(errors[0])
        # Let the pillows and the relay finish, so that the journal holds their catching up.
        deadline = time.time() + 30
        while time.time() < deadline:
            r = srv.request("GET", "/a/demo/api/v0.5/form/?limit=1", auth=("admin", "adminpw"))
            if r.status == 200 and r.json()["meta"]["total_count"] == nforms:
                break
            time.sleep(0.2)
    finally:
        srv.proc.kill()  # the end of the journal is a crash too
        srv.stop(cleanup=True)
        os.close(jfd)
    return journal, pairs


def read_journal(path):
    with open(path, "rb") as f:
        d = f.read()
    recs, i = [], 0
    while i < len(d):
        magic, op, flags, _, pid, fd, a, b, plen, dlen = HDR.unpack_from(d, i)
        if magic != 0x43435043:
            raise Failure(f"journal corrupt at byte {i}")
        i += HDR.size
        p = d[i:i + plen].decode()
        i += plen
        data = d[i:i + dlen]
        i += dlen
        recs.append((op, flags, pid, fd, a, b, p, data))
    return recs


# ---- the file-system model ----
class Inode:
    __slots__ = ("pages", "size", "pending")

    def __init__(self):
        self.pages, self.size, self.pending = {}, 0, []


def apply_op(pages, size, op):
    """Applies one data op to (pages, size); returns the new size."""
    kind = op[0]
    if kind == "w":
        _, off, data, n = op
        end = off + n
        pos = off
        while pos < end:
            pg, start = divmod(pos, PAGE)
            take = min(PAGE - start, end - pos)
            cur = pages.get(pg)
            if data is None:
                if cur is not None:
                    b = bytearray(cur)
                    b[start:start + take] = bytes(take)
                    pages[pg] = bytes(b) if any(b) else None
                    if pages[pg] is None:
                        del pages[pg]
            else:
                chunk = data[pos - off:pos - off + take]
                if cur is None and take == PAGE:
                    pages[pg] = chunk
                else:
                    b = bytearray(cur if cur is not None else bytes(PAGE))
                    b[start:start + take] = chunk
                    pages[pg] = bytes(b)
            pos += take
        return max(size, end)
    if kind == "t":
        n = op[1]
        for pg in [p for p in pages if p * PAGE >= n]:
            del pages[pg]
        pg, start = divmod(n, PAGE)
        if start and pg in pages:
            pages[pg] = pages[pg][:start] + bytes(PAGE - start)
        return n
    if kind == "p":  # hole punch, size kept
        _, off, n = op
        return apply_op(pages, size, ("w", off, None, n)) and size
    if kind == "e":
        _, off, n = op
        return max(size, off + n)
    raise ValueError(op)


class Model:
    """Replays journal records in order; Cut() gives the directory a power cut would leave."""

    def __init__(self, root):
        self.live = {root: "dir"}     # path -> Inode or "dir" (root: there before the journal)
        self.durable = {root: "dir"}  # path -> Inode or "dir"
        self.ns_pending = []  # (seq, kind, path, path2, obj)
        self.fds = {}         # (pid, fd) -> Inode or ("dir", path)
        self.begins = {}      # sync token -> seq of its begin
        self.seq = 0
        self.notes = set()

    def step(self, rec):
        op, flags, pid, fd, a, b, path, data = rec
        self.seq += 1
        seq = self.seq
        if op == OPEN:
            if a & O_TMPFILE == O_TMPFILE:
                raise Failure("O_TMPFILE is not modelled (the pack blob store does not use it)")
            obj = self.live.get(path)
            if obj is None and a & O_DIRECTORY:
                raise Failure(f"opened a directory the journal never created: {path}")
            if obj is None:
                if not (a & O_CREAT):
                    self.notes.add(f"opened a path the journal never created: {path}")
                obj = Inode()
                self.live[path] = obj
                self.ns_pending.append((seq, "create", path, None, obj))
            if obj == "dir":
                self.fds[(pid, fd)] = ("dir", path)
            else:
                self.fds[(pid, fd)] = obj
                if a & O_TRUNC:
                    obj.pending.append((seq, ("t", 0)))
        elif op in (WRITE, TRUNC, PUNCH, EXTEND):
            obj = self.fds.get((pid, fd))
            if not isinstance(obj, Inode):
                return
            if op == WRITE:
                obj.pending.append((seq, ("w", a, None if flags & 1 else data, b)))
            elif op == TRUNC:
                obj.pending.append((seq, ("t", a)))
            elif op == PUNCH:
                obj.pending.append((seq, ("p", a, b)))
            else:
                obj.pending.append((seq, ("e", a, b)))
        elif op == SYNC_BEGIN:
            if a != 2:
                self.begins[(pid, b)] = seq
        elif op == SYNC_END:
            began = self.begins.pop((pid, b))
            obj = self.fds.get((pid, fd))
            if isinstance(obj, Inode):
                keep = []
                for s, o in obj.pending:
                    if s < began:
                        obj.size = apply_op(obj.pages, obj.size, o)
                    else:
                        keep.append((s, o))
                obj.pending = keep
            elif obj is not None:
                d = obj[1]
                keep = []
                for e in self.ns_pending:
                    if e[0] < began and d in self.parents(e):
                        self.apply_ns(self.durable, e)
                    else:
                        keep.append(e)
                self.ns_pending = keep
        elif op == RENAME:
            to = data.decode()
            obj = self.live.pop(path, None)
            if obj == "dir":
                raise Failure(f"directory rename not modelled: {path}")
            self.live[to] = obj
            self.ns_pending.append((seq, "rename", path, to, obj))
        elif op in (UNLINK, RMDIR):
            self.live.pop(path, None)
            self.ns_pending.append((seq, "unlink", path, None, None))
        elif op == MKDIR:
            self.live[path] = "dir"
            self.ns_pending.append((seq, "mkdir", path, None, "dir"))
        elif op == LINK:
            if not path:
                raise Failure("linkat(AT_EMPTY_PATH) (O_TMPFILE) is not modelled")
            to = data.decode()
            self.live[to] = self.live.get(path)
            self.ns_pending.append((seq, "link", to, None, self.live[to]))
        elif op == CLOSE:
            self.fds.pop((pid, fd), None)
        elif op == DUP:
            if (pid, fd) in self.fds:
                self.fds[(pid, a)] = self.fds[(pid, fd)]
        elif op == MMAP:
            obj = self.fds.get((pid, fd))
            name = next((p for p, o in self.live.items() if o is obj), "?")
            if not name.endswith("-shm"):
                raise Failure(f"a writable shared mmap of {name}: writes through it are not seen")
            self.notes.add("SQLite's -shm files are mmap'd (not modelled; rebuilt on open)")

    @staticmethod
    def parents(e):
        _, kind, p, p2, _ = e
        out = {os.path.dirname(p)}
        if p2:
            out.add(os.path.dirname(p2))
        return out

    @staticmethod
    def apply_ns(ns, e):
        _, kind, p, p2, obj = e
        if kind in ("create", "mkdir", "link"):
            ns[p] = obj
        elif kind == "rename":
            ns.pop(p, None)
            ns[p2] = obj
        elif kind == "unlink":
            ns.pop(p, None)

    def cut(self, out, root, rng, mode):
        """Writes the directory a power cut now would leave under out (root mapped to out)."""
        ns = dict(self.durable)
        if mode == "random":
            k = rng.randint(0, len(self.ns_pending))
            for e in self.ns_pending[:k]:
                self.apply_ns(ns, e)
        os.makedirs(out)
        stats = {"files": 0, "pending_writes_dropped": 0}
        for path in sorted(ns, key=lambda p: (p.count("/"), p)):
            obj = ns[path]
            if not path.startswith(root + "/") or path.endswith("-shm"):
                continue
            dest = out + path[len(root):]
            if not os.path.isdir(os.path.dirname(dest)):
                continue  # its directory's own name is not durable: unreachable
            if obj == "dir":
                os.makedirs(dest, exist_ok=True)
                continue
            pages, size = dict(obj.pages), obj.size
            pend = obj.pending
            if mode == "random" and pend:
                chosen = [o for _, o in pend if rng.random() < 0.5]
                torn = rng.randrange(len(chosen)) if chosen and rng.random() < 0.5 else -1
                for j, o in enumerate(chosen):
                    if j == torn and o[0] == "w" and o[3] > 512:
                        n = rng.randrange(1, (o[3] + 511) // 512) * 512
                        o = ("w", o[1], None if o[2] is None else o[2][:n], n)
                    size = apply_op(pages, size, o)
                stats["pending_writes_dropped"] += len(pend) - len(chosen)
            else:
                stats["pending_writes_dropped"] += len(pend)
            with open(dest, "wb") as f:
                f.truncate(size)
                for pg in sorted(pages):
                    if pg * PAGE < size:
                        f.seek(pg * PAGE)
                        f.write(pages[pg][:size - pg * PAGE])
            stats["files"] += 1
        return stats


# ---- checking one cut ----
def cli(cc, *args):
    return subprocess.run([cc, *args], capture_output=True, text=True, timeout=120)


def verify_meta(data, tasks_acked, domains_acked):
    """The task queue's and the meta store's SQLite files: whole, and what was acknowledged."""
    for name in ("tasks.db", "meta.sqlite"):
        path = os.path.join(data, name)
        if not os.path.exists(path):
            if (tasks_acked if name == "tasks.db" else domains_acked):
                raise Failure(f"{name} is gone after the cut")
            continue
        db = sqlite3.connect(path)
        try:
            ok = db.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                raise Failure(f"{name} after the cut: integrity_check says {ok}")
            if name == "tasks.db":
                have = {r[0] for r in db.execute("SELECT id FROM tasks")} if tasks_acked else set()
                if tasks_acked - have:
                    raise Failure(f"tasks {sorted(tasks_acked - have)} were acknowledged "
                                  "(enqueued) before the cut and are missing")
            elif domains_acked:
                have = {r[0] for r in db.execute("SELECT name FROM domains")}
                if domains_acked - have:
                    raise Failure(f"domains {sorted(domains_acked - have)} were acknowledged "
                                  "(created) before the cut and are missing")
        except sqlite3.Error as e:
            raise Failure(f"{name} after the cut: {e}")
        finally:
            db.close()


def run_checked(cc):
    """commcare's stdout for args, as crash_campaign.verify_secondary wants; Failure if it
    fails."""
    def run(*args):
        p = cli(cc, *args)
        if p.returncode:
            raise Failure(f"{' '.join(args[:2])}: {p.stdout[-1500:]} {p.stderr[-1500:]}")
        return p.stdout
    return run


def verify(cc, data, acked, pairs, rng, secondary=False, ucr_acked=False):
    p = cli(cc, "check", "--data", data)
    try:
        rep = json.loads(p.stdout)
    except ValueError:
        rep = None
    if not acked and not ucr_acked and (rep is None or not os.path.exists(
            os.path.join(data, "commcare.json"))):
        return 0  # cut before the first acknowledgement, during init: need not open
    if p.returncode != 0 or not rep or not rep.get("ok") or rep.get("pending_intents"):
        raise Failure(f"check after the cut: rc={p.returncode} {p.stdout[-1500:]} {p.stderr[-1500:]}")
    out = cli(cc, "case", "list", "--data", data, "--domain", "demo")
    if out.returncode:
        raise Failure(f"case list: {out.stdout} {out.stderr}")
    cases = {}
    for line in out.stdout.splitlines():
        c = json.loads(line)
        cases[c["case_id"]] = c
    present = []
    for i, (a, b) in pairs.items():
        own = f"own-{i}" in cases
        in_a = a in cases and f"p_{i}" in cases[a]["properties"]
        in_b = b in cases and f"p_{i}" in cases[b]["properties"]
        if not own == in_a == in_b:
            raise Failure(f"form-{i} is half there: own={own} {a}={in_a} {b}={in_b}")
        if i in acked and not own:
            raise Failure(f"form-{i} was acknowledged before the cut and is missing")
        if own:
            present.append(i)
    # A sample of present forms: ledger and attachment too.
    for i in rng.sample(present, min(1, len(present))):
        led = json.loads(cli(cc, "ledger", "get", "--data", data, "--domain", "demo", f"own-{i}").stdout)
        if led != {"stock": {"p": i}}:
            raise Failure(f"form-{i}'s ledger after the cut: {led}")
        meta = cli(cc, "form", "get", "--data", data, "--domain", "demo", f"form-{i}")
        if meta.returncode or "photo.jpg" not in meta.stdout:
            raise Failure(f"form-{i}'s attachment after the cut: {meta.stdout} {meta.stderr}")
    if secondary:  # the UCR table once its data source's load was acknowledged
        verify_secondary(run_checked(cc), data, cases, "pcut_cases",
                         len(cases) if ucr_acked else None)
    return len(present)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("commcare")
    ap.add_argument("shim")
    ap.add_argument("--cuts", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3, help="commcare submit processes in turn")
    ap.add_argument("--forms-per-run", type=int, default=25)
    ap.add_argument("--meta-ops", type=int, default=6,
                    help="tasks enqueued and domains created after the forms, in turn")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CRASH_TEST_SEED",
                                                                   random.randrange(1 << 30))))
    ap.add_argument("--serve", action="store_true",
                    help="record `commcare serve` with its pillows under HTTP load instead")
    ap.add_argument("--clients", type=int, default=4, help="--serve: HTTP clients at once")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.serve:
        args.meta_ops = 0
    print(f"seed {args.seed}", flush=True)
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="cc-powercut-")
    t0 = time.time()
    failures = []
    try:
        if args.serve:
            journal, pairs = record_serve(args.commcare, os.path.abspath(args.shim), work,
                                          args.runs * args.forms_per_run, args.clients)
        else:
            journal, pairs = record(args.commcare, os.path.abspath(args.shim), work, args.runs,
                                    args.forms_per_run, args.meta_ops)
        recs = read_journal(journal)
        root = os.path.join(work, "root")
        # Acknowledgements: form i is acknowledged at the mark record that ends its line.
        acks_at, task_acks, domain_acks, buf, ucr_at = {}, {}, {}, b"", None
        for idx, r in enumerate(recs):
            if r[0] == MARK:
                buf += r[7]
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    j = json.loads(line)
                    if j.get("status") == 201:
                        n = j["form"] if "form" in j else int(os.path.basename(j["file"])[1:-4])
                        acks_at[n] = idx
                    elif "ucr_loaded" in j:
                        ucr_at = idx
                    elif "id" in j:
                        task_acks[j["id"]] = idx
                    elif "domain" in j:
                        domain_acks[j["domain"]] = idx
        if len(task_acks) + len(domain_acks) != args.meta_ops:
            raise Failure(f"{len(task_acks)} task and {len(domain_acks)} domain acknowledgements "
                          f"in the journal for {args.meta_ops} operations")
        if len(acks_at) != len(pairs):
            raise Failure(f"{len(acks_at)} acknowledgements in the journal for {len(pairs)} forms")
        # Cut points: half uniform over the journal, half just before or after a flush's end or
        # an acknowledgement (where durability changes hands).
        edges = [i for i, r in enumerate(recs) if r[0] in (SYNC_END, MARK)]
        cuts = set()
        while len(cuts) < min(args.cuts, len(recs)):
            if rng.random() < 0.5:
                cuts.add(rng.randrange(1, len(recs) + 1))
            else:
                e = rng.choice(edges)
                cuts.add(min(len(recs), max(1, e + rng.choice((0, 1)))))
        # And just after each task's and domain's acknowledgement: what was answered must be
        # durable by then (a strict cut keeps nothing else).
        ack_cuts = {min(len(recs), at + 1) for at in (*task_acks.values(), *domain_acks.values(),
                                                      *([ucr_at] if ucr_at is not None else []))}
        cuts.update(ack_cuts)
        cuts = sorted(cuts)
        model = Model(root)
        pos = 0
        checked = present_total = 0
        for n, cut in enumerate(cuts):
            while pos < cut:
                model.step(recs[pos])
                pos += 1
            acked = {i for i, at in acks_at.items() if at < cut}
            mode = "strict" if n % 2 == 0 or cut in ack_cuts else "random"
            out = os.path.join(work, f"cut-{cut}")
            model.cut(out, root, rng, mode)
            try:
                present_total += verify(args.commcare, os.path.join(out, "data"), acked, pairs,
                                        rng, secondary=args.serve,
                                        ucr_acked=ucr_at is not None and ucr_at < cut)
                if acked:  # the directory opened: the task queue and meta store too
                    verify_meta(os.path.join(out, "data"),
                                {t for t, at in task_acks.items() if at < cut},
                                {d for d, at in domain_acks.items() if at < cut})
            except Failure as e:
                failures.append(f"cut {cut}/{len(recs)} ({mode}, {len(acked)} acked): {e}")
                if args.keep:
                    print(f"kept {out}")
                    continue
            shutil.rmtree(out, ignore_errors=True)
            checked += 1
        syncs = sum(1 for r in recs if r[0] == SYNC_END)
        print(json.dumps({"journal_records": len(recs), "flushes": syncs, "forms": len(pairs),
                          "cut_points": len(cuts), "failed_cuts": len(failures),
                          "seconds": round(time.time() - t0, 1), "notes": sorted(model.notes)}),
              flush=True)
    except Failure as e:
        failures.append(str(e))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for f in failures[:20]:
        print("FAILED", f)
    print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
