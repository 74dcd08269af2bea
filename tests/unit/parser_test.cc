#include "xform/parser.h"

#include <doctest/doctest.h>

#include <string>

using namespace commcare::xform;

TEST_CASE("ParseForm reads root xmlns and legacy meta names") {
  ParsedForm f;
  REQUIRE(ParseForm(R"(<?xml version='1.0' ?>
<form xmlns="http://commcarehq.org/test/submit"><Meta><DeviceID>phone</DeviceID>
<TimeStart>2010-06-29T13:42:50.137</TimeStart><chw_id>u1</chw_id><uid>abc</uid></Meta>
<meta><instanceID>ignored</instanceID></meta></form>)",
                    {}, &f)
              .ok());
  CHECK(f.xmlns == "http://commcarehq.org/test/submit");
  CHECK(f.root_name == "form");
  CHECK(f.meta.instance_id == "abc");
  CHECK(f.meta.user_id == "u1");
  CHECK(f.meta.device_id == "phone");
  CHECK(f.meta.time_start == "2010-06-29T13:42:50.137");
}

TEST_CASE("ParseForm finds v2 case blocks at any depth, prefixed or not") {
  ParsedForm f;
  REQUIRE(
      ParseForm(R"(<d xmlns="x"><a><b><n0:case xmlns:n0="http://commcarehq.org/case/transaction/v2"
 case_id="c1" date_modified="2011-12-27" user_id="u"><n0:create><n0:case_type>t</n0:case_type>
<n0:case_name>N</n0:case_name></n0:create><n0:update><p>v</p><q/></n0:update>
<n0:index><parent case_type="mother" relationship="extension">m1</parent><gone case_type="x"/></n0:index>
<n0:close/></n0:case></b></a></d>)",
                {}, &f)
          .ok());
  REQUIRE(f.cases.size() == 1);
  const auto& b = f.cases[0];
  CHECK_FALSE(b.v1);
  CHECK(b.case_id == "c1");
  CHECK(b.user_id == "u");
  CHECK(b.has_create);
  CHECK(b.has_close);
  REQUIRE(b.update.size() == 2);
  CHECK(b.update[1].first == "q");
  CHECK(b.update[1].second == "");
  REQUIRE(b.indices.size() == 2);
  CHECK(b.indices[0].relationship == "extension");
  CHECK(b.indices[0].target == "m1");
  CHECK(b.indices[1].target.empty());
  CHECK(b.LowestAction() == 0);
}

TEST_CASE("ParseForm reads v1 case blocks and ignores <case> without case_id") {
  ParsedForm f;
  REQUIRE(
      ParseForm(R"(<d xmlns="x"><case><case_id>c1</case_id><date_modified>2011-01-01</date_modified>
<create><case_type_id>t</case_type_id><user_id>u9</user_id><case_name>n</case_name></create></case>
<r><case>old style without id</case></r></d>)",
                {}, &f)
          .ok());
  REQUIRE(f.cases.size() == 1);
  CHECK(f.cases[0].v1);
  CHECK(f.cases[0].user_id == "u9");
  CHECK(f.cases[0].create[0].first == "case_type");
}

TEST_CASE("ParseForm does not look for cases inside device reports") {
  ParsedForm f;
  REQUIRE(ParseForm(R"(<device_report xmlns="http://code.javarosa.org/devicereport">
<case case_id="x"/></device_report>)",
                    {}, &f)
              .ok());
  CHECK(f.device_report);
  CHECK(f.cases.empty());
}

TEST_CASE("ParseForm reads ledger balance, transfer and per-entry blocks") {
  ParsedForm f;
  REQUIRE(ParseForm(R"(<d xmlns="x" xmlns:l="http://commcarehq.org/ledger/v1">
<l:balance entity-id="c1" date="2000-01-01" section-id="stock"><l:entry id="p1" quantity="10"/></l:balance>
<l:transfer src="c1" dest="c2" section-id="stock" type="t"><l:entry id="p1" quantity="3"/></l:transfer>
<l:balance entity-id="c2"><l:entry id="p2"><l:value section-id="s1" quantity="4"/>
<l:value section-id="s2" quantity="5"/></l:entry></l:balance></d>)",
                    {}, &f)
              .ok());
  REQUIRE(f.ledgers.size() == 3);
  CHECK(f.ledgers[0].entries[0].quantity == "10");
  CHECK(f.ledgers[1].is_transfer);
  CHECK(f.ledgers[1].dest == "c2");
  REQUIRE(f.ledgers[2].entries.size() == 2);
  CHECK(f.ledgers[2].entries[1].section_id == "s2");
}

TEST_CASE("ParseForm reports malformed XML with its position") {
  ParsedForm f;
  auto s = ParseForm("<form xmlns=\"x\">\n<foo>bar</foo\n</form>", {}, &f);
  CHECK(s.IsInvalidArgument());
  CHECK(s.message().find("Invalid XML") == 0);
  CHECK(s.message().find("line 3") != std::string::npos);
  CHECK(ParseForm("", {}, &f).IsInvalidArgument());
}

TEST_CASE("ParseForm refuses entity expansion and deep nesting quickly") {
  ParsedForm f;
  std::string laughs = R"(<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<lolz xmlns="x">&lol3;</lolz>)";
  auto s = ParseForm(laughs, {}, &f);
  CHECK(s.IsInvalidArgument());
  CHECK(s.message().find("DOCTYPE") != std::string::npos);
  std::string deep = "<a xmlns=\"x\">";
  for (int i = 0; i < 10000; ++i) deep += "<b>";
  auto d = ParseForm(deep, {}, &f);
  CHECK(d.IsInvalidArgument());
  CHECK(d.message().find("nested deeper") != std::string::npos);
}

TEST_CASE("Multipart bodies split into named parts") {
  CHECK(MultipartBoundary("multipart/form-data; boundary=\"abc\"") == "abc");
  CHECK(MultipartBoundary("text/xml") == "");
  std::string body =
      "--abc\r\nContent-Disposition: form-data; name=\"xml_submission_file\"; "
      "filename=\"f.xml\"\r\n"
      "Content-Type: text/xml\r\n\r\n<x/>\r\n--abc\r\nContent-Disposition: form-data; "
      "name=\"photo.jpg\"; filename=\"photo.jpg\"\r\nContent-Type: "
      "image/jpeg\r\n\r\nJPEG\r\n--abc--\r\n";
  std::vector<MultipartPart> parts;
  REQUIRE(ParseMultipart(body, "abc", &parts).ok());
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].name == "xml_submission_file");
  CHECK(parts[0].filename == "f.xml");
  CHECK(parts[0].data == "<x/>");
  CHECK(parts[1].content_type == "image/jpeg");
  CHECK(parts[1].data == "JPEG");
  CHECK(ParseMultipart(body.substr(0, body.size() - 20), "abc", &parts).IsInvalidArgument());
}
