// Mobile sync as CommCare HQ writes it and commcare-core parses it (issue 22, the audit in
// research/hq-fidelity.md §2): each test cites the HQ or commcare-core file it follows.
// commcare-core cannot run in CI, so CoreCheck below applies its parsers' rules to a payload.
#include <commcare/sync.h>

#include <map>
#include <regex>
#include <set>

#include "engine_helpers.h"
#include "sync_helpers.h"

using namespace commcare;
using cctest::Case;
using cctest::CaseForm;
using cctest::Create;
using cctest::OpenMemory;
using cctest::RestoreInto;
using cctest::U1Request;

namespace {

// An attribute of the start tag `tag` ("" when absent; *found says whether it was there).
std::string Attr(const std::string& tag, const std::string& name, bool* found = nullptr) {
  std::smatch m;
  const bool ok = std::regex_search(tag, m, std::regex("\\s" + name + "=\"([^\"]*)\""));
  if (found) *found = ok;
  return ok ? m[1].str() : "";
}

// The rules of commcare-core's restore parsers (dimagi/commcare-core 7b4b3a61d) that a payload
// breaks a real phone's restore with, applied to the phone's case list *held (id -> closed).
// Returns the errors (empty when the phone would accept the payload).
std::vector<std::string> CoreCheck(const std::string& payload, std::map<std::string, bool>* held) {
  std::vector<std::string> errors;
  std::regex case_re("<case xmlns=\"http://commcarehq.org/case/transaction/v2\"[^>]*>");
  for (auto it = std::sregex_iterator(payload.begin(), payload.end(), case_re);
       it != std::sregex_iterator(); ++it) {
    const std::string tag = (*it)[0];
    const size_t start = static_cast<size_t>(it->position());
    const std::string block = payload.substr(start, payload.find("</case>", start) - start);
    const std::string id = Attr(tag, "case_id");
    // CaseXmlParser.java:84-87: case_id and date_modified are mandatory (CaseXmlParserUtil
    // validateMandatoryProperty throws InvalidStructureException).
    if (id.empty()) errors.push_back("a <case> without case_id");
    if (Attr(tag, "date_modified").empty())
      errors.push_back("case " + id + ": date_modified wasn't set");
    const bool create = block.find("<create>") != std::string::npos;
    // CaseXmlParser.java:104,109 and 238-242: update and close load the case with
    // errorIfMissing.
    if (!create && !held->count(id)) errors.push_back("case " + id + ": not on the phone");
    // CaseXmlParser.java:210-211: date_opened goes through DateUtils.parseDate, which gives
    // null for anything but yyyy-mm-dd (DateUtils.java:484-513).
    std::smatch m;
    if (std::regex_search(block, m, std::regex("<date_opened>([^<]*)</date_opened>")) &&
        !std::regex_match(m[1].str(), std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}")))
      errors.push_back("case " + id + ": date_opened '" + m[1].str() + "' is not a date");
    (*held)[id] = block.find("<close/>") != std::string::npos;
  }
  // LedgerXmlParsers.java:94,113: quantity goes through ElementParser.parseInt.
  std::regex qty_re("<ns0:entry id=\"[^\"]*\" quantity=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(payload.begin(), payload.end(), qty_re);
       it != std::sregex_iterator(); ++it)
    if (!std::regex_match((*it)[1].str(), std::regex("-?[0-9]+")))
      errors.push_back("quantity '" + (*it)[1].str() + "' is not an integer");
  return errors;
}

std::string Token(const std::string& payload) {
  std::smatch m;
  REQUIRE(std::regex_search(payload, m, std::regex("<restore_id>([0-9a-f]+)</restore_id>")));
  return m[1];
}

struct Fixture {
  std::unique_ptr<Engine> e = OpenMemory();
  std::unique_ptr<Sync> sync;
  RestoreRequest req = U1Request();
  std::map<std::string, bool> phone;  // what the phone holds: id -> closed
  Fixture() {
    auto s = Sync::Open(e.get(), "");
    REQUIRE_MESSAGE(s.ok(), s.status().ToString());
    sync = std::move(s).value();
  }
  // A restore (incremental after the first) that commcare-core's rules accept; the phone then
  // purges its closed cases (CasePurgeFilter drops closed cases nothing live indexes).
  RestoreResult Restore(std::string* payload) {
    auto res = RestoreInto(sync.get(), req, payload);
    REQUIRE(res.http_status == 200);
    auto errors = CoreCheck(*payload, &phone);
    for (const auto& err : errors) FAIL_CHECK(err);
    for (auto it = phone.begin(); it != phone.end();) it = it->second ? phone.erase(it) : ++it;
    req.since = Token(*payload);
    return res;
  }
  std::vector<std::string> Held() const {
    std::vector<std::string> out;
    for (const auto& [id, closed] : phone) out.push_back(id);
    return out;
  }
};

}  // namespace

// R1: HQ's V2CaseXMLGenerator.get_root_element (casexml/apps/case/xml/generator.py) sets
// date_modified whenever modified_on is set, and a rebuild that leaves a case without forms sets
// modified_on to the rebuild's server date (form_processor update_strategy.py
// rebuild_from_transactions); its restore writes a deleted case like any other
// (phone/data_providers/case/utils.py CaseSyncUpdate). commcare-core rejects a block without it.
TEST_CASE("HQ fidelity: a deleted case the phone holds is sent with date_modified and a close") {
  Fixture f;
  REQUIRE(cctest::Submit(f.e.get(), CaseForm("creates-x", "x", Create("u1"))).http_status == 201);
  Case(f.e.get(), "y", Create("u1"));
  std::string p;
  f.Restore(&p);
  CHECK(f.Held() == std::vector<std::string>{"x", "y"});
  REQUIRE(f.e->ArchiveForm("demo", "creates-x").ok());  // x is left without forms: deleted
  auto r = f.Restore(&p);
  CHECK(r.cases == 1);
  std::smatch m;
  REQUIRE(std::regex_search(p, m, std::regex("<case [^>]*case_id=\"x\"[^>]*>")));
  CHECK(std::regex_match(Attr(m[0], "date_modified"),
                         std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{6}Z")));
  bool has_user = false;
  Attr(m[0], "user_id", &has_user);
  CHECK(has_user);
  // The phone closes and purges it, so its state hash is the server's footprint's.
  CHECK(f.Held() == std::vector<std::string>{"y"});
  auto log = f.sync->GetSyncLog(r.sync_id);
  REQUIRE(log.ok());
  CHECK(log->case_ids == f.Held());
  f.req.state = CaseStateHash(f.Held());
  CHECK(f.Restore(&p).http_status == 200);
  // Version 1.0 writes date_modified as an element.
  f.req.version = "1.0";
  f.req.since.clear();
  f.req.state.clear();
  REQUIRE(cctest::Submit(f.e.get(), CaseForm("creates-z", "z", Create("u1"))).http_status == 201);
  RestoreInto(f.sync.get(), f.req, &p);
  const std::string t = Token(p);
  REQUIRE(f.e->ArchiveForm("demo", "creates-z").ok());
  f.req.since = t;
  RestoreInto(f.sync.get(), f.req, &p);
  CHECK(std::regex_search(p, std::regex("<case><case_id>z</case_id><date_modified>[0-9]{4}-"
                                        "[^<]+</date_modified>.*<close/></case>")));
}

// R2: generator.py add_custom_properties writes date_opened = date_to_xml_string(opened_on), a
// yyyy-mm-dd date (json_format_date); commcare-core's CaseXmlParser.java:210-211 reads it with
// DateUtils.parseDate, which gives null for a datetime (and the casedb instance then throws).
// The v1 generator writes owner_id and date_opened in the update too.
TEST_CASE("HQ fidelity: date_opened is a yyyy-mm-dd date in v2 and v1 blocks") {
  Fixture f;
  REQUIRE(cctest::Submit(f.e.get(), CaseForm("opens", "c", Create("u1"), "u1",
                                             "2021-06-30T23:59:58.123+00:00"))
              .http_status == 201);
  std::string p;
  f.Restore(&p);  // CoreCheck: every date_opened parses as a date
  CHECK(p.find("<date_opened>2021-06-30</date_opened>") != std::string::npos);
  // An incremental block (no create: base properties in the update) too.
  Case(f.e.get(), "c", "<update><p>w</p></update>", "another-token");
  f.Restore(&p);
  CHECK(p.find("<owner_id>u1</owner_id><date_opened>2021-06-30</date_opened>") !=
        std::string::npos);
  f.req.version = "1.0";
  f.req.since.clear();
  RestoreInto(f.sync.get(), f.req, &p);
  CHECK(p.find("<update><owner_id>u1</owner_id><date_opened>2021-06-30</date_opened>") !=
        std::string::npos);
}

namespace {

// A form of u1 with a ledger block (balance or transfer XML) after a case update of `id`.
void LedgerForm(Engine* e, const std::string& form_id, const std::string& id,
                const std::string& ledger, const std::string& token = "") {
  SubmitRequest r;
  r.domain = "demo";
  r.body = CaseForm(form_id, id, "<update><q>1</q></update>");
  r.body.insert(r.body.find("</data>"), ledger);
  r.last_sync_token = token;
  auto resp = e->Submit(r);
  REQUIRE_MESSAGE(resp.http_status == 201, resp.message);
}

std::string Balance(const std::string& case_id, const std::string& entries) {
  return "<balance xmlns=\"http://commcarehq.org/ledger/v1\" entity-id=\"" + case_id +
         "\" section-id=\"stock\" date=\"2020-01-01\">" + entries + "</balance>";
}

}  // namespace

// R3: HQ's LedgerValue.balance is an IntegerField and its deltas BigIntegerFields
// (corehq/form_processor/models/ledgers.py); the restore writes quantity=str(int(quantity))
// (casexml stock payload _entry_xml); commcare-core's LedgerXmlParsers.java:94,113 parseInt it.
TEST_CASE("HQ fidelity: ledger quantities are whole numbers, truncated as int(Decimal)") {
  Fixture f;
  Case(f.e.get(), "s", Create("u1"));
  Case(f.e.get(), "d", Create("u1"));
  LedgerForm(f.e.get(), "b1", "s",
             Balance("s", "<entry id=\"p\" quantity=\"2.5\"/><entry id=\"n\" quantity=\"-2.5\"/>"));
  LedgerForm(f.e.get(), "t1", "s",
             "<transfer xmlns=\"http://commcarehq.org/ledger/v1\" src=\"s\" dest=\"d\" "
             "section-id=\"stock\" date=\"2020-01-02\"><entry id=\"p\" quantity=\"1.9\"/>"
             "</transfer>");
  auto s = f.e->GetLedger("demo", "s");
  REQUIRE(s.ok());
  std::map<std::string, double> got;
  for (const auto& v : *s) got[v.entry_id] = v.balance;
  CHECK(got == std::map<std::string, double>{{"n", -2}, {"p", 1}});
  auto d = f.e->GetLedger("demo", "d");
  REQUIRE(d.ok());
  REQUIRE(d->size() == 1);
  CHECK((*d)[0].balance == 1);
  std::string p;
  f.Restore(&p);  // CoreCheck: every quantity is an integer
  CHECK(p.find("entity-id=\"s\" section-id=\"stock\"><ns0:entry id=\"n\" quantity=\"-2\"/>"
               "<ns0:entry id=\"p\" quantity=\"1\"/>") != std::string::npos);
}

// R4: an empty footprint's hash is "ccsh:": HQ's Checksum([]).hexdigest() is ''
// (casexml/apps/phone/checksum.py) and commcare-core's CaseDBUtils.computeCaseDbHash returns ""
// when the phone holds no case (CaseDBUtils.java:13-32), so such a phone sends state=ccsh:.
TEST_CASE("HQ fidelity: a phone without cases sends state=ccsh: and is answered 200") {
  Fixture f;
  CHECK(CaseStateHash({}) == "ccsh:");
  std::string p;
  auto first = f.Restore(&p);
  CHECK(first.footprint == 0);
  auto log = f.sync->GetSyncLog(first.sync_id);
  REQUIRE(log.ok());
  CHECK(log->state_hash == "ccsh:");
  f.req.state = "ccsh:";
  CHECK(f.Restore(&p).http_status == 200);
  // A case comes and goes: the hash is ccsh: again once the footprint is empty.
  Case(f.e.get(), "c", Create("u1"));
  f.req.state = "ccsh:";
  f.Restore(&p);
  f.req.state = CaseStateHash({"c"});
  Case(f.e.get(), "c", "<close/>", "another-token");
  f.Restore(&p);
  f.req.state = "ccsh:";
  auto last = f.Restore(&p);
  CHECK(last.http_status == 200);
  CHECK(f.sync->GetSyncLog(last.sync_id)->state_hash == "ccsh:");
  // Anything else that is not the footprint's hash is still a 412.
  f.req.state = "ccsh:00000000000000000000000000000001";
  auto bad = RestoreInto(f.sync.get(), f.req, &p);
  CHECK(bad.http_status == 412);
}

// R6: HQ keeps a restore's payload only when it took longer than INITIAL_SYNC_CACHE_THRESHOLD
// (60 s, casexml/apps/phone/const.py), was asynchronous or forced
// (RestoreConfig.set_cached_payload_if_necessary, casexml/apps/phone/restore.py), so a fast
// first sync is never answered from a cache and misses nothing changed since.
TEST_CASE("HQ fidelity: a fast first sync is computed afresh and sees what changed since") {
  auto e = OpenMemory();
  auto sync = Sync::Open(e.get(), "", cctest::FreshTempDir("cc-sync", "fresh"));
  REQUIRE(sync.ok());
  Case(e.get(), "mine", Create("u1") + "<update><village>v1</village></update>");
  RestoreRequest r = U1Request();
  std::string p1, p2;
  auto first = RestoreInto(sync->get(), r, &p1);
  CHECK_FALSE(first.cached);
  // Another user changes the case and assigns a new one to u1 (u1 submits nothing).
  Case(e.get(), "mine", "<update><village>v2</village></update>", "another-token");
  Case(e.get(), "assigned", Create("u1"));
  auto second = RestoreInto(sync->get(), r, &p2);
  CHECK_FALSE(second.from_cache);
  CHECK(second.sync_id != first.sync_id);
  CHECK(p2.find("<village>v2</village>") != std::string::npos);
  CHECK(p2.find("case_id=\"assigned\"") != std::string::npos);
  // A forced one is kept and answered again; overwrite_cache drops it.
  r.force_cache = true;
  auto forced = RestoreInto(sync->get(), r, &p1);
  CHECK(forced.cached);
  r.force_cache = false;
  CHECK(RestoreInto(sync->get(), r, &p2).from_cache);
  CHECK(p2 == p1);
  r.overwrite_cache = true;
  CHECK_FALSE(RestoreInto(sync->get(), r, &p2).from_cache);
  r.overwrite_cache = false;
  CHECK_FALSE(RestoreInto(sync->get(), r, &p2).from_cache);
}

namespace {

// A form of u1 with only ledger blocks (no case block).
void LedgerOnly(Engine* e, const std::string& form_id, const std::string& ledger,
                const std::string& token = "") {
  SubmitRequest r;
  r.domain = "demo";
  r.body = fmt::format(
      R"(<?xml version="1.0"?><data xmlns="http://example.org/form"><meta xmlns="http://openrosa.org/jr/xforms"><instanceID>{}</instanceID><userID>u1</userID></meta>{}</data>)",
      form_id, ledger);
  r.last_sync_token = token;
  auto resp = e->Submit(r);
  REQUIRE_MESSAGE(resp.http_status == 201, resp.message);
}

std::string Transfer(const std::string& src, const std::string& dest, const std::string& qty) {
  return "<transfer xmlns=\"http://commcarehq.org/ledger/v1\" src=\"" + src + "\" dest=\"" + dest +
         "\" section-id=\"stock\" date=\"2020-01-02\"><entry id=\"p\" quantity=\"" + qty +
         "\"/></transfer>";
}

// The quantity of entry p of the case's stock balance in the payload ("" when not sent).
std::string Sent(const std::string& payload, const std::string& case_id) {
  std::smatch m;
  if (!std::regex_search(
          payload, m,
          std::regex("entity-id=\"" + case_id +
                     "\" section-id=\"stock\"><ns0:entry id=\"p\" quantity=\"(-?[0-9]+)\"")))
    return "";
  return m[1];
}

}  // namespace

// R8: HQ marks every case a ledger block touches as changed (mark_cases_changed,
// corehq/apps/commtrack/processing.py: "touch every case for proper ota restore logic syncing
// to be preserved"), with a FORM|LEDGER transaction carrying the form's sync token
// (CaseTransaction.ledger_transaction); get_modified_case_ids then sends it to the other phones
// that hold it, with its balances (livequery.py compile_response: get_stock_payload per batch).
TEST_CASE("HQ fidelity: ledger-only changes reach the phone on an incremental sync") {
  Fixture f;
  for (const char* id : {"s", "d", "e"}) Case(f.e.get(), id, Create("u1"));
  LedgerOnly(f.e.get(), "l0",
             Balance("s", "<entry id=\"p\" quantity=\"10\"/>") +
                 Balance("e", "<entry id=\"p\" quantity=\"1\"/>"));
  std::string p;
  f.Restore(&p);
  CHECK(Sent(p, "s") == "10");
  // Someone else moves 4 from s to d and reports a new balance on e.
  LedgerOnly(f.e.get(), "l1", Transfer("s", "d", "4"), "another-token");
  LedgerOnly(f.e.get(), "l2", Balance("e", "<entry id=\"p\" quantity=\"7\"/>"), "another-token");
  auto r = f.Restore(&p);
  CHECK(r.cases == 3);
  CHECK(Sent(p, "s") == "6");
  CHECK(Sent(p, "d") == "4");
  CHECK(Sent(p, "e") == "7");
  // The phone's own ledger forms are not echoed, and a transfer to a case it does not hold
  // does not put that case on it: its state hash still matches.
  Case(f.e.get(), "elsewhere", Create("u9"));
  LedgerOnly(f.e.get(), "l3", Transfer("s", "elsewhere", "1"), f.req.since);
  f.req.state = CaseStateHash(f.Held());
  r = f.Restore(&p);
  CHECK(r.http_status == 200);
  CHECK(r.cases == 0);
  CHECK(Sent(p, "s").empty());
  // ... but reach another phone of the same user (another token).
  f.req.since.clear();
  f.req.state.clear();
  f.phone.clear();
  f.Restore(&p);
  CHECK(Sent(p, "s") == "5");
}

// R13: HQ's V2CaseXMLGenerator.add_attachments (casexml/apps/case/xml/generator.py) writes
// src=case.get_attachment_server_url(name), an absolute URL of the api_case_attachment route,
// and from="remote"; a "local" src names a file the phone does not have.
TEST_CASE("HQ fidelity: case attachments are sent from remote with a URL the phone fetches") {
  Fixture f;
  SubmitRequest r;
  r.domain = "demo";
  r.content_type = "multipart/form-data; boundary=BB";
  r.body = cctest::MultipartBody(
      CaseForm("m1", "c:1",
               Create("u1") + "<attachment><photo src=\"photo.jpg\" from=\"local\"/>"
                              "</attachment>"),
      "photo.jpg", "image/jpeg", "\xff\xd8JPEG");
  REQUIRE(f.e->Submit(r).nature == "submit_success");
  // Off by default, as HQ's MM_CASE_PROPERTIES toggle: commcare-core's bulk case parser
  // (BulkProcessingCaseXmlParser.java:286) throws on any attachment and fails the restore.
  std::string p;
  f.Restore(&p);
  CHECK(p.find("case_id=\"c:1\"") != std::string::npos);
  CHECK(p.find("<attachment>") == std::string::npos);
  f.req.since.clear();
  f.phone.clear();
  f.req.attachments = true;
  f.req.url_base = "https://cc.example.org:8443";
  f.Restore(&p);
  CHECK(p.find("<attachment><photo src=\"https://cc.example.org:8443/a/demo/api/case/attachment/"
               "c%3A1/photo\" from=\"remote\"/></attachment>") != std::string::npos);
  f.req.url_base.clear();  // no host known (the CLI): the path alone
  f.req.since.clear();
  f.phone.clear();
  f.Restore(&p);
  CHECK(p.find("<photo src=\"/a/demo/api/case/attachment/c%3A1/photo\" from=\"remote\"/>") !=
        std::string::npos);
}
