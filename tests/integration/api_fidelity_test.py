#!/usr/bin/env python3
"""The Case API v2 and the Form API v0.5 as CommCare HQ answers them (issue 22 items 10 and 12;
research/hq-fidelity.md §3-§4), over a real server: each test cites the HQ file it follows.
Usage: api_fidelity_test.py COMMCARE SAMPLES"""
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

from xlsx_helper import xlsx

CC, SAMPLES = sys.argv[1], sys.argv[2]
del sys.argv[1:3]

CASE_NS = "http://commcarehq.org/case/transaction/v2"


def case_form(form_id, blocks, xmlns="http://example.org/fid", received=None):
    return (f'<?xml version="1.0"?><data xmlns="{xmlns}" version="7" uiVersion="1" name="Visit">'
            f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{form_id}</instanceID>'
            f'<userID>u1</userID><deviceID>dev</deviceID></meta><answer>42</answer>{blocks}</data>').encode()


def case_block(case_id, owner, name, props="", index=""):
    return (f'<case xmlns="{CASE_NS}" case_id="{case_id}" date_modified="2020-01-01T00:00:00Z" '
            f'user_id="u1"><create><case_type>person</case_type><case_name>{name}</case_name>'
            f'<owner_id>{owner}</owner_id></create>'
            f'{"<update>" + props + "</update>" if props else ""}'
            f'{"<index>" + index + "</index>" if index else ""}</case>')


def other_type(block):  # a case the list tests (of case_type=person) do not count
    return block.replace("<case_type>person</case_type>", "<case_type>other</case_type>")


class ApiFidelityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cc-api-")
        cls.data = os.path.join(cls.tmp, "data")
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo")
        cls.proc = subprocess.Popen([CC, "serve", "--data", cls.data, "--listen", "127.0.0.1:0"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
        line = cls.proc.stdout.readline()
        assert line, cls.proc.stderr.read()
        cls.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        # Cases for the list filters: three people of owners A, B, C; a child of fid-mum.
        blocks = (case_block("fid-mum", "A", "Maria Quokka", "<village>north</village>") +
                  case_block("fid-dad", "B", "Joao", "<village></village>") +
                  case_block("fid-gran", "C", "Rosa") +
                  case_block("fid-kid", "A", "Bia", "",
                             '<parent case_type="person">fid-mum</parent>'))
        me = object.__new__(cls)  # the helpers below, before any test instance exists
        s, _, body = me.request("POST", "/a/demo/receiver/", case_form("fid-cases", blocks),
                                {"Content-Type": "text/xml"})
        assert s == 201, body
        me.wait_until(lambda: me.list("case_type=person")["matching_records"] == 4)

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

    def wait_until(self, cond):
        for _ in range(400):
            try:
                if cond():
                    return
            except (KeyError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError("timed out waiting for the pillows")

    def list(self, query):
        s, _, body = self.request("GET", f"/a/demo/api/case/v2/?{query}")
        assert s == 200, (query, body)
        return json.loads(body)

    def ids(self, query):
        return {c["case_id"] for c in self.list(query)["cases"]}

    def js(self, method, path, body):
        s, _, out = self.request(method, path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
        return s, json.loads(out)

    # -- item 12: search text ------------------------------------------------------------------
    def test_search_text_is_words_not_query_syntax(self):
        # Case search in HQ quotes user input into its query (corehq/apps/es/case_search.py
        # builds match queries from values, never query-string syntax): FTS5 syntax is text.
        for q in ['"', "NEAR(", "*", "a:b", "((", "-"]:
            s, _, body = self.request("GET", "/a/demo/api/case/v2/?" + urllib.parse.urlencode({"q": q}))
            self.assertEqual(s, 200, (q, body))
        self.assertEqual(self.ids("q=" + urllib.parse.quote("quokka NEAR(")), set())
        self.assertEqual(self.ids("q=" + urllib.parse.quote('"maria quokka')), {"fid-mum"})
        self.assertEqual(self.ids("q=" + urllib.parse.quote("maria:quokka")), {"fid-mum"})
        self.assertEqual(self.ids("q=quok*"), {"fid-mum"})

    # -- Case API v2 lists (corehq/apps/hqcase/api/get_list.py) --------------------------------
    def test_matching_records_is_the_total_and_next_is_absolute(self):
        # get_list: "matching_records": es_result.total; 'next' only while a page is full, made
        # absolute by views._handle_list_view (reverse(..., absolute=True)).
        page = self.list("case_type=person&limit=1")
        self.assertEqual((len(page["cases"]), page["matching_records"]), (1, 4))
        self.assertTrue(page["next"].startswith(f"http://127.0.0.1:{self.port}/a/demo/api/case/v2/?"))
        seen, nxt = [c["case_id"] for c in page["cases"]], page["next"]
        while nxt:
            s, _, body = self.request("GET", nxt[len(f"http://127.0.0.1:{self.port}"):])
            page = json.loads(body)
            seen += [c["case_id"] for c in page["cases"]]
            nxt = page.get("next")
        self.assertEqual(sorted(seen), ["fid-dad", "fid-gran", "fid-kid", "fid-mum"])
        self.assertNotIn("next", self.list("case_type=person&limit=10"))

    def test_list_filters(self):
        # get_list._get_query: a repeated parameter ORs its values; indices.<identifier> is
        # reverse_index_case_query; closed goes through _to_boolean; an unknown key is
        # "'k' is not a valid parameter."
        self.assertEqual(self.ids("owner_id=A&owner_id=B&case_type=person"),
                         {"fid-mum", "fid-kid", "fid-dad"})
        self.assertEqual(self.ids("indices.parent=fid-mum"), {"fid-kid"})
        self.assertEqual(self.ids("indices.parent=nobody"), set())
        self.assertEqual(self.ids("closed=0&case_type=person"), self.ids("closed=false&case_type=person"))
        self.assertEqual(len(self.ids("closed=0&case_type=person")), 4)
        self.assertEqual(self.ids("closed=yes&case_type=person"), set())
        # cases-v2.rst: properties.<p>= (empty) matches cases where p is unset or empty.
        self.assertEqual(self.ids("properties.village=&case_type=person"),
                         {"fid-dad", "fid-gran", "fid-kid"})
        self.assertEqual(self.ids("properties.village=north&properties.village=south&case_type=person"),
                         {"fid-mum"})
        # query=<xpath> (build_filter_from_xpath, corehq/apps/case_search/filter_dsl.py): the
        # documented subset; anything else is a 400 naming it.
        qx = lambda x: self.ids("query=" + urllib.parse.quote(x))
        self.assertEqual(qx("village = 'north'"), {"fid-mum"})
        self.assertEqual(qx("(village = 'north' or village = 'south') and @case_type = 'person'"),
                         {"fid-mum"})
        self.assertEqual(qx("@owner_id = 'A' and @status = 'open' and @case_type = 'person'"), {"fid-mum", "fid-kid"})
        self.assertEqual(qx("name = 'Rosa' or name = 'Joao'"), {"fid-gran", "fid-dad"})
        for bad, named in [("village != 'x'", "'!='"), ("selected(village)", "selected()"),
                           ("selected(village, 'north')", "','"),
                           ("village = 'a' or name = 'b'", "'or'"), ("village = 'x", "not closed"),
                           ("(" * 40 + "village = 'x'" + ")" * 40, "deeper than 32")]:
            s, _, body = self.request("GET", "/a/demo/api/case/v2/?query=" + urllib.parse.quote(bad))
            self.assertEqual(s, 400, bad)
            self.assertIn(named, json.loads(body)["error"], bad)
        s, _, body = self.request("GET", "/a/demo/api/case/v2/?frobnicate=1")
        self.assertEqual((s, json.loads(body)["error"]), (400, "'frobnicate' is not a valid parameter."))

    def test_single_case_shape_deleted_and_include_deprecated(self):
        # A9: serialize_case (corehq/apps/hqcase/api/core.py) has indexed_on; a case gone from
        # the case search index (a deleted one) is get_single_case's 404 "Case 'X' not found".
        s, _, body = self.request("GET", "/a/demo/api/case/v2/fid-mum")
        case = json.loads(body)
        self.assertEqual(s, 200, body)
        self.assertRegex(case["indexed_on"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
        s, _, body = self.request("POST", "/a/demo/receiver/",
                                  case_form("fid-del-form", other_type(case_block("fid-del", "A", "Gone"))),
                                  {"Content-Type": "text/xml"})
        self.assertEqual(s, 201, body)
        self.assertEqual(self.request("GET", "/a/demo/api/case/v2/fid-del")[0], 200)
        # Archiving the only form of a case deletes it (HQ's rebuild with no transaction left).
        s, _, body = self.request("POST", "/a/demo/api/console/form/fid-del-form/archive")
        self.assertEqual(s, 200, body)
        s, _, body = self.request("GET", "/a/demo/api/case/v2/fid-del")
        self.assertEqual((s, json.loads(body)), (404, {"error": "Case 'fid-del' not found"}))
        # A7: get_list accepts include_deprecated (no case type is deprecated here).
        self.assertEqual(self.ids("include_deprecated=true&case_type=person"),
                         self.ids("case_type=person"))

    # -- bulk reads (corehq/apps/hqcase/api/get_bulk.py, views._handle_bulk_fetch) -------------
    def test_bulk_reads_keep_order_with_stubs(self):
        s, _, body = self.request("GET", "/a/demo/api/case/v2/fid-mum,nope,fid-dad")
        out = json.loads(body)
        self.assertEqual((s, out["matching_records"], out["missing_records"]), (200, 2, 1))
        self.assertEqual([c.get("case_id") for c in out["cases"]], ["fid-mum", "nope", "fid-dad"])
        self.assertEqual(out["cases"][1], {"case_id": "nope", "error": "not found"})
        s, out = self.js("POST", "/a/demo/api/case/v2/", {"case_type": "api", "case_name": "Ext",
                                                          "external_id": "EXT-1"})
        self.assertEqual(s, 200, out)
        ext_case = out["case"]["case_id"]
        self.wait_until(lambda: self.ids("external_id=EXT-1") == {ext_case})
        s, out = self.js("POST", "/a/demo/api/case/v2/bulk-fetch/",
                         {"case_ids": ["fid-mum", "x"], "external_ids": ["EXT-1", "EXT-404"]})
        self.assertEqual(s, 200, out)
        self.assertEqual((out["matching_records"], out["missing_records"]), (2, 2))
        self.assertEqual([c.get("case_id") for c in out["cases"]], ["fid-mum", "x", ext_case, None])
        self.assertEqual(out["cases"][3], {"external_id": "EXT-404", "error": "not found"})
        s, out = self.js("POST", "/a/demo/api/case/v2/bulk-fetch/", {})
        self.assertEqual(s, 400)
        self.assertIn("'case_ids' or 'external_ids'", out["error"])
        # HQ's urls.py serves the same API under v0.6/case/ (bulk-fetch included).
        s, out = self.js("POST", "/a/demo/api/v0.6/case/bulk-fetch/", {"case_ids": ["fid-mum"]})
        self.assertEqual((s, [c["case_id"] for c in out["cases"]]), (200, ["fid-mum"]))
        s, _, body = self.request("GET", "/a/demo/api/v0.6/case/fid-mum")
        self.assertEqual((s, json.loads(body)["case_id"]), (200, "fid-mum"))

    # -- writes (views.case_api, _handle_ext_put, _handle_case_update) -------------------------
    def test_writes_answer_200_with_form_id_and_ext_upserts(self):
        s, out = self.js("POST", "/a/demo/api/case/v2/", {"case_type": "api", "case_name": "W"})
        self.assertEqual(s, 200, out)  # JsonResponse: status 200
        self.assertTrue(out["form_id"])
        self.assertEqual(out["xform_id"], out["form_id"])  # cases-v2.rst's older name
        s, out = self.js("PUT", "/a/demo/api/case/v2/ext/E9/",
                         {"case_type": "api", "case_name": "Nine", "properties": {"n": "1"}})
        self.assertEqual(s, 200, out)
        first = out["case"]["case_id"]
        self.assertEqual(out["case"]["external_id"], "E9")
        # At once (before the search index may have it), a second PUT updates the same case.
        s, out = self.js("PUT", "/a/demo/api/case/v2/ext/E9/", {"properties": {"n": "2"}})
        self.assertEqual((s, out["case"]["case_id"], out["case"]["properties"]["n"]), (200, first, "2"))
        s, _, body = self.request("GET", "/a/demo/api/case/v2/ext/E9/")
        self.assertEqual((s, json.loads(body)["case_id"]), (200, first))
        s, out = self.js("PUT", "/a/demo/api/case/v2/ext/E9/", {"case_id": "other"})
        self.assertEqual(s, 400)
        self.assertIn("read-only", out["error"])
        s, _, body = self.request("GET", "/a/demo/api/case/v2/ext/NOPE/")
        self.assertEqual((s, json.loads(body)), (404, {"error": "Case 'NOPE' not found"}))

    def test_bulk_upsert_by_external_id(self):
        # cases-v2.rst "Upsert" and hqcase/api/updates.py (handle_case_update, JsonCaseUpdate,
        # CaseIDLookerUpper): a list's item with external_id, no case_id and no create flag is
        # created when no case has the external id, else updated; PUT / takes a list as POST.
        s, out = self.js("PUT", "/a/demo/api/case/v2/", [
            {"external_id": "UP-1", "case_type": "api", "case_name": "One",
             "properties": {"n": "1"}},
            {"create": True, "case_type": "api", "case_name": "Two", "external_id": "UP-2"},
            {"external_id": "UP-3", "case_type": "api", "case_name": "Kid",
             "indices": {"parent": {"external_id": "UP-2", "case_type": "api",
                                    "relationship": "child"}}}])
        self.assertEqual(s, 200, out)
        one, two, kid = out["cases"]
        self.assertEqual((one["external_id"], one["properties"]["n"]), ("UP-1", "1"))
        self.assertEqual(kid["indices"]["parent"]["case_id"], two["case_id"])
        # At once, a second upsert of UP-1 updates the same case (its id derives from the
        # external id); create:false finds UP-2 (a random id) once the search index has it.
        self.wait_until(lambda: self.list("external_id=UP-2")["matching_records"] == 1)
        s, out = self.js("POST", "/a/demo/api/case/v2/", [
            {"external_id": "UP-1", "properties": {"n": "2"}},
            {"create": False, "external_id": "UP-2", "properties": {"seen": "yes"}}])
        self.assertEqual(s, 200, out)
        self.assertEqual([c["case_id"] for c in out["cases"]], [one["case_id"], two["case_id"]])
        self.assertEqual(out["cases"][0]["properties"]["n"], "2")
        self.assertEqual(out["cases"][0]["case_name"], "One")
        self.assertEqual(out["cases"][1]["properties"]["seen"], "yes")
        # PUT / of one case without case_id upserts by its external_id.
        s, out = self.js("PUT", "/a/demo/api/case/v2/", {"external_id": "UP-1",
                                                          "properties": {"n": "3"}})
        self.assertEqual((s, out["case"]["case_id"], out["case"]["properties"]["n"]),
                         (200, one["case_id"], "3"))
        # HQ's answers for what cannot be planned; nothing is written.
        for body, status, text in [
            ([{"case_type": "api", "case_name": "X"}], 400, "'create' flag is required"),
            ([{"create": True, "case_id": "c1", "case_type": "api", "case_name": "X"}], 400,
             "You cannot specify case_id when creating a new case"),
            ([{"create": False, "external_id": "UP-NONE"}], 400,
             "Could not find a case with external_id 'UP-NONE'"),
            ([{"create": True, "case_type": "api", "case_name": "X",
               "indices": {"p": {"external_id": "UP-NONE", "case_type": "api",
                                 "relationship": "child"}}}], 400,
             "Could not find a case with external_id 'UP-NONE'"),
            ([{"create": True, "case_type": "api", "case_name": "X",
               "indices": {"p": {"case_id": "a", "external_id": "UP-1", "case_type": "api",
                                 "relationship": "child"}}}], 400, "only one"),
            ([{"external_id": "UP-9", "case_type": "api", "case_name": "A"},
              {"external_id": "UP-9", "case_type": "api", "case_name": "B"}], 400,
             "'UP-9' is upserted twice"),
            ({"properties": {"n": "1"}}, 400, "either a case_id or external_id"),
        ]:
            with self.subTest(body=body):
                s, out = self.js("PUT", "/a/demo/api/case/v2/", body)
                self.assertEqual(s, status, out)
                self.assertIn(text, out["error"])
        s, _, body = self.request("GET", "/a/demo/api/case/v2/ext/UP-9/")
        self.assertEqual(s, 404, body)

    # -- lookup tables, v0.5 (corehq/apps/fixtures/resources/v0_1.py) --------------------------
    def test_lookup_tables_v05_resources(self):
        s, out = self.js("POST", "/a/demo/api/lookup_tables/", {
            "id": "lt-city", "tag": "city", "is_global": True,
            "fields": [{"field_name": "name"}, {"field_name": "pop", "properties": ["unit"]}]})
        self.assertEqual(s, 201, out)
        for item in [{"id": "li-lyon", "table_id": "lt-city", "sort_key": 1,
                      "fields": {"name": "Lyon", "pop": "500"}},
                     {"id": "li-nice", "table_id": "lt-city", "sort_key": 2,
                      "fields": {"name": "Nice",
                                 "pop": [{"value": "340", "properties": {"unit": "k"}}]}}]:
            s, out = self.js("POST", "/a/demo/api/lookup_items/", item)
            self.assertEqual(s, 201, out)
        get = lambda path: (lambda r: (r[0], json.loads(r[2])))(self.request("GET", path))
        # FixtureResource: fields_without_attributes when every field is one plain value,
        # else every field as its field_list (try_fields_without_attributes).
        s, out = get("/a/demo/api/v0.5/fixture/?fixture_type=city")
        self.assertEqual((s, out["meta"]["total_count"]), (200, 2), out)
        by_id = {o["id"]: o for o in out["objects"]}
        self.assertEqual(by_id["li-lyon"]["fields"], {"name": "Lyon", "pop": "500"})
        self.assertEqual(by_id["li-lyon"]["fixture_type"], "city")
        self.assertEqual(by_id["li-nice"]["fields"]["pop"],
                         {"field_list": [{"field_value": "340", "properties": {"unit": "k"}}]})
        self.assertEqual(get("/a/demo/api/v0.5/fixture/?fixture_type=nowhere")[1]["objects"], [])
        s, one = get("/a/demo/api/v0.5/fixture/li-lyon/")
        self.assertEqual((s, one["resource_uri"]), (200, "/a/demo/api/v0.5/fixture/li-lyon/"))
        # LookupTableResource and LookupTableItemResource.
        s, t = get("/a/demo/api/v0.5/lookup_table/lt-city/")
        self.assertEqual((s, t["tag"], t["is_global"]), (200, "city", True))
        self.assertEqual(t["fields"], [{"field_name": "name", "properties": []},
                                       {"field_name": "pop", "properties": ["unit"]}])
        s, i = get("/a/demo/api/v0.5/lookup_table_item/li-lyon/")
        self.assertEqual((s, i["data_type_id"], i["sort_key"]), (200, "lt-city", 1))
        self.assertEqual(i["fields"]["name"],
                         {"field_list": [{"field_value": "Lyon", "properties": {}}]})
        self.assertEqual(get("/a/demo/api/v0.5/lookup_table_item/nope/")[0], 404)
        s, out = get("/a/demo/api/v0.5/fixture/?colour=red")
        self.assertEqual(s, 400)
        self.assertIn("'colour'", out["error"])
        s, out = self.js("POST", "/a/demo/api/v0.5/fixture/", {"tag": "x"})
        self.assertEqual(s, 405, out)

    def test_lookup_tables_v05_writes(self):
        # LookupTableResource and LookupTableItemResource obj_create/obj_update/obj_delete
        # (corehq/apps/fixtures/resources/v0_1.py): tastypie's 201 + Location, 204, 202.
        s, h, body = self.request("POST", "/a/demo/api/v0.5/lookup_table/", json.dumps({
            "tag": "district", "is_global": True,
            "fields": [{"name": "name", "properties": ["lang"]}, {"field_name": "code"}]}).encode(),
            {"Content-Type": "application/json"})
        self.assertEqual(s, 201, body)
        table = json.loads(body)
        self.assertEqual(h["location"], f"/a/demo/api/v0.5/lookup_table/{table['id']}/")
        self.assertEqual(table["fields"], [{"field_name": "name", "properties": ["lang"]},
                                           {"field_name": "code", "properties": []}])
        s, out = self.js("POST", "/a/demo/api/v0.5/lookup_table/", {"tag": "district",
                                                                     "fields": ["x"]})
        self.assertEqual((s, out["error"]), (400, "A lookup table with name district already exists"))
        s, out = self.js("POST", "/a/demo/api/v0.5/lookup_table/", {"tag": "bad tag", "fields": ["x"]})
        self.assertEqual(s, 400, out)
        self.assertIn("tag", out["error"])
        # Rows: data_type_id names the table; sort_key is the table's next (HQ: Max + 1, else 0).
        ids = []
        for name, code in [("Kigali", "K"), ("Huye", "H")]:
            s, out = self.js("POST", "/a/demo/api/v0.5/lookup_table_item/", {
                "data_type_id": table["id"],
                "fields": {"name": {"field_list": [{"field_value": name,
                                                    "properties": {"lang": "rw"}}]},
                           "code": {"field_list": [{"field_value": code, "properties": {}}]}}})
            self.assertEqual(s, 201, out)
            ids.append(out["id"])
            self.assertEqual(out["sort_key"], len(ids) - 1)
        s, out = self.js("POST", "/a/demo/api/v0.5/lookup_table_item/", {"fields": {}})
        self.assertEqual((s, out["error"]), (400, "data_type_id must be specified"))
        s, out = self.js("POST", "/a/demo/api/v0.5/lookup_table_item/",
                         {"data_type_id": "no-such-table", "fields": {}})
        self.assertEqual((s, out["error"]), (404, "Lookup table not found"))
        s, out = self.js("POST", "/a/demo/api/v0.5/lookup_table_item/", {
            "data_type_id": table["id"], "fields": {"colour": {"field_list": []}}})
        self.assertEqual(s, 400, out)
        self.assertIn("fields.colour", out["error"])
        # PUT replaces what it names; the tag cannot change; a GET's body can be PUT back.
        get = lambda path: json.loads(self.request("GET", path)[2])
        item = get(f"/a/demo/api/v0.5/lookup_table_item/{ids[1]}/")
        item["fields"]["code"] = {"field_list": [{"field_value": "HY", "properties": {}}]}
        s, _, body = self.request("PUT", f"/a/demo/api/v0.5/lookup_table_item/{ids[1]}/",
                                  json.dumps(item).encode(), {"Content-Type": "application/json"})
        self.assertEqual((s, body), (204, b""))
        self.assertEqual(get(f"/a/demo/api/v0.5/fixture/{ids[1]}/")["fields"]["code"],
                         {"field_list": [{"field_value": "HY", "properties": {}}]})
        s, out = self.js("PUT", f"/a/demo/api/v0.5/lookup_table/{table['id']}/",
                         {"tag": "province"})
        self.assertEqual((s, out["error"]), (400, "Lookup table tag cannot be changed"))
        s, out = self.js("PUT", f"/a/demo/api/v0.5/lookup_table/{table['id']}/", {"is_global": False})
        self.assertEqual((s, out["error"]), (400, "tag must be specified"))
        s, _, _ = self.request("PUT", f"/a/demo/api/v0.5/lookup_table/{table['id']}/",
                               json.dumps({"tag": "district", "is_global": False}).encode(),
                               {"Content-Type": "application/json"})
        self.assertEqual(s, 204)
        self.assertFalse(get(f"/a/demo/api/v0.5/lookup_table/{table['id']}/")["is_global"])
        # Tastypie's put_detail creates when obj_update finds nothing (here at the URL's id).
        s, out = self.js("PUT", "/a/demo/api/v0.5/lookup_table/lt-new/", {"tag": "newt",
                                                                           "fields": ["a"]})
        self.assertEqual((s, out["id"], out["tag"]), (201, "lt-new", "newt"))
        # A user with access_api alone reads but may not write (edit_data, as HQ's fixtures).
        s, out = self.js("POST", "/a/demo/api/users/", {"username": "lt-reader", "password": "pw-r",
                                                         "web_user": True,
                                                         "permissions": ["access_api"]})
        self.assertEqual(s, 201, out)
        reader = ("lt-reader", "pw-r")
        self.assertEqual(self.request("GET", f"/a/demo/api/v0.5/lookup_table/{table['id']}/",
                                      auth=reader)[0], 200)
        self.assertEqual(self.request("DELETE", f"/a/demo/api/v0.5/lookup_table/{table['id']}/",
                                      auth=reader)[0], 403)
        # DELETE of a row, then of the table with its remaining row (HQ's cascade): 202.
        s, _, _ = self.request("DELETE", f"/a/demo/api/v0.5/lookup_table_item/{ids[0]}/")
        self.assertEqual(s, 202)
        s, _, _ = self.request("DELETE", f"/a/demo/api/v0.5/lookup_table/{table['id']}/")
        self.assertEqual(s, 202)
        self.assertEqual(self.request("GET", f"/a/demo/api/v0.5/lookup_table_item/{ids[1]}/")[0], 404)
        self.assertEqual(self.request("GET", f"/a/demo/api/v0.5/lookup_table/{table['id']}/")[0], 404)

    # -- lookup tables from Excel (corehq/apps/fixtures/views.py upload_fixture_api,
    # upload/workbook.py, run_upload.py, failure_messages.py) ----------------------------------
    def fixapi(self, workbook, replace="false", fields=None):
        boundary = "lt" + os.urandom(8).hex()
        parts = dict({"replace": replace} if replace is not None else {}, **(fields or {}))
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n"
                        f"{v}\r\n".encode() for k, v in parts.items())
        if workbook is not None:
            body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file-to-upload\"; "
                     f"filename=\"t.xlsx\"\r\n\r\n").encode() + workbook + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        s, _, out = self.request("POST", "/a/demo/fixtures/fixapi/", body,
                                 {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return s, json.loads(out)

    def test_lookup_tables_excel_upload(self):
        s, nurse = self.js("POST", "/a/demo/api/users/", {"username": "lt-nurse", "password": "pw-lt"})
        self.assertEqual(s, 201, nurse)
        s, team = self.js("POST", "/a/demo/api/groups/", {"name": "lt-team", "users": [nurse["user_id"]]})
        self.assertEqual(s, 201, team)
        types = [["Delete(Y/N)", "table_id", "is_global?", "field 1", "field 2", "property 1"],
                 ["N", "lt_district", "yes", "name", "code", ""],
                 ["N", "lt_cadre", "no", "title", "", "grade"]]
        district = [["UID", "Delete(Y/N)", "field: name", "field: code"],
                    ["", "N", "North", "d1"], ["", "N", "South", "d2"]]
        cadre = [["UID", "Delete(Y/N)", "field: title", "property: grade", "user 1", "group 1"],
                 ["", "N", "nurse", "3", "LT-Nurse", ""], ["", "N", "doctor", "5", "", "lt-team"],
                 ["", "N", "clerk", "1", "", ""]]
        book = lambda d=district, c=cadre, t=types: xlsx({"types": t, "lt_district": d, "lt_cadre": c})
        s, out = self.fixapi(book())
        self.assertEqual((s, out["code"]), (200, 200), out)
        self.assertEqual(out["tables"]["created"], 2, out)
        self.assertEqual(out["rows"]["created"], 5, out)

        def restore():
            s, _, body = self.request("GET", "/a/demo/phone/restore/?version=2.0",
                                      auth=("lt-nurse", "pw-lt"))
            self.assertEqual(s, 200, body)
            return body.decode()
        payload = restore()
        self.assertIn('<fixture id="item-list:lt_district"', payload)
        self.assertIn("<lt_district_list><lt_district><name>North</name><code>d1</code></lt_district>"
                      "<lt_district><name>South</name><code>d2</code></lt_district></lt_district_list>",
                      payload)
        # The user's own row and the group's row; the row nobody owns is not sent.
        self.assertIn('<lt_cadre_list><lt_cadre grade="3"><title>nurse</title></lt_cadre>'
                      '<lt_cadre grade="5"><title>doctor</title></lt_cadre></lt_cadre_list>', payload)
        # The same workbook again changes nothing.
        items = lambda: json.loads(self.request("GET", "/a/demo/api/lookup_items/")[2])["lookup_items"]
        before = items()
        s, out = self.fixapi(book())
        self.assertEqual((s, out["rows"]["unchanged"], out["rows"]["created"]), (200, 5, 0), out)
        self.assertEqual(items(), before)
        # replace=true: the row the sheet no longer has is deleted.
        s, out = self.fixapi(book(d=district[:2]), replace="true")
        self.assertEqual((s, out["rows"]["deleted"]), (200, 1), out)
        payload = restore()
        self.assertIn("<name>North</name>", payload)
        self.assertNotIn("<name>South</name>", payload)
        before = items()
        # Bad input answers 400 naming sheet, row and column, and writes nothing (not even the
        # good sheet's new row).
        east = district[:2] + [["", "N", "East", "d3"]]
        bad = [
            (book(d=east, c=cadre[:1] + [["", "N", "nurse", "3", "nobody", ""]]),
             "sheet 'lt_cadre', row 2, column 'user 1': Unknown user: 'nobody'"),
            (book(c=cadre[:2] + [["", "maybe", "doctor", "5", "", "lt-team"]]),
             "sheet 'lt_cadre', row 3, column 'Delete(Y/N)'"),
            (book(d=[district[0] + ["field: colour"]] + district[1:]),
             "sheet 'lt_district', row 1, column 'field: colour'"),
            (book(t=types + [["N", "9lives", "no", "x", "", ""]]),
             "sheet 'types', row 4, column 'table_id'"),
            (book(c=[["UID", "field: title", "group 1"], ["", "nurse", "no-such-team"]]),
             "sheet 'lt_cadre', row 1, column 'property: grade'"),
            (xlsx({"lt_district": district}), "Workbook does not contain a sheet called types"),
            (b"not a workbook", "Invalid file-format. Please upload a valid xlsx file."),
        ]
        for workbook, text in bad:
            with self.subTest(text=text):
                s, out = self.fixapi(workbook)
                self.assertEqual((s, out["code"]), (400, 405), out)
                self.assertIn(text, out["message"])
                self.assertEqual(items(), before)
        s, out = self.fixapi(book(), replace=None)
        self.assertEqual(s, 400, out)
        self.assertIn("'replace'", out["message"])
        s, out = self.fixapi(book(), fields={"async": "true"})
        self.assertEqual(s, 400, out)
        self.assertEqual(items(), before)

    # -- Form API v0.5 (corehq/apps/api/resources/v0_4.py, corehq/apps/api/es.py) -------------
    def test_form_api_objects_order_and_filters(self):
        ids = []
        for i in range(3):
            s, h, _ = self.request("POST", "/a/demo/receiver/",
                                   case_form(f"fa-{i}", "", xmlns="http://example.org/fa"),
                                   {"Content-Type": "text/xml"})
            self.assertEqual(s, 201)
            ids.append(h["x-commcarehq-formid"])
            time.sleep(0.01)
        path = "/a/demo/api/v0.5/form/?xmlns=http://example.org/fa"
        self.wait_until(lambda: json.loads(self.request("GET", path)[2])["meta"]["total_count"] == 3)
        objs = json.loads(self.request("GET", path)[2])["objects"]
        # obj_get_list(...).order_by('-received_on'): newest first.
        self.assertEqual([o["id"] for o in objs], ["fa-2", "fa-1", "fa-0"])
        o = objs[0]
        for key in ["id", "domain", "form", "type", "version", "uiversion", "metadata", "received_on",
                    "server_modified_on", "indexed_on", "archived", "attachments", "resource_uri",
                    "app_id", "build_id", "problem", "edited_on", "is_phone_submission"]:
            self.assertIn(key, o)
        self.assertEqual((o["type"], o["version"], o["uiversion"], o["archived"]), ("data", "7", "1", False))
        self.assertEqual(o["form"]["@xmlns"], "http://example.org/fa")
        self.assertEqual(o["form"]["@name"], "Visit")
        self.assertEqual(o["form"]["meta"]["instanceID"], "fa-2")
        self.assertEqual(o["form"]["answer"], "42")
        self.assertEqual(o["metadata"]["deviceID"], "dev")
        self.assertNotIn("@xmlns", o["metadata"])
        self.assertEqual(o["resource_uri"], "/a/demo/api/v0.5/form/fa-2/")
        # dehydrate_attachments: {name: {content_type, length, url}}, url absolute.
        att = o["attachments"]["form.xml"]
        self.assertEqual(att["url"], f"http://127.0.0.1:{self.port}/a/demo/api/form/attachment/fa-2/form.xml")
        self.assertGreater(att["length"], 0)
        s, _, body = self.request("GET", "/a/demo/api/v0.5/form/fa-1/")
        self.assertEqual((s, json.loads(body)["id"]), (200, "fa-1"))
        # DateRangeParams: lte, so received_on_end is inclusive.
        end = objs[1]["received_on"]
        got = json.loads(self.request("GET", path + "&received_on_end=" + urllib.parse.quote(end))[2])
        self.assertEqual([x["id"] for x in got["objects"]], ["fa-1", "fa-0"])
        got = json.loads(self.request("GET", path + "&indexed_on_start=2000-01-01&order_by=received_on")[2])
        self.assertEqual([x["id"] for x in got["objects"]], ["fa-0", "fa-1", "fa-2"])
        self.assertEqual(self.request("GET", path + "&order_by=colour")[0], 400)

    def test_form_api_datetimes_are_utc(self):
        # HQ stores the form JSON through adjust_datetimes (corehq/form_processor/utils/xform.py):
        # a date-time with a zone becomes UTC ...ffffffZ in form and metadata; dates and
        # zone-less times are kept as sent.
        xml = ('<?xml version="1.0"?><data xmlns="http://example.org/tz">'
               '<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>tz-1</instanceID>'
               '<userID>u1</userID><timeStart>2024-03-02T10:21:48.715+01:00</timeStart>'
               '<timeEnd>2024-03-02T10:30:00-05:00</timeEnd></meta>'
               '<seen>2024-03-02T10:21:48.715+01:00</seen><day>2024-03-02</day>'
               '<local>2024-03-02T10:21:48</local></data>').encode()
        s, _, body = self.request("POST", "/a/demo/receiver/", xml, {"Content-Type": "text/xml"})
        self.assertEqual(s, 201, body)
        s, _, body = self.request("GET", "/a/demo/api/v0.5/form/tz-1/")
        self.assertEqual(s, 200, body)
        o = json.loads(body)
        self.assertEqual(o["form"]["meta"]["timeStart"], "2024-03-02T09:21:48.715000Z")
        self.assertEqual(o["metadata"]["timeEnd"], "2024-03-02T15:30:00.000000Z")
        self.assertEqual(o["form"]["seen"], "2024-03-02T09:21:48.715000Z")
        self.assertEqual((o["form"]["day"], o["form"]["local"]), ("2024-03-02", "2024-03-02T10:21:48"))
        path = "/a/demo/api/v0.5/form/?xmlns=http://example.org/tz"
        self.wait_until(lambda: json.loads(self.request("GET", path)[2])["meta"]["total_count"] == 1)
        (listed,) = json.loads(self.request("GET", path)[2])["objects"]
        self.assertEqual(listed["form"]["seen"], "2024-03-02T09:21:48.715000Z")

    def test_form_api_case_id_and_app_version(self):
        # XFormInstanceResource.obj_get_list (corehq/apps/api/resources/v0_4.py): case_id
        # keeps the forms whose case blocks touched the case, appVersion filters on
        # form.meta.appVersion.
        def form(fid, case_id, app_version):
            return (f'<?xml version="1.0"?><data xmlns="http://example.org/fc">'
                    f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{fid}</instanceID>'
                    f'<userID>u1</userID><appVersion>{app_version}</appVersion></meta>'
                    f'<case xmlns="{CASE_NS}" case_id="{case_id}" date_modified="2020-01-01T00:00:00Z" '
                    f'user_id="u1"><update><v>{fid}</v></update></case></data>').encode()
        s, _, body = self.request("POST", "/a/demo/receiver/",
                                  case_form("fc-0", other_type(case_block("fc-case", "A", "C")),
                                            xmlns="http://example.org/fc"),
                                  {"Content-Type": "text/xml"})
        self.assertEqual(s, 201, body)
        for fid, case_id, version in [("fc-1", "fc-case", "v1"), ("fc-2", "fid-gran", "v2")]:
            s, _, body = self.request("POST", "/a/demo/receiver/", form(fid, case_id, version),
                                      {"Content-Type": "text/xml"})
            self.assertEqual(s, 201, body)
        path = "/a/demo/api/v0.5/form/?xmlns=http://example.org/fc"
        self.wait_until(lambda: json.loads(self.request("GET", path)[2])["meta"]["total_count"] == 3)
        got = lambda q: [o["id"] for o in json.loads(self.request("GET", path + q)[2])["objects"]]
        self.assertEqual(got("&case_id=fc-case"), ["fc-1", "fc-0"])
        self.assertEqual(got("&case_id=fid-gran"), ["fc-2"])
        self.assertEqual(got("&case_id=nobody"), [])
        self.assertEqual(got("&appVersion=v2"), ["fc-2"])
        self.assertEqual(got("&appVersion=v2&case_id=fc-case"), [])

    def test_form_api_cases_full(self):
        # XFormInstanceResource.cases (corehq/apps/api/resources/v0_4.py): UseIfRequested
        # (corehq/apps/api/fields.py) adds "cases" only for cases__full=true (any case of
        # "true"); _cases_referenced_by_xform takes the ids of the form's case blocks
        # (extract_case_blocks) and dehydrates each with v0_4.CommCareCaseResource.
        parent = other_type(case_block("cf-parent", "o1", "Parent"))
        child = other_type(case_block("cf-child", "o1", "Child", props="<age>7</age>",
                                      index=f'<parent case_type="other">cf-parent</parent>'))
        s, _, body = self.request("POST", "/a/demo/receiver/",
                                  case_form("cf-1", parent + child, xmlns="http://example.org/cf"),
                                  {"Content-Type": "text/xml"})
        self.assertEqual(s, 201, body)
        s, _, body = self.request("POST", "/a/demo/receiver/",
                                  case_form("cf-2", "", xmlns="http://example.org/cf"),
                                  {"Content-Type": "text/xml"})
        self.assertEqual(s, 201, body)
        s, _, body = self.request("GET", "/a/demo/api/v0.5/form/cf-1/?cases__full=TRUE")
        self.assertEqual(s, 200, body)
        cases = json.loads(body)["cases"]
        self.assertEqual(sorted(c["id"] for c in cases), ["cf-child", "cf-parent"])
        # Tastypie's serializer writes json.dumps(..., sort_keys=True): keys sorted at every depth.
        def key_orders(v, out):
            if isinstance(v, dict):
                out.append(list(v))
                for x in v.values():
                    key_orders(x, out)
            elif isinstance(v, list):
                for x in v:
                    key_orders(x, out)
            return out
        for keys in key_orders(json.loads(body), []):
            self.assertEqual(keys, sorted(keys))
        c = next(c for c in cases if c["id"] == "cf-child")
        self.assertEqual(set(c), {"id", "case_id", "user_id", "date_modified", "closed",
                                  "date_closed", "server_date_modified", "server_date_opened",
                                  "indexed_on", "domain", "opened_by", "closed_by", "xform_ids",
                                  "properties", "indices", "resource_uri"})
        self.assertEqual(c["case_id"], "cf-child")
        self.assertEqual(c["xform_ids"], ["cf-1"])
        self.assertFalse(c["closed"])
        self.assertIsNone(c["date_closed"])
        self.assertEqual(c["date_modified"], "2020-01-01 00:00:00")  # str() of a naive datetime
        self.assertEqual(c["properties"]["age"], "7")
        self.assertEqual(c["properties"]["case_name"], "Child")
        self.assertEqual(c["properties"]["case_type"], "other")
        self.assertEqual(c["properties"]["owner_id"], "o1")
        # Inside the properties dict a datetime is isoformat() (tastypie's to_simple).
        self.assertRegex(c["properties"]["date_opened"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
        self.assertEqual(c["indices"], {"parent": {"case_type": "other", "case_id": "cf-parent",
                                                   "relationship": "child"}})
        # Anything but "true" leaves the key out; a form with no case block has an empty list.
        for q in ("", "?cases__full=false", "?cases__full=1", "?cases__full=true&cases__full=no"):
            s, _, body = self.request("GET", "/a/demo/api/v0.5/form/cf-1/" + q)
            self.assertEqual(s, 200, body)
            self.assertNotIn("cases", json.loads(body))
        path = "/a/demo/api/v0.5/form/?xmlns=http://example.org/cf"
        self.wait_until(lambda: json.loads(self.request("GET", path)[2])["meta"]["total_count"] == 2)
        listing = json.loads(self.request("GET", path + "&cases__full=true")[2])
        for keys in key_orders(listing, []):
            self.assertEqual(keys, sorted(keys))
        objs = listing["objects"]
        self.assertEqual({o["id"]: len(o["cases"]) for o in objs}, {"cf-1": 2, "cf-2": 0})

    def test_device_logs_are_not_forms(self):
        # submission_post.py: a DEVICE_LOG_XMLNS instance goes to process_device_log and is
        # not saved as a form.
        with open(os.path.join(SAMPLES, "receiverwrapper__device_log.xml"), "rb") as f:
            xml = f.read()
        s, h, body = self.request("POST", "/a/demo/receiver/", xml, {"Content-Type": "text/xml"})
        self.assertEqual(s, 201, body)
        self.assertIn(b"submit_success", body)
        self.assertNotIn("x-commcarehq-formid", h)
        # A later form reaches the read copy; the device report never does.
        self.request("POST", "/a/demo/receiver/", case_form("after-devlog", "", xmlns="http://example.org/dl"),
                     {"Content-Type": "text/xml"})
        path = "/a/demo/api/v0.5/form/?xmlns=http://example.org/dl"
        self.wait_until(lambda: json.loads(self.request("GET", path)[2])["meta"]["total_count"] == 1)
        s, _, body = self.request("GET", "/a/demo/api/v0.5/form/?xmlns=http://code.javarosa.org/devicereport")
        self.assertEqual(json.loads(body)["meta"]["total_count"], 0)

    # -- OData feeds of saved exports ----------------------------------------------------------
    def test_odata_feeds(self):
        # corehq/apps/api/odata/{urls,views,serializers,utils}.py and resources/v0_5.py
        # (ODataCaseResource, ODataFormResource); templates/api/odata_metadata.xml.
        xmlns = "http://example.org/odata"
        for i in range(3):
            block = case_block(f"od-{i}", "o1", f"Home {i}", props=f"<hh.size>{i}</hh.size>")
            block = block.replace("<case_type>person</case_type>", "<case_type>odata</case_type>")
            xml = case_form(f"od.form.{i}", block + "<m><q>a</q></m><m><q>b</q></m>", xmlns=xmlns)
            s, _, body = self.request("POST", "/a/demo/receiver/", xml, {"Content-Type": "text/xml"})
            self.assertEqual(s, 201, body)
        for name, definition in [("od-cases", {"kind": "case", "filters": {"case_type": "odata"}}),
                                 ("od-forms", {"kind": "form", "filters": {"xmlns": xmlns}})]:
            s, out = self.js("PUT", f"/a/demo/api/exports/saved/{name}", definition)
            self.assertEqual(s, 200, out)
        root = "/a/demo/api/odata/cases/v1/od-cases/"
        # The service document names the one entity set, "feed"; its context is $metadata.
        s, h, body = self.request("GET", root)
        self.assertEqual(s, 200, body)
        self.assertEqual(h["odata-version"], "4.0")
        doc = json.loads(body)
        self.assertTrue(doc["@odata.context"].endswith(root + "$metadata"), doc)
        self.assertEqual(doc["value"], [{"name": "feed", "kind": "EntitySet", "url": "feed"}])
        # $metadata: EDMX 4.0, key caseid, HQ's special types, labels cleaned ('.' is a space).
        s, h, body = self.request("GET", root + "$metadata")
        self.assertEqual((s, h["content-type"], h["odata-version"]), (200, "application/xml", "4.0"))
        import xml.etree.ElementTree as ET
        edm = "{http://docs.oasis-open.org/odata/ns/edm}"
        tree = ET.fromstring(body)
        self.assertEqual(tree.tag, "{http://docs.oasis-open.org/odata/ns/edmx}Edmx")
        entity = tree.find(f".//{edm}Schema[@Namespace='CommCare']/{edm}EntityType[@Name='feed']")
        self.assertEqual(entity.find(f"{edm}Key/{edm}PropertyRef").get("Name"), "caseid")
        types = {p.get("Name"): p.get("Type") for p in entity.findall(f"{edm}Property")}
        self.assertEqual(types["closed"], "Edm.Boolean")
        self.assertEqual(types["opened_on"], "Edm.DateTimeOffset")
        self.assertEqual(types["hh size"], "Edm.String")
        self.assertNotIn("case_id", types)
        self.assertIsNotNone(tree.find(f".//{edm}EntityContainer[@Name='Container']/"
                                       f"{edm}EntitySet[@Name='feed'][@EntityType='CommCare.feed']"))
        # The feed: pages of `limit` rows linked by @odata.nextLink, every value a string, keys
        # sorted (json.dumps(sort_keys=True)).
        url, rows = root + "feed?limit=2", []
        while url:
            s, h, body = self.request("GET", url)
            self.assertEqual((s, h["content-type"]), (200, "application/json; charset=utf-8"), body)
            page = json.loads(body)
            self.assertTrue(page["@odata.context"].endswith(root + "$metadata#feed"))
            for row in page["value"]:
                self.assertEqual(list(row), sorted(row))
                self.assertTrue(all(isinstance(v, str) for v in row.values()), row)
            self.assertLessEqual(len(page["value"]), 2)
            rows += page["value"]
            url = page.get("@odata.nextLink")
            if url:
                url = urllib.parse.urlsplit(url)
                self.assertEqual(url.netloc, f"127.0.0.1:{self.port}")
                url = url.path + "?" + url.query
        self.assertEqual(sorted(r["caseid"] for r in rows), ["od-0", "od-1", "od-2"])
        self.assertEqual({r["caseid"]: r["hh size"] for r in rows}, {"od-0": "0", "od-1": "1", "od-2": "2"})
        self.assertEqual({r["closed"] for r in rows}, {"False"})
        # A form feed's repeat table (table 1): rows numbered from the form id, which may hold
        # dots; the key is number. The v0.5 path serves the same feed.
        s, _, body = self.request("GET", "/a/demo/api/v0.5/odata/forms/od-forms/1/feed")
        self.assertEqual(s, 200, body)
        page = json.loads(body)
        self.assertTrue(page["@odata.context"].endswith("/a/demo/api/v0.5/odata/forms/od-forms/1/$metadata#feed"))
        got = sorted((r["number"], r["number__0"], r["number__1"], r["form m q"]) for r in page["value"])
        self.assertEqual(got[:2], [("od.form.0.0", "od.form.0", "0", "a"), ("od.form.0.1", "od.form.0", "1", "b")])
        self.assertEqual(len(got), 6)
        s, _, body = self.request("GET", "/a/demo/api/odata/forms/v1/od-forms/feed")
        self.assertEqual(sorted(r["formid"] for r in json.loads(body)["value"]),
                         ["od.form.0", "od.form.1", "od.form.2"])
        # Refusals name the problem.
        for path, status, words in [
                ("/a/demo/api/odata/cases/v1/no-such/feed", 404, "no-such"),
                ("/a/demo/api/odata/forms/v1/od-cases/feed", 404, "od-cases"),  # a case export
                ("/a/demo/api/odata/forms/v1/od-forms/9/feed", 404, "table 9"),
                ("/a/demo/api/odata/cases/v1/od-cases/feed?limit=x", 400, "limit"),
                ("/a/demo/api/odata/cases/v1/od-cases/other", 404, "other")]:
            s, _, body = self.request("GET", path)
            self.assertEqual(s, status, (path, body))
            self.assertIn(words, json.loads(body)["error"], path)
        # Two columns that clean to one name stay two properties.
        s, out = self.js("PUT", "/a/demo/api/exports/saved/od-clash", {
            "kind": "case", "filters": {"case_type": "odata"},
            "columns": ["case_id", "hh.size", {"path": "name", "label": "hh size"}]})
        self.assertEqual(s, 200, out)
        s, _, body = self.request("GET", "/a/demo/api/odata/cases/v1/od-clash/feed?limit=1")
        self.assertEqual(set(json.loads(body)["value"][0]), {"caseid", "hh size", "hh size (2)"})
        s, _, body = self.request("GET", root + "feed?offset=99999999999999999999")
        self.assertEqual(s, 400, body)
        self.assertEqual(self.request("POST", root + "feed", b"{}")[0], 405)
        self.assertEqual(self.request("GET", root + "feed", auth=None)[0], 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
