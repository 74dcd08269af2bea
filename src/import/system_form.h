// The system forms that carry imported and bulk-edited case blocks through the engine, as HQ's
// submit_case_blocks writes them (xmlns http://commcarehq.org/case, the importer's device id),
// and the deterministic ids that make a rerun absorb into what an earlier run stored.
#pragma once

#include <string>
#include <string_view>

#include "commcare/engine.h"
#include "commcare/status.h"

namespace commcare::importer {

inline constexpr std::string_view kSystemXmlns = "http://commcarehq.org/case";
inline constexpr std::string_view kImporterDevice = "corehq.apps.case_importer.do_import.do_import";
inline constexpr std::string_view kBulkEditDevice = "commcare.bulk_case_edit";

// A 32-hex id derived from a key (form and case ids of an import).
std::string DerivedId(std::string_view key);

// Whether a form of this id is stored already (normal, archived or deprecated: applied once);
// an error form is not (the engine replaces it).
Result<bool> FormApplied(Engine* engine, const std::string& domain, const std::string& form_id);

// Submits case blocks as one system form; Ok only when the form was stored as a normal form.
// Unavailable for a server-side failure (retryable), InvalidArgument when the engine rejected
// the blocks (the message is its problem text).
Status SubmitBlocks(Engine* engine, const std::string& domain, const std::string& form_id,
                    std::string_view device_id, const std::string& user_id,
                    const std::string& username, int64_t time, const std::string& blocks);

}  // namespace commcare::importer
