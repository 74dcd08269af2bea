"""Submits every .xml file of a folder to a data directory and prints a summary.

    python3 examples/python/submit_folder.py DATA_DIR FOLDER [--domain demo]
"""
import argparse
import collections
import pathlib

import commcare


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_dir")
    ap.add_argument("folder")
    ap.add_argument("--domain", default="demo")
    args = ap.parse_args()
    outcomes = collections.Counter()
    with commcare.Engine(args.data_dir) as engine:
        for path in sorted(pathlib.Path(args.folder).glob("*.xml")):
            r = engine.submit(path.read_bytes(), args.domain, check=False)
            outcomes[r.state or r.nature] += 1
            print(f"{path.name}: {r.status} {r.state or r.nature} {r.message[:60]}")
    print(dict(outcomes))
    return 0 if outcomes else 1


if __name__ == "__main__":
    raise SystemExit(main())
