#include "util/codec.h"

#include <fmt/format.h>

#include "util/hash.h"

namespace commcare::codec {

std::string GetStr(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return {};
  return std::string(it->value().get_string());
}

int64_t GetInt(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return 0;
  if (it->value().is_int64()) return it->value().get_int64();
  if (it->value().is_uint64()) return static_cast<int64_t>(it->value().get_uint64());
  if (it->value().is_double()) return static_cast<int64_t>(it->value().get_double());
  return 0;
}

double GetDouble(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return 0;
  if (it->value().is_double()) return it->value().get_double();
  if (it->value().is_int64()) return static_cast<double>(it->value().get_int64());
  if (it->value().is_uint64()) return static_cast<double>(it->value().get_uint64());
  return 0;
}

bool GetBool(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it != o.end() && it->value().is_bool() && it->value().get_bool();
}

Result<json::value> ParseJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return Status::InvalidArgument(fmt::format("invalid JSON: {}", ec.message()));
  return v;
}

namespace {
const json::object* AsObject(const json::value& v) {
  return v.is_object() ? &v.get_object() : nullptr;
}
Status NotObject(const char* what) {
  return Status::DataLoss(fmt::format("stored {} is not a JSON object", what));
}
}  // namespace

json::object EncodeForm(const FormRecord& f) {
  json::object o;
  o["form_id"] = f.form_id;
  o["domain"] = f.domain;
  o["xmlns"] = f.xmlns;
  o["state"] = static_cast<int>(f.state);
  o["user_id"] = f.user_id;
  o["username"] = f.username;
  o["device_id"] = f.device_id;
  o["app_id"] = f.app_id;
  o["build_id"] = f.build_id;
  o["app_version"] = f.app_version;
  o["orig_id"] = f.orig_id;
  o["deprecated_form_id"] = f.deprecated_form_id;
  o["problem"] = f.problem;
  o["md5"] = f.md5;
  o["last_sync_token"] = f.last_sync_token;
  o["submit_ip"] = f.submit_ip;
  o["openrosa_version"] = f.openrosa_version;
  o["received_on"] = f.received_on;
  o["server_modified_on"] = f.server_modified_on;
  o["edited_on"] = f.edited_on;
  o["time_start"] = f.time_start;
  o["time_end"] = f.time_end;
  o["date_header"] = f.date_header;
  json::array atts;
  for (const auto& a : f.attachments) {
    atts.push_back(json::object{{"name", a.name},
                                {"content_type", a.content_type},
                                {"length", a.length},
                                {"md5", a.md5},
                                {"blob_key", a.blob_key}});
  }
  o["attachments"] = std::move(atts);
  return o;
}

Status DecodeForm(const json::value& v, FormRecord* f) {
  const auto* o = AsObject(v);
  if (!o) return NotObject("form");
  f->form_id = GetStr(*o, "form_id");
  f->domain = GetStr(*o, "domain");
  f->xmlns = GetStr(*o, "xmlns");
  f->state = static_cast<FormState>(GetInt(*o, "state"));
  f->user_id = GetStr(*o, "user_id");
  f->username = GetStr(*o, "username");
  f->device_id = GetStr(*o, "device_id");
  f->app_id = GetStr(*o, "app_id");
  f->build_id = GetStr(*o, "build_id");
  f->app_version = GetStr(*o, "app_version");
  f->orig_id = GetStr(*o, "orig_id");
  f->deprecated_form_id = GetStr(*o, "deprecated_form_id");
  f->problem = GetStr(*o, "problem");
  f->md5 = GetStr(*o, "md5");
  f->last_sync_token = GetStr(*o, "last_sync_token");
  f->submit_ip = GetStr(*o, "submit_ip");
  f->openrosa_version = GetStr(*o, "openrosa_version");
  f->received_on = GetInt(*o, "received_on");
  f->server_modified_on = GetInt(*o, "server_modified_on");
  f->edited_on = GetInt(*o, "edited_on");
  f->time_start = GetInt(*o, "time_start");
  f->time_end = GetInt(*o, "time_end");
  f->date_header = GetInt(*o, "date_header");
  f->attachments.clear();
  if (auto it = o->find("attachments"); it != o->end() && it->value().is_array()) {
    for (const auto& av : it->value().get_array()) {
      if (!av.is_object()) continue;
      const auto& ao = av.get_object();
      f->attachments.push_back({GetStr(ao, "name"), GetStr(ao, "content_type"),
                                GetInt(ao, "length"), GetStr(ao, "md5"), GetStr(ao, "blob_key")});
    }
  }
  return Status::Ok();
}

json::array EncodeIndices(const std::vector<CaseIndex>& indices) {
  json::array idx;
  for (const auto& i : indices)
    idx.push_back(json::object{{"identifier", i.identifier},
                               {"referenced_type", i.referenced_type},
                               {"referenced_id", i.referenced_id},
                               {"relationship", i.relationship}});
  return idx;
}

json::object EncodeCase(const CaseRecord& c) {
  json::object o;
  o["case_id"] = c.case_id;
  o["domain"] = c.domain;
  o["type"] = c.type;
  o["name"] = c.name;
  o["owner_id"] = c.owner_id;
  o["external_id"] = c.external_id;
  o["location_id"] = c.location_id;
  o["opened_by"] = c.opened_by;
  o["modified_by"] = c.modified_by;
  o["closed_by"] = c.closed_by;
  o["opened_on"] = c.opened_on;
  o["modified_on"] = c.modified_on;
  o["server_modified_on"] = c.server_modified_on;
  o["closed_on"] = c.closed_on;
  o["closed"] = c.closed;
  o["deleted"] = c.deleted;
  o["rev"] = c.rev;
  json::object props;
  for (const auto& [k, v] : c.properties) props[k] = v;
  o["properties"] = std::move(props);
  o["indices"] = EncodeIndices(c.indices);
  json::array atts;
  for (const auto& a : c.attachments)
    atts.push_back(json::object{{"name", a.name},
                                {"src", a.src},
                                {"from", a.from},
                                {"blob_key", a.blob_key},
                                {"content_type", a.content_type}});
  o["attachments"] = std::move(atts);
  return o;
}

Status DecodeCase(const json::value& v, CaseRecord* c) {
  const auto* o = AsObject(v);
  if (!o) return NotObject("case");
  c->case_id = GetStr(*o, "case_id");
  c->domain = GetStr(*o, "domain");
  c->type = GetStr(*o, "type");
  c->name = GetStr(*o, "name");
  c->owner_id = GetStr(*o, "owner_id");
  c->external_id = GetStr(*o, "external_id");
  c->location_id = GetStr(*o, "location_id");
  c->opened_by = GetStr(*o, "opened_by");
  c->modified_by = GetStr(*o, "modified_by");
  c->closed_by = GetStr(*o, "closed_by");
  c->opened_on = GetInt(*o, "opened_on");
  c->modified_on = GetInt(*o, "modified_on");
  c->server_modified_on = GetInt(*o, "server_modified_on");
  c->closed_on = GetInt(*o, "closed_on");
  c->closed = GetBool(*o, "closed");
  c->deleted = GetBool(*o, "deleted");
  c->rev = GetInt(*o, "rev");
  c->properties.clear();
  if (auto it = o->find("properties"); it != o->end() && it->value().is_object())
    for (const auto& kv : it->value().get_object())
      if (kv.value().is_string()) c->properties[std::string(kv.key())] = kv.value().get_string();
  c->indices.clear();
  if (auto it = o->find("indices"); it != o->end() && it->value().is_array())
    for (const auto& iv : it->value().get_array()) {
      if (!iv.is_object()) continue;
      const auto& io = iv.get_object();
      c->indices.push_back({GetStr(io, "identifier"), GetStr(io, "referenced_type"),
                            GetStr(io, "referenced_id"), GetStr(io, "relationship")});
    }
  c->attachments.clear();
  if (auto it = o->find("attachments"); it != o->end() && it->value().is_array())
    for (const auto& av : it->value().get_array()) {
      if (!av.is_object()) continue;
      const auto& ao = av.get_object();
      c->attachments.push_back({GetStr(ao, "name"), GetStr(ao, "src"), GetStr(ao, "from"),
                                GetStr(ao, "blob_key"), GetStr(ao, "content_type")});
    }
  return Status::Ok();
}

json::object EncodeChange(const ChangeMeta& m) {
  json::object o;
  o["topic"] = m.topic;
  o["document_id"] = m.document_id;
  o["data_source_type"] = m.data_source_type;
  o["data_source_name"] = m.data_source_name;
  o["document_type"] = m.document_type;
  o["document_subtype"] = m.document_subtype;
  o["domain"] = m.domain;
  o["is_deletion"] = m.is_deletion;
  o["publish_timestamp"] = m.publish_timestamp;
  o["associated_document_id"] = m.associated_document_id;
  return o;
}

Status DecodeChange(const json::value& v, ChangeMeta* m) {
  const auto* o = AsObject(v);
  if (!o) return NotObject("change");
  m->topic = GetStr(*o, "topic");
  m->document_id = GetStr(*o, "document_id");
  m->data_source_type = GetStr(*o, "data_source_type");
  m->data_source_name = GetStr(*o, "data_source_name");
  m->document_type = GetStr(*o, "document_type");
  m->document_subtype = GetStr(*o, "document_subtype");
  m->domain = GetStr(*o, "domain");
  m->is_deletion = GetBool(*o, "is_deletion");
  m->publish_timestamp = GetInt(*o, "publish_timestamp");
  m->associated_document_id = GetStr(*o, "associated_document_id");
  return Status::Ok();
}

json::object EncodeCaseTx(const CaseTransaction& t) {
  return json::object{{"case_id", t.case_id},
                      {"form_id", t.form_id},
                      {"server_date", t.server_date},
                      {"client_date", t.client_date},
                      {"type", t.type},
                      {"revoked", t.revoked},
                      {"sync_log_id", t.sync_log_id},
                      {"xmlns", t.xmlns},
                      {"reason", t.reason},
                      {"seq", t.seq}};
}

Status DecodeCaseTx(const json::value& v, CaseTransaction* t) {
  const auto* o = AsObject(v);
  if (!o) return NotObject("case transaction");
  t->case_id = GetStr(*o, "case_id");
  t->form_id = GetStr(*o, "form_id");
  t->server_date = GetInt(*o, "server_date");
  t->client_date = GetInt(*o, "client_date");
  t->type = static_cast<int>(GetInt(*o, "type"));
  t->revoked = GetBool(*o, "revoked");
  t->sync_log_id = GetStr(*o, "sync_log_id");
  t->xmlns = GetStr(*o, "xmlns");
  t->reason = GetStr(*o, "reason");
  t->seq = GetInt(*o, "seq");
  return Status::Ok();
}

json::object EncodeLedgerValue(const LedgerValue& v) {
  return json::object{{"case_id", v.case_id},
                      {"section_id", v.section_id},
                      {"entry_id", v.entry_id},
                      {"balance", v.balance},
                      {"last_modified", v.last_modified},
                      {"last_modified_form_id", v.last_modified_form_id},
                      {"domain", v.domain}};
}

Status DecodeLedgerValue(const json::value& j, LedgerValue* v) {
  const auto* o = AsObject(j);
  if (!o) return NotObject("ledger value");
  v->case_id = GetStr(*o, "case_id");
  v->section_id = GetStr(*o, "section_id");
  v->entry_id = GetStr(*o, "entry_id");
  v->balance = GetDouble(*o, "balance");
  v->last_modified = GetInt(*o, "last_modified");
  v->last_modified_form_id = GetStr(*o, "last_modified_form_id");
  v->domain = GetStr(*o, "domain");
  return Status::Ok();
}

json::object EncodeLedgerTx(const LedgerTransaction& t) {
  return json::object{{"form_id", t.form_id},
                      {"case_id", t.case_id},
                      {"section_id", t.section_id},
                      {"entry_id", t.entry_id},
                      {"server_date", t.server_date},
                      {"report_date", t.report_date},
                      {"type", t.type},
                      {"user_defined_type", t.user_defined_type},
                      {"delta", t.delta},
                      {"updated_balance", t.updated_balance},
                      {"seq", t.seq}};
}

Status DecodeLedgerTx(const json::value& j, LedgerTransaction* t) {
  const auto* o = AsObject(j);
  if (!o) return NotObject("ledger transaction");
  t->form_id = GetStr(*o, "form_id");
  t->case_id = GetStr(*o, "case_id");
  t->section_id = GetStr(*o, "section_id");
  t->entry_id = GetStr(*o, "entry_id");
  t->server_date = GetInt(*o, "server_date");
  t->report_date = GetInt(*o, "report_date");
  t->type = static_cast<int>(GetInt(*o, "type"));
  t->user_defined_type = GetStr(*o, "user_defined_type");
  t->delta = GetDouble(*o, "delta");
  t->updated_balance = GetDouble(*o, "updated_balance");
  t->seq = GetInt(*o, "seq");
  return Status::Ok();
}

namespace {

// The key under which an op carries its document (nullptr: the op has none) ...
const char* DocKeyOf(const storage::PutForm&) { return "form"; }
const char* DocKeyOf(const storage::PutCase&) { return "case"; }
const char* DocKeyOf(const storage::PutCaseTransaction&) { return "tx"; }
const char* DocKeyOf(const storage::PutLedgerValue&) { return "value"; }
const char* DocKeyOf(const storage::AddOutbox&) { return "meta"; }
template <typename T>
const char* DocKeyOf(const T&) {
  return nullptr;
}

// ... and the document itself.
json::object DocOf(const storage::PutForm& op) { return EncodeForm(op.form); }
json::object DocOf(const storage::PutCase& op) { return EncodeCase(op.record); }
json::object DocOf(const storage::PutCaseTransaction& op) { return EncodeCaseTx(op.tx); }
json::object DocOf(const storage::PutLedgerValue& op) { return EncodeLedgerValue(op.value); }
json::object DocOf(const storage::AddOutbox& op) { return EncodeChange(op.meta); }
template <typename T>
json::object DocOf(const T&) {
  return {};
}

// An op as JSON without its document (EncodeOp adds that).
struct OpEncoder {
  std::vector<std::string_view>* blob_sink = nullptr;
  // must_be_new is not kept: an encoded batch was checked when it was first committed (a redo
  // log or an intent replays it as it was acknowledged).
  json::object operator()(const storage::PutForm&) const { return {{"op", "put_form"}}; }
  json::object operator()(const storage::DeleteForm& op) const {
    return {{"op", "delete_form"}, {"form_id", op.form_id}};
  }
  json::object operator()(const storage::PutCase& op) const {
    return {{"op", "put_case"}, {"expected_rev", op.expected_rev}};
  }
  json::object operator()(const storage::PutCaseTransaction& op) const {
    return {{"op", "put_case_tx"}, {"upsert", op.upsert}};
  }
  json::object operator()(const storage::PutLedgerValue&) const {
    return {{"op", "put_ledger_value"}};
  }
  json::object operator()(const storage::ReplaceLedgerTransactions& op) const {
    json::array txs;
    for (const auto& t : op.txs) txs.push_back(EncodeLedgerTx(t));
    return {{"op", "replace_ledger_txs"},
            {"form_id", op.form_id},
            {"case_id", op.case_id},
            {"txs", std::move(txs)}};
  }
  json::object operator()(const storage::AddOutbox&) const { return {{"op", "outbox"}}; }
  json::object operator()(const storage::StageBlob& op) const {
    if (blob_sink) {
      blob_sink->push_back(op.data);
      return {{"op", "stage_blob"}, {"key", op.key}, {"blob", blob_sink->size() - 1}};
    }
    return {{"op", "stage_blob"},
            {"key", op.key},
            {"data_hex", util::HexEncode(op.data.data(), op.data.size())}};
  }
  json::object operator()(const storage::DeleteOutbox& op) const {
    return {{"op", "delete_outbox"}, {"up_to_seq", op.up_to_seq}};
  }
  json::object operator()(const storage::ReleaseBlobs& op) const {
    return {{"op", "release_blobs"}, {"up_to_seq", op.up_to_seq}};
  }
  json::object operator()(const storage::PutIntent& op) const {
    return {{"op", "put_intent"}, {"intent_id", op.intent_id}, {"payload", op.payload}};
  }
  json::object operator()(const storage::DeleteIntent& op) const {
    return {{"op", "delete_intent"}, {"intent_id", op.intent_id}};
  }
};

}  // namespace

json::object EncodeOp(const storage::WriteOp& op, std::vector<std::string_view>* blob_sink) {
  json::object o = std::visit(OpEncoder{blob_sink}, op);
  std::visit(
      [&](const auto& x) {
        if (const char* key = DocKeyOf(x)) o[key] = DocOf(x);
      },
      op);
  return o;
}

std::string EncodeDocument(const storage::WriteOp& op) {
  return std::visit(
      [](const auto& x) { return DocKeyOf(x) ? json::serialize(DocOf(x)) : std::string(); }, op);
}

std::string EncodeOpText(const storage::WriteOp& op, std::string_view document,
                         std::vector<std::string_view>* blob_sink) {
  const char* key = std::visit([](const auto& x) { return DocKeyOf(x); }, op);
  if (!key || document.empty()) return json::serialize(EncodeOp(op, blob_sink));
  std::string s = json::serialize(std::visit(OpEncoder{blob_sink}, op));
  s.pop_back();  // the closing brace of a non-empty object: splice the document in before it
  s += ",\"";
  s += key;
  s += "\":";
  s += document;
  s += '}';
  return s;
}

std::string EncodeBatch(const storage::WriteBatch& b, std::vector<std::string_view>* blob_sink) {
  json::array ops;
  for (const auto& op : b.ops) ops.push_back(EncodeOp(op, blob_sink));
  json::object o{{"marker", b.applied_marker}, {"ops", std::move(ops)}};
  return json::serialize(o);
}

Status DecodeBatch(std::string_view text, storage::WriteBatch* b,
                   const std::vector<std::string_view>* blobs) {
  CC_ASSIGN_OR_RETURN(json::value v, ParseJson(text));
  if (!v.is_object()) return NotObject("write batch");
  const auto& o = v.get_object();
  b->applied_marker = GetStr(o, "marker");
  b->ops.clear();
  auto it = o.find("ops");
  if (it == o.end() || !it->value().is_array()) return Status::DataLoss("write batch has no ops");
  for (const auto& ov : it->value().get_array()) {
    if (!ov.is_object()) return NotObject("write op");
    const auto& op = ov.get_object();
    std::string kind = GetStr(op, "op");
    auto sub = [&](const char* k) -> const json::value& {
      static const json::value kNull;
      auto f = op.find(k);
      return f == op.end() ? kNull : f->value();
    };
    if (kind == "put_form") {
      storage::PutForm p;
      CC_RETURN_IF_ERROR(DecodeForm(sub("form"), &p.form));
      b->ops.emplace_back(std::move(p));
    } else if (kind == "delete_form") {
      b->ops.emplace_back(storage::DeleteForm{GetStr(op, "form_id")});
    } else if (kind == "put_case") {
      storage::PutCase p;
      CC_RETURN_IF_ERROR(DecodeCase(sub("case"), &p.record));
      p.expected_rev = GetInt(op, "expected_rev");
      b->ops.emplace_back(std::move(p));
    } else if (kind == "put_case_tx") {
      storage::PutCaseTransaction p;
      CC_RETURN_IF_ERROR(DecodeCaseTx(sub("tx"), &p.tx));
      p.upsert = !op.contains("upsert") || GetBool(op, "upsert");
      b->ops.emplace_back(std::move(p));
    } else if (kind == "put_ledger_value") {
      storage::PutLedgerValue p;
      CC_RETURN_IF_ERROR(DecodeLedgerValue(sub("value"), &p.value));
      b->ops.emplace_back(std::move(p));
    } else if (kind == "replace_ledger_txs") {
      storage::ReplaceLedgerTransactions p;
      p.form_id = GetStr(op, "form_id");
      p.case_id = GetStr(op, "case_id");
      if (sub("txs").is_array())
        for (const auto& tv : sub("txs").get_array()) {
          LedgerTransaction t;
          CC_RETURN_IF_ERROR(DecodeLedgerTx(tv, &t));
          p.txs.push_back(std::move(t));
        }
      b->ops.emplace_back(std::move(p));
    } else if (kind == "outbox") {
      storage::AddOutbox p;
      CC_RETURN_IF_ERROR(DecodeChange(sub("meta"), &p.meta));
      b->ops.emplace_back(std::move(p));
    } else if (kind == "stage_blob" && op.contains("blob")) {
      size_t idx = static_cast<size_t>(GetInt(op, "blob"));
      if (!blobs || idx >= blobs->size())
        return Status::DataLoss("stage_blob refers to a missing blob");
      b->ops.emplace_back(storage::StageBlob{GetStr(op, "key"), std::string((*blobs)[idx])});
    } else if (kind == "stage_blob") {
      std::string hex = GetStr(op, "data_hex"), data;
      if (hex.size() % 2) return Status::DataLoss("stage_blob data is not hex");
      auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
      for (size_t i = 0; i < hex.size(); i += 2)
        data.push_back(static_cast<char>(nib(hex[i]) * 16 + nib(hex[i + 1])));
      b->ops.emplace_back(storage::StageBlob{GetStr(op, "key"), std::move(data)});
    } else if (kind == "delete_outbox") {
      b->ops.emplace_back(storage::DeleteOutbox{GetInt(op, "up_to_seq")});
    } else if (kind == "release_blobs") {
      b->ops.emplace_back(storage::ReleaseBlobs{GetInt(op, "up_to_seq")});
    } else if (kind == "put_intent") {
      b->ops.emplace_back(storage::PutIntent{GetStr(op, "intent_id"), GetStr(op, "payload")});
    } else if (kind == "delete_intent") {
      b->ops.emplace_back(storage::DeleteIntent{GetStr(op, "intent_id")});
    } else {
      return Status::DataLoss(fmt::format("unknown write op '{}'", kind));
    }
  }
  return Status::Ok();
}

}  // namespace commcare::codec
