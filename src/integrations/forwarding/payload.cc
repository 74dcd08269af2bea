// Payloads in HQ's formats, built when a record is sent (as HQ does): form_xml (the form's
// stored XML, byte for byte), form_json (the form's metadata plus "form": its data as CommCare's
// xml2json), case_xml (a full v2 case block) and case_json (the Case API v2 object).
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cctype>
#include <iterator>

#include "integrations/forwarding/forwarding.h"
#include "util/xml.h"
#include "xform/xml2json.h"

namespace commcare::forwarding {

namespace json = boost::json;
using util::AppendXmlElement;
using util::AppendXmlEscaped;

namespace {

constexpr const char* kCaseXmlns = "http://commcarehq.org/case/transaction/v2";

// Drops "case" members that are v2 case blocks, at any depth.
void StripCases(json::value& v) {
  if (v.is_array()) {
    for (auto& x : v.get_array()) StripCases(x);
    return;
  }
  if (!v.is_object()) return;
  auto& o = v.get_object();
  if (const auto* c = o.if_contains("case")) {
    auto is_block = [](const json::value& x) {
      const auto* ns = x.is_object() ? x.get_object().if_contains("@xmlns") : nullptr;
      return ns && ns->is_string() && ns->get_string() == kCaseXmlns;
    };
    bool all = c->is_array() ? !c->get_array().empty() : is_block(*c);
    if (c->is_array())
      for (const auto& x : c->get_array()) all = all && is_block(x);
    if (all) o.erase("case");
  }
  for (auto& kv : o) StripCases(kv.value());
}

}  // namespace

std::string CaseXml(const CaseRecord& c) {
  std::string o;
  o.reserve(512);
  fmt::format_to(std::back_inserter(o), "<case xmlns=\"{}\" case_id=\"", kCaseXmlns);
  AppendXmlEscaped(&o, c.case_id);
  o += "\" date_modified=\"";
  AppendXmlEscaped(&o, FormatTime(c.modified_on));
  o += "\" user_id=\"";
  AppendXmlEscaped(&o, c.modified_by);
  o += "\"><create>";
  AppendXmlElement(&o, "case_type", c.type);
  AppendXmlElement(&o, "case_name", c.name);
  AppendXmlElement(&o, "owner_id", c.owner_id);
  o += "</create><update>";
  if (!c.external_id.empty()) AppendXmlElement(&o, "external_id", c.external_id);
  if (c.opened_on) AppendXmlElement(&o, "date_opened", FormatTime(c.opened_on).substr(0, 10));
  for (const auto& [k, v] : c.properties)
    if (util::IsCasePropertyName(k)) AppendXmlElement(&o, k, v);
  o += "</update>";
  if (!c.indices.empty()) {
    o += "<index>";
    for (const auto& i : c.indices) {
      if (!util::IsCasePropertyName(i.identifier)) continue;
      fmt::format_to(std::back_inserter(o), "<{} case_type=\"", i.identifier);
      AppendXmlEscaped(&o, i.referenced_type);
      if (i.relationship == "extension") o += "\" relationship=\"extension";
      o += "\">";
      AppendXmlEscaped(&o, i.referenced_id);
      fmt::format_to(std::back_inserter(o), "</{}>", i.identifier);
    }
    o += "</index>";
  }
  if (c.closed) o += "<close/>";
  o += "</case>";
  return o;
}

std::string StripCaseBlocks(std::string_view xml) {
  // Case blocks do not nest: drop each element named case (or prefix:case), from its start
  // tag to its "</case>" (or the self-closing end). Forms use no other element by that name.
  std::string out;
  out.reserve(xml.size());
  size_t pos = 0;
  while (pos < xml.size()) {
    size_t lt = xml.find('<', pos);
    if (lt == std::string_view::npos) break;
    size_t name_end = xml.find_first_of(" \t\r\n/>", lt + 1);
    if (name_end == std::string_view::npos) break;
    std::string_view name = xml.substr(lt + 1, name_end - lt - 1);
    size_t colon = name.find(':');
    std::string_view local = colon == std::string_view::npos ? name : name.substr(colon + 1);
    if (local != "case") {
      out.append(xml.substr(pos, name_end - pos));
      pos = name_end;
      continue;
    }
    size_t tag_end = xml.find('>', name_end);
    if (tag_end == std::string_view::npos) break;
    size_t end;
    if (xml[tag_end - 1] == '/') {
      end = tag_end + 1;
    } else {
      const std::string close = fmt::format("</{}>", name);
      size_t c = xml.find(close, tag_end);
      if (c == std::string_view::npos) break;
      end = c + close.size();
    }
    out.append(xml.substr(pos, lt - pos));
    pos = end;
  }
  out.append(xml.substr(pos));
  return out;
}

Result<Payload> BuildPayload(Engine& engine, const Forwarder& f, const RepeatRecord& r) {
  Payload p;
  if (f.kind == "form") {
    CC_ASSIGN_OR_RETURN(FormRecord form, engine.GetForm(r.domain, r.doc_id));
    if (form.state != FormState::kNormal)
      return Status::NotFound(
          fmt::format("form {} is {} now", r.doc_id, FormStateName(form.state)));
    CC_ASSIGN_OR_RETURN(std::string xml, engine.GetFormXml(r.domain, r.doc_id));
    if (!f.include_case_blocks && f.format == "form_xml") xml = StripCaseBlocks(xml);
    if (f.format == "form_xml") {
      p.body = std::move(xml);
      p.content_type = "application/xml";
    } else {
      auto data = xform::FormXmlToJson(xml);
      if (!data.ok()) return Status::InvalidArgument("form XML: " + data.status().message());
      json::value doc = json::parse(FormToJson(form));
      json::value d(std::move(*data));
      if (!f.include_case_blocks) StripCases(d);
      doc.get_object()["form"] = std::move(d);
      p.body = json::serialize(doc);
      p.content_type = "application/json";
    }
    p.headers.emplace_back("received-on", FormatTime(form.received_on));
    if (f.include_app_id_param && !form.app_id.empty())
      p.url_suffix = (f.url.find('?') == std::string::npos ? "?app_id=" : "&app_id=") + form.app_id;
    return p;
  }
  CC_ASSIGN_OR_RETURN(CaseRecord c, engine.GetCase(r.domain, r.doc_id));
  if (c.deleted) return Status::NotFound(fmt::format("case {} is deleted", r.doc_id));
  if (f.format == "case_xml") {
    p.body = CaseXml(c);
    p.content_type = "application/xml";
  } else {
    p.body = CaseToJson(c);
    p.content_type = "application/json";
  }
  return p;
}

}  // namespace commcare::forwarding
