// Bulk case edit: the cases a Case API filter matches, sorted by id and taken once (kept in a
// snapshot file so a rerun edits the same cases), get the same property changes or a close, in
// system forms of chunk_size case blocks with ids derived from the edit id.
#include <fmt/format.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cstdio>
#include <fstream>

#include "commcare/engine.h"
#include "commcare/importer.h"
#include "import/system_form.h"
#include "util/hash.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare {

namespace json = boost::json;

std::string BulkEditResult::ToJson() const {
  json::array s;
  for (const auto& id : sample) s.emplace_back(id);
  return json::serialize(json::object{{"edit_id", edit_id},
                                      {"preview", preview},
                                      {"matched", matched},
                                      {"updated", updated},
                                      {"num_chunks", num_chunks},
                                      {"chunks_already_applied", chunks_already_applied},
                                      {"sample", s}});
}

namespace {

// The Case API's list filters, read from JSON.
struct Filter {
  storage::CaseFilter base;
  std::string case_name, external_id;
  std::vector<std::pair<std::string, std::string>> props;
  bool Matches(const CaseRecord& c) const {
    if (!case_name.empty() && c.name != case_name) return false;
    if (!external_id.empty() && c.external_id != external_id) return false;
    for (const auto& [k, v] : props) {
      auto it = c.properties.find(k);
      if ((it == c.properties.end() ? std::string() : it->second) != v) return false;
    }
    return true;
  }
};

Result<Filter> ParseFilter(const BulkEditOptions& o) {
  boost::system::error_code ec;
  json::value v = json::parse(o.filter_json, ec);
  if (ec || !v.is_object()) return Status::InvalidArgument("filter: must be a JSON object");
  Filter f;
  f.base.domain = o.domain;
  for (const auto& kv : v.get_object()) {
    const std::string k(kv.key());
    std::string s;
    if (kv.value().is_string())
      s = std::string(kv.value().get_string());
    else if (kv.value().is_bool())
      s = kv.value().get_bool() ? "true" : "false";
    else
      return Status::InvalidArgument(fmt::format("filter.{}: must be a string", k));
    if (k == "case_type")
      f.base.type = s;
    else if (k == "owner_id")
      f.base.owner_id = s;
    else if (k == "case_name")
      f.case_name = s;
    else if (k == "external_id")
      f.external_id = s;
    else if (k == "closed") {
      if (s != "true" && s != "false")
        return Status::InvalidArgument("filter.closed: must be true or false");
      f.base.closed = s == "true";
    } else if (k.rfind("properties.", 0) == 0 && util::IsCasePropertyName(k.substr(11))) {
      f.props.emplace_back(k.substr(11), s);
    } else {
      return Status::InvalidArgument(fmt::format("filter: unknown filter '{}'", k));
    }
  }
  if (v.get_object().empty())
    return Status::InvalidArgument("filter: name at least one filter (e.g. case_type)");
  return f;
}

Result<std::vector<std::string>> Matches(Engine* e, const Filter& f) {
  std::vector<std::string> ids;
  CC_RETURN_IF_ERROR(e->ListCases(f.base, [&](const CaseRecord& c) {
    if (f.Matches(c)) ids.push_back(c.case_id);
    return true;
  }));
  std::sort(ids.begin(), ids.end());
  return ids;
}

// The matches of an earlier run (kept so a rerun edits the same cases), or these written there.
Result<std::vector<std::string>> Snapshot(const std::string& path, Engine* e, const Filter& f) {
  if (path.empty()) return Matches(e, f);
  std::ifstream in(path);
  if (in) {
    std::vector<std::string> ids;
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) ids.push_back(line);
    return ids;
  }
  CC_ASSIGN_OR_RETURN(auto ids, Matches(e, f));
  {
    std::ofstream out(path + ".tmp", std::ios::trunc);
    for (const auto& id : ids) out << id << '\n';
    out.close();
    if (!out) return Status::Internal("cannot write " + path);
  }
  if (std::rename((path + ".tmp").c_str(), path.c_str()) != 0)
    return Status::Internal("cannot write " + path);
  return ids;
}

}  // namespace

Status CheckBulkEdit(const BulkEditOptions& o) {
  if (o.domain.empty()) return Status::InvalidArgument("domain: is required");
  CC_RETURN_IF_ERROR(ParseFilter(o).status());
  if (o.set.empty() && !o.close && !o.preview)
    return Status::InvalidArgument("name a change: properties to set, or close");
  static const char* kOwn[] = {"case_id", "case_type",     "type", "closed",
                               "user_id", "date_modified", "index"};
  for (const auto& [k, v] : o.set) {
    if (!util::IsCasePropertyName(k))
      return Status::InvalidArgument(fmt::format("set.{}: not a valid property name", k));
    for (const char* own : kOwn)
      if (k == own) return Status::InvalidArgument(fmt::format("set.{}: a reserved name", k));
  }
  if (o.chunk_size < 1 || o.chunk_size > 1000)
    return Status::InvalidArgument("chunk_size: must be 1..1000");
  return Status::Ok();
}

Result<BulkEditResult> BulkEditCases(Engine* engine, const BulkEditOptions& o,
                                     const std::string& snapshot_path,
                                     const ImportProgress& progress) {
  CC_RETURN_IF_ERROR(CheckBulkEdit(o));
  CC_ASSIGN_OR_RETURN(Filter f, ParseFilter(o));
  BulkEditResult r;
  r.preview = o.preview;
  CC_ASSIGN_OR_RETURN(auto ids,
                      o.preview ? Matches(engine, f) : Snapshot(snapshot_path, engine, f));
  r.matched = static_cast<int64_t>(ids.size());
  for (size_t i = 0; i < ids.size() && i < 10; ++i) r.sample.push_back(ids[i]);
  std::string update;
  for (const auto& [k, v] : o.set) update += fmt::format("<{0}>{1}</{0}>", k, util::XmlEscape(v));
  if (o.preview) return r;
  r.edit_id = o.edit_id;
  if (r.edit_id.empty()) {
    std::string key = o.domain + "\n" + o.filter_json + "\n" + update + (o.close ? "\nclose" : "");
    for (const auto& id : ids) key += "\n" + id;
    r.edit_id = util::Sha256Hex(key).substr(0, 32);
  }
  const int64_t time = o.time ? o.time : util::NowMicros();
  const std::string when = util::FormatIsoTime(time);
  for (size_t start = 0; start < ids.size(); start += o.chunk_size) {
    const size_t end = std::min(ids.size(), start + o.chunk_size);
    const std::string form_id =
        importer::DerivedId(fmt::format("{}/edit/{}", r.edit_id, r.num_chunks));
    ++r.num_chunks;
    CC_ASSIGN_OR_RETURN(bool applied, importer::FormApplied(engine, o.domain, form_id));
    if (applied) {
      ++r.chunks_already_applied;
    } else {
      std::string blocks;
      for (size_t i = start; i < end; ++i) {
        blocks += fmt::format(
            R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{}" date_modified="{}" user_id="{}">)",
            util::XmlEscape(ids[i]), when, util::XmlEscape(o.user_id));
        if (!update.empty()) blocks += "<update>" + update + "</update>";
        if (o.close) blocks += "<close/>";
        blocks += "</case>";
      }
      CC_RETURN_IF_ERROR(importer::SubmitBlocks(engine, o.domain, form_id,
                                                importer::kBulkEditDevice, o.user_id, o.username,
                                                time, blocks));
    }
    r.updated += static_cast<int64_t>(end - start);
    if (progress && !progress(static_cast<int64_t>(end), r.matched))
      return Status::Aborted("the bulk edit was stopped");
  }
  return r;
}

}  // namespace commcare
