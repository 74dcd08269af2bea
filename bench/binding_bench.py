"""Python binding figures (issue: C ABI and Python bindings).

    python3 bench/binding_bench.py [--forms 5000] [--rounds 3] [--build build] [--not-durable]

1. Submissions, one thread, durable: the C++ engine (binding_bench submit) against Python
   through the binding (Engine.submit), the same ~3 KB forms into fresh data directories,
   alternating, best of --rounds each; the figure is Python / C++. --not-durable turns the
   per-commit fsync off on both sides, which leaves the binding's own cost more visible.
2. Change processors over the same change log: a C processor (cc_pillows_add) against a
   Python one (Pillows.add), changes/s and the overhead per change.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def read_forms(path):
    forms = []
    with open(path, "rb") as f:
        while True:
            head = f.read(8)
            if not head:
                return forms
            (n,) = struct.unpack("<Q", head)
            forms.append(f.read(n))


def median(xs):
    return sorted(xs)[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--forms", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--not-durable", action="store_true")
    args = ap.parse_args()
    if args.not_durable:
        os.environ["BENCH_NOT_DURABLE"] = "1"
    os.environ.setdefault("COMMCARE_LIBRARY",
                          os.path.join(args.build, "lib", "libcommcare_c.so"))
    sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
    import commcare

    tool = os.path.join(args.build, "bin", "binding_bench")
    work = tempfile.mkdtemp(prefix="cc-binding-bench-")
    try:
        forms_file = os.path.join(work, "forms.bin")
        subprocess.run([tool, "forms", forms_file, str(args.forms)], check=True)
        forms = read_forms(forms_file)
        cpp, py = [], []
        for r in range(args.rounds):
            cpp_dir, py_dir = os.path.join(work, "cpp"), os.path.join(work, "py")
            out = subprocess.run([tool, "submit", forms_file, cpp_dir], check=True,
                                 capture_output=True, text=True).stdout
            cpp.append(json.loads(out)["forms_per_s"])
            shutil.rmtree(py_dir, ignore_errors=True)
            with commcare.Engine(py_dir, durable=not args.not_durable) as e:
                t0 = time.perf_counter()
                for f in forms:
                    e.submit(f, "bench")
                py.append(len(forms) / (time.perf_counter() - t0))
            print(f"round {r + 1}: C++ {cpp[-1]:,.0f} forms/s, Python {py[-1]:,.0f} forms/s",
                  flush=True)
        mode = "not durable" if args.not_durable else "durable"
        print(f"submissions (best of {args.rounds}, {len(forms)} forms, one thread, {mode}): "
              f"C++ {max(cpp):,.0f}/s, Python {max(py):,.0f}/s = "
              f"{100 * max(py) / max(cpp):.0f}% (medians: {100 * median(py) / median(cpp):.0f}%)")

        # Processors: both over the Python run's data directory (same changes).
        c_rates, py_rates, n_changes = [], [], 0
        for r in range(args.rounds):
            out = subprocess.run([tool, "process", py_dir], check=True, capture_output=True,
                                 text=True).stdout
            c = json.loads(out)
            c_rates.append(c["changes_per_s"])
            pdir = os.path.join(py_dir, "bench-pillows-py")
            shutil.rmtree(pdir, ignore_errors=True)
            seen = [0]
            with commcare.Engine(py_dir) as e, e.pillows(builtin=False, dir=pdir) as p:
                def count(change):
                    seen[0] += 1
                p.add("count", ["case-sql", "form-sql"], count)
                t0 = time.perf_counter()
                p.run_until_caught_up()
                py_rates.append(seen[0] / (time.perf_counter() - t0))
            n_changes = seen[0]
            if seen[0] != c["changes"]:
                raise SystemExit(f"the processors saw {c['changes']} and {seen[0]} changes")
        c_best, py_best = max(c_rates), max(py_rates)
        print(f"processors ({n_changes} changes, best of {args.rounds}): C {c_best:,.0f}/s, "
              f"Python {py_best:,.0f}/s; Python's overhead per change "
              f"{1e6 / py_best - 1e6 / c_best:.1f} us")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
