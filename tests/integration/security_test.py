#!/usr/bin/env python3
"""The security audit of 2026-12-05 (defects D1-D16), one attack per test, each asserting the fixed
behaviour: per-domain permissions and API keys (D1, D13, D16), restore-as (D2), UCR table names
(D3), handler starvation (D4), pre-authentication bodies (D5), fd exhaustion and a connection cap
(D6), Digest replay and nonces (D7, D15), login throttling (D8), the username gate (D9), data
directory modes (D10), bulk_fetch caps (D11), user enumeration by timing (D12), input validation
(D14) and a walk of every admin route as another domain's manager.
Usage: security_test.py COMMCARE"""
import datetime
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import unittest
import uuid

import cc_server
from cc_server import ADMIN, ENV, basic, case_block, digest_header, form_xml, parse_challenge

CC = sys.argv[1]
del sys.argv[1:2]

WEBA, MOBA = ("webA", "pwA-web"), ("mobA", "pwA-mob")
WEBB, MOBB, APIB = ("webB", "pwB-web"), ("mobB", "pwB-mob"), ("apiB", "pwB-api")
ALL_PERMS = ["edit_data", "access_api", "access_mobile_endpoints", "manage_users"]


def cc(*args, expect=0):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True, timeout=60)
    if p.returncode != expect:
        raise AssertionError(f"{args}: exit {p.returncode}: {p.stdout} {p.stderr}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


class Server(cc_server.Server):
    def __init__(self, *flags, **kw):
        super().__init__(CC, *flags, **kw)


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_iso(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------
# The audit's setup on one server with pillows: D1, D2, D3, D7, D11, D13, D14, D15, D16, the walk.
# ---------------------------------------------------------------------------------------------
class DomainIsolationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = s = Server(pillows=True)
        try:
            s.make_domain("domb")
            cls.users = {}
            for d, (u, p), web, perms in [
                    ("doma", WEBA, True, ALL_PERMS), ("doma", MOBA, False, None),
                    ("domb", WEBB, True, ALL_PERMS), ("domb", MOBB, False, None),
                    ("domb", APIB, True, ["access_api"]),
                    # Beyond the audit's setup: users each test can spend without touching the others.
                    ("domb", ("mobB2", "pwB2-mob"), False, None),
                    ("domb", ("mobK1", "pwK1-mob"), False, None),
                    ("domb", ("mobK2", "pwK2-mob"), False, None),
                    ("domb", ("mobK3", "pwK3-mob"), False, None),
                    ("doma", ("mobDig", "pwDig-mob"), False, None),
                    ("doma", ("webAB", "pwAB-web"), True, ["access_api"])]:
                cls.users[u] = s.make_user(d, u, p, web=web, perms=perms)
            a_id = cls.users["mobA"]["user_id"]
            r = s.submit(form_xml(case_block("caseA1-secret", a_id, a_id, "A-secret-value-1")), "doma", MOBA)
            assert r.status == 201, r
            for kind, body in [("roles", {"id": "roleA", "name": "roleA", "permissions": ["edit_data"]}),
                               ("locations", {"id": "locA", "name": "locA", "location_type": "clinic"}),
                               ("groups", {"id": "groupA", "name": "groupA", "users": [a_id]}),
                               ("apps", {"id": "appA", "name": "appA"})]:
                r = s.request("POST", f"/a/doma/api/{kind}/", body)
                assert r.status == 201, (kind, r)
            r = s.request("POST", "/a/domb/api/roles/", {"id": "roleB", "name": "roleB",
                                                         "permissions": ["access_api"]})
            assert r.status == 201, r
        except BaseException:
            s.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def get_user(self, domain, name):
        r = self.s.request("GET", f"/a/{domain}/api/users/{name}")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def restore_status(self, auth, domain="domb"):
        return self.s.request("GET", f"/a/{domain}/phone/restore/", auth=auth).status

    def new_key(self, domain, user, auth, body=None, expect=201):
        r = self.s.request("POST", f"/a/{domain}/api/users/{user}/api_key", body, auth=auth)
        self.assertEqual(r.status, expect, (domain, user, auth[0], r))
        if expect == 201:
            k = r.json()
            self.assertLessEqual({"username", "key", "id", "expires"}, set(k), k)
            self.assertEqual(k["username"], user)
            return k
        return None

    # -- D1, D13: who may hold a key, listing, revocation, expiry ---------------------------------
    def test_d01_d13_api_keys(self):
        s = self.s
        # D1: a manager of domb cannot mint the superuser's key (nor anyone's outside the rule).
        for d, target, who in [("domb", "admin", WEBB), ("doma", "admin", WEBA), ("domb", "mobA", WEBB),
                               ("doma", "mobA", WEBB)]:
            r = s.request("POST", f"/a/{d}/api/users/{target}/api_key", auth=who)
            self.assertIn(r.status, (403, 404), (d, target, who[0], r))
        for d, target, who in [("domb", "apiB", WEBB),     # a web user, even of domb only
                               ("domb", "webAB", WEBB),    # (not in domb today: 404 is fine too)
                               ("domb", "mobK1", MOBB)]:   # not a manager
            r = s.request("POST", f"/a/{d}/api/users/{target}/api_key", auth=who)
            self.assertIn(r.status, (403, 404) if target == "webAB" else (403,), (d, target, who[0], r))
        # Allowed: a manager for a mobile worker of its domain only; oneself; a superuser for anyone.
        k1 = self.new_key("domb", "mobK1", WEBB)
        k1own = self.new_key("domb", "mobK1", ("mobK1", "pwK1-mob"))
        kapi = self.new_key("domb", "apiB", APIB)
        kweba = self.new_key("doma", "webA", ADMIN)
        self.assertEqual(self.restore_status(f"ApiKey mobK1:{k1['key']}"), 200)
        self.assertEqual(s.request("GET", "/a/domb/api/case/v2/", auth=f"ApiKey apiB:{kapi['key']}").status, 200)
        self.assertEqual(s.request("GET", "/a/doma/api/case/v2/", auth=f"ApiKey webA:{kweba['key']}").status, 200)
        # Listing: ids and dates, never the key itself.
        for who in (WEBB, ("mobK1", "pwK1-mob")):
            r = s.request("GET", "/a/domb/api/users/mobK1/api_key/", auth=who)
            self.assertEqual(r.status, 200, r)
            listed = r.json()["api_keys"]
            self.assertLessEqual({k1["id"], k1own["id"]}, {k["id"] for k in listed})
            for k in listed:
                self.assertLessEqual({"id", "created", "expires"}, set(k), k)
            self.assertNotIn(k1["key"].encode(), r.body)
            self.assertNotIn(k1own["key"].encode(), r.body)
        self.assertEqual(s.request("GET", "/a/domb/api/users/apiB/api_key/", auth=WEBB).status, 403)
        self.assertEqual(s.request("GET", "/a/domb/api/users/apiB/api_key/", auth=APIB).status, 200)
        self.assertIn(s.request("GET", "/a/domb/api/users/admin/api_key/", auth=WEBB).status, (403, 404))
        # Revocation by id: that key is refused, the other one still works.
        self.assertEqual(s.request("DELETE", f"/a/domb/api/users/mobK1/api_key/{k1['id']}", auth=APIB).status, 403)
        r = s.request("DELETE", f"/a/domb/api/users/mobK1/api_key/{k1['id']}", auth=WEBB)
        self.assertEqual(r.status, 200, r)
        self.assertEqual({k: r.json().get(k) for k in ("id", "revoked")}, {"id": k1["id"], "revoked": True})
        self.assertEqual(self.restore_status(f"ApiKey mobK1:{k1['key']}"), 401)
        self.assertEqual(self.restore_status(f"ApiKey mobK1:{k1own['key']}"), 200)
        r = s.request("DELETE", f"/a/doma/api/users/webA/api_key/{kweba['id']}", auth=WEBB)
        self.assertIn(r.status, (403, 404), r)
        r = s.request("DELETE", f"/a/domb/api/users/webA/api_key/{kweba['id']}", auth=WEBB)
        self.assertIn(r.status, (403, 404), r)
        self.assertEqual(s.request("GET", "/a/doma/api/case/v2/", auth=f"ApiKey webA:{kweba['key']}").status, 200)
        # Expiry: an explicit time, and a number of days.
        expires_at = time.time() + 3
        kexp = self.new_key("domb", "mobK2", ADMIN, {"expires": iso(expires_at)})
        self.assertAlmostEqual(parse_iso(kexp["expires"]), int(expires_at), delta=2)
        kdays = self.new_key("domb", "mobK2", ("mobK2", "pwK2-mob"), {"expires_in_days": 30})
        self.assertAlmostEqual(parse_iso(kdays["expires"]), time.time() + 30 * 86400, delta=3600)
        self.assertEqual(self.restore_status(f"ApiKey mobK2:{kexp['key']}"), 200)
        # D13: revoke_api_keys drops every key of the user.
        k3a = self.new_key("domb", "mobK3", ("mobK3", "pwK3-mob"))
        k3b = self.new_key("domb", "mobK3", WEBB)
        self.assertEqual(self.restore_status(f"ApiKey mobK3:{k3a['key']}"), 200)
        rev = self.get_user("domb", "mobK3")["_rev"]
        r = s.request("PUT", "/a/domb/api/users/mobK3", {"_rev": rev, "revoke_api_keys": True})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.restore_status(f"ApiKey mobK3:{k3a['key']}"), 401)
        self.assertEqual(self.restore_status(f"ApiKey mobK3:{k3b['key']}"), 401)
        self.assertEqual(self.restore_status(("mobK3", "pwK3-mob")), 200)  # the password still works
        time.sleep(max(0.0, expires_at + 1.5 - time.time()))
        self.assertEqual(self.restore_status(f"ApiKey mobK2:{kexp['key']}"), 401)
        self.assertEqual(self.restore_status(f"ApiKey mobK2:{kdays['key']}"), 200)

    # -- D2: restore-as only for mobile workers of the domain, never with a password hash ----------
    def test_d02_restore_as(self):
        s = self.s
        for path, who in [("/a/domb/phone/restore/?as=admin", WEBB),
                          ("/a/domb/phone/restore/?as=admin@domb.commcarehq.org", WEBB),
                          ("/a/domb/phone/restore/?as=apiB", WEBB),
                          ("/a/domb/phone/restore/?as=webB", ADMIN),
                          ("/a/doma/phone/restore/?as=webA", ADMIN),
                          ("/a/doma/phone/restore/?as=admin", WEBA)]:
            r = s.request("GET", path, auth=who)
            self.assertIn(r.status, (401, 403), (path, who[0], r.status))
            self.assertNotIn(b"<password", r.body)
        for path, who, name in [("/a/domb/phone/restore/?as=mobB", WEBB, b"mobB"),
                                ("/a/doma/phone/restore/?as=mobA", WEBA, b"mobA"),
                                ("/a/domb/phone/restore/", WEBB, b"webB")]:
            r = s.request("GET", path, auth=who)
            self.assertEqual(r.status, 200, (path, r))
            self.assertIn(b"<username>" + name + b"</username>", r.body)
            # commcare-core's UserXmlParser needs the element, so it is there, empty.
            self.assertIn(b"<password></password>", r.body, path)
            self.assertNotIn(b"pbkdf2", r.body, path)
        r = s.request("GET", "/a/domb/phone/restore/", auth=MOBB)
        self.assertEqual(r.status, 200, r)
        self.assertRegex(r.body, rb"<password>pbkdf2_sha256\$[^<]+</password>")

    # -- D3: UCR tables of (doma, pat_list) and (doma-pat, list) stay apart ------------------------
    def test_d03_ucr_tables_do_not_collide(self):
        s = self.s

        def rows(domain, table, auth):
            r = s.request("GET", f"/a/{domain}/api/ucr/{table}/?limit=5000", auth=auth)
            self.assertEqual(r.status, 200, (domain, table, r))
            return r.json()["rows"]

        def secrets(domain, table, auth):
            return {row.get("secret") for row in rows(domain, table, auth)}

        r = s.request("POST", "/a/doma/api/case/v2/", {"case_type": "patient", "case_name": "alpha",
                                                       "properties": {"secret": "A-only-value-1"}}, auth=WEBA)
        self.assertEqual(r.status, 200, r)  # HQ's case_api answers a write with 200
        s.make_domain("doma-pat")
        webp = ("webP", "pwP-web")
        s.make_user("doma-pat", *webp, web=True, perms=["access_api", "edit_data"])
        r = s.request("POST", "/a/doma-pat/api/case/v2/", {"case_type": "patient", "case_name": "pcase",
                                                           "properties": {"secret": "P-only-value-1"}}, auth=webp)
        self.assertEqual(r.status, 200, r)
        config = {"domain": "doma", "table_id": "pat_list", "referenced_doc_type": "CommCareCase",
                  "configured_indicators": [{"type": "raw", "column_id": "name", "property_name": "name"},
                                            {"type": "raw", "column_id": "secret", "property_name": "secret"}]}
        va, vp = os.path.join(s.tmp, "v.json"), os.path.join(s.tmp, "a.json")
        with open(va, "w") as f:
            json.dump(config, f)
        with open(vp, "w") as f:
            json.dump(dict(config, domain="doma-pat", table_id="list"), f)
        # Another process sees the server's newest commits once they are flushed from its redo
        # log to SQLite (within a second or so): load again until both cases are there.
        def load_until(path, rows):
            deadline = time.time() + 10
            while True:
                loaded = cc("ucr", "load", "--data", s.data, path)[0]
                if loaded["rows"] >= rows or time.time() > deadline:
                    return loaded
                time.sleep(0.3)

        loaded = load_until(va, 2)
        self.assertGreaterEqual(loaded["rows"], 2, loaded)  # caseA1-secret and alpha
        self.assertIn("A-only-value-1", secrets("doma", "pat_list", WEBA))
        loaded = load_until(vp, 1)  # the other domain's case, once flushed as well
        self.assertEqual(loaded["rows"], 1, loaded)
        # Loading the second source left the first one's rows; each tenant reads its own.
        a_rows = secrets("doma", "pat_list", WEBA)
        self.assertLessEqual({"A-only-value-1", "A-secret-value-1"}, a_rows)
        self.assertNotIn("P-only-value-1", a_rows)
        self.assertEqual(secrets("doma-pat", "list", webp), {"P-only-value-1"})
        # A new case of doma reaches doma's table through the pillow, and never doma-pat's.
        r = s.request("POST", "/a/doma/api/case/v2/", {"case_type": "patient", "case_name": "victim",
                                                       "properties": {"secret": "A-only-value-2"}}, auth=WEBA)
        self.assertEqual(r.status, 200, r)
        deadline = time.time() + 15
        while "A-only-value-2" not in secrets("doma", "pat_list", WEBA) and time.time() < deadline:
            time.sleep(0.2)
        self.assertIn("A-only-value-2", secrets("doma", "pat_list", WEBA))
        self.assertEqual(secrets("doma-pat", "list", webp), {"P-only-value-1"})
        self.assertEqual(s.request("GET", "/a/doma/api/ucr/pat_list/", auth=webp).status, 403)

    # -- D7: a Digest header is good once; nc must grow; qop is required --------------------------
    def test_d07_digest_replay(self):
        s, path = self.s, "/a/doma/receiver/"
        user, pw = "mobDig", "pwDig-mob"
        ch = parse_challenge(s.request("POST", path, body=b"", auth=None))
        h1 = digest_header(user, pw, "POST", path, ch["nonce"], realm=ch["realm"], opaque=ch.get("opaque"))
        self.assertEqual(s.submit(form_xml(xmlns="http://a/first"), "doma", h1).status, 201)
        self.assertEqual(s.submit(form_xml(xmlns="http://attacker/replayed"), "doma", h1).status, 401)
        h2 = digest_header(user, pw, "POST", path, ch["nonce"], realm=ch["realm"], nc="00000002",
                           opaque=ch.get("opaque"))
        self.assertEqual(s.submit(form_xml(xmlns="http://a/second"), "doma", h2).status, 201)
        ch = parse_challenge(s.request("POST", path, body=b"", auth=None))
        h = digest_header(user, pw, "POST", path, ch["nonce"], realm=ch["realm"], qop=False,
                          opaque=ch.get("opaque"))
        self.assertEqual(s.submit(form_xml(xmlns="http://a/rfc2069"), "doma", h).status, 401)

    # -- D11: bulk-fetch is capped; a repeated id is read once --------------------------------
    def test_d11_bulk_fetch_caps(self):
        path = "/a/doma/api/case/v2/bulk-fetch/"
        r = self.s.request("POST", path, {"case_ids": ["caseA1-secret"] + [f"nope-{i}" for i in range(5000)]},
                           auth=WEBA)
        self.assertEqual(r.status, 400, r)
        r = self.s.request("POST", path, {"case_ids": ["caseA1-secret"] * 2,
                                          "external_ids": ["x"] * 4999}, auth=WEBA)
        self.assertEqual(r.status, 400, r)  # HQ's get_bulk: case ids and external ids together
        # HQ's get_bulk answers one entry per id asked (each repeat too); the server reads the
        # case once.
        r = self.s.request("POST", path, {"case_ids": ["caseA1-secret"] * 100}, auth=WEBA)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["matching_records"], 100)
        self.assertEqual({c["case_id"] for c in r.json()["cases"]}, {"caseA1-secret"})

    # -- D14: cursors, date bounds, timeouts and X-Submit-Time are validated ---------------------
    def test_d14_input_validation(self):
        s = self.s
        for q in ["cursor=0:0'%20OR%201=1", "cursor=1:2:3", "last_modified.gte=notadate"]:
            r = s.request("GET", f"/a/doma/api/case/v2/?{q}", auth=WEBA)
            self.assertEqual(r.status, 400, (q, r))
        for t in ["nan", "inf", "-1"]:
            r = s.request("GET", f"/a/doma/api/changes/?timeout={t}", auth=WEBA)
            self.assertEqual(r.status, 400, (t, r))
        for t in ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2024-01-01T00:00:00+99:99",
                  "1970-01-01T00:00:00Z"]:
            r = s.submit(form_xml(), "doma", WEBA, headers={"X-Submit-Time": t})
            self.assertEqual(r.status, 400, (t, r))
        r = s.submit(form_xml(), "doma", WEBA, headers={"X-Submit-Time": iso(time.time() - 3600)})
        self.assertEqual(r.status, 201, r)

    # -- D15: opaque is not part of the nonce; future nonces are refused --------------------------
    def test_d15_digest_nonce(self):
        s, path = self.s, "/a/doma/receiver/"
        challenges = []
        for _ in range(3):
            challenges.append(parse_challenge(s.request("POST", path, body=b"", auth=None)))
            time.sleep(0.5)
        challenges.append(parse_challenge(s.request("POST", path, body=b"", auth=None), "SHA-256"))
        opaques = {c.get("opaque") for c in challenges}
        self.assertEqual(len(opaques), 1, opaques)
        opaque = opaques.pop()
        self.assertTrue(opaque)
        for c in challenges:
            for part in re.split(r"[^0-9A-Za-z]+", c["nonce"]) + [c["nonce"]]:
                self.assertNotIn(opaque, part, c["nonce"])
        # The hex timestamp part moved an hour ahead: refused.
        ch = challenges[-2]
        parts, now, at = ch["nonce"].split("."), time.time(), None
        for i, p in enumerate(parts):
            if re.fullmatch(r"[0-9a-fA-F]{6,16}", p) and abs(int(p, 16) - now) < 600:
                at = i
        self.assertIsNotNone(at, f"no hex timestamp part in nonce {ch['nonce']}")
        parts[at] = format(int(parts[at], 16) + 3600, "x")
        forged = ".".join(parts)
        h = digest_header("mobDig", "pwDig-mob", "POST", path, forged, realm=ch["realm"], opaque=opaque)
        self.assertEqual(s.submit(form_xml(), "doma", h).status, 401)

    # -- D16: permissions per domain; managers cannot take over shared users -----------------------
    def test_d16_per_domain_permissions(self):
        s = self.s
        webab = ("webAB", "pwAB-web")
        rev = self.get_user("doma", "webAB")["_rev"]
        r = s.request("PUT", "/a/doma/api/users/webAB", {"_rev": rev, "domains": ["doma", "domb"]})
        self.assertEqual(r.status, 200, r)
        rev = self.get_user("domb", "webAB")["_rev"]
        r = s.request("PUT", "/a/domb/api/users/webAB", {"_rev": rev, "permissions": ["edit_data"]})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(set(self.get_user("doma", "webAB")["permissions"]), {"access_api"})
        self.assertEqual(set(self.get_user("domb", "webAB")["permissions"]), {"edit_data"})
        self.assertEqual(s.request("GET", "/a/doma/api/case/v2/", auth=webab).status, 200)
        self.assertEqual(s.request("GET", "/a/domb/api/case/v2/", auth=webab).status, 403)
        # A manager of domb: only role_id and permissions of a user who is also in doma.
        for field, value in [("password", "pwned-by-b"), ("is_active", False), ("user_data", {"x": "y"}),
                             ("web_user", False), ("location_ids", []), ("domains", ["domb"])]:
            rev = self.get_user("domb", "webAB")["_rev"]
            r = s.request("PUT", "/a/domb/api/users/webAB", {"_rev": rev, field: value}, auth=WEBB)
            self.assertEqual(r.status, 403, (field, r))
        self.assertEqual(s.request("GET", "/a/doma/api/case/v2/", auth=webab).status, 200)
        rev = self.get_user("domb", "webAB")["_rev"]
        r = s.request("PUT", "/a/domb/api/users/webAB",
                      {"_rev": rev, "permissions": ["access_api", "manage_users"]}, auth=WEBB)
        self.assertEqual(r.status, 200, r)
        rev = self.get_user("domb", "webAB")["_rev"]
        r = s.request("PUT", "/a/domb/api/users/webAB", {"_rev": rev, "role_id": "roleB"}, auth=WEBB)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(set(self.get_user("doma", "webAB")["permissions"]), {"access_api"})
        self.assertEqual(set(self.get_user("domb", "webAB")["permissions"]), {"access_api", "manage_users"})
        self.assertEqual(s.request("GET", "/a/doma/api/users/", auth=webab).status, 403)
        self.assertEqual(s.request("GET", "/a/domb/api/users/", auth=webab).status, 200)
        # Only a superuser sends `domains`.
        rev = self.get_user("domb", "mobB")["_rev"]
        r = s.request("PUT", "/a/domb/api/users/mobB", {"_rev": rev, "domains": ["domb"]}, auth=WEBB)
        self.assertEqual(r.status, 403, r)
        r = s.request("POST", "/a/doma/api/users/", {"username": "mobX", "password": "pwX-mob",
                                                     "domains": ["doma", "domb"]}, auth=WEBA)
        self.assertEqual(r.status, 403, r)
        self.assertEqual(s.request("GET", "/a/doma/api/users/mobX").status, 404)
        # Superusers are invisible to everyone else.
        for d, who in [("domb", WEBB), ("doma", WEBA)]:
            self.assertEqual(s.request("GET", f"/a/{d}/api/users/admin", auth=who).status, 404)
            rev = self.get_user("doma", "admin")["_rev"]
            r = s.request("PUT", f"/a/{d}/api/users/admin", {"_rev": rev, "password": "pwned-pw"}, auth=who)
            self.assertEqual(r.status, 404, r)
        # A user of domb alone stays fully the manager's to change (HQ parity).
        rev = self.get_user("domb", "mobB2")["_rev"]
        r = s.request("PUT", "/a/domb/api/users/mobB2", {"_rev": rev, "password": "pwB2-new",
                                                         "user_data": {"k": "v"}}, auth=WEBB)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.restore_status(("mobB2", "pwB2-new")), 200)

    # -- The walk: every admin route as domb's manager, against domain A and the superuser ---------
    def snapshot(self):
        s, out = self.s, {}
        paths = ["/api/domains/", "/a/doma/api/users/", "/a/domb/api/users/"]
        for d in ("doma", "domb"):
            paths += [f"/a/{d}/api/users/{u}" for u in ("admin", "webA", "mobA", "webB", "mobB", "apiB")]
            paths += [f"/a/{d}/api/{k}/" for k in ("roles", "groups", "locations", "apps")]
        paths += [f"/a/doma/api/{k}/{i}/" for k, i in [("roles", "roleA"), ("groups", "groupA"),
                                                       ("locations", "locA"), ("apps", "appA")]]
        paths += [f"/a/doma/api/users/{u}/api_key/" for u in ("admin", "webA", "mobA")]
        for p in paths:
            r = s.request("GET", p)
            out[p] = (r.status, r.json())
        return out

    def test_walk_admin_routes_as_other_domain_manager(self):
        s = self.s
        # Keys the superuser made for domain A's users: webB must not be able to drop them.
        keys = {}
        for u in ("admin", "webA", "mobA"):
            r = s.request("POST", f"/a/doma/api/users/{u}/api_key")
            self.assertEqual(r.status, 201, r)
            keys[u] = r.json()
        before = self.snapshot()
        revs = {u: self.get_user("doma", u)["_rev"] for u in ("admin", "webA", "mobA")}
        doc_revs = {}
        for kind, i in [("roles", "roleA"), ("groups", "groupA"), ("locations", "locA"), ("apps", "appA")]:
            r = s.request("GET", f"/a/doma/api/{kind}/{i}/")
            self.assertEqual(r.status, 200, r)
            doc_revs[kind] = r.json()["_rev"]
        tried = []

        def attempt(method, path, body=None):
            r = s.request(method, path, body, auth=WEBB)
            tried.append((method, path, r.status, r.body[:120]))

        for d in ("domb", "doma"):
            for u in ("admin", "webA", "mobA"):
                attempt("GET", f"/a/{d}/api/users/{u}")
                attempt("GET", f"/a/{d}/api/users/{u}/")
                for change in [{"password": "pwned-by-b"}, {"permissions": ALL_PERMS}, {"is_active": False},
                               {"role_id": "roleA"}, {"role_id": "roleB"}, {"domains": ["doma", "domb"]},
                               {"web_user": True, "permissions": ALL_PERMS}, {"user_data": {"pwned": "1"}},
                               {"location_ids": ["locA"]}, {"revoke_api_keys": True}]:
                    attempt("PUT", f"/a/{d}/api/users/{u}", dict(change, _rev=revs[u]))
                attempt("POST", f"/a/{d}/api/users/{u}/api_key")
                attempt("POST", f"/a/{d}/api/users/{u}/api_key", {"expires_in_days": 1})
                attempt("GET", f"/a/{d}/api/users/{u}/api_key/")
                attempt("GET", f"/a/{d}/api/users/{u}/api_key")
                attempt("DELETE", f"/a/{d}/api/users/{u}/api_key/{keys[u].get('id', 'none')}")
            for u in ("admin", "mobA", "webA"):
                attempt("POST", f"/a/{d}/api/users/", {"username": u, "password": "pwned-by-b", "web_user": True,
                                                       "permissions": ALL_PERMS})
        attempt("GET", "/a/doma/api/users/")
        attempt("POST", "/a/doma/api/users/", {"username": "evilA", "password": "pwned-by-b"})
        attempt("GET", "/api/domains/")
        attempt("GET", "/api/domains")
        attempt("POST", "/api/domains/", {"name": "pwned-by-b"})
        for kind, i, body in [("roles", "roleA", {"name": "pwned", "permissions": ALL_PERMS}),
                              ("groups", "groupA", {"name": "pwned"}),
                              ("locations", "locA", {"name": "pwned", "location_type": "t"}),
                              ("apps", "appA", {"name": "pwned"})]:
            rev = doc_revs[kind]
            attempt("GET", f"/a/doma/api/{kind}/")
            attempt("GET", f"/a/doma/api/{kind}/{i}/")
            attempt("POST", f"/a/doma/api/{kind}/", body)
            attempt("POST", f"/a/doma/api/{kind}/", dict(body, id=f"new-{kind}"))
            attempt("PUT", f"/a/doma/api/{kind}/{i}/", dict(body, _rev=rev))
            attempt("DELETE", f"/a/doma/api/{kind}/{i}/?_rev={rev}")
            attempt("GET", f"/a/domb/api/{kind}/{i}/")
            attempt("PUT", f"/a/domb/api/{kind}/{i}/", dict(body, _rev=rev))
            attempt("DELETE", f"/a/domb/api/{kind}/{i}/?_rev={rev}")
            attempt("POST", f"/a/domb/api/{kind}/", dict(body, id=i))
        for name in ("admin", "mobA", "webA", "mobA@doma.commcarehq.org", "admin@domb.commcarehq.org"):
            attempt("GET", f"/a/domb/phone/restore/?as={name}")
            attempt("GET", f"/a/doma/phone/restore/?as={name}")
        self.assertEqual([t for t in tried if 200 <= t[2] < 300], [])
        # Nothing changed: the superuser's password, every user, domain and document, every key.
        self.assertEqual(s.request("GET", "/api/domains/", auth=ADMIN).status, 200)
        after = self.snapshot()
        for p in before:
            self.assertEqual(before[p], after[p], p)
        self.assertEqual(s.request("GET", "/api/domains/", auth=f"ApiKey admin:{keys['admin'].get('key')}").status, 200)
        self.assertEqual(s.request("GET", "/a/doma/api/case/v2/", auth=f"ApiKey webA:{keys['webA'].get('key')}").status, 200)
        self.assertEqual(s.request("GET", "/a/doma/phone/restore/", auth=f"ApiKey mobA:{keys['mobA'].get('key')}").status, 200)
        self.assertEqual(s.request("GET", "/a/doma/phone/restore/", auth=MOBA).status, 200)


# ---------------------------------------------------------------------------------------------
# D4: long-polls and unread restores do not starve other tenants' submissions.
# ---------------------------------------------------------------------------------------------
class StarvationTest(unittest.TestCase):
    def test_d04_long_polls_and_unread_restores_do_not_block_submissions(self):
        s = Server("--max-long-polls-per-user", "4", "--max-streams-per-user", "4")
        polls, socks = [], []
        try:
            s.make_domain("domb")
            s.make_domain("domc")
            s.make_user("doma", *MOBA)
            pollers = [(f"apiP{i}", f"pwP{i}-api") for i in range(4)]
            for u, p in pollers:
                s.make_user("domb", u, p, web=True, perms=["access_api"])
            # Four mobile workers with large footprints: ~5.5 MB restores each.
            big = [(f"bigC{i}", f"pwC{i}-mob") for i in range(4)]
            value = "x" * 1500
            for u, p in big:
                uid = s.make_user("domc", u, p)["user_id"]
                cases = "".join(case_block(f"{u}-case-{j}", uid, uid, value) for j in range(3000))
                r = s.submit(form_xml(cases), "domc", (u, p))
                self.assertEqual(r.status, 201, r)
                r = s.request("GET", "/a/domc/phone/restore/", auth=(u, p))  # and the cache is warm
                self.assertEqual(r.status, 200, r)
                self.assertGreater(len(r.body), 4_000_000)
            # The changes token at the end of the log (domb has nothing after it).
            token, same = "", 0
            for _ in range(200):
                r = s.request("GET", f"/a/domb/api/changes/?limit=1000&since={token}", auth=pollers[0])
                self.assertEqual(r.status, 200, r)
                page = r.json()
                same = same + 1 if not page["changes"] and page["next_since"] == token else 0
                token = page["next_since"]
                if same >= 2:
                    break
            self.assertGreaterEqual(same, 2, "the changes feed never came to an end")
            # 16 restores nobody reads, 4 per worker.
            for u, p in big:
                for _ in range(4):
                    sock = socket.socket()
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    sock.settimeout(5)
                    sock.connect(("127.0.0.1", s.port))
                    sock.sendall(f"GET /a/domc/phone/restore/ HTTP/1.1\r\nHost: x\r\n"
                                 f"Authorization: {basic(u, p)}\r\n\r\n".encode())
                    socks.append(sock)
            # 16 long-polls, 4 per user.
            results = {}

            def poll(i, auth, conn):
                try:
                    conn.request("GET", f"/a/domb/api/changes/?timeout=20&since={token}",
                                 headers={"Authorization": basic(*auth)})
                    r = conn.getresponse()
                    r.read()
                    results[i] = r.status
                except Exception as e:  # closed by the clean-up below
                    results[i] = repr(e)

            for i in range(16):
                conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=40)
                t = threading.Thread(target=poll, args=(i, pollers[i % 4], conn), daemon=True)
                t.start()
                polls.append((t, conn))
            time.sleep(1.5)
            # Another tenant's phone submits: answered at once.
            t0 = time.time()
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
            try:
                conn.request("POST", "/a/doma/receiver/", body=form_xml(),
                             headers={"Authorization": basic(*MOBA), "Content-Type": "text/xml"})
                status = conn.getresponse().status
            except (socket.timeout, TimeoutError):
                status = "no answer within 5 s"
            finally:
                conn.close()
            elapsed = time.time() - t0
            self.assertEqual(status, 201, f"after {elapsed:.1f} s")
            self.assertLess(elapsed, 2.0)
            # The 16 polls and 16 restores were really held all along.
            self.assertEqual(results, {}, "long-polls answered before their timeout")
            deadline = time.time() + 3
            for sock in socks:
                sock.settimeout(max(0.05, deadline - time.time()))
                try:
                    head = sock.recv(12, socket.MSG_PEEK | socket.MSG_WAITALL)
                except (socket.timeout, TimeoutError):
                    head = b"(nothing yet)"
                self.assertEqual(head, b"HTTP/1.1 200")
            # A fifth long-poll by the same user: 429 with Retry-After.
            try:
                r = s.request("GET", f"/a/domb/api/changes/?timeout=20&since={token}", auth=pollers[0], timeout=5)
                got = (r.status, r.header("Retry-After") is not None)
            except (socket.timeout, TimeoutError):
                got = "no answer within 5 s"
            self.assertEqual(got, (429, True))
        finally:
            for sock in socks:
                sock.close()
            for t, conn in polls:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except (OSError, AttributeError):
                    pass
            s.proc.kill()
            for t, conn in polls:
                t.join(2)
            s.stop()


# ---------------------------------------------------------------------------------------------
# D5: no body is read before authentication.
# ---------------------------------------------------------------------------------------------
class PreAuthBodyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server()

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    HEAD = (b"POST /a/doma/receiver/ HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
            b"Content-Length: 146800640\r\n")

    def status_line(self, extra=b""):
        sock = socket.create_connection(("127.0.0.1", self.s.port), timeout=2)
        try:
            sock.sendall(self.HEAD + extra + b"\r\n")
            out, deadline = b"", time.time() + 2
            while b"\r\n" not in out and time.time() < deadline:
                sock.settimeout(max(0.01, deadline - time.time()))
                try:
                    chunk = sock.recv(4096)
                except (socket.timeout, TimeoutError):
                    break
                if not chunk:
                    break
                out += chunk
            return out.split(b"\r\n")[0]
        finally:
            sock.close()

    def test_d05a_anonymous_large_body_refused_at_once(self):
        self.assertEqual(self.status_line()[:12], b"HTTP/1.1 401")

    def test_d05b_wrong_credentials_large_body_refused_at_once(self):
        auth = f"Authorization: {basic('admin', 'not-the-password')}\r\n".encode()
        self.assertEqual(self.status_line(auth)[:12], b"HTTP/1.1 401")

    def test_d05c_six_anonymous_20mb_bodies_cost_no_memory(self):
        base = self.s.rss_kb()
        socks, pushed = [], []
        lock = threading.Lock()

        def feed():
            sock = socket.create_connection(("127.0.0.1", self.s.port), timeout=5)
            with lock:
                socks.append(sock)
            sent = 0
            try:
                sock.sendall(self.HEAD + b"\r\n")
                for _ in range(20):
                    sock.sendall(b"a" * (1 << 20))
                    sent += 1 << 20
            except OSError:  # refused and closed: what the fix does
                pass
            with lock:
                pushed.append(sent)

        threads = [threading.Thread(target=feed, daemon=True) for _ in range(6)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            time.sleep(0.5)
            grown = max(self.s.rss_kb() for _ in range(3)) - base
            self.assertLess(grown, 50 * 1024, f"RSS grew {grown} kB; pushed {pushed}")
        finally:
            for sock in socks:
                sock.close()
        r = self.s.request("GET", "/health", auth=None)
        self.assertEqual(r.status, 200)


# ---------------------------------------------------------------------------------------------
# D6: out of file descriptors, the server does not spin; --max-connections caps connections.
# ---------------------------------------------------------------------------------------------
class ConnectionLimitTest(unittest.TestCase):
    def test_d06a_fd_exhaustion_does_not_spin(self):
        s = Server(nofile=256)
        socks = []
        try:
            for _ in range(300):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", s.port))
                socks.append(sock)
            time.sleep(0.5)
            c0, t0 = s.cpu_seconds(), time.time()
            time.sleep(3)
            cores = (s.cpu_seconds() - c0) / (time.time() - t0)
            for sock in socks:
                sock.close()
            socks.clear()
            deadline, status = time.time() + 5, None
            while time.time() < deadline and status != 200:
                try:
                    status = s.request("GET", "/health", auth=None, timeout=2).status
                except OSError as e:
                    status = repr(e)
                    time.sleep(0.2)
            self.assertLess(cores, 0.3, f"{cores:.2f} cores while 300 connections were held")
            self.assertEqual(status, 200)
        finally:
            for sock in socks:
                sock.close()
            s.stop()

    def test_d06b_max_connections(self):
        s = Server("--max-connections", "20")
        conns = []
        try:
            for _ in range(20):
                c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                conns.append(c)
            extra = socket.create_connection(("127.0.0.1", s.port), timeout=3)
            got, closed = b"", False
            try:
                deadline = time.time() + 3
                while time.time() < deadline:
                    chunk = extra.recv(4096)
                    if not chunk:
                        closed = True
                        break
                    got += chunk
            except ConnectionResetError:
                closed = True
            except (socket.timeout, TimeoutError):
                pass
            finally:
                extra.close()
            self.assertTrue(closed, f"the 21st connection stayed open ({got[:60]!r})")
            self.assertFalse(got.startswith(b"HTTP/1.1 2"), got[:60])
            for c in conns:
                c.request("GET", "/health")
                r = c.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
        finally:
            for c in conns:
                c.close()
            s.stop()


# ---------------------------------------------------------------------------------------------
# D8: failed logins lock the username, then the client address.
# ---------------------------------------------------------------------------------------------
class LoginThrottleTest(unittest.TestCase):
    def attempt(self, s, auth):
        r = s.request("GET", "/a/doma/phone/restore/", auth=auth)
        return r.status, r.header("Retry-After")

    def test_d08a_lockout_per_user_then_per_address(self):
        s = Server()
        try:
            s.make_user("doma", *MOBA)
            s.make_user("doma", "mobA2", "pwA2-mob")
            got = [self.attempt(s, ("mobA", f"guess{i}"))[0] for i in range(5)]
            self.assertEqual(got, [401] * 5)
            for i in range(2):
                status, retry = self.attempt(s, ("mobA", f"guess-more{i}"))
                self.assertEqual(status, 429)
                self.assertGreaterEqual(int(retry), 1)
            status, retry = self.attempt(s, MOBA)
            self.assertEqual(status, 429, "the right password during the lockout")
            self.assertIsNotNone(retry)
            # Per username: another user of the same address still logs in.
            self.assertEqual(self.attempt(s, ("mobA2", "pwA2-mob"))[0], 200)
            # Per address: more than 50 failures in a minute, over distinct usernames.
            statuses = []

            def burst(k):
                for i in range(13):
                    statuses.append(self.attempt(s, (f"ghost-{k}-{i}", "nope"))[0])

            threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            self.assertEqual(len(statuses), 52)
            self.assertLessEqual(set(statuses), {401, 429})
            status, retry = self.attempt(s, ("ghost-new", "nope"))
            self.assertEqual((status, retry is not None), (429, True))
            self.assertEqual(self.attempt(s, ("mobA2", "pwA2-mob"))[0], 429, "any username")
        finally:
            s.stop()

    def test_d08b_lockout_ends(self):
        s = Server("--lockout-seconds", "2")
        try:
            s.make_user("doma", *MOBA)
            for i in range(5):
                self.assertEqual(self.attempt(s, ("mobA", f"guess{i}"))[0], 401)
            status, retry = self.attempt(s, ("mobA", "guess5"))
            self.assertEqual(status, 429)
            self.assertTrue(retry and 1 <= int(retry) <= 3, retry)
            self.assertEqual(self.attempt(s, MOBA)[0], 429)
            deadline = time.time() + int(retry) + 3
            time.sleep(int(retry) + 0.3)
            status = self.attempt(s, MOBA)[0]
            while status == 429 and time.time() < deadline:
                time.sleep(0.5)
                status = self.attempt(s, MOBA)[0]
            self.assertEqual(status, 200)
        finally:
            s.stop()


# ---------------------------------------------------------------------------------------------
# D9: usernames tried do not stay in memory.
# ---------------------------------------------------------------------------------------------
class UsernameMemoryTest(unittest.TestCase):
    def test_d09_distinct_long_usernames_do_not_grow_memory(self):
        s = Server()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
            for _ in range(20):
                conn.request("GET", "/health")
                conn.getresponse().read()
            conn.close()
            base = s.rss_kb()
            statuses, errors = {}, []
            lock = threading.Lock()

            def run(k):
                conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
                for i in range(k, 3000, 4):
                    name = "u%06d" % i + "x" * 10000
                    hdr = {"Authorization": basic(name, "p")}
                    for _ in range(2):
                        try:
                            conn.request("GET", "/a/doma/phone/restore/", headers=hdr)
                            r = conn.getresponse()
                            r.read()
                            with lock:
                                statuses[r.status] = statuses.get(r.status, 0) + 1
                            break
                        except (http.client.HTTPException, OSError) as e:
                            conn.close()
                            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
                    else:
                        errors.append(i)
                conn.close()

            threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.assertEqual(errors, [])
            self.assertEqual(sum(statuses.values()), 3000)
            self.assertLessEqual(set(statuses), {401, 429}, statuses)
            time.sleep(0.3)
            grown = s.rss_kb() - base
            self.assertLess(grown, 20 * 1024, f"RSS grew {grown} kB over 3000 usernames")
        finally:
            s.stop()


# ---------------------------------------------------------------------------------------------
# D10: the data directory is private, and a readable one is refused.
# ---------------------------------------------------------------------------------------------
class DataDirModeTest(unittest.TestCase):
    def test_d10_data_directory_is_0700(self):
        old = os.umask(0o022)  # the server, not the umask, must make it private
        try:
            s = Server()
        finally:
            os.umask(old)
        data = s.data
        try:
            self.assertEqual(os.stat(data).st_mode & 0o777, 0o700, oct(os.stat(data).st_mode))
            meta = os.path.join(data, "meta.sqlite")
            self.assertEqual(os.stat(meta).st_mode & 0o044, 0, oct(os.stat(meta).st_mode))
            s.stop(cleanup=False)
            os.chmod(data, 0o755)
            p = subprocess.Popen([CC, "serve", "--data", data, "--listen", "127.0.0.1:0", "--no-pillows"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
            first = p.stdout.readline()
            if "listening" in first:
                p.kill()
                p.wait()
                self.fail(f"served a 0755 data directory: {first}")
            try:
                out, err = p.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                self.fail("serve on a 0755 data directory neither served nor exited")
            text = first + out + err
            self.assertNotEqual(p.returncode, 0, text)
            self.assertIn(data, text)
            self.assertIn("chmod", text)
        finally:
            s.stop()


# ---------------------------------------------------------------------------------------------
# D12: an unknown username costs what a known one does.
# ---------------------------------------------------------------------------------------------
class TimingTest(unittest.TestCase):
    def test_d12_unknown_user_not_faster(self):
        s = Server("--login-failures", "1000")
        try:
            s.make_user("doma", "mobT", "pwT-mob")
            known, unknown = [], []
            for i in range(6):
                for name, out in [("mobT", known), (f"nobody-{i}-{uuid.uuid4().hex[:6]}", unknown)]:
                    t0 = time.perf_counter()
                    r = s.request("GET", "/a/doma/phone/restore/", auth=(name, f"wrong-{i}"))
                    out.append(time.perf_counter() - t0)
                    self.assertEqual(r.status, 401, (name, r))
            mk, mu = statistics.median(known), statistics.median(unknown)
            self.assertGreaterEqual(mu, 0.3 * mk, f"unknown {mu * 1000:.1f} ms vs known {mk * 1000:.1f} ms")
        finally:
            s.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
