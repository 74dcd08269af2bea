"""A Python pillow: keeps a summary table (open cases per case type and owner) in SQLite,
up to date from the change log.

    python3 examples/python/summary_pillow.py DATA_DIR SUMMARY.sqlite
"""
import argparse
import sqlite3

import commcare


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_dir")
    ap.add_argument("summary")
    args = ap.parse_args()
    db = sqlite3.connect(args.summary)
    db.execute("CREATE TABLE IF NOT EXISTS cases (case_id TEXT PRIMARY KEY, domain TEXT, "
               "case_type TEXT, owner_id TEXT, closed INTEGER)")
    with commcare.Engine(args.data_dir, create=False) as engine:
        with engine.pillows(builtin=False) as pillows:
            @pillows.processor("summary", ["case-sql"])
            def on_case(record):
                change = record["change"]
                try:  # notice, then re-read: the change names the case, the engine has it
                    case = engine.case(change["domain"], change["document_id"])
                except commcare.NotFoundError:
                    db.execute("DELETE FROM cases WHERE case_id = ?", (change["document_id"],))
                    return
                db.execute("INSERT OR REPLACE INTO cases VALUES (?, ?, ?, ?, ?)",
                           (case["case_id"], case["domain"], case["case_type"],
                            case["owner_id"], int(case["closed"])))

            processed = pillows.run_until_caught_up()
            db.commit()
    print(f"processed {processed} changes")
    for row in db.execute("SELECT domain, case_type, owner_id, COUNT(*) FROM cases "
                          "WHERE closed = 0 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"):
        print("\t".join(map(str, row)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
