#!/usr/bin/env python3
"""The restore route as CommCare HQ answers it (issue 22; research/hq-fidelity.md §2), over a
real server: each test cites the HQ or commcare-core file it follows.
Usage: restore_fidelity_test.py COMMCARE"""
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import re
import tempfile
import time
import unittest
import urllib.parse
import xml.etree.ElementTree as ET

CC = sys.argv[1]
del sys.argv[1:2]

NS = {"or": "http://openrosa.org/http/response", "sync": "http://commcarehq.org/sync",
      "c": "http://commcarehq.org/case/transaction/v2"}


def cc(*args):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{args}: exit {p.returncode}: {p.stdout} {p.stderr}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


class RestoreFidelityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cc-restore-")
        cls.data = os.path.join(cls.tmp, "data")
        # The test-only knob of docs/sync.md: every asynchronous restore is held 12 s once it
        # knows its case count, longer than HQ's 10 s first wait.
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo", COMMCARE_TEST_RESTORE_DELAY_MS="12000")
        cls.proc = subprocess.Popen([CC, "serve", "--data", cls.data, "--listen", "127.0.0.1:0"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
        line = cls.proc.stdout.readline()
        assert line, cls.proc.stderr.read()
        cls.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        for user, pw in [("w.empty", "pw-empty"), ("w.photo", "pw-photo")]:
            cc("admin", "user", "create", "--data", cls.data, "--domain", "demo", "--username",
               user, "--password", pw)
        cc("admin", "domain", "create", "--data", cls.data, "other")
        cc("admin", "user", "create", "--data", cls.data, "--domain", "other", "--username",
           "w.other", "--password", "pw-other")
        cc("admin", "domain", "create", "--data", cls.data, "--restore-attachments", "media")
        cc("admin", "user", "create", "--data", cls.data, "--domain", "media", "--username",
           "w.media", "--password", "pw-media")
        cc("admin", "domain", "create", "--data", cls.data, "--async-restore", "slow")
        cc("admin", "user", "create", "--data", cls.data, "--domain", "slow", "--username",
           "w.slow", "--password", "pw-slow")

    @classmethod
    def tearDownClass(cls):
        if cls.proc.poll() is None:
            cls.proc.kill()
            cls.proc.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def request(self, method, path, body=None, headers=None, auth=("admin", "s3cret")):
        h = dict(headers or {})
        if auth:
            h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def restore(self, query, auth, domain="demo"):
        s, _, body = self.request("GET", f"/a/{domain}/phone/restore/?{query}", auth=auth)
        return s, body

    def test_empty_footprint_state_and_unknown_parameters(self):
        # R4: commcare-core's CaseDBUtils.computeCaseDbHash returns "" with no case
        # (CaseDBUtils.java:13-32) and HQ's Checksum([]).hexdigest() is '' (phone/checksum.py),
        # so a phone without cases syncs with state=ccsh:.
        auth = ("w.empty", "pw-empty")
        s, body = self.restore("version=2.0", auth)
        self.assertEqual(s, 200, body)
        token = ET.fromstring(body).find("sync:Sync/sync:restore_id", NS).text
        s, body = self.restore(f"version=2.0&since={token}&state=ccsh:", auth)
        self.assertEqual(s, 200, body)
        token = ET.fromstring(body).find("sync:Sync/sync:restore_id", NS).text
        s, body = self.restore(f"since={token}&state=ccsh:00000000000000000000000000000001", auth)
        self.assertEqual(s, 412, body)
        # R5: HQ's get_restore_params (corehq/apps/ota/views.py) reads the parameters it knows
        # and ignores any other.
        s, body = self.restore("version=2.0&case_sync=livequery&foo=bar&_=1712345678", auth)
        self.assertEqual(s, 200, body)
        self.assertIn(b"ota_restore_success", body)

    def registration(self, auth):
        s, body = self.restore("version=2.0", auth)
        self.assertEqual(s, 200, body)
        reg = ET.fromstring(body).find("{http://openrosa.org/user/registration}Registration")
        self.assertIsNotNone(reg, body)
        ns = "{http://openrosa.org/user/registration}"
        data = {d.get("key"): d.text or "" for d in reg.find(ns + "user_data")}
        return reg.find(ns + "date").text, data

    def test_registration_carries_the_users_names_phone_and_date_joined(self):
        # R7: HQ's get_user_session_data (corehq/apps/users/models.py) puts the user's
        # first_name, last_name and phone_number (default_phone_number: phone_numbers[0]) in the
        # Registration's user_data as commcare_first_name, _last_name and _phone_number, and
        # get_registration_element_data (casexml/apps/phone/xml.py) writes
        # date_to_xml_string(restore_user.date_joined) as its <date>.
        s, _, out = self.request("POST", "/a/demo/api/users/", body=json.dumps({
            "username": "w.named", "password": "pw-named", "first_name": "Asha",
            "last_name": "Mwangi", "phone_numbers": ["+254700000001", "+254700000002"]}))
        self.assertEqual(s, 201, out)
        user = json.loads(out)
        self.assertEqual((user["first_name"], user["last_name"], user["phone_numbers"]),
                         ("Asha", "Mwangi", ["+254700000001", "+254700000002"]))
        date, data = self.registration(("w.named", "pw-named"))
        self.assertEqual(date, user["date_joined"][:10])
        self.assertEqual((data["commcare_first_name"], data["commcare_last_name"],
                          data["commcare_phone_number"], data["commcare_project"],
                          data["commcare_user_type"]),
                         ("Asha", "Mwangi", "+254700000001", "demo", "commcare"))
        # date_joined is the server's: a write cannot set it, and an update keeps it.
        s, _, out = self.request("PUT", "/a/demo/api/users/w.named", body=json.dumps(
            {"_rev": user["_rev"], "date_joined": "2001-01-01T00:00:00Z"}))
        self.assertEqual(s, 400, out)
        self.assertIn(b"date_joined", out)
        s, _, out = self.request("PUT", "/a/demo/api/users/w.named", body=json.dumps(
            {"_rev": user["_rev"], "first_name": "Neema", "phone_numbers": []}))
        self.assertEqual(s, 200, out)
        self.assertEqual(json.loads(out)["date_joined"], user["date_joined"])
        _, data = self.registration(("w.named", "pw-named"))
        self.assertEqual((data["commcare_first_name"], data["commcare_phone_number"]), ("Neema", ""))
        # The CLI sets them too; running it again without them keeps them.
        for _ in range(2):
            cc("admin", "user", "create", "--data", self.data, "--domain", "demo", "--username",
               "w.cli", "--password", "pw-cli", *([] if _ else ["--first-name", "Juma",
               "--last-name", "Otieno", "--phone", "+255600000001", "--phone", "+255600000002"]))
            _, data = self.registration(("w.cli", "pw-cli"))
            self.assertEqual((data["commcare_first_name"], data["commcare_last_name"],
                              data["commcare_phone_number"]), ("Juma", "Otieno", "+255600000001"))

    def submit_photo(self, domain, auth, case_id):
        me = json.loads(self.request("GET", f"/a/{domain}/api/users/{auth[0]}")[2])
        xml = (f'<?xml version="1.0"?><data xmlns="http://example.org/photo">'
               f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>photo-{case_id}</instanceID>'
               f'<userID>{me["user_id"]}</userID></meta>'
               f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{case_id}" '
               f'date_modified="2020-01-01T00:00:00Z" user_id="{me["user_id"]}"><create>'
               f'<case_type>patient</case_type><case_name>P</case_name>'
               f'<owner_id>{me["user_id"]}</owner_id></create>'
               f'<attachment><photo src="photo.jpg" from="local"/></attachment></case></data>').encode()
        boundary = "----ccb"
        body = b"".join([
            (f'--{boundary}\r\nContent-Disposition: form-data; name="xml_submission_file"; '
             f'filename="form.xml"\r\nContent-Type: text/xml\r\n\r\n').encode() + xml + b"\r\n",
            (f'--{boundary}\r\nContent-Disposition: form-data; name="photo.jpg"; '
             f'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode() + b"\xff\xd8jpeg\r\n",
            f"--{boundary}--\r\n".encode()])
        s, _, out = self.request("POST", f"/a/{domain}/receiver/", body=body, auth=auth,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        self.assertEqual(s, 201, out)
        s, payload = self.restore("version=2.0", auth, domain)
        self.assertEqual(s, 200, payload)
        return payload

    def test_case_attachments_are_sent_only_where_the_domain_asks(self):
        # HQ sends case attachments only with its MM_CASE_PROPERTIES toggle
        # (casexml/apps/case/xml/generator.py add_attachments); commcare-core's bulk case parser
        # throws on any (BulkProcessingCaseXmlParser.java:286) and fails the whole restore.
        payload = self.submit_photo("demo", ("w.photo", "pw-photo"), "pc-0")
        case = ET.fromstring(payload).find("c:case[@case_id='pc-0']", NS)
        self.assertIsNotNone(case, payload)
        self.assertIsNone(case.find("c:attachment", NS), payload)

    def test_case_attachments_are_remote_and_served_to_the_phone(self):
        # R13: HQ's V2CaseXMLGenerator.add_attachments (casexml/apps/case/xml/generator.py)
        # writes src=case.get_attachment_server_url(name) (the api_case_attachment route) and
        # from="remote"; the phone downloads it with its own credentials. The domain has the
        # toggle (case_attachments_in_restore).
        auth = ("w.media", "pw-media")
        payload = self.submit_photo("media", auth, "pc-1")
        photo = ET.fromstring(payload).find("c:case[@case_id='pc-1']/c:attachment/c:photo", NS)
        self.assertIsNotNone(photo, payload)
        self.assertEqual(photo.get("from"), "remote")
        url = urllib.parse.urlsplit(photo.get("src"))
        self.assertEqual((url.scheme, url.netloc), ("http", f"127.0.0.1:{self.port}"))
        self.assertEqual(url.path, "/a/media/api/case/attachment/pc-1/photo")
        # The phone fetches it with its own credentials; HQ's newer route answers too.
        s, h, data = self.request("GET", url.path, auth=auth)
        self.assertEqual((s, data, h["content-type"]), (200, b"\xff\xd8jpeg", "image/jpeg"))
        s, _, data = self.request("GET", "/a/media/api/case_attachment/v1/pc-1/photo", auth=auth)
        self.assertEqual((s, data), (200, b"\xff\xd8jpeg"))
        self.assertEqual(self.request("GET", "/a/media/api/case/attachment/pc-1/nope", auth=auth)[0],
                         404)
        self.assertEqual(self.request("GET", url.path, auth=None)[0], 401)
        self.assertEqual(self.request("GET", url.path, auth=("w.other", "pw-other"))[0], 403)

    def test_restore_error_paths(self):
        # R14: HQ's get_restore_response (corehq/apps/ota/views.py): user_id that is not the
        # authenticated user's gives 412 "Attempt to sync with invalid user."; an `as` user that
        # does not exist, or one the caller may not restore as, a plain-text 401.
        s, body = self.restore("version=2.0&user_id=0123", ("w.empty", "pw-empty"))
        self.assertEqual(s, 412, body)
        msg = ET.fromstring(body).find("or:message", NS)
        self.assertEqual((msg.get("nature"), msg.text),
                         ("ota_restore_error", "Attempt to sync with invalid user."))
        s, h, body = self.request("GET", "/a/demo/phone/restore/?as=nobody")
        self.assertEqual((s, h["content-type"].split(";")[0], body),
                         (401, "text/plain", b"Invalid restore as user nobody"))
        s, h, body = self.request("GET", "/a/demo/phone/restore/?as=w.photo",
                                  auth=("w.empty", "pw-empty"))
        self.assertEqual((s, h["content-type"].split(";")[0]), (401, "text/plain"), body)
        self.assertIn(b"w.empty", body)

    def test_async_restore(self):
        # R15 / audit §5.6: HQ's RestoreConfig._get_asynchronous_payload and
        # AsyncRestoreResponse (casexml/apps/phone/restore.py), enabled per domain (the
        # ASYNC_RESTORE toggle) for OpenRosa >= 2.0 (corehq/apps/ota/views.py).
        auth = ("w.slow", "pw-slow")
        me = json.loads(self.request("GET", "/a/slow/api/users/w.slow")[2])
        xml = (f'<?xml version="1.0"?><data xmlns="http://example.org/slow">'
               f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>slow-form</instanceID>'
               f'<userID>{me["user_id"]}</userID></meta>'
               f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="slow-1" '
               f'date_modified="2020-01-01T00:00:00Z" user_id="{me["user_id"]}"><create>'
               f'<case_type>patient</case_type><case_name>S</case_name>'
               f'<owner_id>{me["user_id"]}</owner_id></create></case></data>').encode()
        s, _, out = self.request("POST", "/a/slow/receiver/", body=xml, auth=auth,
                                 headers={"Content-Type": "text/xml"})
        self.assertEqual(s, 201, out)
        path = "/a/slow/phone/restore/?version=2.0&device_id=dev-1"
        v2 = {"X-OpenRosa-Version": "2.0"}
        # An OpenRosa 1.0 client is answered synchronously, as HQ does.
        s, _, sync_body = self.request("GET", path, auth=auth, headers={"X-OpenRosa-Version": "1.0"})
        self.assertEqual(s, 200, sync_body)
        began = time.monotonic()
        s, h, body = self.request("GET", path, auth=auth, headers=v2)
        waited = time.monotonic() - began
        self.assertEqual((s, h.get("retry-after")), (202, "5"), body)
        self.assertGreaterEqual(waited, 9.5)  # INITIAL_ASYNC_TIMEOUT_THRESHOLD
        root = ET.fromstring(body)
        msg = root.find("or:message", NS)
        self.assertEqual((msg.get("nature"), msg.text),
                         ("ota_restore_pending", "Asynchronous restore under way for w.slow"))
        progress = root.find("sync:Sync/sync:progress", NS)
        self.assertEqual(dict(progress.attrib), {"done": "0", "total": "1", "retry-after": "5"})
        deadline = time.monotonic() + 30
        while True:  # polls wait 1 s each (_get_task_timeout)
            s, h, body = self.request("GET", path, auth=auth, headers=v2)
            if s != 202 or time.monotonic() > deadline:
                break
        self.assertEqual(s, 200, body)
        # Byte for byte a synchronous restore's payload, but for its own restore_id.
        strip = lambda b: re.sub(rb"<restore_id>[0-9a-f]+</restore_id>", b"<restore_id/>", b)
        self.assertEqual(strip(body), strip(sync_body))
        self.assertIn(b'case_id="slow-1"', body)
        # The payload is served once: the next request starts a new restore.
        s, _, body = self.request("GET", path, auth=auth, headers=v2)
        self.assertEqual(s, 202, body)


if __name__ == "__main__":
    unittest.main()
