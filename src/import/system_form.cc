// System forms of case blocks (system_form.h).
#include "import/system_form.h"

#include <fmt/format.h>

#include "util/hash.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare::importer {

std::string DerivedId(std::string_view key) { return util::Md5Hex(key); }

Result<bool> FormApplied(Engine* engine, const std::string& domain, const std::string& form_id) {
  auto f = engine->GetForm(domain, form_id);
  if (f.status().IsNotFound()) return false;
  if (!f.ok()) return f.status();
  return f->state != FormState::kError && f->state != FormState::kSubmissionErrorLog;
}

Status SubmitBlocks(Engine* engine, const std::string& domain, const std::string& form_id,
                    std::string_view device_id, const std::string& user_id,
                    const std::string& username, int64_t time, const std::string& blocks) {
  const std::string t = util::FormatIsoTime(time);
  SubmitRequest s;
  s.domain = domain;
  s.user_id = user_id;
  s.content_type = "text/xml";
  s.openrosa_version = "3.0";
  s.body = fmt::format(
      R"(<?xml version="1.0"?><system version="1" uiVersion="1" xmlns="{}"><meta xmlns="http://openrosa.org/jr/xforms"><deviceID>{}</deviceID><timeStart>{}</timeStart><timeEnd>{}</timeEnd><username>{}</username><userID>{}</userID><instanceID>{}</instanceID></meta>{}</system>)",
      kSystemXmlns, device_id, t, t, util::XmlEscape(username), util::XmlEscape(user_id), form_id,
      blocks);
  SubmitResponse r = engine->Submit(s);
  if (r.http_status >= 500)
    return Status::Unavailable(
        fmt::format("the engine did not store form {}: {}", form_id, r.message));
  if (r.http_status != 201 ||
      (r.state && *r.state != FormState::kNormal && *r.state != FormState::kDuplicate))
    return Status::InvalidArgument(fmt::format("form {} was not applied: {}", form_id, r.message));
  return Status::Ok();
}

}  // namespace commcare::importer
