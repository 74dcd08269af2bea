#include "xform/parser.h"

#include <expat.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace commcare::xform {

const XNode* XNode::Child(std::string_view local) const {
  for (const auto& c : children)
    if (c.name == local) return &c;
  return nullptr;
}

const std::string* XNode::Attr(std::string_view local) const {
  for (const auto& a : attrs)
    if (a.first == local) return &a.second;
  return nullptr;
}

int CaseBlock::LowestAction() const {
  if (has_create) return 0;
  if (has_update) return 1;
  if (has_index) return 2;
  if (has_close) return 3;
  if (has_attachment) return 4;
  return 5;
}

namespace {

constexpr char kNsSep = '\x01';

// Splits Expat's "uri\x01local" into its parts.
void SplitName(const char* full, std::string_view* ns, std::string_view* local) {
  const char* sep = std::strchr(full, kNsSep);
  if (sep) {
    *ns = std::string_view(full, sep - full);
    *local = std::string_view(sep + 1);
  } else {
    *ns = {};
    *local = std::string_view(full);
  }
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

enum class Capture { kNone, kCase, kLedger, kMeta };

struct ParseState {
  XML_Parser parser = nullptr;
  ParsedForm* out = nullptr;
  ParseLimits limits;
  int depth = 0;
  std::string error;
  Capture capture = Capture::kNone;
  int capture_depth = 0;      // depth of the captured subtree's root
  std::vector<XNode*> stack;  // open nodes of the capture
  XNode root_capture;
  bool meta_seen = false;
  int case_order = 0;

  void Fail(std::string msg) {
    if (error.empty()) error = std::move(msg);
    XML_StopParser(parser, XML_FALSE);
  }
};

void ConvertMeta(const XNode& n, FormMeta* m) {
  m->present = true;
  for (const auto& c : n.children) {
    std::string v = Trim(c.text);
    const std::string& k = c.name;
    if (k == "instanceID" || k == "uid") {
      if (m->instance_id.empty()) m->instance_id = v;
    } else if (k == "userID" || k == "chw_id") {
      if (m->user_id.empty()) m->user_id = v;
    } else if (k == "username") {
      m->username = v;
    } else if (k == "deviceID" || k == "DeviceID") {
      m->device_id = v;
    } else if (k == "timeStart" || k == "TimeStart") {
      m->time_start = v;
    } else if (k == "timeEnd" || k == "TimeEnd") {
      m->time_end = v;
    } else if (k == "appVersion") {
      m->app_version = v;
    } else if (k == "location") {
      m->location = v;
    }
  }
}

bool HasCaseId(const XNode& n) { return n.Attr("case_id") || n.Child("case_id"); }

void ConvertCase(const XNode& n, int order, CaseBlock* b) {
  b->order = order;
  b->v1 = n.ns != kCaseV2Ns;
  if (const auto* a = n.Attr("case_id"))
    b->case_id = Trim(*a);
  else if (const auto* c = n.Child("case_id"))
    b->case_id = Trim(c->text);
  if (const auto* a = n.Attr("date_modified"))
    b->date_modified_raw = Trim(*a);
  else if (const auto* c = n.Child("date_modified"))
    b->date_modified_raw = Trim(c->text);
  if (const auto* a = n.Attr("user_id")) b->user_id = Trim(*a);
  for (const auto& c : n.children) {
    if (c.name == "create") {
      b->has_create = true;
      for (const auto& f : c.children) {
        std::string key = f.name == "case_type_id" ? "case_type" : f.name;
        b->create.emplace_back(std::move(key), Trim(f.text));
      }
    } else if (c.name == "update") {
      b->has_update = true;
      for (const auto& f : c.children) b->update.emplace_back(f.name, f.text);
    } else if (c.name == "close") {
      b->has_close = true;
    } else if (c.name == "index") {
      b->has_index = true;
      for (const auto& f : c.children) {
        IndexAction ia;
        ia.identifier = f.name;
        ia.target = Trim(f.text);
        if (const auto* t = f.Attr("case_type")) {
          ia.case_type = *t;
          ia.has_case_type = true;
        }
        if (const auto* r = f.Attr("relationship"))
          ia.relationship = Trim(*r);
        else if (const auto* rc = f.Child("relationship"))
          ia.relationship = Trim(rc->text);
        else
          ia.relationship = "child";
        b->indices.push_back(std::move(ia));
      }
    } else if (c.name == "attachment") {
      b->has_attachment = true;
      for (const auto& f : c.children) {
        AttachmentAction aa;
        aa.name = f.name;
        if (const auto* s = f.Attr("src")) aa.src = *s;
        if (const auto* fr = f.Attr("from")) aa.from = *fr;
        if (const auto* nm = f.Attr("name")) aa.name = *nm;
        aa.is_delete = !f.Attr("src") && !f.Attr("from");
        b->attachments.push_back(std::move(aa));
      }
    } else if (c.name == "referral") {
      b->uses_referrals = true;
    } else if (b->v1 && c.name == "user_id") {
      b->user_id = Trim(c.text);
    }
  }
  // v1 keeps the user id inside <create>.
  if (b->v1 && b->user_id.empty()) {
    for (const auto& [k, v] : b->create)
      if (k == "user_id") b->user_id = v;
  }
}

void ConvertLedger(const XNode& n, LedgerBlock* b) {
  b->is_transfer = n.name == "transfer";
  auto attr = [&](const char* k) {
    const auto* v = n.Attr(k);
    return v ? Trim(*v) : std::string();
  };
  b->entity_id = attr("entity-id");
  b->src = attr("src");
  b->dest = attr("dest");
  b->date = attr("date");
  b->section_id = attr("section-id");
  b->type = attr("type");
  for (const auto& e : n.children) {
    if (e.name != "entry") continue;
    const auto* id = e.Attr("id");
    std::string entry_id = id ? Trim(*id) : std::string();
    if (!b->section_id.empty()) {
      const auto* q = e.Attr("quantity");
      b->entries.push_back({entry_id, b->section_id, q ? Trim(*q) : std::string()});
    } else {
      for (const auto& v : e.children) {
        if (v.name != "value") continue;
        const auto* s = v.Attr("section-id");
        const auto* q = v.Attr("quantity");
        b->entries.push_back(
            {entry_id, s ? Trim(*s) : std::string(), q ? Trim(*q) : std::string()});
      }
    }
  }
}

void XMLCALL OnStart(void* ud, const XML_Char* name, const XML_Char** atts) {
  auto* st = static_cast<ParseState*>(ud);
  if (++st->depth > st->limits.max_depth) {
    st->Fail(fmt::format("document nested deeper than {} elements", st->limits.max_depth));
    return;
  }
  std::string_view ns, local;
  SplitName(name, &ns, &local);
  if (st->depth == 1) {
    st->out->root_name = std::string(local);
    st->out->xmlns = std::string(ns);
    st->out->device_report = ns == kDeviceReportNs;
    return;
  }
  if (st->capture == Capture::kNone) {
    Capture c = Capture::kNone;
    if (local == "case" && !st->out->device_report)
      c = Capture::kCase;
    else if (ns == kLedgerNs && (local == "balance" || local == "transfer"))
      c = Capture::kLedger;
    else if (st->depth == 2 && !st->meta_seen && (local == "meta" || local == "Meta"))
      c = Capture::kMeta;
    if (c == Capture::kNone) return;
    st->capture = c;
    st->capture_depth = st->depth;
    st->root_capture = XNode{};
    st->stack.clear();
    st->stack.push_back(&st->root_capture);
  } else {
    XNode* parent = st->stack.back();
    parent->children.emplace_back();
    st->stack.push_back(&parent->children.back());
  }
  XNode* node = st->stack.back();
  node->ns = std::string(ns);
  node->name = std::string(local);
  for (int i = 0; atts[i]; i += 2) {
    std::string_view ans, alocal;
    SplitName(atts[i], &ans, &alocal);
    node->attrs.emplace_back(std::string(alocal), atts[i + 1]);
  }
}

void XMLCALL OnEnd(void* ud, const XML_Char* /*name*/) {
  auto* st = static_cast<ParseState*>(ud);
  if (st->capture != Capture::kNone) {
    if (st->depth == st->capture_depth) {
      const XNode& n = st->root_capture;
      switch (st->capture) {
        case Capture::kCase:
          if (HasCaseId(n)) {
            CaseBlock b;
            ConvertCase(n, st->case_order++, &b);
            st->out->cases.push_back(std::move(b));
          }
          break;
        case Capture::kLedger: {
          LedgerBlock b;
          ConvertLedger(n, &b);
          st->out->ledgers.push_back(std::move(b));
          break;
        }
        case Capture::kMeta:
          st->meta_seen = true;
          ConvertMeta(n, &st->out->meta);
          break;
        case Capture::kNone:
          break;
      }
      st->capture = Capture::kNone;
      st->stack.clear();
    } else {
      st->stack.pop_back();
    }
  }
  --st->depth;
}

void XMLCALL OnText(void* ud, const XML_Char* s, int len) {
  auto* st = static_cast<ParseState*>(ud);
  if (st->capture != Capture::kNone && !st->stack.empty()) st->stack.back()->text.append(s, len);
}

void XMLCALL OnDoctype(void* ud, const XML_Char*, const XML_Char*, const XML_Char*, int) {
  static_cast<ParseState*>(ud)->Fail("DOCTYPE declarations are not allowed");
}

void XMLCALL OnEntityDecl(void* ud, const XML_Char*, int, const XML_Char*, int, const XML_Char*,
                          const XML_Char*, const XML_Char*, const XML_Char*) {
  static_cast<ParseState*>(ud)->Fail("entity declarations are not allowed");
}

}  // namespace

Status ParseForm(std::string_view xml, const ParseLimits& limits, ParsedForm* out) {
  *out = ParsedForm{};
  ParseState st;
  st.out = out;
  st.limits = limits;
  XML_Parser p = XML_ParserCreateNS(nullptr, kNsSep);
  if (!p) return Status::Internal("out of memory creating the XML parser");
  st.parser = p;
  XML_SetUserData(p, &st);
  XML_SetElementHandler(p, OnStart, OnEnd);
  XML_SetCharacterDataHandler(p, OnText);
  XML_SetStartDoctypeDeclHandler(p, OnDoctype);
  XML_SetEntityDeclHandler(p, OnEntityDecl);
  XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
  XML_Status rc = XML_Parse(p, xml.data(), static_cast<int>(xml.size()), XML_TRUE);
  Status result;
  if (rc != XML_STATUS_OK || !st.error.empty()) {
    std::string reason =
        st.error.empty() ? std::string(XML_ErrorString(XML_GetErrorCode(p))) : st.error;
    result = Status::InvalidArgument(fmt::format("Invalid XML: {} at line {}, column {}", reason,
                                                 XML_GetCurrentLineNumber(p),
                                                 XML_GetCurrentColumnNumber(p) + 1));
  } else if (out->root_name.empty()) {
    result = Status::InvalidArgument("Invalid XML: no root element");
  }
  XML_ParserFree(p);
  return result;
}

// ---- multipart/form-data ----

namespace {

std::string_view TrimView(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Value of `key=` in a header's parameters (quoted or not).
bool HeaderParam(std::string_view header, std::string_view key, std::string* out) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t semi = header.find(';', pos);
    std::string_view item = TrimView(
        header.substr(pos, semi == std::string_view::npos ? std::string_view::npos : semi - pos));
    size_t eq = item.find('=');
    if (eq != std::string_view::npos && IEquals(TrimView(item.substr(0, eq)), key)) {
      std::string_view v = TrimView(item.substr(eq + 1));
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      *out = std::string(v);
      return true;
    }
    if (semi == std::string_view::npos) break;
    pos = semi + 1;
  }
  return false;
}

}  // namespace

std::string MultipartBoundary(std::string_view content_type) {
  std::string_view ct = TrimView(content_type);
  size_t semi = ct.find(';');
  if (!IEquals(TrimView(ct.substr(0, semi)), "multipart/form-data")) return "";
  std::string b;
  if (semi == std::string_view::npos || !HeaderParam(ct.substr(semi + 1), "boundary", &b))
    return "";
  return b;
}

Status ParseMultipart(std::string_view body, std::string_view boundary,
                      std::vector<MultipartPart>* parts) {
  parts->clear();
  if (boundary.empty() || boundary.size() > 200)
    return Status::InvalidArgument("multipart body: missing or invalid boundary");
  const std::string delim = "--" + std::string(boundary);
  size_t pos = body.find(delim);
  if (pos == std::string_view::npos)
    return Status::InvalidArgument("multipart body: boundary not found");
  pos += delim.size();
  const std::string next_delim = "\r\n" + delim;
  while (true) {
    if (body.substr(pos, 2) == "--") return Status::Ok();  // closing delimiter
    if (body.substr(pos, 2) != "\r\n")
      return Status::InvalidArgument("multipart body: malformed delimiter line");
    pos += 2;
    size_t hdr_end = body.find("\r\n\r\n", pos);
    if (hdr_end == std::string_view::npos)
      return Status::InvalidArgument("multipart body: truncated part headers");
    MultipartPart part;
    std::string_view headers = body.substr(pos, hdr_end - pos);
    size_t hp = 0;
    while (hp <= headers.size()) {
      size_t eol = headers.find("\r\n", hp);
      std::string_view line =
          headers.substr(hp, eol == std::string_view::npos ? std::string_view::npos : eol - hp);
      size_t colon = line.find(':');
      if (colon != std::string_view::npos) {
        std::string_view key = TrimView(line.substr(0, colon));
        std::string_view val = TrimView(line.substr(colon + 1));
        if (IEquals(key, "Content-Disposition")) {
          HeaderParam(val, "name", &part.name);
          part.has_filename = HeaderParam(val, "filename", &part.filename);
        } else if (IEquals(key, "Content-Type")) {
          part.content_type = std::string(val);
        }
      }
      if (eol == std::string_view::npos) break;
      hp = eol + 2;
    }
    size_t data_start = hdr_end + 4;
    size_t data_end = body.find(next_delim, data_start);
    if (data_end == std::string_view::npos)
      return Status::InvalidArgument("multipart body: truncated (no closing boundary)");
    part.data = body.substr(data_start, data_end - data_start);
    parts->push_back(std::move(part));
    pos = data_end + next_delim.size();
  }
}

}  // namespace commcare::xform
