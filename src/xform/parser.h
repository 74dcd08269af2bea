// Streaming, namespace-aware parsing of submissions (Expat): meta, case blocks, ledger blocks,
// and the multipart/form-data envelope around them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commcare/status.h"

namespace commcare::xform {

inline constexpr std::string_view kCaseV2Ns = "http://commcarehq.org/case/transaction/v2";
inline constexpr std::string_view kLedgerNs = "http://commcarehq.org/ledger/v1";
inline constexpr std::string_view kDeviceReportNs = "http://code.javarosa.org/devicereport";

// A small element tree, built only for the parts of a form the engine reads.
struct XNode {
  std::string ns;
  std::string name;                                        // local name
  std::vector<std::pair<std::string, std::string>> attrs;  // local name -> value
  std::string text;
  std::vector<XNode> children;
  const XNode* Child(std::string_view local) const;
  const std::string* Attr(std::string_view local) const;
};

struct IndexAction {
  std::string identifier;
  std::string case_type;
  std::string target;        // empty: delete the index
  std::string relationship;  // "child" (default) or "extension"
  bool has_case_type = false;
};

struct AttachmentAction {
  std::string name;
  std::string src;
  std::string from;
  bool is_delete = false;  // neither src nor from
};

// One <case> block (v2 or legacy v1).
struct CaseBlock {
  std::string case_id;
  std::string date_modified_raw;
  std::string user_id;
  bool v1 = false;
  bool has_create = false, has_update = false, has_close = false, has_index = false,
       has_attachment = false, uses_referrals = false;
  std::vector<std::pair<std::string, std::string>> create;  // field -> value, document order
  std::vector<std::pair<std::string, std::string>> update;
  std::vector<IndexAction> indices;
  std::vector<AttachmentAction> attachments;
  int order = 0;  // position among the form's blocks
  // Lowest action present: 0 create, 1 update, 2 index, 3 close, 4 attachment, 5 none.
  int LowestAction() const;
};

struct LedgerEntry {
  std::string entry_id;
  std::string section_id;
  std::string quantity;
};

// A <balance> or <transfer> block of the ledger namespace.
struct LedgerBlock {
  bool is_transfer = false;
  std::string entity_id;  // balance
  std::string src, dest;  // transfer
  std::string date;
  std::string section_id;
  std::string type;
  std::vector<LedgerEntry> entries;
};

// The form's meta block with legacy names mapped (uid -> instanceID, chw_id -> userID, ...).
struct FormMeta {
  std::string instance_id, user_id, username, device_id, time_start, time_end, app_version,
      location;
  bool present = false;
};

struct ParsedForm {
  std::string root_name;
  std::string xmlns;  // the root element's namespace
  FormMeta meta;
  std::vector<CaseBlock> cases;
  std::vector<LedgerBlock> ledgers;
  bool device_report = false;
};

struct ParseLimits {
  int max_depth = 256;
};

// Parses a form. InvalidArgument with "Invalid XML: <reason> at line L, column C" for bad XML,
// DTDs and entity declarations, and over-deep nesting.
Status ParseForm(std::string_view xml, const ParseLimits& limits, ParsedForm* out);

// One part of a multipart/form-data body; views point into the body.
struct MultipartPart {
  std::string name;
  std::string filename;
  bool has_filename = false;
  std::string content_type;
  std::string_view data;
};

// The boundary parameter of a multipart/form-data content type, or "" if it is not multipart.
std::string MultipartBoundary(std::string_view content_type);
// Splits a multipart body. InvalidArgument if it is malformed or truncated.
Status ParseMultipart(std::string_view body, std::string_view boundary,
                      std::vector<MultipartPart>* parts);

}  // namespace commcare::xform
