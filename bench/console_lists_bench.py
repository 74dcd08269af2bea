#!/usr/bin/env python3
"""How fast the console's lists answer over 100,000 rows (issue 23: "fast on 100k-row lists").

Fills a data directory with N forms (each creating a case, through `commcare submit`), starts
`commcare serve` with its pillows, waits for the case-search index to catch up, then times the
API requests the console's pages make: the submissions list at its first and last page (limit
25, offset paging), the case list's first page and ten cursor pages on, a text search, and a
case's history. Prints one JSON line per request kind with the median and max of 5 runs.

Usage: bench/console_lists_bench.py build/bin/commcare [--forms 100000]"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from cc_server import Server  # noqa: E402

DOMAIN = "doma"  # the domain cc_server's environment creates


def form(i, bobby):
    return (f'<?xml version="1.0"?><data xmlns="http://example/bench"><meta xmlns="http://openrosa.org/jr/xforms">'
            f'<instanceID>f{i:08d}</instanceID><userID>u{i % 50}</userID></meta>'
            f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="c{i:08d}" '
            f'date_modified="2026-01-01T00:00:00Z" user_id="u{i % 50}"><create><case_type>patient</case_type>'
            f'<case_name>{"Bobby" if i == bobby else f"p{i}"}</case_name><owner_id>o{i % 50}</owner_id></create>'
            f'<update><village>v{i % 300}</village></update></case></data>')


def fill(cc, data, n, tmp):
    bobby = n // 2
    batch = 5000
    for start in range(0, n, batch):
        files = []
        for i in range(start, min(n, start + batch)):
            path = os.path.join(tmp, f"{i}.xml")
            with open(path, "w") as f:
                f.write(form(i, bobby))
            files.append(path)
        subprocess.run([cc, "submit", "--data", data, "--domain", DOMAIN] + files,
                       check=True, stdout=subprocess.DEVNULL)
        for p in files:
            os.unlink(p)


def timed(s, path, runs=5):
    times, body = [], None
    for _ in range(runs):
        t = time.perf_counter()
        r = s.request("GET", path, timeout=120)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status == 200, (path, r.status, r.body[:300])
        body = r.json()
    return statistics.median(times), max(times), body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cc")
    ap.add_argument("--forms", type=int, default=100_000)
    ap.add_argument("--reuse", help="a data directory an earlier run filled with --forms forms")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cc-lists-")
    data = a.reuse or os.path.join(tmp, "data")
    if not a.reuse:
        Server(a.cc, data=data).stop(cleanup=False)  # creates the domain and the admin
        t = time.time()
        fill(a.cc, data, a.forms, tmp)
        print(json.dumps({"filled_forms": a.forms, "seconds": round(time.time() - t, 1),
                          "data": data}), flush=True)
    s = Server(a.cc, pillows=True, data=data)
    try:
        t = time.time()
        while True:
            r = s.request("GET", "/health/ready")
            if r.status == 200:
                break
            time.sleep(1)
        print(json.dumps({"pillows_caught_up_s": round(time.time() - t, 1)}), flush=True)
        base = f"/a/{DOMAIN}/api"
        out = {}
        out["forms first page"] = timed(s, f"{base}/v0.5/form/?limit=25&offset=0")
        out["forms last page"] = timed(s, f"{base}/v0.5/form/?limit=25&offset={a.forms - 25}")
        out["cases first page"] = timed(s, f"{base}/case/v2/?limit=25")
        path = f"{base}/case/v2/?limit=25"
        for _ in range(10):  # ten pages on by cursor, as Next does
            body = timed(s, path, runs=1)[2]
            path = body["next"] if body["next"].startswith("/") else \
                f"{base}/case/v2/?" + urllib.parse.urlparse(body["next"]).query
        out["cases 11th page (cursor)"] = timed(s, path)
        out["cases text search"] = timed(s, f"{base}/case/v2/?q=Bobby&limit=25")
        out["cases by owner"] = timed(s, f"{base}/case/v2/?owner_id=o7&limit=25")
        out["case history"] = timed(s, f"{base}/console/case/c{a.forms // 2:08d}/history")
        for k, (med, mx, body) in out.items():
            rows = len(body.get("objects", body.get("cases", body.get("transactions", []))))
            print(json.dumps({"request": k, "median_ms": round(med, 1), "max_ms": round(mx, 1),
                              "rows": rows}), flush=True)
        assert out["cases text search"][2]["matching_records"] == 1
    finally:
        s.stop()


if __name__ == "__main__":
    main()
