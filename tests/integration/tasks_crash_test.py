"""Task queue crash test: 1,000 tasks, worker processes killed with SIGKILL at random while they
run them. Every task must end succeeded (done at least once), and the idempotent effect of each
(adding its amount to a total, guarded by the task id in the same transaction) must be applied
exactly once: the total equals the sum of the amounts even though some tasks ran twice.

Usage: tasks_crash_test.py COMMCARE_BINARY   (workers: this file with "worker DATA EFFECTS")
"""
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

TASKS = 1000
WORKERS = 3


def worker(data, effects):
    import commcare
    engine = commcare.Engine(data, read_only=True, create=False)
    import threading
    local = threading.local()  # a connection per worker thread
    runs = open(effects + ".runs", "a")
    w = engine.workers(workers=2, queues=["crash"], poll_ms=50, prefetch=1)

    @w.handler("crash.add", lease_ms=1000, backoff_base_ms=10)
    def add(task):
        runs.write(f"{task.id}\n")
        runs.flush()
        time.sleep(random.uniform(0, 0.03))
        if not hasattr(local, "db"):
            local.db = sqlite3.connect(effects, timeout=30, isolation_level=None)
        db = local.db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute("INSERT OR IGNORE INTO applied(task_id) VALUES(?)", (task.id,))
            if cur.rowcount == 1:
                db.execute("UPDATE total SET sum = sum + ?", (task.payload["amount"],))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return {"applied": True}

    w.start()
    signal.sigwait({signal.SIGTERM})
    w.stop()


def main(binary):
    root = tempfile.mkdtemp(prefix="cc-tasks-crash-")
    data, effects = os.path.join(root, "data"), os.path.join(root, "effects.db")
    try:
        subprocess.run([binary, "init", "--data", data], check=True, stdout=subprocess.DEVNULL)
        db = sqlite3.connect(effects, isolation_level=None)
        db.executescript("CREATE TABLE applied(task_id INTEGER PRIMARY KEY);"
                         "CREATE TABLE total(sum INTEGER); INSERT INTO total VALUES(0);")
        import commcare
        amounts = [random.randint(1, 1000) for _ in range(TASKS)]
        with commcare.Engine(data, read_only=True, create=False) as e:
            ids = [e.enqueue("crash.add", {"amount": a}, queue="crash", max_attempts=50)
                   for a in amounts]
        env = dict(os.environ)
        procs = []

        def spawn():
            procs.append(subprocess.Popen([sys.executable, __file__, "worker", data, effects],
                                          env=env))

        for _ in range(WORKERS):
            spawn()
        kills, deadline = 0, time.time() + 240
        with commcare.Engine(data, read_only=True, create=False) as e:
            while time.time() < deadline:
                time.sleep(random.uniform(0.2, 0.6))
                stats = {s["queue"]: s for s in e.task_stats()}.get("crash", {})
                if stats.get("succeeded", 0) == TASKS:
                    break
                if stats.get("dead", 0):
                    raise AssertionError(f"tasks dead-lettered: {stats}")
                victim = random.choice([p for p in procs if p.poll() is None])
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                kills += 1
                procs.remove(victim)
                spawn()
            final = {t["id"]: t for t in e.tasks(queue="crash", limit=TASKS)}
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        not_done = [i for i in ids if final[i]["state"] != "succeeded"]
        assert not not_done, f"{len(not_done)} tasks not done, e.g. {final[not_done[0]]}"
        total = db.execute("SELECT sum FROM total").fetchone()[0]
        applied = db.execute("SELECT COUNT(*) FROM applied").fetchone()[0]
        runs = open(effects + ".runs").read().split()
        again = len(runs) - len(set(runs))
        print(json.dumps({"tasks": TASKS, "kills": kills, "runs": len(runs),
                          "ran_more_than_once": again, "applied": applied,
                          "total": total, "expected_total": sum(amounts)}))
        assert kills >= 5, f"only {kills} kills: the test did not exercise crashes"
        assert applied == TASKS, f"{applied} effects applied for {TASKS} tasks"
        assert total == sum(amounts), f"total {total} != {sum(amounts)}: an effect doubled"
        assert set(map(int, runs)) == set(ids), "a task never ran"
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        worker(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1])
