// Acceptance: every CommCare HQ sample submission in examples/data/commcare-hq-samples
// (see its MANIFEST.md) gives the outcome CommCare gives.
#include <filesystem>
#include <regex>
#include <set>

#include "engine_helpers.h"

using namespace commcare;
using namespace cctest;

namespace {

std::string Sample(const std::string& name) {
  return ReadFile(std::string(COMMCARE_SAMPLES_DIR) + "/" + name);
}

SubmitResponse SubmitSample(Engine* e, const std::string& name, const std::string& openrosa = "") {
  return Submit(e, Sample(name), openrosa);
}

// The samples the tests below exercise (each test runs in its own process under ctest).
const std::set<std::string> kCovered = {"case-bugs__duplicate_case_properties.xml",
                                        "case-bugs__empty_id.xml",
                                        "case-bugs__multiple_case_blocks.xml",
                                        "case-multicase__case_in_repeats.xml",
                                        "case-multicase__mixed_cases.xml",
                                        "case-multicase__parallel_cases.xml",
                                        "case-ordering__create_oo.xml",
                                        "case-ordering__update_oo.xml",
                                        "case-v2__basic_close.xml",
                                        "case-v2__basic_create.xml",
                                        "case-v2__basic_noop.xml",
                                        "case-v2__basic_update.xml",
                                        "case-v2__index_update.xml",
                                        "case-v2__named_namespace.xml",
                                        "case__create.xml",
                                        "couchforms-deprecation__edit.xml",
                                        "couchforms-deprecation__original.xml",
                                        "couchforms-posts__duplicate.xml",
                                        "couchforms-posts__meta.xml",
                                        "couchforms-posts__namespaces.xml",
                                        "phone-dependent-case-conflicts__cf.xml",
                                        "receiverwrapper__case_ledger_form.xml",
                                        "receiverwrapper__case_ledger_form_2.xml",
                                        "receiverwrapper__device_log.xml",
                                        "receiverwrapper__form_with_case.xml",
                                        "receiverwrapper__invalid_form_xml.xml",
                                        "receiverwrapper__missing_xmlns.xml",
                                        "receiverwrapper__namespace_in_meta.xml",
                                        "receiverwrapper__simple_form.xml",
                                        "receiverwrapper__simple_form_edited.xml"};
void Cover(const std::string& name) { CHECK_MESSAGE(kCovered.count(name), name); }

}  // namespace

TEST_CASE("Acceptance: plain forms, duplicates and edits (receiverwrapper)") {
  auto e = OpenSqlite(2);
  Cover("receiverwrapper__simple_form.xml");
  Cover("receiverwrapper__simple_form_edited.xml");
  auto r = SubmitSample(e.get(), "receiverwrapper__simple_form.xml");
  CHECK(r.http_status == 201);
  CHECK(r.nature == "submit_success");
  CHECK(r.form_id == "ad38211be256653bceac8e2156475664");
  auto f = e->GetForm("demo", r.form_id);
  CHECK(f->device_id == "myphone");
  CHECK(f->user_id == "someuserid");
  CHECK(FormatTime(f->time_start) == "2010-06-29T13:42:50.137000Z");
  auto dup = SubmitSample(e.get(), "receiverwrapper__simple_form.xml");
  CHECK(dup.state == FormState::kDuplicate);
  CHECK(dup.message == "Form is a duplicate of another! (ad38211be256653bceac8e2156475664)");
  auto edit = SubmitSample(e.get(), "receiverwrapper__simple_form_edited.xml");
  CHECK(edit.nature == "submit_success");
  CHECK(edit.form_id == "ad38211be256653bceac8e2156475664");
  auto nf = e->GetForm("demo", edit.form_id);
  CHECK(nf->received_on == f->received_on);
  auto old = e->GetForm("demo", nf->deprecated_form_id);
  CHECK(old->state == FormState::kDeprecated);
  CHECK(e->GetFormXml("demo", edit.form_id)->find("bong") != std::string::npos);
  CHECK(e->GetFormXml("demo", old->form_id)->find("bang") != std::string::npos);
}

TEST_CASE("Acceptance: cases and ledgers (receiverwrapper)") {
  auto e = OpenSqlite(3);
  Cover("receiverwrapper__form_with_case.xml");
  auto r = SubmitSample(e.get(), "receiverwrapper__form_with_case.xml");
  CHECK(r.form_id == "ad38211be256653bceac8e2156475666");
  auto c = e->GetCase("demo", "ad38211be256653bceac8e2156475667");
  REQUIRE(c.ok());
  CHECK(c->owner_id == "ad38211be256653bceac8e2156475665");
  CHECK(c->external_id == "someexternal");
  CHECK(c->type == "test_case_type");

  Cover("receiverwrapper__case_ledger_form.xml");
  Cover("receiverwrapper__case_ledger_form_2.xml");
  REQUIRE(SubmitSample(e.get(), "receiverwrapper__case_ledger_form.xml").nature ==
          "submit_success");
  auto a = e->GetCase("demo", "fbb69a88-1eca-463a-883e-1148b96fb03b");
  CHECK(a->closed);
  CHECK(a->owner_id == "91cadfa4cb957cf021c76dfe31d206a6");
  CHECK(a->properties.at("entrepreneur") == "joe");
  CHECK(FormatTime(a->opened_on) == "2016-03-02T09:21:48.715000Z");
  auto b = e->GetCase("demo", "fbb69a88-1eca-463a-883e-1148b96fb03c");
  CHECK_FALSE(b->closed);
  auto hist = e->CaseHistory("demo", a->case_id);
  REQUIRE(hist->size() == 1);  // create+update and close merged into one transaction
  CHECK(hist->at(0).type == (kTxForm | kTxCaseCreate | kTxCaseClose | kTxLedger));
  auto led = e->GetLedger("demo", a->case_id);
  REQUIRE(led->size() == 1);
  CHECK(led->at(0).section_id == "stock");
  CHECK(led->at(0).balance == 10);
  REQUIRE(SubmitSample(e.get(), "receiverwrapper__case_ledger_form_2.xml").nature ==
          "submit_success");
  CHECK(e->GetCase("demo", a->case_id)->properties.at("entrepreneur") == "ben");

  Cover("receiverwrapper__namespace_in_meta.xml");
  auto ns = SubmitSample(e.get(), "receiverwrapper__namespace_in_meta.xml");
  CHECK(ns.nature == "submit_success");
  auto nsf = e->GetForm("demo", ns.form_id);
  CHECK_FALSE(nsf->app_version.empty());
  CHECK_FALSE(nsf->user_id.empty());
  CHECK(e->Check()->problems.empty());
}

TEST_CASE("Acceptance: bad XML, missing xmlns and device logs (receiverwrapper)") {
  auto e = OpenMemory();
  Cover("receiverwrapper__missing_xmlns.xml");
  auto m = SubmitSample(e.get(), "receiverwrapper__missing_xmlns.xml");
  CHECK(m.http_status == 500);
  CHECK(m.nature == "submit_error");
  CHECK(m.message ==
        "There was an error processing the form: Form is missing a required field: XMLNS");
  CHECK(e->GetForm("demo", m.form_id)->state == FormState::kSubmissionErrorLog);
  Cover("receiverwrapper__invalid_form_xml.xml");
  auto inv = SubmitSample(e.get(), "receiverwrapper__invalid_form_xml.xml", "3.0");
  CHECK(inv.http_status == 500);
  CHECK(inv.message.rfind("There was an error processing the form: Invalid XML", 0) == 0);
  CHECK(e->GetFormXml("demo", inv.form_id)->find("<foo>bar</foo") != std::string::npos);
  Cover("receiverwrapper__device_log.xml");
  auto count_forms = [&] {
    int forms = 0;
    for (int i = 0; i < e->NumDatabases(); ++i)
      REQUIRE(e->Database(i)->ScanForms([&](const FormRecord&) { return ++forms > 0; }).ok());
    return forms;
  };
  const int forms_before = count_forms();
  auto d = SubmitSample(e.get(), "receiverwrapper__device_log.xml");
  CHECK(d.nature == "submit_success");
  // HQ's SubmissionPost sends a device report to process_device_log and saves no form
  // (corehq/form_processor/submission_post.py): 201, no form id, nothing stored.
  CHECK(d.http_status == 201);
  CHECK(d.form_id.empty());
  CHECK(count_forms() == forms_before);
  int n = 0;
  REQUIRE(e->ListCases({}, [&](const CaseRecord&) {
             ++n;
             return true;
           }).ok());
  CHECK(n == 0);  // the device report's <case> is not a case block
}

TEST_CASE("Acceptance: couchforms posts and deprecation") {
  auto e = OpenMemory(2);
  Cover("couchforms-posts__duplicate.xml");
  auto first = SubmitSample(e.get(), "couchforms-posts__duplicate.xml");
  CHECK(first.nature == "submit_success");
  auto second = SubmitSample(e.get(), "couchforms-posts__duplicate.xml");
  CHECK(second.state == FormState::kDuplicate);
  CHECK(e->GetForm("demo", second.form_id)->orig_id == first.form_id);
  Cover("couchforms-posts__meta.xml");
  auto meta = SubmitSample(e.get(), "couchforms-posts__meta.xml");
  CHECK(meta.nature == "submit_success");
  CHECK(std::regex_match(meta.form_id, std::regex("[0-9a-f]{32}")));  // server-generated id
  CHECK(e->GetForm("demo", meta.form_id)->app_version == "v1.2.3 (biz bazzle)");
  Cover("couchforms-posts__namespaces.xml");
  CHECK(SubmitSample(e.get(), "couchforms-posts__namespaces.xml").nature == "submit_success");
  Cover("couchforms-deprecation__original.xml");
  Cover("couchforms-deprecation__edit.xml");
  auto orig = SubmitSample(e.get(), "couchforms-deprecation__original.xml");
  REQUIRE(orig.form_id == "7H46J37FGH3");
  std::string edit = Sample("couchforms-deprecation__edit.xml");
  edit = std::regex_replace(edit, std::regex("<instanceID>[^<]*</instanceID>"),
                            "<instanceID>7H46J37FGH3</instanceID>");
  auto ed = Submit(e.get(), edit);
  CHECK(ed.nature == "submit_success");
  CHECK(ed.form_id == "7H46J37FGH3");
  auto nf = e->GetForm("demo", "7H46J37FGH3");
  CHECK(e->GetForm("demo", nf->deprecated_form_id)->state == FormState::kDeprecated);
}

TEST_CASE("Acceptance: v2 case blocks (casexml v2)") {
  auto e = OpenMemory();
  Cover("case-v2__basic_create.xml");
  REQUIRE(SubmitSample(e.get(), "case-v2__basic_create.xml").nature == "submit_success");
  auto c = e->GetCase("demo", "foo-case-id");
  REQUIRE(c.ok());
  CHECK(c->opened_by == "bar-user-id");
  CHECK(c->owner_id != "");
  Cover("case-v2__basic_update.xml");
  REQUIRE(SubmitSample(e.get(), "case-v2__basic_update.xml").nature == "submit_success");
  c = e->GetCase("demo", "foo-case-id");
  CHECK(c->type == "updated_v2_case_type");
  CHECK(c->name == "updated case name");
  CHECK(c->properties.at("dynamic") == "something dynamic");
  CHECK(c->properties.count("case_type") == 0);
  Cover("case-v2__basic_noop.xml");
  int64_t before = c->modified_on;
  REQUIRE(SubmitSample(e.get(), "case-v2__basic_noop.xml").nature == "submit_success");
  c = e->GetCase("demo", "foo-case-id");
  CHECK(c->modified_on > before);
  CHECK(e->CaseHistory("demo", "foo-case-id")->size() == 3);
  Cover("case-v2__basic_close.xml");
  REQUIRE(SubmitSample(e.get(), "case-v2__basic_close.xml").nature == "submit_success");
  CHECK(e->GetCase("demo", "foo-case-id")->closed);
  Cover("case-v2__index_update.xml");
  auto idx = SubmitSample(e.get(), "case-v2__index_update.xml", "3.0");
  CHECK(idx.http_status == 422);
  CHECK(idx.message.rfind("InvalidCaseIndex: ", 0) == 0);
  Cover("case-v2__named_namespace.xml");
  REQUIRE(SubmitSample(e.get(), "case-v2__named_namespace.xml").nature == "submit_success");
  auto nn = e->GetCase("demo", "14cc2770-2d1c-49c2-b252-22d6ecce385a");
  CHECK(nn->type == "cc_bihar_pregnancy");
  CHECK(FormatTime(nn->opened_on) == "2011-12-27T00:00:00.000000Z");
  CHECK(e->GetForm("demo", "05f9c90f-8e2e-4e3f-b392-002058c46b00")->user_id ==
        "d5ce3a980b5b69e793445ec0e3b2138e");
  Cover("case__create.xml");
  std::string tmpl = Sample("case__create.xml");
  tmpl = std::regex_replace(tmpl, std::regex("REPLACE_UID"), "tmpl-form-1");
  tmpl = std::regex_replace(tmpl, std::regex("REPLACE_CASEID"), "tmpl-case-1");
  REQUIRE(Submit(e.get(), tmpl).nature == "submit_success");
  CHECK(e->GetCase("demo", "tmpl-case-1")->external_id == "someexternal");
}

TEST_CASE("Acceptance: v1 and nested case blocks (casexml multicase)") {
  auto e = OpenMemory(3);
  Cover("case-multicase__parallel_cases.xml");
  REQUIRE(SubmitSample(e.get(), "case-multicase__parallel_cases.xml").nature == "submit_success");
  for (const char* id : {"0bd56681dce2b7a5160f75266d1e436e", "0bd56681dce2b7a5140f75266d1d93a6",
                         "0bd56681dce2b7a5140f75266d1d9312", "0bd56681dce2b7a5140f75266d2064c0"}) {
    auto c = e->GetCase("demo", id);
    REQUIRE(c.ok());
    CHECK(c->type == "cc_shine_client");
    CHECK(c->owner_id == "873a1b8c-3a02-11e0-a513-005056aa7fb5");
  }
  CHECK(e->GetCase("demo", "0bd56681dce2b7a5160f75266d1e436e")->external_id ==
        "9a2a9582d11a11df8f35005056977568");
  auto e2 = OpenMemory();
  Cover("case-multicase__mixed_cases.xml");
  REQUIRE(SubmitSample(e2.get(), "case-multicase__mixed_cases.xml").nature == "submit_success");
  int n = 0;
  REQUIRE(e2->ListCases({}, [&](const CaseRecord&) {
              ++n;
              return true;
            }).ok());
  CHECK(n == 4);
  Cover("case-multicase__case_in_repeats.xml");
  REQUIRE(SubmitSample(e2.get(), "case-multicase__case_in_repeats.xml").nature == "submit_success");
  CHECK(e2->GetCase("demo", "32337c03-2b73-497f-ab18-2b587f8c21df")->type == "newborn_hiv_child");
  CHECK(e2->GetCase("demo", "581b0506-7c94-4af5-ac67-f934566d5418")->properties.at("sex") == "2");
  auto mother = e2->GetCase("demo", "CMYOSI95QCED3ZWIP9ZK1QNQ6");
  CHECK(mother->closed);
  CHECK(mother->properties.at("delivery_date") == "2011-09-19");
}

TEST_CASE("Acceptance: casexml bug regressions and ordering") {
  auto e = OpenMemory();
  Cover("case-bugs__multiple_case_blocks.xml");
  REQUIRE(SubmitSample(e.get(), "case-bugs__multiple_case_blocks.xml").nature == "submit_success");
  CHECK(e->CaseHistory("demo", "MCLPZ69ON942EKNIBR5WF1G2L")->size() == 1);
  CHECK(e->GetCase("demo", "MCLPZ69ON942EKNIBR5WF1G2L")->properties.at("community_name") ==
        "TAMERLO");
  Cover("case-bugs__duplicate_case_properties.xml");
  REQUIRE(SubmitSample(e.get(), "case-bugs__duplicate_case_properties.xml").nature ==
          "submit_success");
  auto dp = e->GetCase("demo", "061ecbae-d9be-4bb5-bdd4-e62abd5eaf7b");
  CHECK(dp->properties.at("foo") == "");
  CHECK(dp->properties.at("date_next_eb") == "2012-05-27");
  Cover("case-bugs__empty_id.xml");
  auto empty = SubmitSample(e.get(), "case-bugs__empty_id.xml");
  CHECK(empty.http_status == 201);
  CHECK(empty.nature == "submit_error");
  CHECK(empty.state == FormState::kError);
  CHECK(SubmitSample(e.get(), "case-bugs__empty_id.xml", "3.0").http_status == 422);
  Cover("case-ordering__update_oo.xml");
  Cover("case-ordering__create_oo.xml");
  REQUIRE(SubmitSample(e.get(), "case-ordering__update_oo.xml").nature == "submit_success");
  REQUIRE(SubmitSample(e.get(), "case-ordering__create_oo.xml").nature == "submit_success");
  auto oo = e->GetCase("demo", "30bc51f6-3247-4966-b4ae-994f572e85fe");
  CHECK(oo->properties.at("pboth") == "this should get overridden");
  CHECK(oo->properties.at("pupdate") == "from the update form");
  CHECK(oo->properties.at("pcreate") == "from the create form");
  Cover("phone-dependent-case-conflicts__cf.xml");
  REQUIRE(SubmitSample(e.get(), "phone-dependent-case-conflicts__cf.xml").nature ==
          "submit_success");
  for (const char* id :
       {"9dbce942-0163-438b-b3e5-67b473d2f719", "7b58fd8f-1bb8-4978-99a6-7b5d9826c1f9",
        "17e36de1-b9de-423c-a6a6-605d291ec976"})
    CHECK(e->GetCase("demo", id)->owner_id == "67bffa913b38e7901851d863ededa475");
}

TEST_CASE("Acceptance: every sample file is covered") {
  namespace fs = std::filesystem;
  REQUIRE_MESSAGE(fs::is_directory(COMMCARE_SAMPLES_DIR),
                  "sample directory missing: " << COMMCARE_SAMPLES_DIR);
  int n = 0;
  for (const auto& entry : fs::directory_iterator(COMMCARE_SAMPLES_DIR)) {
    if (entry.path().extension() != ".xml") continue;
    ++n;
    CHECK_MESSAGE(kCovered.count(entry.path().filename().string()), "no test for " << entry.path());
  }
  CHECK(n >= 30);
}
