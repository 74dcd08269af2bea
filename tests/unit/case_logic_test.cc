#include "processing/case_logic.h"

#include <doctest/doctest.h>

#include "util/time.h"

using namespace commcare;
using namespace commcare::processing;

namespace {
xform::ParsedForm Parse(const std::string& xml) {
  xform::ParsedForm f;
  REQUIRE(xform::ParseForm(xml, {}, &f).ok());
  return f;
}
constexpr const char* kNs = "xmlns=\"http://commcarehq.org/case/transaction/v2\"";
}  // namespace

TEST_CASE("GroupCaseBlocks merges a case's blocks and puts create first") {
  auto f = Parse(std::string("<d xmlns=\"x\"><case ") + kNs +
                 " case_id=\"a\"><update><p>1</p></update></case>" + "<case " + kNs +
                 " case_id=\"b\"/><case " + kNs +
                 " case_id=\"a\"><create><case_type>t</case_type></create></case></d>");
  auto groups = GroupCaseBlocks(f);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].case_id == "a");
  REQUIRE(groups[0].blocks.size() == 2);
  CHECK(groups[0].blocks[0]->has_create);
  CHECK(groups[1].case_id == "b");
}

TEST_CASE("ApplyBlocks creates, updates, indexes and closes in one transaction") {
  auto f =
      Parse(std::string("<d xmlns=\"x\"><case ") + kNs +
            " case_id=\"c\" date_modified=\"2020-01-02T00:00:00Z\" user_id=\"u\">"
            "<create><case_type>person</case_type><case_name>Ann</case_name></create>"
            "<update><age>3</age><case_name>Anna</case_name><location_id>L</location_id></update>"
            "<index><parent case_type=\"household\">h</parent></index><close/></case></d>");
  auto groups = GroupCaseBlocks(f);
  CaseRecord c;
  int type = 0;
  CaseError err;
  FormContext ctx{"f1", "demo", "x", "meta-user", 1};
  REQUIRE(ApplyBlocks(groups[0], ctx, {}, &c, &type, &err));
  CHECK(c.case_id == "c");
  CHECK(c.type == "person");
  CHECK(c.name == "Anna");
  CHECK(c.owner_id == "u");  // defaults to the block's user
  CHECK(c.location_id == "L");
  CHECK(c.properties.at("age") == "3");
  CHECK(c.properties.count("case_name") == 0);
  CHECK(c.closed);
  CHECK(c.closed_by == "u");
  REQUIRE(c.indices.size() == 1);
  CHECK(c.indices[0].relationship == "child");
  CHECK(type == (kTxForm | kTxCaseCreate | kTxCaseIndex | kTxCaseClose));
  CHECK(util::FormatIsoTime(c.opened_on) == "2020-01-02T00:00:00.000000Z");
}

TEST_CASE("ApplyBlocks rejects a bad relationship and a self index") {
  auto f =
      Parse(std::string("<d xmlns=\"x\"><case ") + kNs +
            " case_id=\"c\"><index><p case_type=\"t\" relationship=\"\">x</p></index></case></d>");
  auto groups = GroupCaseBlocks(f);
  CaseRecord c;
  int type;
  CaseError err;
  CHECK_FALSE(ApplyBlocks(groups[0], FormContext{}, {}, &c, &type, &err));
  CHECK(err.type == "CaseValueError");
  auto g = Parse(std::string("<d xmlns=\"x\"><case ") + kNs +
                 " case_id=\"c\"><index><p case_type=\"t\">c</p></index></case></d>");
  CaseRecord c2;
  CHECK_FALSE(ApplyBlocks(GroupCaseBlocks(g)[0], FormContext{}, {}, &c2, &type, &err));
  CHECK(err.type == "InvalidCaseIndex");
}

TEST_CASE("ValidateBlocks names empty ids, bad dates and referrals") {
  CaseError err;
  auto f = Parse(std::string("<d xmlns=\"x\"><case ") + kNs + " case_id=\"\"/></d>");
  CHECK_FALSE(ValidateBlocks(GroupCaseBlocks(f)[0], &err));
  CHECK(err.Text() == "IllegalCaseId: case_id must not be empty");
  auto g = Parse(std::string("<d xmlns=\"x\"><case ") + kNs +
                 " case_id=\"a\" date_modified=\"nope\"/></d>");
  CHECK_FALSE(ValidateBlocks(GroupCaseBlocks(g)[0], &err));
  CHECK(err.type == "PhoneDateValueError");
}

TEST_CASE("ValidateCaseValues refuses names over 255 characters") {
  CaseRecord c;
  c.name = std::string(256, 'x');
  CaseError err;
  CHECK_FALSE(ValidateCaseValues(c, &err));
  CHECK(err.type == "CaseValueError");
}

TEST_CASE("Ledger changes replay into balances and deltas") {
  auto f = Parse(R"(<d xmlns="x" xmlns:l="http://commcarehq.org/ledger/v1">
<l:balance entity-id="c1" date="2000-01-01" section-id="s"><l:entry id="p" quantity="10"/><l:entry id="q" quantity="abc"/></l:balance>
<l:transfer src="c1" dest="c2" section-id="s" date="2000-01-02"><l:entry id="p" quantity="3"/></l:transfer></d>)");
  std::vector<LedgerChange> ch;
  CaseError err;
  REQUIRE(ExtractLedgerChanges(f, 5, &ch, &err));
  REQUIRE(ch.size() == 3);  // the non-numeric quantity is dropped
  std::vector<LedgerTransaction> txs = LedgerTransactionsFor(ch, "c1", "f1", 5);
  for (auto& t : LedgerTransactionsFor(ch, "c2", "f1", 5)) txs.push_back(t);
  REQUIRE(txs.size() == 3);
  CHECK(txs[0].seq < txs[1].seq);
  std::map<std::string, LedgerValue> values;
  ReplayLedger(&txs, &values, "demo");
  CHECK(values.at(LedgerKey("c1", "s", "p")).balance == 7);
  CHECK(values.at(LedgerKey("c2", "s", "p")).balance == 3);
  CHECK(txs[0].delta == 10);           // c1 balance 10
  CHECK(txs[1].updated_balance == 7);  // c1 transfer out 3
  CHECK(txs[2].updated_balance == 3);  // c2 transfer in 3
}

TEST_CASE("Ledger blocks without ids are known errors") {
  auto f = Parse(R"(<d xmlns="x" xmlns:l="http://commcarehq.org/ledger/v1">
<l:transfer section-id="s"><l:entry id="p" quantity="1"/></l:transfer></d>)");
  std::vector<LedgerChange> ch;
  CaseError err;
  CHECK_FALSE(ExtractLedgerChanges(f, 0, &ch, &err));
  CHECK(err.type == "IllegalCaseId");
  auto g = Parse(R"(<d xmlns="x" xmlns:l="http://commcarehq.org/ledger/v1">
<l:balance entity-id="c" section-id="s"><l:entry id="" quantity="1"/></l:balance></d>)");
  CHECK_FALSE(ExtractLedgerChanges(g, 0, &ch, &err));
  CHECK(err.type == "MissingProductId");
}
