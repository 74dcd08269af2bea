"""Streams a data directory's change log into a CSV file (one row per change).

    python3 examples/python/changes_to_csv.py DATA_DIR OUT.csv [--topic case-sql]
"""
import argparse
import csv

import commcare

COLUMNS = ["topic", "partition", "offset", "document_id", "document_type", "document_subtype",
           "domain", "is_deletion", "publish_timestamp"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_dir")
    ap.add_argument("out")
    ap.add_argument("--topic", action="append")
    args = ap.parse_args()
    n = 0
    with commcare.Engine(args.data_dir, create=False) as engine, \
            open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for record in engine.changes(topics=args.topic):
            change = record["change"]
            w.writerow({k: record.get(k, change.get(k)) for k in COLUMNS})
            n += 1
    print(f"{n} changes written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
