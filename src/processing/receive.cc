// The submit path, step 1 (parse): checks a request, takes the form XML and its attachments
// out of the body, parses it, and hands it to ProcessForm (plan.cc); or keeps an error log.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "processing/engine_impl.h"
#include "util/hash.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare::processing {
namespace {

const std::set<std::string>& AllowedExtensions() {
  static const std::set<std::string> k = {"jpg", "jpeg", "png",   "pdf",  "3ga", "mp3",  "wav",
                                          "amr", "qcp",  "ogg",   "3gpp", "3gp", "3gp2", "3g2",
                                          "mp4", "mpg4", "mpeg4", "m4v",  "mpg", "mpeg"};
  return k;
}

bool AttachmentAllowed(const xform::MultipartPart& p) {
  std::string name = p.filename.empty() ? p.name : p.filename;
  auto dot = name.rfind('.');
  if (dot != std::string::npos) {
    std::string ext = name.substr(dot + 1);
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (AllowedExtensions().count(ext)) return true;
  }
  std::string ct = p.content_type;
  std::transform(ct.begin(), ct.end(), ct.begin(), [](unsigned char c) { return std::tolower(c); });
  ct = ct.substr(0, ct.find(';'));
  return ct.rfind("audio/", 0) == 0 || ct.rfind("image/", 0) == 0 || ct.rfind("video/", 0) == 0 ||
         ct == "application/octet-stream" || ct == "application/pdf";
}

// Why an attachment's name could not name a file in its form's folder (nullptr when it can): it
// is empty, "." or "..", or holds a slash, a backslash or a control character, as written or
// once %XX-decoded. Phones name attachments by their file names ("1701234567.jpg").
// "", or digits separated by single dots ("3.0", "10.2.1"), at most 16 characters.
bool IsVersionNumber(std::string_view v) {
  if (v.empty()) return true;
  if (v.size() > 16 || v.front() == '.' || v.back() == '.') return false;
  for (size_t i = 0; i < v.size(); ++i)
    if (!(v[i] >= '0' && v[i] <= '9') && !(v[i] == '.' && v[i - 1] != '.')) return false;
  return true;
}

const char* BadAttachmentName(std::string_view name) {
  std::string decoded;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '%' && i + 2 < name.size() &&
        std::isxdigit(static_cast<unsigned char>(name[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(name[i + 2]))) {
      decoded.push_back(
          static_cast<char>(std::stoi(std::string(name.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      decoded.push_back(name[i]);
    }
  }
  for (std::string_view n : {name, std::string_view(decoded)}) {
    if (n.empty()) return "is empty";
    if (n == "." || n == "..") return "names a folder";
    for (unsigned char c : n) {
      if (c == '/' || c == '\\') return "holds a path separator";
      if (c < 0x20 || c == 0x7f) return "holds a control character";
    }
  }
  return nullptr;
}

// name with control characters written as \xHH, for a message.
std::string Printable(std::string_view name) {
  std::string out;
  for (unsigned char c : name)
    out +=
        c < 0x20 || c == 0x7f ? fmt::format("\\x{:02x}", c) : std::string(1, static_cast<char>(c));
  return out;
}

bool ValidDomain(std::string_view d) {
  if (d.empty() || d.size() > 255) return false;
  for (char c : d)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

}  // namespace

SubmitResponse Respond(int code, std::string nature, std::string message, std::string form_id,
                       std::optional<FormState> state) {
  SubmitResponse r;
  r.http_status = code;
  r.nature = std::move(nature);
  r.message = std::move(message);
  r.form_id = std::move(form_id);
  r.state = state;
  r.content_type = "text/xml; charset=utf-8";
  r.body = fmt::format(
      "<OpenRosaResponse xmlns=\"http://openrosa.org/http/response\"><message nature=\"{}\">{}"
      "</message></OpenRosaResponse>",
      r.nature, util::XmlEscape(r.message));
  return r;
}

SubmitResponse EngineImpl::Submit(const SubmitRequest& req) {
  try {
    return SubmitImpl(req);
  } catch (const std::exception& e) {
    return Respond(
        500, "submit_error",
        fmt::format("There was an error processing the form: internal error: {}", e.what()));
  }
}

SubmitResponse EngineImpl::SubmitImpl(const SubmitRequest& req) {
  if (opts_.read_only)
    return Respond(503, "submit_error", "This engine is open read-only and cannot accept forms");
  // HQ's OpenRosaMiddleware keeps the header as sent: a newer client's version is accepted
  // (refusing it would refuse every form of a phone updated before its server). Only what is
  // no version number at all is refused.
  const std::string& v = req.openrosa_version;
  if (!IsVersionNumber(v))
    return Respond(400, "submit_error",
                   fmt::format("X-OpenRosa-Version '{}' is not a version number (such as 3.0)",
                               v.substr(0, 64)));
  if (!ValidDomain(req.domain))
    return Respond(400, "submit_error", fmt::format("Invalid domain name '{}'", req.domain));
  if (req.body.size() > opts_.max_body_bytes)
    return Respond(413, "submit_error",
                   fmt::format("Request body is {} bytes, over the limit of {} bytes",
                               req.body.size(), opts_.max_body_bytes));

  std::string_view xml = req.body;
  std::vector<xform::MultipartPart> attachments;
  std::string boundary = xform::MultipartBoundary(req.content_type);
  if (!boundary.empty()) {
    std::vector<xform::MultipartPart> parts;
    Status s = xform::ParseMultipart(req.body, boundary, &parts);
    if (!s.ok()) return Respond(400, "submit_error", "Invalid multipart body: " + s.message());
    const xform::MultipartPart* xml_part = nullptr;
    for (const auto& p : parts) {
      if (!p.has_filename)
        return Respond(400, "submit_error",
                       fmt::format("Unexpected non-file field '{}' in the multipart body", p.name));
      if (p.name == "xml_submission_file")
        xml_part = &p;
      else
        attachments.push_back(p);
    }
    if (!xml_part || xml_part->data.empty())
      return Respond(400, "submit_error",
                     "No XML submission found: the multipart body has no non-empty "
                     "'xml_submission_file' part");
    std::string fname = xml_part->filename;
    std::transform(fname.begin(), fname.end(), fname.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (fname.size() < 4 || fname.compare(fname.size() - 4, 4, ".xml") != 0)
      return Respond(
          422, "processing_failure",
          fmt::format("The xml_submission_file part's filename '{}' does not end in .xml",
                      xml_part->filename));
    xml = xml_part->data;
    for (const auto& a : attachments) {
      if (const char* why = BadAttachmentName(a.name))
        return Respond(400, "submit_error",
                       fmt::format("Attachment name '{}' {}: it must name a file in the form's "
                                   "folder",
                                   Printable(a.name), why));
      if (a.data.size() > opts_.max_attachment_bytes)
        return Respond(413, "submit_error",
                       fmt::format("Attachment '{}' is {} bytes, over the limit of {} bytes",
                                   a.name, a.data.size(), opts_.max_attachment_bytes));
      if (!AttachmentAllowed(a))
        return Respond(
            422, "processing_failure",
            fmt::format("Attachment '{}' has an unsupported file type ('{}', {})", a.name,
                        a.filename, a.content_type.empty() ? "no content type" : a.content_type));
    }
  } else if (xml.empty()) {
    return Respond(400, "submit_error", "The request body is empty: no XML submission found");
  }
  if (xml.size() > opts_.max_xml_bytes)
    return Respond(413, "submit_error",
                   fmt::format("Form XML is {} bytes, over the limit of {} bytes", xml.size(),
                               opts_.max_xml_bytes));

  const int64_t received_on = req.received_on ? req.received_on : util::NowMicros();
  xform::ParsedForm pf;
  Status ps = xform::ParseForm(xml, xform::ParseLimits{}, &pf);
  if (!ps.ok()) return SaveErrorLog(req, xml, ps.message(), received_on);
  if (pf.xmlns.empty())
    return SaveErrorLog(req, xml, "Form is missing a required field: XMLNS", received_on);
  // A device report is not a form: HQ's SubmissionPost hands it to process_device_log and saves
  // no form (corehq/form_processor/submission_post.py), so it never reaches the form APIs, the
  // change log, UCR or forwarding. libcommcare keeps no device logs (docs/architecture.md).
  if (pf.device_report) return Respond(201, "submit_success", kSuccessText);

  for (int attempt = 0;; ++attempt) {
    auto r = ProcessForm(req, xml, pf, attachments, received_on, attempt > 0);
    if (r.ok()) return std::move(r).value();
    if (r.status().IsAborted() && attempt < 5) continue;  // lost a race: reload and redo
    // A backend that is down (Unavailable) or a full disk (ResourceExhausted: nothing was
    // stored) is a condition the phone should wait out: 503, and it keeps the form and retries.
    const StatusCode c = r.status().code();
    const bool wait = c == StatusCode::kUnavailable || c == StatusCode::kResourceExhausted;
    return Respond(wait ? 503 : 500, "submit_error",
                   "There was an error processing the form: " + r.status().message());
  }
}

SubmitResponse EngineImpl::SaveErrorLog(const SubmitRequest& req, std::string_view xml,
                                        const std::string& problem, int64_t received_on) {
  FormRecord f;
  f.form_id = util::NewUuidHex();
  f.domain = req.domain;
  f.state = FormState::kSubmissionErrorLog;
  f.problem = problem;
  f.md5 = util::Md5Hex(xml);
  f.received_on = received_on;
  f.server_modified_on = util::NowMicros();
  f.user_id = req.user_id;
  f.openrosa_version = req.openrosa_version;
  f.submit_ip = req.submit_ip;
  f.last_sync_token = req.last_sync_token;
  const std::string message = "There was an error processing the form: " + problem;
  Plan plan;
  int db = map_.DatabaseFor(f.form_id);
  Status s = PutBlobs(&f, xml, {}, &plan, db);
  if (s.ok()) {
    plan.For(db).ops.emplace_back(storage::PutForm{f});
    AddFormChange(&plan, db, f, f.server_modified_on);
    s = CommitPlan(&plan, db);
  }
  if (!s.ok())
    return Respond(500, "submit_error",
                   message + " (and the error log was not saved: " + s.message() + ")");
  return Respond(500, "submit_error", message, f.form_id, f.state);
}

}  // namespace commcare::processing
