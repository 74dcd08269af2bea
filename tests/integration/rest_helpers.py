"""What the REST tests of saved definitions share (rules, reports, alerts): the `commcare`
tool as JSON lines, a `commcare serve` on a fresh data directory with an admin and a user
without a role, requests with Basic auth, and waiting for a task to finish."""
import base64
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time


def cc(cmd, *args, expect=0):
    """Runs `cmd args` and returns its stdout's JSON lines; fails unless it exits `expect`."""
    p = subprocess.run([cmd] + list(args), capture_output=True, text=True)
    if p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode} (wanted {expect}): {p.stdout}{p.stderr}")
    return [json.loads(x) for x in p.stdout.splitlines() if x.strip()]


class Server:
    """`commcare serve` on 127.0.0.1 (admin/s3cret, domain demo, user w.demo/pw-demo without a
    role); env adds to the server's environment, args to its command line."""

    def __init__(self, cmd, prefix, env=None, args=()):
        self.cmd = cmd
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.data = os.path.join(self.tmp, "data")
        full_env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                        COMMCARE_DOMAIN="demo", **(env or {}))
        self.proc = subprocess.Popen(
            [cmd, "serve", "--data", self.data, "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        cc(cmd, "admin", "user", "create", "--data", self.data, "--domain", "demo", "--username",
           "w.demo", "--password", "pw-demo")

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def request(self, method, path, body=None, auth=("admin", "s3cret"), headers=None):
        """(status, the JSON body, or the raw bytes of any other type)."""
        h = dict(headers or {})
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode(
                f"{auth[0]}:{auth[1]}".encode()).decode()
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        is_json = r.getheader("Content-Type", "").startswith("application/json")
        return r.status, json.loads(data) if is_json else data

    def wait_task(self, task_id, domain="demo"):
        """The task once it is finished (succeeded, dead or cancelled)."""
        t = None
        for _ in range(400):
            s, t = self.request("GET", f"/a/{domain}/api/tasks/{task_id}/")
            if s != 200:
                raise AssertionError(f"task {task_id}: {s} {t}")
            if t["state"] in ("succeeded", "dead", "cancelled"):
                return t
            time.sleep(0.05)
        raise AssertionError(f"task {task_id} never finished: {t}")
