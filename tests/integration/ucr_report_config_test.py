#!/usr/bin/env python3
"""HQ's UCR report configurations over REST (/a/{domain}/api/ucr/report/{id}/, issue 22 item 14):
ReportConfiguration (corehq/apps/userreports/reports/specs.py, factory.py) with aggregated and
expanded columns, aggregation_columns, date / choice-list / numeric filters and a sort, answered
as HQ's configurablereportdata JSON and as CSV over a real server and its ucr pillow.
Usage: ucr_report_config_test.py COMMCARE"""
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

CC = sys.argv.pop(1)

UCR = {"domain": "demo", "table_id": "people", "referenced_doc_type": "CommCareCase",
       "configured_indicators": [
           {"type": "raw", "column_id": "owner", "property_name": "owner_id"},
           {"type": "expression", "column_id": "age", "datatype": "integer",
            "expression": {"type": "property_name", "property_name": "age"}},
           {"type": "expression", "column_id": "sex", "datatype": "string",
            "expression": {"type": "property_name", "property_name": "sex"}},
           {"type": "expression", "column_id": "dob", "datatype": "date",
            "expression": {"type": "property_name", "property_name": "dob"}}]}
PEOPLE = [("p1", "A", 10, "f", "2020-01-05"), ("p2", "A", 30, "m", "2020-02-10"),
          ("p3", "B", 20, "f", "2020-03-15"), ("p4", "B", 40, "f", "2021-01-01")]
REPORT = {"config_id": "people", "title": "By owner", "aggregation_columns": ["owner"],
          "columns": [
              {"type": "field", "field": "owner", "column_id": "owner", "aggregation": "simple",
               "display": "Owner"},
              {"type": "field", "field": "doc_id", "column_id": "n", "aggregation": "count",
               "display": "Cases"},
              {"type": "field", "field": "age", "column_id": "age_sum", "aggregation": "sum"},
              {"type": "field", "field": "age", "column_id": "age_avg", "aggregation": "avg"},
              {"type": "expanded", "field": "sex", "column_id": "sex", "display": "Sex"}],
          "filters": [{"type": "date", "field": "dob", "slug": "dob"},
                      {"type": "choice_list", "field": "owner", "slug": "owner"},
                      {"type": "numeric", "field": "age", "slug": "age"}],
          "sort_expression": [{"field": "age_sum", "order": "DESC"}]}


def cc(*args):
    p = subprocess.run([CC] + list(args), capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{args}: exit {p.returncode}: {p.stdout}{p.stderr}")


def case_form(case_id, owner, age, sex, dob):
    return (f'<?xml version="1.0"?><data xmlns="http://example.org/people">'
            f'<meta xmlns="http://openrosa.org/jr/xforms"><instanceID>f-{case_id}</instanceID>'
            f'<userID>u1</userID></meta>'
            f'<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{case_id}" '
            f'date_modified="2020-01-01T00:00:00Z" user_id="u1"><create><case_type>person'
            f'</case_type><case_name>{case_id}</case_name><owner_id>{owner}</owner_id></create>'
            f'<update><age>{age}</age><sex>{sex}</sex><dob>{dob}</dob></update></case></data>'
            ).encode()


class UcrReportConfigTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cc-ucr-report-")
        cls.data = os.path.join(cls.tmp, "data")
        env = dict(os.environ, COMMCARE_ADMIN_USER="admin", COMMCARE_ADMIN_PASSWORD="s3cret",
                   COMMCARE_DOMAIN="demo")
        cls.proc = subprocess.Popen([CC, "serve", "--data", cls.data, "--listen", "127.0.0.1:0"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env)
        line = cls.proc.stdout.readline()
        assert line, cls.proc.stderr.read()
        cls.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        config = os.path.join(cls.tmp, "ucr.json")
        with open(config, "w") as f:
            json.dump(UCR, f)
        cc("ucr", "load", "--data", cls.data, config)
        me = object.__new__(cls)
        for p in PEOPLE:
            s, _, body = me.request("POST", "/a/demo/receiver/", case_form(*p),
                                    {"Content-Type": "text/xml"})
            assert s == 201, body
        for _ in range(400):
            s, _, body = me.request("GET", "/a/demo/api/ucr/people/")
            if s == 200 and len(json.loads(body)["rows"]) == 4:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the ucr pillow did not fill the table")
        s, _, body = me.request("PUT", "/a/demo/api/ucr/report/by-owner/",
                                json.dumps(REPORT).encode(), {"Content-Type": "application/json"})
        assert s == 200, body

    @classmethod
    def tearDownClass(cls):
        cls.proc.kill()
        cls.proc.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def request(self, method, path, body=None, headers=None, auth=("admin", "s3cret")):
        h = dict(headers or {})
        h["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def report(self, query=""):
        s, _, body = self.request("GET", "/a/demo/api/ucr/report/by-owner/?" + query)
        self.assertEqual(s, 200, body)
        return json.loads(body)

    def test_aggregation_expanded_columns_and_sort(self):
        out = self.report()
        self.assertEqual([(c["slug"], c["header"]) for c in out["columns"]],
                         [("owner", "Owner"), ("n", "Cases"), ("age_sum", "age_sum"),
                          ("age_avg", "age_avg"), ("sex-0", "Sex-f"), ("sex-1", "Sex-m")])
        # GROUP BY aggregation_columns; sort_expression age_sum DESC.
        self.assertEqual(out["data"], [
            {"owner": "B", "n": 2, "age_sum": 60, "age_avg": 30.0, "sex-0": 2, "sex-1": 0},
            {"owner": "A", "n": 2, "age_sum": 40, "age_avg": 20.0, "sex-0": 1, "sex-1": 1}])
        self.assertEqual((out["total_records"], out["next_page"]), (2, ""))
        page = self.report("limit=1")
        self.assertEqual([r["owner"] for r in page["data"]], ["B"])
        self.assertTrue(page["next_page"].endswith("offset=1&limit=1"), page["next_page"])

    def test_filters(self):
        # DateFilterValue: {slug}-start / {slug}-end inclusive; choice list; numeric operator.
        got = self.report("dob-start=2020-02-01&dob-end=2020-12-31")["data"]
        self.assertEqual([(r["owner"], r["age_sum"]) for r in got], [("A", 30), ("B", 20)])
        got = self.report("owner=B")["data"]
        self.assertEqual([(r["owner"], r["n"]) for r in got], [("B", 2)])
        got = self.report("owner=A&owner=B")["data"]
        self.assertEqual(len(got), 2)
        got = self.report("age-operator=%3E%3D&age-operand=30")["data"]
        self.assertEqual([(r["owner"], r["age_sum"]) for r in got], [("B", 40), ("A", 30)])

    def test_csv(self):
        s, h, body = self.request("GET", "/a/demo/api/ucr/report/by-owner/?format=csv")
        self.assertEqual((s, h["content-type"].split(";")[0]), (200, "text/csv"))
        self.assertEqual(body.decode().splitlines(),
                         ["Owner,Cases,age_sum,age_avg,Sex-f,Sex-m", "B,2,60,30,2,0",
                          "A,2,40,20,1,1"])

    def test_errors(self):
        for query, named in [("colour=red", "'colour'"), ("age-operator=%3E&age-operand=x", "age-operand"),
                             ("dob-start=yesterday", "dob-start"), ("format=pdf", "format")]:
            s, _, body = self.request("GET", "/a/demo/api/ucr/report/by-owner/?" + query)
            self.assertEqual(s, 400, query)
            self.assertIn(named, json.loads(body)["error"], query)
        self.assertEqual(self.request("GET", "/a/demo/api/ucr/report/nope/")[0], 404)
        for bad, named in [({**REPORT, "colour": 1}, "colour"),
                           ({**REPORT, "columns": [{"field": "age", "aggregation": "median"}]},
                            "aggregation"),
                           ({**REPORT, "config_id": None}, "config_id")]:
            s, _, body = self.request("PUT", "/a/demo/api/ucr/report/bad/", json.dumps(bad).encode())
            self.assertEqual(s, 400, bad)
            self.assertIn(named, json.loads(body)["error"])
        self.assertEqual(self.request("GET", "/a/demo/api/ucr/report/bad/")[0], 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
