// Payloads in HQ's formats (corehq/motech/repeaters/repeater_generators.py), built when a record
// is sent (as HQ does): form_xml (the form's stored XML, byte for byte), form_json (the Form API
// object, XFormInstanceResource), case_xml (a full v2 case block) and case_json (the case's
// to_api_json(lite=True)).
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <iterator>
#include <set>

#include "integrations/forwarding/forwarding.h"
#include "util/time.h"
#include "util/xml.h"

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

// A UTC time as Python's isoformat() writes HQ's naive UTC datetimes: no zone, and the fraction
// only when there is one (six digits; three when millis, as DjangoJSONEncoder truncates).
json::value NaiveIso(int64_t micros, bool millis) {
  if (micros == 0) return nullptr;
  const std::string t = FormatTime(micros);  // 2016-03-02T09:21:48.715000Z
  const std::string_view fraction = std::string_view(t).substr(20, 6);
  if (fraction == "000000") return json::value(t.substr(0, 19));
  return json::value(t.substr(0, 19) + "." + std::string(fraction.substr(0, millis ? 3 : 6)));
}

}  // namespace

void PrefixAttachmentUrls(json::value* form, std::string_view base_url) {
  auto* atts = form->is_object() ? form->as_object().if_contains("attachments") : nullptr;
  if (base_url.empty() || !atts || !atts->is_object()) return;
  for (auto& kv : atts->as_object())
    if (auto* url = kv.value().is_object() ? kv.value().as_object().if_contains("url") : nullptr;
        url && url->is_string() && url->as_string().starts_with("/"))
      *url = fmt::format("{}{}", base_url, url->as_string().c_str());
}

std::string CaseToLiteApiJson(const CaseRecord& c, const std::vector<std::string>& xform_ids,
                              std::string_view base_url) {
  // CommCareCaseAPISerializer(lite=True), corehq/form_processor/serializers.py: its
  // Meta.fields in order, less reverse_indices. DRF writes the DateTimeFields with isoformat()
  // (HQ's datetimes are naive UTC); properties.date_opened is a datetime inside a JSONField, so
  // the repeater's json.dumps(cls=DjangoJSONEncoder) writes it, to the millisecond.
  json::object o;
  o["domain"] = c.domain;
  o["case_id"] = c.case_id;
  o["user_id"] = c.modified_by;
  o["closed"] = c.closed;
  json::array ids;
  for (const auto& id : xform_ids) ids.emplace_back(id);
  o["xform_ids"] = std::move(ids);
  o["date_closed"] = NaiveIso(c.closed_on, false);
  o["date_modified"] = NaiveIso(c.modified_on, false);
  o["server_date_modified"] = NaiveIso(c.server_modified_on, false);
  o["properties"] = CaseApiProperties(c, NaiveIso(c.opened_on, true));
  // get_index_map and get_attachment_map (models/cases.py). HQ's attachment url is absolute
  // (get_url_base() + the api_case_attachment route): base_url + the route's path.
  json::object idx;
  for (const auto& i : c.indices)
    idx[i.identifier] = json::object{{"case_type", i.referenced_type},
                                     {"case_id", i.referenced_id},
                                     {"relationship", i.relationship}};
  o["indices"] = std::move(idx);
  json::object atts;
  for (const auto& a : c.attachments)
    atts[a.name] = json::object{{"url", fmt::format("{}/a/{}/api/case/attachment/{}/{}", base_url,
                                                    c.domain, c.case_id, a.name)},
                                {"content_type", a.content_type}};
  o["attachments"] = std::move(atts);
  return json::serialize(o);
}

json::object CaseApiProperties(const CaseRecord& c, json::value date_opened) {
  // get_properties_in_api_format (corehq/form_processor/models/cases.py).
  json::object props;
  for (const auto& [k, v] : c.properties) props[k] = v;
  props["external_id"] = c.external_id.empty() ? json::value() : json::value(c.external_id);
  props["owner_id"] = c.owner_id;
  props["case_name"] = c.name;
  props["case_type"] = c.type;
  props["date_opened"] = std::move(date_opened);
  return props;
}

std::vector<std::string> CaseXformIds(const std::vector<CaseTransaction>& history) {
  // CommCareCase.xform_ids: get_case_transactions_by_type(case, TYPE_FORM)
  // (corehq/sql_accessors/sql_templates/get_case_transactions_by_type.sql): the form
  // transactions that are not revoked, by server date.
  std::vector<const CaseTransaction*> forms;
  for (const auto& t : history)
    if ((t.type & kTxForm) && !t.revoked && !t.form_id.empty()) forms.push_back(&t);
  std::stable_sort(forms.begin(), forms.end(),
                   [](const auto* a, const auto* b) { return a->server_date < b->server_date; });
  std::vector<std::string> out;
  std::set<std::string_view> seen;
  for (const auto* t : forms)
    if (seen.insert(t->form_id).second) out.push_back(t->form_id);
  return out;
}

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

Result<Payload> BuildPayload(Engine& engine, const Forwarder& f, const RepeatRecord& r,
                             std::string_view base_url) {
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
      // FormRepeaterJsonPayloadGenerator: XFormInstanceResource over form_to_es_form(form), whose
      // ES document is stamped inserted_at (indexed_on) as it is made, i.e. now.
      auto doc = FormToApiJson(form, xml, util::NowMicros());
      if (!doc.ok()) return Status::InvalidArgument("form XML: " + doc.status().message());
      if (f.include_case_blocks && base_url.empty()) {
        p.body = std::move(*doc);
      } else {
        json::value v = json::parse(*doc);
        if (auto* d = v.get_object().if_contains("form"); d && !f.include_case_blocks)
          StripCases(*d);
        PrefixAttachmentUrls(&v, base_url);
        p.body = json::serialize(v);
      }
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
    CC_ASSIGN_OR_RETURN(auto history, engine.CaseHistory(r.domain, r.doc_id));
    p.body = CaseToLiteApiJson(c, CaseXformIds(history), base_url);
    p.content_type = "application/json";
  }
  return p;
}

}  // namespace commcare::forwarding
