#!/usr/bin/env python3
"""Issue 24, item 4: the security properties checked on every route the server has. The route
list comes from the server itself (`commcare serve --print-routes`); a route missing from ROUTES
below fails the test until it is classified, so a route added later is covered. For each route
under /a/{domain}/: a second domain's manager is refused (401/403/404, none of the first
domain's data in the body) with Basic, Digest, ApiKey and a console session; a member lacking
the route's permission gets 403. Then: SQL probes in every filter and search parameter answer
400 or nothing, never 500 or other rows; failed logins are throttled across Basic and the
console's sign-in; external entities, DTDs and entity expansion are refused; attachment names
that could leave their folder are refused; no password, key or token reaches the logs.
Usage: security_routes_test.py COMMCARE"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import uuid

import cc_server
from cc_server import ADMIN, ENV, digest_header, multipart, parse_challenge

CC = sys.argv[1]
del sys.argv[1:2]

ALL_PERMS = ["edit_data", "access_api", "access_mobile_endpoints", "manage_users"]
WEBA, WEBB = ("webA", "pwA-web-Zq81"), ("webB", "pwB-web-Zq82")
CASE_ID, EXT_ID = "caseA-" + uuid.uuid4().hex[:8], "extA-" + uuid.uuid4().hex[:8]
# Values only domain A's data holds: none may appear in an answer to domain B's user.
SECRETS = ["A-secret-value-Xq7", "A-form-answer-Xq7", "A-photo-bytes-Xq7", "A-lookup-value-Xq7"]

# Every route the server prints, by (name, path). A domain route lists its probes:
# (method, path under /a/{domain}/, JSON body or None, the permissions any of which admits).
# A global route (no domain: nothing of a domain's to isolate) says why it is global.
API, EDIT, MOBILE, MANAGE = "access_api", "edit_data", "access_mobile_endpoints", "manage_users"
ROUTES = {
    ("console", "/"): "the console's page: no data",
    ("console_api", "/console/api/"): "sign-in, sign-out, the session, pillow status",
    ("console", "/console"): "the console's assets: no data",
    ("admin_domains", "/api/domains"): "superusers only (security_test walks it)",
    ("health/ready", "/health/ready"): "readiness: no data",
    ("health", "/health"): "liveness: no data",
    ("metrics", "/metrics"): "counters by route: no data",
    ("receiver", "/a/{domain}/receiver"): [("POST", "receiver/", "FORM", {EDIT, MOBILE})],
    ("case_api_v2", "/a/{domain}/api/case/v2"): [
        ("GET", "api/case/v2/", None, {API}),
        ("GET", f"api/case/v2/{CASE_ID}", None, {API}),
        ("GET", f"api/case/v2/ext/{EXT_ID}/", None, {API}),
        ("POST", "api/case/v2/bulk-fetch/", {"case_ids": [CASE_ID]}, {API}),
        ("PUT", f"api/case/v2/{CASE_ID}", {"properties": {"secret": "overwritten"}}, {API}),
    ],
    ("case_api_v06", "/a/{domain}/api/v0.6/case"): [
        ("GET", "api/v0.6/case/", None, {API}),
        ("POST", "api/v0.6/case/bulk-fetch/", {"case_ids": [CASE_ID]}, {API}),
    ],
    ("admin_users", "/a/{domain}/api/users"): [("GET", "api/users/", None, {MANAGE}),
                                               ("GET", "api/users/mobA/", None, {MANAGE})],
    ("admin_roles", "/a/{domain}/api/roles"): [("GET", "api/roles/", None, {API, MANAGE})],
    ("admin_groups", "/a/{domain}/api/groups"): [("GET", "api/groups/", None, {API, MANAGE})],
    ("admin_locations", "/a/{domain}/api/locations"): [("GET", "api/locations/", None, {API, MANAGE})],
    ("admin_apps", "/a/{domain}/api/apps"): [("GET", "api/apps/", None, {API, MANAGE})],
    ("admin_lookup_tables", "/a/{domain}/api/lookup_tables"): [
        ("GET", "api/lookup_tables/", None, {API, EDIT}),
        ("GET", "api/lookup_tables/tblA/", None, {API, EDIT})],
    ("admin_lookup_items", "/a/{domain}/api/lookup_items"): [
        ("GET", "api/lookup_items/", None, {API, EDIT})],
    ("phone_restore", "/a/{domain}/phone/restore"): [("GET", "phone/restore/", None, {MOBILE})],
    ("changes_api", "/a/{domain}/api/changes"): [("GET", "api/changes/", None, {API})],
    ("tasks_api", "/a/{domain}/api/tasks"): [("GET", "api/tasks/", None, {API})],
    ("exports_api", "/a/{domain}/api/exports"): [("GET", "api/exports/saved/", None, {API})],
    ("import_api", "/a/{domain}/api/import"): [("POST", "api/import/edit/", {}, {EDIT})],
    ("forwarders_api", "/a/{domain}/api/forwarders"): [("GET", "api/forwarders/", None, {API})],
    ("reports_api", "/a/{domain}/api/reports"): [("GET", "api/reports/", None, {API})],
    ("rules_api", "/a/{domain}/api/rules"): [("GET", "api/rules/", None, {API})],
    ("alerts_api", "/a/{domain}/api/alerts"): [("GET", "api/alerts/", None, {API})],
    ("ucr_report_api", "/a/{domain}/api/ucr/report/"): [
        ("GET", "api/ucr/report/no_such_report/", None, {API})],
    ("ucr_api", "/a/{domain}/api/ucr/"): [("GET", "api/ucr/no_such_table/", None, {API})],
    ("case_attachment", "/a/{domain}/api/case/attachment/"): [
        ("GET", f"api/case/attachment/{CASE_ID}/photo", None, {API, MOBILE})],
    ("case_attachment", "/a/{domain}/api/case_attachment/v1/"): [
        ("GET", f"api/case_attachment/v1/{CASE_ID}/photo", None, {API, MOBILE})],
    ("form_attachment", "/a/{domain}/api/form/attachment/"): [
        ("GET", "api/form/attachment/{form}/photo.jpg", None, {API})],
    ("console_api", "/a/{domain}/api/console/"): [
        ("GET", f"api/console/case/{CASE_ID}/history", None, {API})],
    ("form_api", "/a/{domain}/api/v0.5/form"): [("GET", "api/v0.5/form/", None, {API}),
                                                ("GET", "api/v0.5/form/{form}/", None, {API})],
    # HQ's OData feeds (basic_auth_or_try_api_key_auth; we admit every scheme, access_api).
    ("odata_cases", "/a/{domain}/api/odata/cases/v1/"): [
        ("GET", "api/odata/cases/v1/secA/feed", None, {API}),
        ("GET", "api/odata/cases/v1/secA/$metadata", None, {API})],
    ("odata_cases", "/a/{domain}/api/v0.5/odata/cases/"): [
        ("GET", "api/v0.5/odata/cases/secA/feed", None, {API})],
    ("odata_forms", "/a/{domain}/api/odata/forms/v1/"): [
        ("GET", "api/odata/forms/v1/secF/feed", None, {API}),
        ("GET", "api/odata/forms/v1/secF/", None, {API})],
    ("odata_forms", "/a/{domain}/api/v0.5/odata/forms/"): [
        ("GET", "api/v0.5/odata/forms/secF/feed", None, {API})],
    ("lookup_v05_fixture", "/a/{domain}/api/v0.5/fixture"): [
        ("GET", "api/v0.5/fixture/", None, {API}),
        ("GET", "api/v0.5/fixture/?fixture_type=tblA", None, {API}),
        ("GET", "api/v0.5/fixture/itemA/", None, {API})],
    ("lookup_v05_lookup_table", "/a/{domain}/api/v0.5/lookup_table"): [
        ("GET", "api/v0.5/lookup_table/", None, {API}),
        ("GET", "api/v0.5/lookup_table/tblA/", None, {API}),
        ("POST", "api/v0.5/lookup_table/", {"tag": "probe", "fields": ["v"]}, {EDIT}),
        ("DELETE", "api/v0.5/lookup_table/tblA/", None, {EDIT})],
    ("lookup_v05_lookup_table_item", "/a/{domain}/api/v0.5/lookup_table_item"): [
        ("GET", "api/v0.5/lookup_table_item/", None, {API}),
        ("GET", "api/v0.5/lookup_table_item/itemA/", None, {API}),
        ("PUT", "api/v0.5/lookup_table_item/itemA/",
         {"data_type_id": "tblA", "fields": {"v": {"field_list": [{"field_value": "B"}]}}}, {EDIT})],
    # HQ's case importer API: edit_data, as its require_can_edit_data.
    ("case_bulk_upload", "/a/{domain}/importer/excel/bulk_upload_api"): [
        ("POST", "importer/excel/bulk_upload_api/", {}, {EDIT})],
    # HQ's lookup-table Excel upload: edit_data, as HQ's require_can_edit_fixtures.
    ("lookup_upload", "/a/{domain}/fixtures/fixapi"): [("POST", "fixtures/fixapi/", {}, {EDIT})],
}
# Answers a positive control may give besides 2xx: a route that needs what this server lacks.
CONTROL_OK = {"api/ucr/no_such_table/": 404, "api/ucr/report/no_such_report/": 404, "api/import/edit/": 400,
              "fixtures/fixapi/": 400, "importer/excel/bulk_upload_api/": 400}


def print_routes():
    # --data as every command takes it; --print-routes opens nothing there.
    p = subprocess.run([CC, "serve", "--print-routes", "--data", "/nonexistent"],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError(f"serve --print-routes: exit {p.returncode}: {p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines()]


def form_with_case(user_id, case_id=CASE_ID, answer=SECRETS[1], secret=SECRETS[0]):
    return (f'<?xml version="1.0"?><data xmlns="http://example/sec"><answer>{answer}</answer>'
            f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{uuid.uuid4().hex}</instanceID>'
            f'<userID>{user_id}</userID></meta>'
            f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{case_id}" '
            f'date_modified="2024-01-01T00:00:00Z" user_id="{user_id}"><create>'
            f'<case_type>patient</case_type><case_name>n</case_name><owner_id>{user_id}</owner_id>'
            f'</create><update><secret>{secret}</secret><external_id>{EXT_ID}</external_id></update>'
            f'<attachment><photo src="photo.jpg" from="local"/></attachment></case></data>').encode()


class Server(cc_server.Server):
    def __init__(self, *flags, **kw):
        super().__init__(CC, *flags, **kw)

    def login(self, user, password):
        """A console session: (cookie header, CSRF token)."""
        r = self.request("POST", "/console/api/login", {"username": user, "password": password},
                         auth=None)
        assert r.status == 200, (user, r)
        cookie = r.header("set-cookie").split(";", 1)[0]
        return cookie, r.json()["csrf_token"]


class RouteIsolationTest(unittest.TestCase):
    """(a) tenant isolation and (b) role permissions through every route."""

    @classmethod
    def setUpClass(cls):
        cls.s = s = Server(pillows=True)
        s.make_domain("domb")
        s.make_user("doma", *WEBA, web=True, perms=ALL_PERMS)
        s.make_user("domb", *WEBB, web=True, perms=ALL_PERMS)
        mob = s.make_user("doma", "mobA", "pwA-mob-Zq83")
        body, h = multipart(form_with_case(mob["user_id"]), [("photo.jpg", SECRETS[2].encode())])
        r = s.request("POST", "/a/doma/receiver/", body=body, auth=("mobA", "pwA-mob-Zq83"),
                      headers=h)
        assert r.status == 201, r
        cls.form_id = r.header("x-commcarehq-formid")
        for kind, doc in [("lookup_tables", {"id": "tblA", "tag": "tblA",
                                             "fields": [{"field_name": "v"}]}),
                          ("lookup_items", {"id": "itemA", "table_id": "tblA",
                                            "fields": {"v": [{"value": SECRETS[3]}]}})]:
            r = s.request("POST", f"/a/doma/api/{kind}/", doc)
            assert r.status == 201, (kind, r)
        for name, definition in [("secA", {"kind": "case"}),
                                 ("secF", {"kind": "form", "filters": {"xmlns": "http://example/sec"}})]:
            r = s.request("PUT", f"/a/doma/api/exports/saved/{name}", definition)
            assert r.status == 200, (name, r)
        # A member of A per set of permissions a probe needs, holding every other permission.
        cls.lacking = {}
        for need in {frozenset(p[3]) for v in ROUTES.values() if isinstance(v, list) for p in v}:
            name = "lack-" + "-".join(sorted(x.split("_")[-1] for x in need))
            cls.lacking[need] = (name, "pw-" + name)
            s.make_user("doma", name, "pw-" + name, web=True,
                        perms=[p for p in ALL_PERMS if p not in need])
        r = s.request("POST", "/a/domb/api/users/webB/api_key", auth=WEBB)
        assert r.status == 201, r
        cls.apikey = f"ApiKey webB:{r.json()['key']}"
        cls.session = s.login(*WEBB)
        cls.routes = print_routes()

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def probes(self):
        for (name, path), probes in ROUTES.items():
            if isinstance(probes, list):
                for method, sub, body, need in probes:
                    yield name, method, sub.replace("{form}", self.form_id), body, need

    def call(self, method, path, body, scheme, creds):
        if body == "FORM":
            prefix = "caseA2-" if creds == WEBA else "caseB-"  # A's own control, or an intruder
            body = form_with_case("x", case_id=prefix + uuid.uuid4().hex[:8])
        h = {"Content-Type": "text/xml"} if isinstance(body, bytes) else {}
        if scheme == "digest":
            nonce = parse_challenge(self.s.request("GET", "/a/doma/api/case/v2/", auth=None))["nonce"]
            return self.s.request(method, path, body, auth=digest_header(*creds, method, path, nonce),
                                  headers=h)
        if scheme == "session":
            h.update({"Cookie": self.session[0], "X-CSRF-Token": self.session[1]})
            return self.s.request(method, path, body, auth=None, headers=h)
        return self.s.request(method, path, body, auth=creds, headers=h)

    def test_every_route_is_classified(self):
        printed = {(r["name"], r["path"]) for r in self.routes}
        self.assertEqual(sorted(printed - set(ROUTES)), [],
                         "routes the server has and this test does not classify")
        self.assertEqual(sorted(set(ROUTES) - printed), [], "classified routes the server lacks")
        for r in self.routes:
            self.assertEqual(r["domain"], r["path"].startswith("/a/{domain}/"), r)
            self.assertEqual(r["domain"], isinstance(ROUTES[(r["name"], r["path"])], list), r)

    def test_probes_reach_domain_a_data(self):
        # The positive control: A's own manager gets an answer, so a refusal below is the
        # credential's doing and not a wrong path.
        for name, method, sub, body, _ in self.probes():
            if method in ("GET", "POST") and sub != "api/users/mobA/":
                r = self.call(method, f"/a/doma/{sub}", body, "basic", WEBA)
                self.assertTrue(r.status < 300 or CONTROL_OK.get(sub) == r.status,
                                (name, method, sub, r))

    def test_second_domain_refused_on_every_route(self):
        for scheme, creds in [("basic", WEBB), ("digest", WEBB), ("apikey", self.apikey),
                              ("session", None)]:
            for name, method, sub, body, _ in self.probes():
                with self.subTest(scheme=scheme, route=name, method=method, path=sub):
                    r = self.call(method, f"/a/doma/{sub}", body, scheme, creds)
                    self.assertIn(r.status, (401, 403, 404), r)
                    for secret in SECRETS:
                        self.assertNotIn(secret.encode(), r.body)
        # Nothing B's user sent reached A: the case is unchanged, no B case was made in A.
        r = self.s.request("GET", f"/a/doma/api/case/v2/{CASE_ID}")
        self.assertEqual(r.json()["properties"]["secret"], SECRETS[0])
        cases = self.s.request("GET", "/a/doma/api/case/v2/?limit=5000").json()["cases"]
        self.assertEqual([c["case_id"] for c in cases if c["case_id"].startswith("caseB-")], [])

    def test_member_lacking_the_permission_gets_403(self):
        for name, method, sub, body, need in self.probes():
            with self.subTest(route=name, method=method, path=sub):
                r = self.call(method, f"/a/doma/{sub}", body, "basic", self.lacking[frozenset(need)])
                self.assertEqual(r.status, 403, r)
                for secret in SECRETS:
                    self.assertNotIn(secret.encode(), r.body)

    def test_sql_probes_answer_400_or_nothing(self):
        inj = ["zzqx' OR '1'='1", "zzqx' OR 1=1 --", 'zzqx" OR ""="', "zzqx'; DROP TABLE cases; --",
               "zzqx%' OR '%'='", "zzqx') OR ('a'='a", "zzqx\\", "zzqx' UNION SELECT * FROM users --"]
        surfaces = [("api/case/v2/", k, "cases") for k in
                    ["case_type", "owner_id", "case_name", "external_id", "properties.secret",
                     "indices.parent", "last_modified.gt", "server_last_modified.lte",
                     "date_opened.gte", "date_closed.lt", "q", "cursor", "limit"]]
        surfaces += [("api/v0.5/form/", k, "objects") for k in
                     ["xmlns", "xmlns.exact", "app_id", "user_id", "received_on_start",
                      "received_on_end", "server_modified_on_start", "indexed_on_end", "order_by",
                      "limit", "offset"]]
        surfaces += [("api/ucr/no_such_table/", k, "rows") for k in ["limit", "offset"]]
        surfaces += [("api/tasks/", k, "objects") for k in ["queue", "type", "state"]]
        surfaces += [("api/changes/", "since", "changes")]
        for path, param, key in surfaces:
            for v in inj:
                with self.subTest(path=path, param=param, value=v):
                    q = urllib.parse.urlencode({param: v})
                    r = self.s.request("GET", f"/a/doma/{path}?{q}", auth=WEBA)
                    self.assertIn(r.status, (200, 400, 404), r)
                    if r.status == 200:
                        self.assertEqual(r.json().get(key), [], r)
        for path in ["api/case/v2/", "api/lookup_tables/", "api/lookup_items/", "api/ucr/",
                     "api/form/attachment/", "api/v0.5/form/"]:
            for v in inj:
                with self.subTest(path=path, id=v):
                    r = self.s.request("GET", f"/a/doma/{path}{urllib.parse.quote(v)}/x", auth=WEBA)
                    self.assertIn(r.status, (400, 404), r)


class XmlAndNamesTest(unittest.TestCase):
    """(e) DTDs and entities refused; (f) attachment names that would leave their folder."""

    @classmethod
    def setUpClass(cls):
        cls.s = Server()

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def forms(self):
        changes = self.s.request("GET", "/a/doma/api/changes/?limit=1000").json()["changes"]
        return sum(c["topic"] == "form-sql" for c in changes)

    def test_dtds_and_entities_refused(self):
        meta = '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{}</instanceID></meta>'
        attacks = {
            "external entity": '<!DOCTYPE data [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                               '<data xmlns="http://e/x"><a>&x;</a>{}</data>',
            "parameter entity": '<!DOCTYPE data [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x"> %p;]>'
                                '<data xmlns="http://e/x">{}</data>',
            "billion laughs": '<!DOCTYPE data [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;'
                              '&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
                              '<data xmlns="http://e/x"><a>&c;</a>{}</data>',
            "external DTD": '<!DOCTYPE data SYSTEM "http://127.0.0.1:1/x.dtd"><data xmlns="http://e/x">'
                            '{}</data>',
        }
        before = self.forms()
        for what, xml in attacks.items():
            with self.subTest(attack=what):
                body = ('<?xml version="1.0"?>' + xml.format(meta.format(uuid.uuid4().hex))).encode()
                r = self.s.submit(body, "doma", ADMIN)
                # HQ answers a form it cannot parse 500 submit_error and keeps it as a
                # submission error log, never as a form.
                self.assertEqual(r.status, 500, r)
                self.assertIn(b'nature="submit_error"', r.body)
                self.assertIn(b"DOCTYPE declarations are not allowed", r.body)
                self.assertNotIn(b"root:", r.body)
        self.assertEqual(self.forms(), before)

    def test_attachment_names_that_leave_their_folder_refused(self):
        for name in ["../escape.txt", "../../escape.txt", "/tmp/escape.txt", "a/../../escape.txt",
                     "..", "%2e%2e%2fescape.txt", "..\\escape.txt", "x\x00.txt"]:
            with self.subTest(name=name):
                body, h = multipart(cc_server.form_xml(), [(name, b"escape")])
                r = self.s.request("POST", "/a/doma/receiver/", body=body, headers=h)
                self.assertEqual(r.status, 400, r)
                self.assertIn(b"attachment name", r.body.lower(), r)
        for root, _, files in os.walk(self.s.tmp):
            self.assertNotIn("escape.txt", files, root)
        self.assertFalse(os.path.exists("/tmp/escape.txt"))


class LoginThrottleTest(unittest.TestCase):
    """(c) failed logins counted and throttled the same over Basic and the console sign-in."""

    def test_console_and_basic_share_the_lockout(self):
        s = Server("--login-failures", "3", "--lockout-seconds", "60")
        try:
            for u in ["mobT1", "mobT2"]:
                s.make_user("doma", u, "right-" + u)
            for _ in range(3):
                r = s.request("POST", "/console/api/login", {"username": "mobT1", "password": "no"},
                              auth=None)
                self.assertEqual(r.status, 401, r)
            r = s.request("GET", "/a/doma/phone/restore/", auth=("mobT1", "right-mobT1"))
            self.assertEqual(r.status, 429, r)
            self.assertTrue(r.header("retry-after"))
            for _ in range(3):
                self.assertEqual(s.request("GET", "/a/doma/phone/restore/",
                                           auth=("mobT2", "wrong")).status, 401)
            r = s.request("POST", "/console/api/login",
                          {"username": "mobT2", "password": "right-mobT2"}, auth=None)
            self.assertEqual(r.status, 429, r)
            self.assertTrue(r.header("retry-after"))
        finally:
            s.stop()


class NoSecretsInLogsTest(unittest.TestCase):
    """(d) passwords, API keys, SMTP passwords and forwarder tokens never reach a log."""

    def test_logs_hold_no_secret(self):
        smtp_pw, bearer, fwd_pw = "SmtpPw-" + uuid.uuid4().hex, "Bearer-" + uuid.uuid4().hex, \
            "FwdPw-" + uuid.uuid4().hex
        env = dict(ENV, COMMCARE_SMTP_URL=f"smtp://reports:{smtp_pw}@127.0.0.1:1?timeout_ms=500")
        access_log = os.path.join(tempfile.mkdtemp(prefix="cc-sec-log-"), "access.log")
        s = Server("--access-log", access_log, pillows=True, env=env)
        try:
            s.make_user("doma", "mobL", "MobPw-secret-1")
            key = s.request("POST", "/a/doma/api/users/mobL/api_key").json()["key"]
            for f in [{"id": "fb", "url": "http://127.0.0.1:1/hook", "auth": "bearer",
                       "token": bearer},
                      {"id": "fp", "url": "http://127.0.0.1:1/hook", "auth": "basic",
                       "username": "u", "password": fwd_pw}]:
                r = s.request("POST", "/a/doma/api/forwarders/", f)
                self.assertEqual(r.status, 201, r)
            self.assertEqual(s.submit(cc_server.form_xml(), "doma", ("mobL", "MobPw-secret-1")).status, 201)
            self.assertEqual(s.request("GET", "/a/doma/phone/restore/", auth=f"ApiKey mobL:{key}").status, 200)
            self.assertEqual(s.request("GET", "/a/doma/phone/restore/",
                                       auth=("mobL", "WrongPw-secret-2")).status, 401)
            self.assertEqual(s.request("POST", "/console/api/login",
                                       {"username": "mobL", "password": "WrongPw-secret-3"},
                                       auth=None).status, 401)
            s.request("PUT", "/a/doma/api/users/mobL/", {"password": "NewPw-secret-4"})
            r = s.request("PUT", "/a/doma/api/reports/r1", {"title": "t", "recipients": ["a@b.c"],
                                                            "columns": []})
            s.request("POST", "/a/doma/api/reports/r1/send")
            deadline = time.time() + 20  # the forwarders try (and fail) to deliver, and log it
            while time.time() < deadline and "127.0.0.1:1" not in s.stderr():
                time.sleep(0.2)
        finally:
            s.stop(cleanup=False)
        logs = ""
        for path in [os.path.join(s.tmp, "stderr.log"), access_log]:
            with open(path) as f:
                logs += f.read()
        shutil.rmtree(s.tmp, ignore_errors=True)
        shutil.rmtree(os.path.dirname(access_log), ignore_errors=True)
        self.assertIn("127.0.0.1:1", logs)  # the deliveries were logged
        self.assertIn("/phone/restore/", logs)
        for secret in [smtp_pw, bearer, fwd_pw, key, "MobPw-secret-1", "WrongPw-secret-2",
                       "WrongPw-secret-3", "NewPw-secret-4", "adminpw"]:
            self.assertNotIn(secret, logs)


if __name__ == "__main__":
    unittest.main()
