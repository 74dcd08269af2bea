// Public JSON renderings of records (Case API v2, Form API v0.5 and friends).
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cmath>

#include "commcare/engine.h"
#include "util/codec.h"
#include "util/time.h"
#include "xform/xml2json.h"

namespace commcare {
namespace {
namespace json = boost::json;
json::value TimeOrNull(int64_t t) {
  if (t == 0) return nullptr;
  return json::value(util::FormatIsoTime(t));
}
json::value TextOrNull(const std::string& s) { return s.empty() ? json::value() : json::value(s); }
json::value Attr(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? *v : json::value();
}

// HQ's clean_metadata over form.meta: the meta block without its @xmlns, with the fields of
// couchforms' Metadata present (null when the form has none).
json::value Metadata(const json::object& form) {
  const json::value* meta = form.if_contains("meta");
  if (!meta || !meta->is_object()) return nullptr;
  json::object out = meta->get_object();
  out.erase("@xmlns");
  for (const char* k :
       {"appVersion", "app_build_version", "commcare_version", "deviceID", "geo_point",
        "instanceID", "location", "timeEnd", "timeStart", "userID", "username"})
    if (!out.contains(k)) out[k] = nullptr;
  return out;
}
}  // namespace

std::string FormatTime(int64_t micros) { return util::FormatIsoTime(micros); }

std::string CaseToJson(const CaseRecord& c) {
  json::object o;
  o["domain"] = c.domain;
  o["case_id"] = c.case_id;
  o["case_type"] = c.type;
  o["case_name"] = c.name;
  o["external_id"] = c.external_id;
  o["owner_id"] = c.owner_id;
  o["date_opened"] = TimeOrNull(c.opened_on);
  o["last_modified"] = TimeOrNull(c.modified_on);
  o["server_last_modified"] = TimeOrNull(c.server_modified_on);
  o["closed"] = c.closed;
  o["date_closed"] = TimeOrNull(c.closed_on);
  o["opened_by"] = c.opened_by;
  o["modified_by"] = c.modified_by;
  o["closed_by"] = c.closed_by;
  o["location_id"] = c.location_id;
  o["deleted"] = c.deleted;
  json::object props;
  for (const auto& [k, v] : c.properties) props[k] = v;
  o["properties"] = std::move(props);
  json::object idx;
  for (const auto& i : c.indices)
    idx[i.identifier] = json::object{{"case_id", i.referenced_id},
                                     {"case_type", i.referenced_type},
                                     {"relationship", i.relationship}};
  o["indices"] = std::move(idx);
  json::object atts;
  for (const auto& a : c.attachments)
    atts[a.name] = json::object{{"src", a.src}, {"from", a.from}, {"content_type", a.content_type}};
  o["attachments"] = std::move(atts);
  return json::serialize(o);
}

std::string FormToJson(const FormRecord& f) {
  json::object o;
  o["form_id"] = f.form_id;
  o["domain"] = f.domain;
  o["xmlns"] = f.xmlns;
  o["state"] = std::string(FormStateName(f.state));
  o["user_id"] = f.user_id;
  o["username"] = f.username;
  o["device_id"] = f.device_id;
  o["received_on"] = TimeOrNull(f.received_on);
  o["server_modified_on"] = TimeOrNull(f.server_modified_on);
  o["orig_id"] = f.orig_id.empty() ? json::value(nullptr) : json::value(f.orig_id);
  o["deprecated_form_id"] =
      f.deprecated_form_id.empty() ? json::value(nullptr) : json::value(f.deprecated_form_id);
  o["edited_on"] = TimeOrNull(f.edited_on);
  o["problem"] = f.problem.empty() ? json::value(nullptr) : json::value(f.problem);
  o["time_start"] = TimeOrNull(f.time_start);
  o["time_end"] = TimeOrNull(f.time_end);
  o["app_version"] = f.app_version;
  o["app_id"] = f.app_id;
  o["build_id"] = f.build_id;
  o["md5"] = f.md5;
  json::array atts;
  for (const auto& a : f.attachments)
    atts.push_back(json::object{
        {"name", a.name}, {"content_type", a.content_type}, {"length", a.length}, {"md5", a.md5}});
  o["attachments"] = std::move(atts);
  return json::serialize(o);
}

Result<std::string> FormToApiJson(const FormRecord& f, std::string_view form_xml,
                                  int64_t indexed_on) {
  json::object form;
  if (!form_xml.empty()) {
    CC_ASSIGN_OR_RETURN(form, xform::FormXmlToJson(form_xml));
    // HQ stores (and so serves) the form JSON with its zoned date-times in UTC (adjust_datetimes,
    // corehq/form_processor/utils/xform.py): form.meta.timeStart and metadata.timeStart alike.
    json::value v(std::move(form));
    xform::AdjustDatetimes(v);
    form = std::move(v.as_object());
  }
  if (!form.contains("@xmlns")) form["@xmlns"] = f.xmlns;
  json::object o;
  o["id"] = f.form_id;
  o["domain"] = f.domain;
  o["type"] = Attr(form, "#type");
  o["version"] = Attr(form, "@version");
  o["uiversion"] = Attr(form, "@uiVersion");
  o["metadata"] = Metadata(form);
  o["received_on"] = TimeOrNull(f.received_on);
  o["edited_on"] = TimeOrNull(f.edited_on);
  o["server_modified_on"] = TimeOrNull(f.server_modified_on);
  o["indexed_on"] = TimeOrNull(indexed_on ? indexed_on : f.received_on);
  o["app_id"] = TextOrNull(f.app_id);
  o["build_id"] = TextOrNull(f.build_id);
  o["initial_processing_complete"] = true;
  o["problem"] = TextOrNull(f.problem);
  o["archived"] = f.state == FormState::kArchived;
  o["submit_ip"] = TextOrNull(f.submit_ip);
  json::object atts;
  for (const auto& a : f.attachments)
    atts[a.name] = json::object{
        {"content_type", a.content_type},
        {"length", a.length},
        {"url", fmt::format("/a/{}/api/form/attachment/{}/{}", f.domain, f.form_id, a.name)}};
  o["attachments"] = std::move(atts);
  o["is_phone_submission"] = !f.openrosa_version.empty();
  o["edited_by_user_id"] = f.edited_on ? json::value(f.user_id) : json::value();
  o["resource_uri"] = fmt::format("/a/{}/api/v0.5/form/{}/", f.domain, f.form_id);
  o["form"] = std::move(form);
  return json::serialize(o);
}

std::string CaseTransactionToJson(const CaseTransaction& t) {
  json::object o{{"case_id", t.case_id},
                 {"form_id", t.form_id.empty() ? json::value(nullptr) : json::value(t.form_id)},
                 {"server_date", TimeOrNull(t.server_date)},
                 {"client_date", TimeOrNull(t.client_date)},
                 {"type", t.type},
                 {"revoked", t.revoked},
                 {"sync_log_id", t.sync_log_id},
                 {"xmlns", t.xmlns},
                 {"reason", t.reason}};
  json::array kinds;
  static const std::pair<int, const char*> kBits[] = {{kTxForm, "form"},
                                                      {kTxRebuildWithReason, "rebuild_with_reason"},
                                                      {kTxUserRequested, "user_requested"},
                                                      {kTxUserArchived, "user_archived"},
                                                      {kTxFormArchived, "form_archived"},
                                                      {kTxFormEdit, "form_edit"},
                                                      {kTxLedger, "ledger"},
                                                      {kTxCaseCreate, "case_create"},
                                                      {kTxCaseClose, "case_close"},
                                                      {kTxCaseIndex, "case_index"},
                                                      {kTxCaseAttachment, "case_attachment"},
                                                      {kTxFormReprocess, "form_reprocess"}};
  for (const auto& [bit, name] : kBits)
    if (t.type & bit) kinds.push_back(json::string(name));
  o["types"] = std::move(kinds);
  return json::serialize(o);
}

std::string LedgerToJson(const std::vector<LedgerValue>& values) {
  json::object o;
  for (const auto& v : values) {
    auto& sec = o[v.section_id];
    if (!sec.is_object()) sec = json::object{};
    double whole;
    if (std::modf(v.balance, &whole) == 0.0 && std::fabs(whole) < 9e15)
      sec.get_object()[v.entry_id] = static_cast<int64_t>(whole);
    else
      sec.get_object()[v.entry_id] = v.balance;
  }
  return json::serialize(o);
}

}  // namespace commcare

namespace commcare {

std::string ChangeMetaToJson(const ChangeMeta& m) {
  json::object o;
  o["document_id"] = m.document_id;
  o["document_rev"] = nullptr;
  o["data_source_type"] = m.data_source_type;
  o["data_source_name"] = m.data_source_name;
  o["document_type"] = m.document_type;
  o["document_subtype"] = m.document_subtype;
  o["domain"] = m.domain;
  o["is_deletion"] = m.is_deletion;
  o["publish_timestamp"] = TimeOrNull(m.publish_timestamp);
  o["attempts"] = 0;
  o["original_publication_datetime"] = TimeOrNull(m.publish_timestamp);
  o["associated_document_id"] = m.associated_document_id;
  o["topic"] = m.topic;
  return json::serialize(o);
}

Result<ChangeMeta> ChangeMetaFromJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object())
    return Status::InvalidArgument(fmt::format("a change record is not a JSON object: {}",
                                               ec ? ec.message() : "not an object"));
  const auto& o = v.get_object();
  auto str = [&](const char* k) { return codec::GetStr(o, k); };
  ChangeMeta m;
  m.document_id = str("document_id");
  if (m.document_id.empty()) return Status::InvalidArgument("a change record has no document_id");
  m.data_source_type = str("data_source_type");
  m.data_source_name = str("data_source_name");
  m.document_type = str("document_type");
  m.document_subtype = str("document_subtype");
  m.domain = str("domain");
  m.topic = str("topic");
  m.associated_document_id = str("associated_document_id");
  if (auto* p = o.if_contains("is_deletion"); p && p->is_bool()) m.is_deletion = p->get_bool();
  std::string ts = str("publish_timestamp");
  if (!ts.empty() && !util::ParseIsoTime(ts, &m.publish_timestamp))
    return Status::InvalidArgument(
        fmt::format("a change record's publish_timestamp '{}' is not an ISO time", ts));
  return m;
}

}  // namespace commcare
