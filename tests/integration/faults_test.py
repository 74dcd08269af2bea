#!/usr/bin/env python3
"""Faults with a documented outcome (issue 24 item 2, docs/reliability.md): clients that stall
(sending headers, sending a body, reading an answer) and SIGTERM while a restore or an export
runs.

Usage: faults_test.py COMMCARE"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import cc_server  # noqa: E402
from cc_server import ADMIN, Server, basic, case_block, form_xml  # noqa: E402

CC = sys.argv.pop(1) if len(sys.argv) > 1 else "commcare"


def read_until_closed(sock, limit_s):
    """Reads what the server sends until it closes the connection: (bytes, seconds taken), or
    (bytes, None) when it was still open after limit_s."""
    out, began = b"", time.monotonic()
    while time.monotonic() - began < limit_s:
        sock.settimeout(max(0.05, limit_s - (time.monotonic() - began)))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        except ConnectionResetError:
            return out, time.monotonic() - began
        if not chunk:
            return out, time.monotonic() - began
        out += chunk
    return out, None


def poll(request, pending, secs=60):
    """request() again every 0.1 s while it answers the status pending; its last answer."""
    deadline = time.monotonic() + secs
    while True:
        r = request()
        if r.status != pending or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


class StalledClientTest(unittest.TestCase):
    """A client that stops half way holds its connection only until the server's timeout, and
    nobody else waits for it."""

    @classmethod
    def setUpClass(cls):
        cls.s = Server(CC, "--header-timeout-ms", "1000", "--body-timeout-ms", "1500", pillows=True)

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def others_are_served(self):
        began = time.monotonic()
        for _ in range(20):
            self.assertEqual(self.s.request("GET", "/health", auth=None, timeout=2).status, 200)
        self.assertLess(time.monotonic() - began, 2.0, "a stalled client slowed the others")

    def form_count(self):
        r = self.s.request("GET", "/a/doma/api/v0.5/form/?limit=1")
        self.assertEqual(r.status, 200, r)
        return r.json()["meta"]["total_count"]

    def test_headers_that_stop(self):
        sock = socket.create_connection(("127.0.0.1", self.s.port), timeout=5)
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line: never ends
            self.others_are_served()
            _, took = read_until_closed(sock, 5)
            self.assertIsNotNone(took, "the stalled connection was still open after 5 s")
        finally:
            sock.close()

    def test_body_that_stops(self):
        before = self.form_count()
        xml = form_xml()
        sock = socket.create_connection(("127.0.0.1", self.s.port), timeout=5)
        try:
            sock.sendall((f"POST /a/doma/receiver/ HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: {basic(*ADMIN)}\r\nContent-Type: text/xml\r\n"
                          f"Content-Length: {len(xml) + 1000}\r\n\r\n").encode() + xml[:100])
            self.others_are_served()
            answer, took = read_until_closed(sock, 6)
            self.assertIsNotNone(took, "the stalled upload was still open after 6 s")
            self.assertTrue(answer.startswith(b"HTTP/1.1 408"), answer[:200])
            self.assertIn(b"did not arrive in time", answer)
        finally:
            sock.close()
        time.sleep(1.5)  # the read copy's pillow would have caught up with a stored form
        self.assertEqual(self.form_count(), before, "a half-sent form was stored")

    def test_reader_that_stops(self):
        # A 24 MiB attachment asked for by a client that never reads its answer: the server's
        # writes stall once the socket buffers fill; it drops the client at its timeout.
        body, headers = cc_server.multipart(form_xml(), [("big.bin", os.urandom(24 << 20))])
        r = self.s.request("POST", "/a/doma/receiver/", body=body, headers=headers, timeout=60)
        self.assertEqual(r.status, 201, r)
        fid = r.header("X-CommCareHQ-FormID")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", self.s.port))
        try:
            sock.sendall((f"GET /a/doma/api/form/attachment/{fid}/big.bin HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: {basic(*ADMIN)}\r\n\r\n").encode())
            time.sleep(0.5)
            self.others_are_served()
            time.sleep(3)  # past the 1.5 s timeout with nothing read
            got, took = read_until_closed(sock, 10)
            self.assertIsNotNone(took, "the connection of a reader that stopped stayed open")
            self.assertLess(len(got), 24 << 20, "the whole answer fit in the buffers: no stall")
        finally:
            sock.close()
        self.others_are_served()


class SigtermTest(unittest.TestCase):
    """SIGTERM to `commcare serve` while an asynchronous restore or an export runs past the
    shutdown grace: the server stops in time, and the task is handed back and finished after
    the restart."""

    def stop_within_grace(self, s):
        """SIGTERM while a task runs: exit 0 within the 10 s grace, the task handed back."""
        began = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        code = s.proc.wait(timeout=30)
        self.assertEqual(code, 0, s.stderr())
        self.assertLess(time.monotonic() - began, 15, "the server outlived its 10 s shutdown grace")
        self.assertIn("a task was interrupted by shutdown", s.stderr())

    def test_sigterm_during_async_restore(self):
        env = dict(cc_server.ENV, COMMCARE_TEST_RESTORE_DELAY_MS="120000")
        s = Server(CC, env=env)
        data = s.data
        try:
            subprocess.run([CC, "admin", "domain", "create", "--data", data, "--async-restore",
                            "slow"], check=True, capture_output=True)
            user = s.make_user("slow", "w.slow", "pw-slow")
            block = (f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="slow-1" '
                     f'date_modified="2020-01-01T00:00:00Z" user_id="{user["user_id"]}"><create>'
                     f'<case_type>patient</case_type><case_name>S</case_name>'
                     f'<owner_id>{user["user_id"]}</owner_id></create></case>')
            self.assertEqual(s.submit(form_xml(block), "slow", ("w.slow", "pw-slow")).status, 201)
            path = "/a/slow/phone/restore/?version=2.0&device_id=d1"
            v2 = {"X-OpenRosa-Version": "2.0"}
            r = s.request("GET", path, auth=("w.slow", "pw-slow"), headers=v2, timeout=30)
            self.assertEqual(r.status, 202, r)  # the restore task runs (held 120 s)
            self.stop_within_grace(s)
        finally:
            s.stop(cleanup=False)
        s2 = Server(CC, data=data)  # without the delay now
        try:
            r = poll(lambda: s2.request("GET", path, auth=("w.slow", "pw-slow"), headers=v2,
                                        timeout=30), 202)
            self.assertEqual(r.status, 200, r)
            self.assertIn(b'case_id="slow-1"', r.body)
            tasks = s2.request("GET", "/a/slow/api/tasks/?type=restore.async").json()["objects"]
            self.assertEqual([(t["state"], t["attempts"]) for t in tasks], [("succeeded", 1)],
                             json.dumps(tasks))
        finally:
            s2.stop()
            s.stop()

    def test_sigterm_during_export(self):
        """An export still running at shutdown is handed back whole and leaves no half file;
        after the restart it runs again, once, and its file is complete."""
        env = dict(cc_server.ENV, COMMCARE_TEST_EXPORT_DELAY_MS="120000")
        s = Server(CC, env=env)
        data, tasks = s.data, "/a/doma/api/tasks/?type=export.run"
        try:
            user = s.make_user("doma", "w.exp", "pw-exp")
            for i in range(3):
                block = case_block(f"exp-{i}", user["user_id"], user["user_id"], "s", f"N{i}")
                self.assertEqual(s.submit(form_xml(block), "doma", ("w.exp", "pw-exp")).status, 201)
            r = s.request("POST", "/a/doma/api/exports/",
                          json.dumps({"kind": "case", "columns": ["case_id", "name"]}))
            self.assertEqual(r.status, 202, r)
            tid = r.json()["id"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # running, held by the test delay
                states = [t["state"] for t in s.request("GET", tasks).json()["objects"]]
                if states == ["running"]:
                    break
                time.sleep(0.1)
            self.assertEqual(states, ["running"])
            self.stop_within_grace(s)
            left = os.listdir(os.path.join(data, "exports"))
            self.assertFalse([f for f in left if f.startswith(f"{tid}.")], left)
        finally:
            s.stop(cleanup=False)
        s2 = Server(CC, data=data)  # without the delay now
        try:
            r = poll(lambda: s2.request("GET", f"/a/doma/api/exports/{tid}/download"), 409)
            self.assertEqual(r.status, 200, r)
            rows = r.body.decode().split("\r\n")
            self.assertEqual(rows[0], "case_id,name")
            self.assertEqual(sorted(rows[1:-1]), [f"exp-{i},N{i}" for i in range(3)])
            got = s2.request("GET", tasks).json()["objects"]
            self.assertEqual([(t["state"], t["attempts"]) for t in got], [("succeeded", 1)],
                             json.dumps(got))
        finally:
            s2.stop()
            s.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
