#!/usr/bin/env python3
"""Issue 24, item 2: the embedded store on a full disk. `commcare serve` runs on a small tmpfs
(mounting one needs root, which CI has); forms with attachments are submitted until the disk
fills. Checked: the submitter is told (a 5xx naming the lack of space, never a 201 for a form
that was not kept), every acknowledged form is readable, the server answers health checks
throughout, takes forms again once space is freed, and after a restart `commcare check` finds
no problem and every acknowledged form is still there.
Usage: disk_full_test.py COMMCARE"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import cc_server
from cc_server import ADMIN, multipart

CC = sys.argv[1]
del sys.argv[1:2]


def mount_tmpfs(size):
    d = tempfile.mkdtemp(prefix="cc-diskfull-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", d], check=True)
    return d


class DiskFullTest(unittest.TestCase):
    def test_too_small_a_disk_is_named_at_start(self):
        # The embedded store preallocates its 64 MiB commit log: on 32 MiB it cannot start, and
        # says the disk is full (a short write once left errno stale: "No such file").
        root = mount_tmpfs("32m")
        try:
            p = subprocess.run([CC, "serve", "--data", os.path.join(root, "data"), "--listen",
                                "127.0.0.1:0", "--no-pillows"], capture_output=True, text=True,
                               timeout=60, env=cc_server.ENV)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("No space left on device", p.stdout + p.stderr)
        finally:
            subprocess.run(["umount", root], check=False)
            shutil.rmtree(root, ignore_errors=True)

    def test_full_disk_refuses_forms_loses_none_and_recovers(self):
        root = mount_tmpfs("128m")
        data = os.path.join(root, "data")
        s = None
        try:
            s = cc_server.Server(CC, data=data)
            # Leave the store a little room: a filler takes most of what is free.
            st = os.statvfs(root)
            filler = os.path.join(root, "filler")
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - (6 << 20)))
            acked, refused = [], None
            photo = os.urandom(256 << 10)
            for i in range(200):
                body, h = multipart(cc_server.form_xml(), [("photo.jpg", photo)])
                r = s.request("POST", "/a/doma/receiver/", body=body, headers=h)
                if r.status == 201:
                    acked.append(r.header("x-commcarehq-formid"))
                    continue
                refused = r
                break
            self.assertIsNotNone(refused, "the disk never filled")
            self.assertGreater(len(acked), 0)
            # A submit_error naming the full disk, answered as a backend that is down is.
            self.assertEqual(refused.status, 503, refused)  # wait and retry: nothing was stored
            self.assertEqual(refused.header("Retry-After"), "30", refused)
            self.assertIn(b'nature="submit_error"', refused.body)
            self.assertIn(b"No space left on device", refused.body)
            self.assertEqual(s.request("GET", "/health", auth=None).status, 200)
            for fid in acked:
                self.assertEqual(s.request("GET", f"/a/doma/api/form/attachment/{fid}/form.xml").status, 200, fid)
            os.unlink(filler)  # space again: forms are taken without a restart
            ok = None
            for _ in range(20):
                ok = s.submit(cc_server.form_xml(), "doma", ADMIN)
                if ok.status == 201:
                    break
            self.assertEqual(ok.status, 201, ok)
            acked.append(ok.header("x-commcarehq-formid"))
            s.stop(cleanup=False)
            check = subprocess.run([CC, "check", "--data", data], capture_output=True, text=True,
                                   timeout=120)
            self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
            s = cc_server.Server(CC, data=data)
            for fid in acked:
                self.assertEqual(s.request("GET", f"/a/doma/api/form/attachment/{fid}/form.xml").status, 200, fid)
            print(json.dumps({"acknowledged": len(acked), "refused_status": refused.status,
                              "refused_body": refused.body.decode(errors="replace")[:200]}))
        finally:
            if s:
                s.stop(cleanup=False)
            subprocess.run(["umount", root], check=False)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
