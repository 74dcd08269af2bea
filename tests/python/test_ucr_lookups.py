"""UCR expressions that read other documents through the engine: get_case_forms and
get_subcases (corehq/apps/userreports/expressions/specs.py), over the Python binding.

Run with COMMCARE_LIBRARY pointing at libcommcare_c and bindings/python on PYTHONPATH
(ctest does both)."""

import shutil
import tempfile
import unittest

import commcare
from test_binding import case_form, create, six_patients


def count(items):
    return {"type": "reduce_items", "items_expression": items, "aggregation_fn": "count"}


class UcrLookupsTest(unittest.TestCase):
    def setUp(self):
        self.engine = commcare.Engine()
        six_patients(self.engine)

    def tearDown(self):
        self.engine.close()

    def test_ucr_get_case_forms(self):
        # specs.py FormsExpressionSpec: the forms of the case's history, those of the listed
        # xmlns when xmlns is given; none for a case id that names no case.
        self.engine.submit(case_form("visit0", "c0", "<update><seen>1</seen></update>",
                                     xmlns="http://example.org/visit"), "demo")
        forms = lambda xmlns=None: dict(
            {"type": "get_case_forms",
             "case_id_expression": {"type": "property_name", "property_name": "_id"}},
            **({"xmlns": xmlns} if xmlns is not None else {}))
        with self.engine.pillows() as p:
            p.run_until_caught_up()
            rows = p.ucr_load({
                "domain": "demo", "table_id": "case_forms", "referenced_doc_type": "CommCareCase",
                "configured_filter": {"type": "property_match", "property_name": "type",
                                      "property_value": "patient"},
                "configured_indicators": [
                    {"type": "expression", "column_id": "forms", "datatype": "integer",
                     "expression": count(forms())},
                    {"type": "expression", "column_id": "visits", "datatype": "integer",
                     "expression": count(forms(["http://example.org/visit"]))},
                    {"type": "expression", "column_id": "last_xmlns", "datatype": "string",
                     "expression": {"type": "nested",
                                    "argument_expression": {"type": "reduce_items",
                                                            "items_expression": forms(),
                                                            "aggregation_fn": "last_item"},
                                    "value_expression": {"type": "property_name",
                                                         "property_name": "xmlns"}}}]})
            self.assertEqual(rows, 6)
            by_id = {r["doc_id"]: r for r in p.ucr_rows("demo", "case_forms")}
            self.assertEqual((by_id["c0"]["forms"], by_id["c0"]["visits"]), (2, 1))
            self.assertEqual(by_id["c0"]["last_xmlns"], "http://example.org/visit")
            self.assertEqual((by_id["c1"]["forms"], by_id["c1"]["visits"]), (1, 0))
            with self.assertRaises(commcare.InvalidArgumentError) as cm:
                p.ucr_load({"domain": "demo", "table_id": "bad",
                            "referenced_doc_type": "CommCareCase",
                            "configured_indicators": [
                                {"type": "expression", "column_id": "n", "datatype": "integer",
                                 "expression": count(forms("http://example.org/visit"))}]})
            self.assertIn("xmlns", str(cm.exception))



def index(ident, case_type, target, relationship="child"):
    return ('<index><%s case_type="%s" relationship="%s">%s</%s></index>'
            % (ident, case_type, relationship, target, ident))


class UcrSubcasesTest(unittest.TestCase):
    """specs.py SubcasesExpressionSpec: CommCareCase.objects.get_reverse_indexed_cases(domain,
    [case_id]), every case with a child or extension index to the case, closed ones too,
    deleted ones not; [] without a case id."""

    def setUp(self):
        # Four databases, so that a household's children mostly live in other databases than
        # the household and the expression must ask each.
        self.dir = tempfile.mkdtemp(prefix="cc-ucr-")
        self.engine = commcare.Engine(self.dir + "/data", databases=4)
        e = self.engine
        e.submit(case_form("h", "hh", create("hh", case_type="household", name="Home")), "demo")
        e.submit(case_form("h2", "hh2", create("hh2", case_type="household", name="Empty")),
                 "demo")
        for i in range(8):
            body = create("k%d" % i, case_type="person", name="Kid %d" % i,
                          props="<age>%d</age>" % i) + index("parent", "household", "hh")
            e.submit(case_form("fk%d" % i, "k%d" % i, body), "demo")
        e.submit(case_form("fx", "x1", create("x1", case_type="visit", name="Visit")
                           + index("host", "household", "hh", "extension")), "demo")
        e.submit(case_form("fc", "k7", "<close/>"), "demo")  # closed: still a subcase

    def tearDown(self):
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_subcases_of_each_household(self):
        subcases = {"type": "get_subcases",
                    "case_id_expression": {"type": "property_name", "property_name": "_id"}}
        people = {"type": "filter_items", "items_expression": subcases,
                  "filter_expression": {"type": "boolean_expression", "operator": "eq",
                                        "expression": {"type": "property_name",
                                                       "property_name": "type"},
                                        "property_value": "person"}}
        names = count(people)
        # The visit (x1) has no age, and a sum with a null in it is null, as in HQ: sum people.
        ages = {"type": "reduce_items", "aggregation_fn": "sum",
                "items_expression": {"type": "map_items", "items_expression": people,
                                     "map_expression": {"type": "property_name",
                                                        "property_name": "age",
                                                        "datatype": "integer"}}}
        with self.engine.pillows() as p:
            p.run_until_caught_up()
            rows = p.ucr_load({
                "domain": "demo", "table_id": "households", "referenced_doc_type": "CommCareCase",
                "configured_filter": {"type": "property_match", "property_name": "type",
                                      "property_value": "household"},
                "configured_indicators": [
                    {"type": "expression", "column_id": "subcases", "datatype": "integer",
                     "expression": count(subcases)},
                    {"type": "expression", "column_id": "people", "datatype": "integer",
                     "expression": names},
                    {"type": "expression", "column_id": "ages", "datatype": "integer",
                     "expression": ages},
                    {"type": "expression", "column_id": "none", "datatype": "integer",
                     "expression": count({"type": "get_subcases",
                                          "case_id_expression": {"type": "constant",
                                                                 "constant": ""}})}]})
            self.assertEqual(rows, 2)
            by_id = {r["doc_id"]: r for r in p.ucr_rows("demo", "households")}
            # 8 children (k7 closed) and the extension x1; the ages 0..7 sum to 28.
            self.assertEqual((by_id["hh"]["subcases"], by_id["hh"]["people"],
                              by_id["hh"]["ages"], by_id["hh"]["none"]), (9, 8, 28, 0))
            self.assertEqual((by_id["hh2"]["subcases"], by_id["hh2"]["people"]), (0, 0))
            with self.assertRaises(commcare.InvalidArgumentError) as cm:
                p.ucr_load({"domain": "demo", "table_id": "bad",
                            "referenced_doc_type": "CommCareCase",
                            "configured_indicators": [
                                {"type": "expression", "column_id": "n", "datatype": "integer",
                                 "expression": count({"type": "get_subcases"})}]})
            self.assertIn("case_id_expression", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
