#!/usr/bin/env python3
"""The reference server over loopback: health, the OpenRosa receiver (pre-flight, raw and
multipart bodies, Basic and ApiKey auth, 401/403/404, OpenRosa 3.0), the Case API v2 (get, list,
filters, paging, errors), domain isolation, HTTP-level limits (oversized, malformed, smuggled,
slow) and a graceful stop. Usage: server_test.py COMMCARE SAMPLES_DIR"""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

CC, SAMPLES = sys.argv[1], sys.argv[2]
del sys.argv[1:3]


def cc(*args, expect=0):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode}: {p.stdout} {p.stderr}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def sample(name):
    with open(os.path.join(SAMPLES, name), "rb") as f:
        return f.read()


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cc-server-")
        cls.data = os.path.join(cls.tmp, "data")
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo")
        cls.log = os.path.join(cls.tmp, "access.log")
        cls.proc = subprocess.Popen(
            [CC, "serve", "--data", cls.data, "--listen", "127.0.0.1:0", "--access-log", cls.log,
             "--max-body-bytes", "1000000", "--header-timeout-ms", "800", "--body-timeout-ms", "800"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = cls.proc.stdout.readline()
        assert line, cls.proc.stderr.read()
        cls.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        # A second domain with its own mobile worker; a worker of demo without API access.
        cc("admin", "domain", "create", "--data", cls.data, "other")
        cc("admin", "user", "create", "--data", cls.data, "--domain", "other", "--username",
           "w.other", "--password", "pw-other")
        cc("admin", "user", "create", "--data", cls.data, "--domain", "demo", "--username",
           "w.demo", "--password", "pw-demo")
        cls.key = cc("admin", "apikey", "create", "--data", cls.data, "--username", "admin")[0]["key"]

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
        headers = {}
        for k, v in r.getheaders():  # repeated headers (challenges) joined as HTTP allows
            headers[k.lower()] = headers[k.lower()] + ", " + v if k.lower() in headers else v
        return r.status, headers, data

    def submit(self, xml, domain="demo", **kw):
        h = {"Content-Type": "text/xml"}
        h.update(kw.pop("headers", {}))
        return self.request("POST", f"/a/{domain}/receiver/", body=xml, headers=h, **kw)

    def wait_indexed(self, case_id, domain="demo"):
        for _ in range(200):
            s, _, body = self.request("GET", f"/a/{domain}/api/case/v2/?limit=5000")
            if s == 200 and case_id in {c["case_id"] for c in json.loads(body)["cases"]}:
                return
            time.sleep(0.05)
        self.fail(f"{case_id} never reached the case search index")

    def test_health_and_unknown_routes(self):
        s, _, body = self.request("GET", "/health", auth=None)
        self.assertEqual((s, json.loads(body)), (200, {"status": "ok"}))
        self.assertEqual(self.request("GET", "/nope", auth=None)[0], 404)
        self.assertEqual(self.request("GET", "/a/demo/nothing-here", auth=None)[0], 404)

    def test_receiver_preflight_auth_and_responses(self):
        s, h, _ = self.request("HEAD", "/a/demo/receiver/", auth=None)
        self.assertEqual(s, 204)
        self.assertIn("x-openrosa-accept-content-length", h)
        self.assertEqual(self.request("HEAD", "/a/nodomain/receiver/", auth=None)[0], 404)
        xml = sample("case-v2__basic_create.xml")
        s, h, body = self.submit(xml, auth=None)
        self.assertEqual(s, 401)
        self.assertIn("Basic", h["www-authenticate"])
        self.assertIn('Digest realm="commcare", qop="auth", algorithm=SHA-256', h["www-authenticate"])
        self.assertEqual(self.submit(xml, auth=("admin", "wrong"))[0], 401)
        self.assertEqual(self.submit(xml, auth=("nobody", "x"))[0], 401)
        s, h, body = self.submit(xml)
        self.assertEqual(s, 201, body)
        self.assertEqual(h["content-type"], "text/xml; charset=utf-8")
        self.assertIn(b'nature="submit_success"', body)
        self.assertTrue(h["x-commcarehq-formid"])
        self.assertEqual(h["x-openrosa-version"], "1.0")
        # The ApiKey scheme, and every receiver URL form.
        for path in ["api/", "secure/", "secure/app1/", "submission", "app1/"]:
            s, _, body = self.request("POST", f"/a/demo/receiver/{path}", body=sample("case-v2__basic_update.xml"),
                                      headers={"Authorization": f"ApiKey admin:{self.key}",
                                               "Content-Type": "text/xml"}, auth=None)
            self.assertEqual(s, 201, (path, body))
        s, _, _ = self.request("POST", "/a/demo/receiver/", body=xml,
                               headers={"Authorization": "ApiKey admin:wrongkey"}, auth=None)
        self.assertEqual(s, 401)
        # OpenRosa 3.0: a known processing error is 422.
        s, _, body = self.submit(sample("case-bugs__empty_id.xml"), headers={"X-OpenRosa-Version": "3.0"})
        self.assertEqual(s, 422, body)
        self.assertIn(b"processing_failure", body)
        # Bad XML: 500 submit_error, as CommCare does.
        s, _, body = self.submit(b"<not-xml")
        self.assertEqual(s, 500)
        self.assertEqual(self.submit(b"")[0], 400)

    def test_multipart_submission_with_attachment(self):
        boundary = "----ccboundary"
        xml = sample("receiverwrapper__simple_form.xml")
        parts = [
            (f'--{boundary}\r\nContent-Disposition: form-data; name="xml_submission_file"; '
             f'filename="form.xml"\r\nContent-Type: text/xml\r\n\r\n').encode() + xml + b"\r\n",
            (f'--{boundary}\r\nContent-Disposition: form-data; name="photo.jpg"; '
             f'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode() + b"\xff\xd8jpeg\r\n",
            f"--{boundary}--\r\n".encode()]
        s, h, body = self.request("POST", "/a/demo/receiver/", body=b"".join(parts),
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        self.assertEqual(s, 201, body)
        fid = h["x-commcarehq-formid"]
        self.assertTrue(fid)
        s, h, data = self.request("GET", f"/a/demo/api/form/attachment/{fid}/photo.jpg")
        self.assertEqual((s, data, h["content-type"]), (200, b"\xff\xd8jpeg", "image/jpeg"))
        s, _, data = self.request("GET", f"/a/demo/api/form/attachment/{fid}/form.xml")
        self.assertEqual((s, data), (200, xml))
        self.assertEqual(self.request("GET", f"/a/demo/api/form/attachment/{fid}/nope.png")[0], 404)
        self.assertEqual(self.request("GET", f"/a/other/api/form/attachment/{fid}/photo.jpg",
                                      auth=("w.other", "pw-other"))[0], 403)
        # Not a multipart body after all: no xml_submission_file part.
        bad = f"--{boundary}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--{boundary}--\r\n"
        s, _, body = self.request("POST", "/a/demo/receiver/", body=bad.encode(),
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        self.assertEqual(s, 400, body)

    def test_curl_as_a_phone_head_then_multipart_post_with_digest(self):
        form = os.path.join(self.tmp, "phone-form.xml")
        with open(form, "wb") as f:
            f.write(sample("case-v2__basic_create.xml").replace(b"foo-case-id", b"phone-case"))
        url = f"http://127.0.0.1:{self.port}/a/demo/receiver/"
        head = subprocess.run(["curl", "-sS", "-I", "-H", "X-OpenRosa-Version: 1.0", url],
                              capture_output=True, text=True)
        self.assertIn("204", head.stdout.splitlines()[0])
        self.assertIn("X-OpenRosa-Accept-Content-Length", head.stdout)
        post = subprocess.run(
            ["curl", "-sS", "--digest", "-u", "w.demo:pw-demo", "-H", "X-OpenRosa-Version: 1.0",
             "-F", f"xml_submission_file=@{form};type=text/xml", "-w", "\n%{http_code}", url],
            capture_output=True, text=True)
        body, code = post.stdout.rsplit("\n", 1)
        self.assertEqual(code, "201", post.stdout + post.stderr)
        self.assertIn('nature="submit_success"', body)
        bad = subprocess.run(["curl", "-sS", "--digest", "-u", "w.demo:wrong", "-F",
                              f"xml_submission_file=@{form};type=text/xml", "-o", "/dev/null",
                              "-w", "%{http_code}", url], capture_output=True, text=True)
        self.assertEqual(bad.stdout, "401")
        # A nonce this server never issued.
        s, _, body = self.request("POST", "/a/demo/receiver/", body=b"<x/>", auth=None, headers={
            "Authorization": 'Digest username="w.demo", realm="commcare", nonce="1.abc", '
                             'uri="/a/demo/receiver/", response="00", qop=auth, nc=1, cnonce="x"'})
        self.assertEqual(s, 401)
        self.assertIn("not issued", json.loads(body)["error"])

    def test_domain_isolation_and_permissions(self):
        xml = sample("case-v2__basic_create.xml")
        # A worker of "other" can neither submit to demo nor read it.
        self.assertEqual(self.submit(xml, auth=("w.other", "pw-other"))[0], 403)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.other", "pw-other"))[0], 403)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/foo-case-id",
                                      auth=("w.other", "pw-other"))[0], 403)
        # A worker of demo submits, but has no API access.
        s, _, body = self.submit(sample("case-v2__basic_update.xml"), auth=("w.demo", "pw-demo"))
        self.assertEqual(s, 201, body)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.demo", "pw-demo"))[0], 403)
        # The other domain's own data stays there.
        s, _, body = self.submit(sample("case-v2__basic_create.xml").replace(b"foo-case-id", b"other-case"),
                                 domain="other", auth=("w.other", "pw-other"))
        self.assertEqual(s, 201, body)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/other-case")[0], 404)

    def test_case_api(self):
        self.submit(sample("case-v2__basic_create.xml"))
        for i in range(12):
            xml = (f'<?xml version="1.0"?><data xmlns="http://example.org/api"><meta xmlns="http://openrosa.org/jr/xforms">'
                   f'<instanceID>api-form-{i}</instanceID><userID>u1</userID></meta>'
                   f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="api-case-{i}" '
                   f'date_modified="2020-01-0{1 + i % 9}T00:00:00Z" user_id="u1"><create><case_type>patient</case_type>'
                   f'<case_name>P {i}</case_name><owner_id>o{i % 2}</owner_id></create>'
                   f'<update><age>{20 + i}</age><village>v{i % 3}</village></update></case></data>')
            self.assertEqual(self.submit(xml.encode())[0], 201)
        self.wait_indexed("api-case-11")
        s, _, body = self.request("GET", "/a/demo/api/case/v2/api-case-3")
        self.assertEqual(s, 200)
        self.assertEqual(json.loads(body)["properties"]["age"], "23")
        s, _, body = self.request("GET", "/a/demo/api/case/v2/api-case-1,api-case-2,missing")
        self.assertEqual([c["case_id"] for c in json.loads(body)["cases"]],
                         ["api-case-1", "api-case-2", "missing"])  # HQ's get_bulk: a stub
        self.assertEqual(json.loads(body)["missing_records"], 1)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/missing")[0], 404)
        q = urllib.parse.urlencode({"case_type": "patient", "owner_id": "o1", "properties.village": "v1"})
        s, _, body = self.request("GET", f"/a/demo/api/case/v2/?{q}")
        self.assertEqual(s, 200, body)
        got = {c["case_id"] for c in json.loads(body)["cases"]}
        self.assertEqual(got, {f"api-case-{i}" for i in range(12) if i % 2 == 1 and i % 3 == 1})
        s, _, body = self.request("GET", "/a/demo/api/case/v2/?case_type=patient&properties.age.gte=30")
        self.assertEqual({c["case_id"] for c in json.loads(body)["cases"]}, {"api-case-10", "api-case-11"})
        # Paging with next links covers each case once.
        seen, path, pages = [], "/a/demo/api/case/v2/?case_type=patient&limit=5", 0
        while path:
            s, _, body = self.request("GET", path)
            self.assertEqual(s, 200, body)
            page = json.loads(body)
            seen += [c["case_id"] for c in page["cases"]]
            path, pages = page.get("next"), pages + 1  # absolute, absent on the last page
            if path:
                path = path[path.index("/a/"):]
        self.assertEqual(sorted(seen), sorted(f"api-case-{i}" for i in range(12)))
        self.assertEqual(pages, 3)
        for bad in ["?frobnicate=1", "?limit=0", "?cursor=garbage"]:
            s, _, body = self.request("GET", "/a/demo/api/case/v2/" + bad)
            self.assertEqual(s, 400, (bad, body))
            self.assertIn("error", json.loads(body))

    def test_form_api(self):
        ids = []
        for i in range(5):
            xml = (f'<?xml version="1.0"?><data xmlns="http://example.org/formapi{i % 2}">'
                   f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>fa-{i}</instanceID>'
                   f'<userID>u1</userID></meta><q>{i}</q></data>')
            s, h, _ = self.submit(xml.encode())
            self.assertEqual(s, 201)
            ids.append(h["x-commcarehq-formid"])
        for _ in range(200):
            s, _, body = self.request("GET", "/a/demo/api/v0.5/form/?xmlns=http://example.org/formapi1")
            if s == 200 and json.loads(body)["meta"]["total_count"] == 2:
                break
            time.sleep(0.05)
        page = json.loads(body)
        self.assertEqual({o["id"] for o in page["objects"]}, {"fa-1", "fa-3"})
        s, _, body = self.request("GET", "/a/demo/api/v0.5/form/?limit=1&xmlns=http://example.org/formapi0")
        page = json.loads(body)
        self.assertEqual(len(page["objects"]), 1)
        self.assertTrue(page["meta"]["next"])
        s, _, body = self.request("GET", page["meta"]["next"])
        self.assertEqual(len(json.loads(body)["objects"]), 1)
        s, _, body = self.request("GET", "/a/demo/api/v0.5/form/fa-2/")
        self.assertEqual((s, json.loads(body)["id"]), (200, "fa-2"))
        s, h, body = self.request("GET", "/a/demo/api/v0.5/form/fa-2/xml")
        self.assertEqual(s, 200)
        self.assertIn(b"<q>2</q>", body)
        self.assertEqual(self.request("GET", "/a/demo/api/v0.5/form/missing/")[0], 404)
        self.assertEqual(self.request("GET", "/a/demo/api/v0.5/form/?bogus=1")[0], 400)
        self.assertEqual(self.request("GET", "/a/demo/api/v0.5/form/?received_on_start=never")[0], 400)
        self.assertEqual(self.request("GET", "/a/demo/api/v0.5/form/", auth=("w.other", "pw-other"))[0], 403)

    def test_ucr_api_and_full_text(self):
        config = os.path.join(self.tmp, "ucr-api.json")
        with open(config, "w") as f:
            json.dump({"domain": "demo", "table_id": "names", "referenced_doc_type": "CommCareCase",
                       "configured_indicators": [{"type": "raw", "column_id": "name",
                                                  "property_name": "name"}]}, f)
        cc("ucr", "load", "--data", self.data, config)
        xml = sample("case-v2__basic_create.xml").replace(b"foo-case-id", b"ucr-api-case").replace(
            b"test case name", b"Zanzibar Quokka")
        self.assertEqual(self.submit(xml)[0], 201)
        for _ in range(200):
            s, _, body = self.request("GET", "/a/demo/api/ucr/names/?limit=5000")
            if s == 200 and "Zanzibar Quokka" in {r["name"] for r in json.loads(body)["rows"]}:
                break
            time.sleep(0.05)
        self.assertIn("Zanzibar Quokka", {r["name"] for r in json.loads(body)["rows"]})
        s, _, body = self.request("GET", "/a/demo/api/ucr/names/?limit=1")
        self.assertTrue(json.loads(body)["next"])
        self.assertEqual(self.request("GET", "/a/demo/api/ucr/nope/")[0], 404)
        self.assertEqual(self.request("GET", "/a/demo/api/ucr/names/?limit=0")[0], 400)
        self.assertEqual(self.request("GET", "/a/other/api/ucr/names/", auth=("w.demo", "pw-demo"))[0], 403)
        s, _, body = self.request("GET", "/a/demo/api/case/v2/?q=quokka")
        self.assertEqual([c["case_id"] for c in json.loads(body)["cases"]], ["ucr-api-case"])

    def test_case_api_writes(self):
        post = lambda body, path="/a/demo/api/case/v2/", method="POST", **kw: self.request(
            method, path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, **kw)
        s, _, body = post({"case_type": "household", "case_name": "Silva", "owner_id": "o9",
                           "properties": {"village": "Bela Vista", "size": "4"}})
        self.assertEqual(s, 200, body)
        created = json.loads(body)
        cid = created["case"]["case_id"]
        self.assertTrue(created["xform_id"])
        self.assertEqual(created["case"]["properties"]["village"], "Bela Vista")
        s, _, body = post({"properties": {"size": "5"}, "close": True}, path=f"/a/demo/api/case/v2/{cid}",
                          method="PUT")
        self.assertEqual(s, 200, body)
        self.assertEqual(json.loads(body)["case"]["properties"]["size"], "5")
        self.assertTrue(json.loads(body)["case"]["closed"])
        # The generated form is CommCare's case_api form.
        s, _, body = self.request("GET", f"/a/demo/api/v0.5/form/{json.loads(body)['xform_id']}/xml")
        self.assertIn(b'xmlns="http://commcarehq.org/case_api"', body)
        # Bulk: a child indexed to a parent created in the same request, by temporary_id.
        s, _, body = post([
            {"create": True, "temporary_id": "mum", "case_type": "mother", "case_name": "Ana"},
            {"create": True, "case_type": "child", "case_name": "Bia",
             "indices": {"parent": {"temporary_id": "mum", "case_type": "mother"}}},
            {"create": False, "case_id": cid, "properties": {"size": "6"}}])
        self.assertEqual(s, 200, body)
        cases = json.loads(body)["cases"]
        self.assertEqual(len(cases), 3)
        self.assertEqual(cases[1]["indices"]["parent"]["case_id"], cases[0]["case_id"])
        s, _, body = post({"case_ids": [cases[0]["case_id"], cases[1]["case_id"], "nope"]},
                          path="/a/demo/api/case/v2/bulk-fetch/")
        self.assertEqual((s, len(json.loads(body)["cases"])), (200, 3))
        self.assertEqual(json.loads(body)["missing_records"], 1)
        # Bad bodies name the field; nothing is written.
        for bad, where in [({"case_name": "x"}, "case_type"),
                           ({"case_type": "t", "case_name": "x", "properties": {"1bad": "v"}}, "properties.1bad"),
                           ({"case_type": "t", "case_name": "x", "properties": {"n": 5}}, "properties.n"),
                           ({"case_type": "t", "case_name": "x", "colour": "red"}, "colour"),
                           ([{"case_type": "t", "case_name": "x"}], "[0].create"),
                           ([{"create": True, "case_type": "t", "case_name": "x",
                              "indices": {"p": {"temporary_id": "ghost", "case_type": "t"}}}], "[0].indices.p.temporary_id"),
                           ([{"create": True, "case_type": "t", "case_name": "x"}] * 101, "at most 100")]:
            s, _, body = post(bad)
            self.assertEqual(s, 400, (bad, body))
            self.assertIn(where, json.loads(body)["error"])
        s, _, body = self.request("POST", "/a/demo/api/case/v2/", body=b"{not json")
        self.assertEqual(s, 400)
        self.assertEqual(post({"properties": {}}, path="/a/demo/api/case/v2/missing", method="PUT")[0], 404)
        self.assertEqual(post({"case_type": "t", "case_name": "x"}, auth=("w.other", "pw-other"))[0], 403)

    def test_changes_long_poll(self):
        def page(token, extra=""):
            s, _, body = self.request("GET", f"/a/demo/api/changes/?limit=1000&since={token}{extra}")
            self.assertEqual(s, 200, body)
            return json.loads(body)

        # Catch up to now (empty for 1.5 s: what earlier tests wrote may still be in the relay).
        token, empty = "", 0
        while empty < 5:
            p = page(token)
            token = p["next_since"]
            empty = empty + 1 if not p["changes"] else 0
            time.sleep(0.3 if not p["changes"] else 0)
        result = {}

        def poll():
            result["page"] = page(token, "&timeout=20")

        import threading
        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)
        self.assertFalse(t.is_alive() is False and result, "the poll returned before any change")
        # A change in another domain does not answer this domain's poll.
        self.submit(sample("case-v2__basic_create.xml").replace(b"foo-case-id", b"poll-other"),
                    domain="other", auth=("w.other", "pw-other"))
        xml = sample("case-v2__basic_create.xml").replace(b"foo-case-id", b"poll-case")
        t0 = time.time()
        self.assertEqual(self.submit(xml)[0], 201)
        t.join(30)
        first = result["page"]
        self.assertTrue(first["changes"])
        self.assertLess(time.time() - t0, 5)
        seen = [c["change"] for c in first["changes"]]
        token = first["next_since"]
        deadline = time.time() + 10
        while "poll-case" not in {c["document_id"] for c in seen} and time.time() < deadline:
            p = page(token, "&timeout=2")
            seen += [c["change"] for c in p["changes"]]
            token = p["next_since"]
        self.assertIn("poll-case", {c["document_id"] for c in seen})
        self.assertTrue(all(c["domain"] == "demo" for c in seen))
        self.assertNotIn("poll-other", {c["document_id"] for c in seen})
        for bad in ["since=garbage", "timeout=99", "limit=0", "bogus=1"]:
            self.assertEqual(self.request("GET", f"/a/demo/api/changes/?{bad}")[0], 400, bad)
        self.assertEqual(self.request("GET", "/a/demo/api/changes/", auth=("w.other", "pw-other"))[0], 403)

    def test_admin_api(self):
        js = lambda method, path, body, **kw: self.request(
            method, path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, **kw)
        s, _, body = self.request("GET", "/api/domains/")
        self.assertEqual(s, 200)
        self.assertTrue({"demo", "other"} <= {d["name"] for d in json.loads(body)["domains"]})
        self.assertEqual(js("POST", "/api/domains/", {"name": "clinic"})[0], 201)
        self.assertEqual(js("POST", "/api/domains/", {"name": "clinic"})[0], 409)
        self.assertEqual(js("POST", "/api/domains/", {"name": "Bad Name"})[0], 400)
        self.assertEqual(self.request("GET", "/api/domains/", auth=("w.demo", "pw-demo"))[0], 403)
        self.assertEqual(self.request("GET", "/a/demo/api/users/", auth=("w.demo", "pw-demo"))[0], 403)
        s, _, body = js("POST", "/a/demo/api/users/", {"username": "nurse2", "password": "pw-nurse"})
        self.assertEqual(s, 201, body)
        rev = json.loads(body)["_rev"]
        self.assertEqual(js("POST", "/a/demo/api/users/", {"username": "nurse2", "password": "x1234"})[0], 409)
        s, _, body = js("POST", "/a/demo/api/users/", {"username": "n3", "password": "pw-n3", "colour": "red"})
        self.assertEqual(s, 400)
        self.assertIn("colour", json.loads(body)["error"])
        xml = sample("case-v2__basic_create.xml").replace(b"foo-case-id", b"nurse-case")
        self.assertEqual(self.submit(xml, auth=("nurse2", "pw-nurse"))[0], 201)
        # Her own API key.
        s, _, body = self.request("POST", "/a/demo/api/users/nurse2/api_key", auth=("nurse2", "pw-nurse"))
        self.assertEqual(s, 201, body)
        key = json.loads(body)["key"]
        s, _, _ = self.request("POST", "/a/demo/receiver/", body=xml, auth=None,
                               headers={"Authorization": f"ApiKey nurse2:{key}", "Content-Type": "text/xml"})
        self.assertEqual(s, 201)
        users = json.loads(self.request("GET", "/a/demo/api/users/")[2])["users"]
        self.assertIn("nurse2", {u["username"] for u in users})
        # A stale revision is refused; deactivation takes effect at once (the cached credential too).
        self.assertEqual(js("PUT", "/a/demo/api/users/nurse2", {"_rev": rev + 5, "is_active": False})[0], 409)
        s, _, body = js("PUT", "/a/demo/api/users/nurse2", {"_rev": rev, "is_active": False})
        self.assertEqual(s, 200, body)
        self.assertEqual(self.submit(xml, auth=("nurse2", "pw-nurse"))[0], 401)
        self.assertEqual(js("PUT", "/a/demo/api/users/ghost", {"_rev": 1})[0], 404)
        # Users of another domain are not visible here.
        self.assertEqual(self.request("GET", "/a/demo/api/users/w.other")[0], 404)
        # A password changed by another process (the CLI) counts at once, cached login or not.
        cc("admin", "user", "create", "--data", self.data, "--domain", "demo", "--username",
           "w.cli", "--password", "pw-one", "--web")
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.cli", "pw-one"))[0], 200)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.cli", "pw-one"))[0], 200)
        cc("admin", "user", "create", "--data", self.data, "--domain", "demo", "--username",
           "w.cli", "--password", "pw-two", "--web")
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.cli", "pw-one"))[0], 401)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.cli", "pw-two"))[0], 200)

    def test_roles_groups_locations_and_their_changes(self):
        def js(method, path, body=None, **kw):
            s, _, b = self.request(method, path, body=None if body is None else json.dumps(body).encode(),
                                   headers={"Content-Type": "application/json"}, **kw)
            return s, json.loads(b) if b else None

        # A role that grants API access, given to a worker who had none.
        s, role = js("POST", "/a/demo/api/roles/", {"name": "api reader", "permissions": ["access_api"]})
        self.assertEqual(s, 201, role)
        s, err = js("POST", "/a/demo/api/roles/", {"name": "x", "permissions": ["fly"]})
        self.assertEqual(s, 400)
        self.assertTrue(err["error"].startswith("permissions"))
        cc("admin", "user", "create", "--data", self.data, "--domain", "demo", "--username",
           "w.role", "--password", "pw-role")
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.role", "pw-role"))[0], 403)
        s, u = js("GET", "/a/demo/api/users/w.role")
        s, u = js("PUT", "/a/demo/api/users/w.role", {"_rev": u["_rev"], "role_id": role["id"]})
        self.assertEqual(s, 200, u)
        self.assertEqual(u["role_ids"], {"demo": role["id"]})
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.role", "pw-role"))[0], 200)
        # Reads of roles need access_api; writes need manage_users.
        self.assertEqual(self.request("GET", "/a/demo/api/roles/", auth=("w.role", "pw-role"))[0], 200)
        self.assertEqual(js("POST", "/a/demo/api/groups/", {"name": "g"}, auth=("w.role", "pw-role"))[0], 403)
        self.assertEqual(js("DELETE", f"/a/demo/api/roles/{role['id']}/?_rev={role['_rev']}")[0], 409)
        # Taking the permission out of the role counts at once (the cached login too).
        s, role2 = js("PUT", f"/a/demo/api/roles/{role['id']}/", {"_rev": role["_rev"], "name": "api reader",
                                                                 "permissions": []})
        self.assertEqual(s, 200, role2)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/", auth=("w.role", "pw-role"))[0], 403)
        self.assertEqual(js("PUT", f"/a/demo/api/roles/{role['id']}/", {"_rev": role["_rev"], "name": "y"})[0], 409)

        # Locations: a tree, with cycles, unknown parents and deleting a parent refused.
        s, region = js("POST", "/a/demo/api/locations/", {"name": "Region", "location_type": "region",
                                                          "view_descendants": True})
        self.assertEqual(s, 201, region)
        s, clinic = js("POST", "/a/demo/api/locations/", {"name": "Clinic", "location_type": "clinic",
                                                          "parent_id": region["id"], "shares_cases": True})
        self.assertEqual(s, 201, clinic)
        s, err = js("POST", "/a/demo/api/locations/", {"name": "X", "location_type": "t", "parent_id": "nope"})
        self.assertEqual(s, 400)
        self.assertIn("parent_id", err["error"])
        s, err = js("PUT", f"/a/demo/api/locations/{region['id']}/",
                    {"_rev": region["_rev"], "name": "Region", "location_type": "region",
                     "parent_id": clinic["id"]})
        self.assertEqual((s, err["error"].split(":")[0]), (400, "parent_id"))
        self.assertEqual(js("DELETE", f"/a/demo/api/locations/{region['id']}/?_rev={region['_rev']}")[0], 409)
        s, locs = js("GET", "/a/demo/api/locations/")
        self.assertEqual({l["id"] for l in locs["locations"]}, {region["id"], clinic["id"]})

        # Groups: members are users of the domain.
        s, u = js("GET", "/a/demo/api/users/w.role")
        s, err = js("POST", "/a/demo/api/groups/", {"name": "team", "users": ["not-a-user"]})
        self.assertEqual((s, err["error"].split(":")[0]), (400, "users"))
        s, group = js("POST", "/a/demo/api/groups/", {"name": "team", "case_sharing": True,
                                                      "users": [u["user_id"]]})
        self.assertEqual(s, 201, group)
        self.assertEqual(js("GET", f"/a/demo/api/groups/{group['id']}/")[1]["users"], [u["user_id"]])
        # Another domain sees none of it.
        self.assertEqual(js("GET", f"/a/other/api/groups/{group['id']}/")[0], 404)
        self.assertEqual(js("GET", "/a/demo/api/groups/", auth=("w.other", "pw-other"))[0], 403)
        self.assertEqual(js("GET", "/a/other/api/locations/")[1], {"locations": []})
        # Delete with the right revision; then it is gone.
        self.assertEqual(js("DELETE", f"/a/demo/api/groups/{group['id']}/?_rev=99")[0], 409)
        self.assertEqual(js("DELETE", f"/a/demo/api/groups/{group['id']}/")[0], 400)
        self.assertEqual(js("DELETE", f"/a/demo/api/groups/{group['id']}/?_rev={group['_rev']}")[0], 200)
        self.assertEqual(js("GET", f"/a/demo/api/groups/{group['id']}/")[0], 404)

        # Each write reached the change log, readable through the changes API.
        seen, token = [], ""
        deadline = time.time() + 10
        while time.time() < deadline:
            s, page = js("GET", f"/a/demo/api/changes/?limit=1000&since={token}")
            seen += [c["change"] for c in page["changes"]]
            token = page["next_since"]
            if not page["changes"]:
                break
        by_id = {}
        for c in seen:
            by_id.setdefault(c["document_id"], []).append((c["topic"], c["document_type"], c["is_deletion"]))
        self.assertEqual(by_id[group["id"]], [("group", "Group", False), ("group", "Group", True)])
        self.assertEqual(by_id[clinic["id"]], [("location", "Location", False)])
        self.assertEqual(by_id[role["id"]], [("role", "UserRole", False)] * 2)
        self.assertIn(("commcare-user", "CommCareUser", False), by_id[u["user_id"]])

    def test_phone_restore(self):
        import xml.etree.ElementTree as ET
        ns = {"or": "http://openrosa.org/http/response", "sync": "http://commcarehq.org/sync",
              "reg": "http://openrosa.org/user/registration", "c": "http://commcarehq.org/case/transaction/v2"}
        me = json.loads(self.request("GET", "/a/demo/api/users/w.demo")[2])
        s, _, body = self.request("POST", "/a/demo/api/groups/", body=json.dumps(
            {"name": "sharing", "case_sharing": True, "users": [me["user_id"]]}).encode())
        self.assertEqual(s, 201, body)
        group = json.loads(body)["id"]

        def case_xml(case_id, owner):
            return (f'<?xml version="1.0"?><data xmlns="http://example.org/r"><meta xmlns="http://openrosa.org/jr/xforms">'
                    f'<instanceID>form-{case_id}</instanceID><userID>{me["user_id"]}</userID></meta>'
                    f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{case_id}" '
                    f'date_modified="2020-01-01T00:00:00Z" user_id="{me["user_id"]}"><create><case_type>patient</case_type>'
                    f'<case_name>P {case_id}</case_name><owner_id>{owner}</owner_id></create></case></data>').encode()
        self.assertEqual(self.submit(case_xml("sync-mine", me["user_id"]))[0], 201)
        self.assertEqual(self.submit(case_xml("sync-group", group))[0], 201)
        self.assertEqual(self.submit(case_xml("sync-other", "someone"))[0], 201)
        auth = ("w.demo", "pw-demo")
        s, h, body = self.request("GET", "/a/demo/phone/restore/?version=2.0&items=true", auth=auth)
        self.assertEqual(s, 200, body)
        self.assertEqual(h.get("transfer-encoding"), "chunked")
        self.assertEqual(h["content-type"], "text/xml; charset=utf-8")
        root = ET.fromstring(body)
        token = root.find("sync:Sync/sync:restore_id", ns).text
        self.assertEqual(root.find("reg:Registration/reg:username", ns).text, "w.demo")
        cases = {c.get("case_id") for c in root.findall("c:case", ns)}
        self.assertEqual(cases, {"sync-mine", "sync-group"})
        # HQ (restore.py RestoreContent): every top-level element, the message included.
        self.assertEqual(root.get("items"), str(len(root)))
        groups = root.findall("or:fixture[@id='user-groups']/or:groups/or:group", ns)
        self.assertEqual([g.get("id") for g in groups], [group])
        # A repeated first sync is computed afresh (HQ keeps only restores slower than a
        # minute): a new token each time.
        s, _, fresh = self.request("GET", "/a/demo/phone/restore/?version=2.0&items=true", auth=auth)
        self.assertEqual(s, 200, fresh)
        fresh_token = ET.fromstring(fresh).find("sync:Sync/sync:restore_id", ns).text
        self.assertNotEqual(fresh_token, token)
        self.assertEqual(self.submit(case_xml("sync-by-worker", me["user_id"]), auth=auth)[0], 201)
        s, _, after = self.request("GET", "/a/demo/phone/restore/?version=2.0&items=true", auth=auth)
        root_after = ET.fromstring(after)
        self.assertNotEqual(root_after.find("sync:Sync/sync:restore_id", ns).text, fresh_token)
        self.assertIn("sync-by-worker", {c.get("case_id") for c in root_after.findall("c:case", ns)})
        token = root_after.find("sync:Sync/sync:restore_id", ns).text
        # Incremental: nothing new; then a change by the web user reaches the phone.
        s, _, body = self.request("GET", f"/a/demo/phone/restore/?since={token}", auth=auth)
        self.assertEqual(s, 200, body)
        root = ET.fromstring(body)
        self.assertEqual(root.findall("c:case", ns), [])
        token2 = root.find("sync:Sync/sync:restore_id", ns).text
        upd = case_xml("sync-group", group).replace(b"form-sync-group", b"form-sync-group-2").replace(
            b"<create><case_type>patient</case_type><case_name>P sync-group</case_name>",
            b"<update><status>seen</status></update><create><case_type>patient</case_type><case_name>P sync-group</case_name>")
        self.assertEqual(self.submit(upd)[0], 201)
        s, _, body = self.request("GET", f"/a/demo/phone/restore/?since={token2}", auth=auth)
        root = ET.fromstring(body)
        self.assertEqual([c.get("case_id") for c in root.findall("c:case", ns)], ["sync-group"])
        self.assertIsNone(root.find("c:case/c:create", ns))
        # Errors: 412 with ota_restore_error for tokens and state; 403 across domains.
        for query in ["since=nope", f"since={token}&state=ccsh:0123", "user_id=someone-else",
                      f"since={token}&state=ccsh:00000000000000000000000000000000"]:
            s, _, body = self.request("GET", f"/a/demo/phone/restore/?{query}", auth=auth)
            self.assertEqual(s, 412, (query, body))
            self.assertEqual(ET.fromstring(body).find("or:message", ns).get("nature"), "ota_restore_error")
        self.assertEqual(self.request("GET", "/a/demo/phone/restore/", auth=("w.other", "pw-other"))[0], 403)
        # HQ's get_restore_response (corehq/apps/ota/views.py): a refused `as` is a plain 401.
        self.assertEqual(self.request("GET", "/a/demo/phone/restore/?as=w.demo", auth=auth)[0], 401)
        # A web user restores as the worker.
        s, _, body = self.request("GET", "/a/demo/phone/restore/?as=w.demo@demo.commcarehq.org")
        self.assertEqual(s, 200, body)
        root = ET.fromstring(body)
        self.assertEqual(root.find("reg:Registration/reg:username", ns).text, "w.demo")
        self.assertEqual({c.get("case_id") for c in root.findall("c:case", ns)},
                         {"sync-mine", "sync-group", "sync-by-worker"})
        # Keep-alive works after a streamed answer.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        hdr = {"Authorization": "Basic " + base64.b64encode(b"w.demo:pw-demo").decode()}
        for _ in range(2):
            conn.request("GET", "/a/demo/phone/restore/", headers=hdr)
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            self.assertIn(b"</OpenRosaResponse>", r.read())
        conn.close()

    def raw(self, data, read=True, timeout=5):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.sendall(data)
        out = b""
        if read:
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            except socket.timeout:
                pass
        s.close()
        return out

    def test_http_limits_and_malformed_requests(self):
        s, _, body = self.submit(b"x" * 1_200_000)
        self.assertEqual(s, 413, body)
        self.assertTrue(self.raw(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400"))
        smuggle = (b"POST /a/demo/receiver/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        out = self.raw(smuggle)
        self.assertEqual(out.count(b"HTTP/1.1"), 1, out)  # one answer, the smuggled GET is not served
        self.assertTrue(out.startswith(b"HTTP/1.1 4"), out)
        # A slow client: headers never finished; the server hangs up after the header timeout.
        t0 = time.time()
        out = self.raw(b"POST /a/demo/receiver/ HTTP/1.1\r\nHost: x\r\n", timeout=10)
        self.assertLess(time.time() - t0, 5)
        # A body that never arrives is cut off too.
        t0 = time.time()
        out = self.raw(b"POST /a/demo/receiver/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", timeout=10)
        self.assertLess(time.time() - t0, 5)
        # The server is still up.
        self.assertEqual(self.request("GET", "/health", auth=None)[0], 200)
        with open(self.log) as f:
            lines = [json.loads(l) for l in f]
        self.assertTrue(any(l["status"] == 413 for l in lines))
        # Who made an authenticated request is recorded (never the credentials).
        self.assertTrue(any(l["user"] == "admin" and l["status"] == 200 for l in lines))
        self.assertTrue(all(l["user"] == "" for l in lines if l["status"] == 401))
        self.assertFalse(any("s3cret" in json.dumps(l) for l in lines))

    def test_z_health_ready_and_metrics(self):
        s, _, body = self.request("GET", "/health/ready", auth=None)
        self.assertEqual(s, 200, body)
        self.assertIn("pillow_lag", json.loads(body))
        s, h, body = self.request("GET", "/metrics", auth=None)
        self.assertEqual(s, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"))
        text = body.decode()
        self.assertRegex(text, r'commcare_http_requests_total\{route="receiver",status="201"\} [1-9]')
        self.assertRegex(text, r'commcare_http_request_seconds_bucket\{route="receiver",le="\+Inf"\} [1-9]')
        self.assertRegex(text, r'commcare_submissions_total\{nature="submit_success"\} [1-9]')
        self.assertRegex(text, r'commcare_pillow_lag\{pillow="case-search"\} \d+')
        self.assertRegex(text, r'commcare_pillow_processed_total\{pillow="case-search"\} [1-9]')
        groups = int(re.search(r"commcare_commit_groups_total (\d+)", text).group(1))
        batches = int(re.search(r"commcare_committed_batches_total (\d+)", text).group(1))
        self.assertGreater(groups, 0)
        self.assertGreaterEqual(batches, groups)

    def test_zz_graceful_stop(self):
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        self.assertEqual(self.proc.returncode, 0, err)
        self.assertIn('"stopped":true', out)
        # Everything acknowledged is in the store.
        check = cc("check", "--data", self.data)[0]
        self.assertTrue(check["ok"], check)
        self.assertEqual(check["outbox_rows"], 0)


class RateLimitTest(unittest.TestCase):
    def test_token_buckets_answer_429_with_retry_after(self):
        tmp = tempfile.mkdtemp(prefix="cc-rate-")
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="pw")
        proc = subprocess.Popen([CC, "serve", "--data", os.path.join(tmp, "d"), "--listen",
                                 "127.0.0.1:0", "--no-pillows", "--rate-limit-user", "5"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            port = int(json.loads(proc.stdout.readline())["listening"].rsplit(":", 1)[1])
            auth = "Basic " + base64.b64encode(b"admin:pw").decode()
            statuses, retry = [], None
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(20):
                conn.request("GET", "/a/demo/api/case/v2/missing", headers={"Authorization": auth})
                r = conn.getresponse()
                r.read()
                statuses.append(r.status)
                if r.status == 429:
                    retry = r.getheader("Retry-After")
            self.assertEqual(statuses[:10], [404] * 10)  # a burst of twice the rate passes
            self.assertIn(429, statuses)
            self.assertGreaterEqual(int(retry), 1)
            time.sleep(1.1)  # tokens come back
            conn.request("GET", "/a/demo/api/case/v2/missing", headers={"Authorization": auth})
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 404)
            # Unauthenticated routes are not counted against anyone.
            conn.request("GET", "/health")
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            shutil.rmtree(tmp, ignore_errors=True)


class TlsTest(unittest.TestCase):
    """--tls-cert/--tls-key: HTTPS with a self-signed certificate, checked by the client."""

    def test_https_submission_and_plain_http_refused(self):
        import ssl
        tmp = tempfile.mkdtemp(prefix="cc-tls-")
        try:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", key, "-out", cert], check=True, capture_output=True)
            data = os.path.join(tmp, "data")
            env = dict(os.environ, COMMCARE_ADMIN_PASSWORD="s3cret")
            bad = subprocess.run([CC, "serve", "--data", data, "--listen", "127.0.0.1:0",
                                  "--tls-cert", cert, "--tls-key", os.path.join(tmp, "missing.pem")],
                                 capture_output=True, text=True, env=env, timeout=30)
            self.assertNotEqual(bad.returncode, 0)
            self.assertIn("missing.pem", bad.stdout)
            proc = subprocess.Popen([CC, "serve", "--data", data, "--listen", "127.0.0.1:0", "--no-pillows",
                                     "--tls-cert", cert, "--tls-key", key],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            try:
                hello = json.loads(proc.stdout.readline())
                self.assertEqual(hello["scheme"], "https")
                port = int(hello["listening"].rsplit(":", 1)[1])
                ctx = ssl.create_default_context(cafile=cert)
                auth = "Basic " + base64.b64encode(b"admin:s3cret").decode()
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
                for _ in range(2):  # keep-alive over one TLS connection
                    conn.request("POST", "/a/demo/receiver/", body=sample("case-v2__basic_create.xml"),
                                 headers={"Authorization": auth, "Content-Type": "text/xml"})
                    r = conn.getresponse()
                    body = r.read()
                    self.assertEqual(r.status, 201, body)
                    self.assertTrue(r.getheader("Location").startswith("https://"))
                conn.close()
                # curl as a phone would, verifying the certificate.
                out = subprocess.run(["curl", "-sS", "--cacert", cert, "-u", "admin:s3cret", "-o", "/dev/null",
                                      "-w", "%{http_code}", f"https://127.0.0.1:{port}/a/demo/api/case/v2/"],
                                     capture_output=True, text=True, timeout=30)
                self.assertEqual(out.stdout, "200", out.stderr)
                # Plain HTTP to the TLS port gets no answer, and the server stays up.
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    self.assertNotIn(b"200 OK", s.recv(4096))
                except (socket.timeout, ConnectionResetError):
                    pass
                s.close()
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
                conn.request("GET", "/health")
                self.assertEqual(conn.getresponse().status, 200)
                conn.close()
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_protocols_and_ciphers(self):
        """TLS 1.2 with forward-secret AEAD suites and TLS 1.3 are taken; TLS 1.1, a CBC or
        non-ECDHE TLS 1.2 suite, and TLS compression are refused. The client that is refused
        is shown able to speak each refused setting to a Python server that allows it."""
        import ssl
        tmp = tempfile.mkdtemp(prefix="cc-tls-")
        try:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                           check=True, capture_output=True)
            proc = subprocess.Popen([CC, "serve", "--data", os.path.join(tmp, "data"), "--listen",
                                     "127.0.0.1:0", "--no-pillows", "--tls-cert", cert, "--tls-key", key],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                    env=dict(os.environ, COMMCARE_ADMIN_PASSWORD="s3cret"))
            try:
                port = int(json.loads(proc.stdout.readline())["listening"].rsplit(":", 1)[1])

                def client(version, ciphers=None):
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                    ctx.set_ciphers((ciphers or "DEFAULT") + ":@SECLEVEL=0")
                    ctx.minimum_version = ctx.maximum_version = version
                    return ctx

                def handshake(ctx, p):
                    with socket.create_connection(("127.0.0.1", p), timeout=10) as raw:
                        with ctx.wrap_socket(raw) as s:
                            return s.version(), s.cipher()[0]

                def control(ctx):
                    """The same client against a Python server allowing anything: it connects."""
                    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    sctx.load_cert_chain(cert, key)
                    sctx.set_ciphers("ALL:@SECLEVEL=0")
                    sctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                    ls = socket.create_server(("127.0.0.1", 0))
                    t = threading.Thread(target=lambda: sctx.wrap_socket(ls.accept()[0], server_side=True).close())
                    t.start()
                    try:
                        return handshake(ctx, ls.getsockname()[1])
                    finally:
                        t.join(10)
                        ls.close()

                V = ssl.TLSVersion
                self.assertEqual(handshake(client(V.TLSv1_3), port)[0], "TLSv1.3")
                self.assertEqual(handshake(client(V.TLSv1_2), port),
                                 ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"))  # the server's order, not the client's
                for version, ciphers in ((V.TLSv1_1, None), (V.TLSv1_2, "AES128-SHA"),
                                         (V.TLSv1_2, "ECDHE-RSA-AES128-SHA256"),
                                         (V.TLSv1_2, "AES128-GCM-SHA256")):
                    ctx = client(version, ciphers)
                    self.assertEqual(control(ctx)[0], version.name.replace("_", "."),
                                     "the control: this client can speak it")
                    with self.assertRaises(ssl.SSLError, msg=f"{version} {ciphers}"):
                        handshake(client(version, ciphers), port)
                out = subprocess.run(["curl", "-sS", "-k", "-o", "/dev/null", "-w", "%{http_code}",
                                      f"https://127.0.0.1:{port}/health"], capture_output=True, text=True)
                self.assertEqual(out.stdout, "200", out.stderr)  # still serving after the refusals
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
