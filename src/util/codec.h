// Internal JSON encodings of records and write batches (storage rows, intents, outbox).
#pragma once

#include <boost/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/records.h"
#include "commcare/status.h"
#include "commcare/storage/write_batch.h"

namespace commcare::codec {

namespace json = boost::json;

json::object EncodeForm(const FormRecord& f);
Status DecodeForm(const json::value& v, FormRecord* f);
json::object EncodeCase(const CaseRecord& c);
// A case's indices as [{identifier, referenced_type, referenced_id, relationship}], the shape
// of the stored case and of CommCare's case document.
json::array EncodeIndices(const std::vector<CaseIndex>& indices);
Status DecodeCase(const json::value& v, CaseRecord* c);
json::object EncodeChange(const ChangeMeta& m);
Status DecodeChange(const json::value& v, ChangeMeta* m);
json::object EncodeCaseTx(const CaseTransaction& t);
Status DecodeCaseTx(const json::value& v, CaseTransaction* t);
json::object EncodeLedgerValue(const LedgerValue& v);
Status DecodeLedgerValue(const json::value& j, LedgerValue* v);
json::object EncodeLedgerTx(const LedgerTransaction& t);
Status DecodeLedgerTx(const json::value& j, LedgerTransaction* t);

// One op as JSON (StageBlob data to blob_sink when given, else inline as hex).
json::object EncodeOp(const storage::WriteOp& op, std::vector<std::string_view>* blob_sink);
// The document an op stores (form, case, case transaction, ledger value or change) as JSON
// text; "" for ops that carry none.
std::string EncodeDocument(const storage::WriteOp& op);
// EncodeOp as text, with `document` (EncodeDocument's result) spliced in, not encoded again.
std::string EncodeOpText(const storage::WriteOp& op, std::string_view document,
                         std::vector<std::string_view>* blob_sink);
// A batch as JSON. With blob_sink, StageBlob data is not inlined (as hex) but appended to the
// sink and referenced by index; DecodeBatch then takes the same blobs.
std::string EncodeBatch(const storage::WriteBatch& b,
                        std::vector<std::string_view>* blob_sink = nullptr);
Status DecodeBatch(std::string_view text, storage::WriteBatch* b,
                   const std::vector<std::string_view>* blobs = nullptr);

// Parses JSON text; InvalidArgument naming the position on error.
Result<json::value> ParseJson(std::string_view text);
// Small accessors that tolerate missing keys.
std::string GetStr(const json::object& o, std::string_view key);
int64_t GetInt(const json::object& o, std::string_view key);
double GetDouble(const json::object& o, std::string_view key);
bool GetBool(const json::object& o, std::string_view key);

}  // namespace commcare::codec
