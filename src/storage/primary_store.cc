// PrimaryStore's default batch reads: one call per id.
#include "commcare/storage/primary_store.h"

#include <boost/json/serialize.hpp>

#include "util/codec.h"

namespace commcare::storage {

Result<std::vector<CaseRecord>> PrimaryStore::GetCases(std::span<const std::string> case_ids) {
  std::vector<CaseRecord> out;
  for (const auto& id : case_ids) {
    CC_ASSIGN_OR_RETURN(auto c, GetCase(id));
    if (c) out.push_back(std::move(*c));
  }
  return out;
}

Result<std::vector<LedgerValue>> PrimaryStore::GetLedgerValuesOf(
    std::span<const std::string> case_ids) {
  std::vector<LedgerValue> out;
  for (const auto& id : case_ids) {
    CC_ASSIGN_OR_RETURN(auto values, GetLedgerValues(id));
    for (auto& v : values) out.push_back(std::move(v));
  }
  return out;
}

Result<std::vector<CaseRecord>> PrimaryStore::DecodeCaseDocs(
    std::span<const std::string> case_ids) {
  std::vector<CaseRecord> out;
  out.reserve(case_ids.size());
  CC_RETURN_IF_ERROR(ReadCaseDocs(case_ids, [&](std::string_view doc) -> Status {
    auto v = codec::ParseJson(doc);
    if (!v.ok()) return Status::DataLoss("a stored case is not valid JSON");
    out.emplace_back();
    return codec::DecodeCase(*v, &out.back());
  }));
  return out;
}

Status PrimaryStore::ScanCases(const CaseFilter& filter,
                               const std::function<bool(const CaseRecord&)>& fn) {
  Status st;
  CC_RETURN_IF_ERROR(ScanCaseDocs(filter, [&](std::string_view doc) {
    unsigned char buf[8192];
    boost::json::monotonic_resource mr(buf, sizeof buf);
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(doc, ec, &mr);
    if (ec) {
      st = Status::DataLoss("a stored case is not valid JSON");
      return false;
    }
    CaseRecord c;
    st = codec::DecodeCase(v, &c);
    return st.ok() && fn(c);
  }));
  return st;
}

Status PrimaryStore::ScanCaseDocs(const CaseFilter& filter,
                                  const std::function<bool(std::string_view doc)>& fn) {
  return ScanCases(filter, [&](const CaseRecord& c) {
    return fn(boost::json::serialize(codec::EncodeCase(c)));
  });
}

Status PrimaryStore::ReadCaseDocs(std::span<const std::string> case_ids,
                                  const std::function<Status(std::string_view doc)>& fn) {
  CC_ASSIGN_OR_RETURN(auto cases, GetCases(case_ids));
  for (const auto& c : cases) CC_RETURN_IF_ERROR(fn(boost::json::serialize(codec::EncodeCase(c))));
  return Status::Ok();
}

}  // namespace commcare::storage
