// The restore payload's pieces: case blocks, balance blocks, and the error payload.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "sync/sync_internal.h"
#include "util/xml.h"

namespace commcare {
namespace {

using util::AppendXmlElement;
using util::AppendXmlEscaped;

}  // namespace

namespace sync_internal {
namespace {

// stock.py _entry_xml writes quantity=str(int(quantity)); commcare-core parses it with
// parseInt (LedgerXmlParsers.java:94,113). Balances stored before they were kept whole are
// truncated the same way.
std::string FormatQuantity(double v) { return std::to_string(static_cast<int64_t>(v)); }

}  // namespace

std::string UrlEncode(std::string_view s) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// A case block as CommCare's generators write it for this restore version
// (casexml/apps/case/xml/generator.py). A deleted case the phone holds gets the same block as
// any other (HQ's restore does not set it apart) and a <close/>, so the phone purges it as the
// new footprint does: commcare-core rejects a block without date_modified
// (CaseXmlParser.java:87), and the whole restore with it.
void CaseBlock(std::string* o, const CaseDoc& c, bool create, bool v1,
               std::string_view attachment_base) {
  const std::string_view case_id = c.Str("case_id");
  // HQ's rebuild of a case left without forms sets modified_on to the rebuild's server date.
  const int64_t modified_on = c.Int("modified_on");
  const std::string modified = FormatTime(modified_on ? modified_on : c.Int("server_modified_on"));
  if (v1) {
    *o += "<case>";
    AppendXmlElement(o, "case_id", case_id);
    AppendXmlElement(o, "date_modified", modified);
    if (create) {
      *o += "<create>";
      AppendXmlElement(o, "case_type_id", c.Str("type"));
      AppendXmlElement(o, "user_id", c.Str("opened_by"));
      AppendXmlElement(o, "case_name", c.Str("name"));
      AppendXmlElement(o, "external_id", c.Str("external_id"));
      *o += "</create>";
    }
  } else {
    *o += "<case xmlns=\"http://commcarehq.org/case/transaction/v2\" case_id=\"";
    AppendXmlEscaped(o, case_id);
    *o += "\" date_modified=\"";
    *o += modified;
    *o += "\" user_id=\"";
    AppendXmlEscaped(o, c.Str("modified_by"));
    *o += "\">";
    if (create) {
      *o += "<create>";
      AppendXmlElement(o, "case_type", c.Str("type"));
      AppendXmlElement(o, "case_name", c.Str("name"));
      AppendXmlElement(o, "owner_id", c.Str("owner_id"));
      *o += "</create>";
    }
  }
  *o += "<update>";
  if (!create && !v1) {  // base properties go in the update when there is no create
    AppendXmlElement(o, "case_type", c.Str("type"));
    AppendXmlElement(o, "case_name", c.Str("name"));
    AppendXmlElement(o, "owner_id", c.Str("owner_id"));
  }
  // generator.py add_custom_properties: v2 writes external_id, v1 owner_id, when set; both
  // write date_opened, when set, as a date (date_to_xml_string: commcare-core's
  // DateUtils.parseDate reads nothing else, CaseXmlParser.java:210-211).
  if (auto ext = c.Str("external_id"); !v1 && !ext.empty()) AppendXmlElement(o, "external_id", ext);
  if (auto owner = c.Str("owner_id"); v1 && !owner.empty()) AppendXmlElement(o, "owner_id", owner);
  if (const int64_t opened = c.Int("opened_on"); opened != 0)
    AppendXmlElement(o, "date_opened", FormatTime(opened).substr(0, 10));
  // Properties by name (the codec writes them sorted; sorted here too for any other writer).
  const json::object& props = c.Object("properties");
  std::vector<const json::key_value_pair*> kv;
  kv.reserve(props.size());
  for (const auto& p : props)
    if (p.value().is_string()) kv.push_back(&p);
  auto by_key = [](const auto* a, const auto* b) { return a->key() < b->key(); };
  if (!std::is_sorted(kv.begin(), kv.end(), by_key)) std::sort(kv.begin(), kv.end(), by_key);
  for (const auto* p : kv) AppendXmlElement(o, p->key(), p->value().get_string());
  *o += "</update>";
  if (const json::array& indices = c.Array("indices"); !indices.empty()) {
    std::vector<CaseDoc> ix;
    for (const auto& i : indices)
      if (i.is_object()) ix.emplace_back(i.get_object());
    std::sort(ix.begin(), ix.end(), [](const CaseDoc& a, const CaseDoc& b) {
      return a.Str("identifier") < b.Str("identifier");
    });
    *o += "<index>";
    for (const auto& i : ix) {
      *o += '<';
      *o += i.Str("identifier");
      *o += " case_type=\"";
      AppendXmlEscaped(o, i.Str("referenced_type"));
      *o += '"';
      if (i.Str("relationship") == "extension") *o += " relationship=\"extension\"";
      *o += '>';
      AppendXmlEscaped(o, i.Str("referenced_id"));
      *o += "</";
      *o += i.Str("identifier");
      *o += '>';
    }
    *o += "</index>";
  }
  // generator.py add_attachments: src is the attachment's server URL
  // (get_attachment_server_url: the api_case_attachment route), from="remote", so the phone
  // downloads it (a "local" src names a file the phone does not have).
  const json::array& atts = c.Array("attachments");
  if (!atts.empty() && !v1 && !attachment_base.empty()) {
    *o += "<attachment>";
    for (const auto& av : atts) {
      if (!av.is_object()) continue;
      CaseDoc a(av.get_object());
      *o += '<';
      *o += a.Str("name");
      *o += " src=\"";
      AppendXmlEscaped(
          o, std::string(attachment_base) + UrlEncode(case_id) + '/' + UrlEncode(a.Str("name")));
      *o += "\" from=\"remote\"/>";
    }
    *o += "</attachment>";
  }
  if (c.Bool("closed") || c.Bool("deleted")) *o += "<close/>";
  *o += "</case>";
}

// One balance block per section of a case's ledger values (ordered by section).
void BalanceBlocks(std::string* o, const std::vector<LedgerValue>& values) {
  for (size_t i = 0; i < values.size();) {
    size_t j = i;
    int64_t date = 0;
    while (j < values.size() && values[j].section_id == values[i].section_id)
      date = std::max(date, values[j++].last_modified);
    *o += "<ns0:balance xmlns:ns0=\"http://commcarehq.org/ledger/v1\" date=\"";
    *o += FormatTime(date);
    *o += "\" entity-id=\"";
    AppendXmlEscaped(o, values[i].case_id);
    *o += "\" section-id=\"";
    AppendXmlEscaped(o, values[i].section_id);
    *o += "\">";
    for (size_t k = i; k < j; ++k) {
      *o += "<ns0:entry id=\"";
      AppendXmlEscaped(o, values[k].entry_id);
      *o += "\" quantity=\"";
      *o += FormatQuantity(values[k].balance);
      *o += "\"/>";
    }
    *o += "</ns0:balance>";
    i = j;
  }
}

}  // namespace sync_internal

std::string RestoreErrorPayload(std::string_view message) {
  std::string o =
      "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"><message "
      "nature=\"ota_restore_error\">";
  AppendXmlEscaped(&o, message);
  o += "</message></OpenRosaResponse>";
  return o;
}

std::string RestorePendingPayload(std::string_view username, int64_t done, int64_t total,
                                  int retry_after_seconds) {
  std::string o =
      "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"><message "
      "nature=\"ota_restore_pending\">Asynchronous restore under way for ";
  AppendXmlEscaped(&o, username);
  o += fmt::format(
      "</message><Sync xmlns=\"http://commcarehq.org/sync\"><progress done=\"{}\" total=\"{}\" "
      "retry-after=\"{}\"/></Sync></OpenRosaResponse>",
      done, total, retry_after_seconds);
  return o;
}

}  // namespace commcare
