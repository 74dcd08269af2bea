// The case import run: header, rows planned one by one, chunks of case blocks submitted as
// system forms with ids derived from the import id (a rerun skips the chunks stored), HQ's
// result counts and errors, and a JSON line per row in the result file.
#include "commcare/importer.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <boost/json.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "commcare/engine.h"
#include "commcare/log.h"
#include "import/row_plan.h"
#include "import/system_form.h"
#include "import/table_reader.h"
#include "util/hash.h"
#include "util/time.h"

namespace commcare {

namespace json = boost::json;
using importer::RowError;
using importer::RowPlan;

std::string ImportProblem::ToJson() const {
  return json::serialize(
      json::object{{"row", row}, {"column", column}, {"error", title}, {"reason", reason}});
}

std::string CaseImportResult::ToJson() const {
  boost::system::error_code ec;
  json::value errors = json::parse(errors_json, ec);
  json::object o{{"import_id", import_id},
                 {"dry_run", dry_run},
                 {"rows", rows},
                 {"created_count", created_count},
                 {"match_count", match_count},
                 {"failed_count", failed_count},
                 {"skipped_count", skipped_count},
                 {"blank_count", blank_count},
                 {"num_chunks", num_chunks},
                 {"chunks_already_applied", chunks_already_applied},
                 {"errors", ec ? json::value(json::object()) : errors}};
  if (!result_path.empty()) o["result_file"] = result_path;
  return json::serialize(o);
}

namespace importer {
namespace {

constexpr size_t kMaxErrorRows = 1000;  // rows listed per (error, column) in the summary

// The import id: a hash of the options that shape the forms and of the file's bytes, so the same
// upload applied twice is absorbed the second time.
Result<std::string> ImportIdOf(const CaseImportOptions& o, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": no such file");
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::string opts = fmt::format("{}\n{}\n{}\n{}\n{}\n{}\n", o.domain, o.case_type, o.search_field,
                                 o.search_column, o.create_new, o.user_id);
  for (const auto& [k, v] : o.columns) opts += k + "=" + v + "\n";
  EVP_DigestUpdate(ctx, opts.data(), opts.size());
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) EVP_DigestUpdate(ctx, buf, in.gcount());
  unsigned char d[32];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, d, &n);
  EVP_MD_CTX_free(ctx);
  return util::HexEncode(d, 16);
}

// Counts, HQ's error summary and the per-row result file.
class Results {
 public:
  Results(CaseImportResult* r, const ImportProblemSink& sink) : r_(r), sink_(sink) {}
  Status OpenFile(const std::string& path) {
    if (path.empty()) return Status::Ok();
    path_ = path;
    file_.open(path + ".tmp", std::ios::binary | std::ios::trunc);
    if (!file_) return Status::InvalidArgument(fmt::format("cannot write {}", path));
    return Status::Ok();
  }
  void Fail(int64_t row, const std::vector<RowError>& errs) {
    ++r_->failed_count;
    json::array list;
    for (const auto& e : errs) {
      auto& entry = errors_[e.title][e.column];
      if (entry.rows.size() < kMaxErrorRows) entry.rows.push_back(row);
      ++entry.count;
      if (entry.description.empty()) entry.description = e.reason;
      if (sink_) sink_(ImportProblem{row, e.column, e.title, e.reason});
      list.push_back(json::object{{"column", e.column}, {"error", e.title}, {"reason", e.reason}});
    }
    Line(json::object{{"row", row}, {"action", "failed"}, {"errors", list}});
  }
  void Done(const RowPlan& p) {
    const bool created = p.action == RowPlan::Action::kCreate;
    ++(created ? r_->created_count : r_->match_count);
    Line(json::object{
        {"row", p.row}, {"action", created ? "created" : "updated"}, {"case_id", p.case_id}});
  }
  void Skip(int64_t row) {
    ++r_->skipped_count;
    Line(json::object{{"row", row}, {"action", "skipped"}, {"reason", "no case matches"}});
  }
  Status Finish() {
    json::object errors;
    for (const auto& [title, cols] : errors_) {
      json::object by_col;
      for (const auto& [col, e] : cols) {
        json::array rows;
        for (int64_t x : e.rows) rows.push_back(x);
        by_col[col] = json::object{
            {"error", title}, {"description", e.description}, {"rows", rows}, {"count", e.count}};
      }
      errors[title] = by_col;
    }
    r_->errors_json = json::serialize(errors);
    if (path_.empty()) return Status::Ok();
    file_.close();
    if (!file_ || std::rename((path_ + ".tmp").c_str(), path_.c_str()) != 0)
      return Status::Internal(fmt::format("cannot write {}", path_));
    r_->result_path = path_;
    return Status::Ok();
  }

 private:
  void Line(const json::object& o) {
    if (file_.is_open()) file_ << json::serialize(o) << '\n';
  }
  struct Entry {
    std::string description;
    std::vector<int64_t> rows;
    int64_t count = 0;
  };
  CaseImportResult* r_;
  const ImportProblemSink& sink_;
  std::map<std::string, std::map<std::string, Entry>> errors_;
  std::string path_;
  std::ofstream file_;
};

// Rows waiting to go out in one form.
class Chunker {
 public:
  Chunker(Engine* e, const CaseImportOptions& o, std::string import_id, int64_t time,
          CaseImportResult* r, Results* res)
      : e_(e), o_(o), id_(std::move(import_id)), time_(time), r_(r), res_(res) {}
  bool ReliesOnUncreated(const RowPlan& p) const {
    for (const auto& id : p.lookup_ids)
      if (uncreated_.count(id)) return true;
    return false;
  }
  Status Add(RowPlan p) {
    if (ReliesOnUncreated(p)) CC_RETURN_IF_ERROR(Flush());
    if (!p.external_id.empty()) uncreated_.insert(p.external_id);
    rows_.push_back(std::move(p));
    if (static_cast<int>(rows_.size()) >= std::max(1, o_.chunk_size)) return Flush();
    return Status::Ok();
  }
  Status Flush() {
    if (rows_.empty()) return Status::Ok();
    const std::string form_id = DerivedId(fmt::format("{}/form/{}", id_, r_->num_chunks));
    ++r_->num_chunks;
    Status s;
    if (!o_.dry_run) {
      CC_ASSIGN_OR_RETURN(bool applied, FormApplied(e_, o_.domain, form_id));
      if (applied) {
        ++r_->chunks_already_applied;
      } else {
        std::string blocks;
        for (const auto& p : rows_) blocks += p.block;
        s = SubmitBlocks(e_, o_.domain, form_id, kImporterDevice, o_.user_id, o_.username, time_,
                         blocks);
        if (!s.ok() && !s.IsInvalidArgument()) return s;  // the task retries; nothing recorded
      }
    }
    for (const auto& p : rows_) {
      if (s.ok())
        res_->Done(p);
      else
        res_->Fail(p.row, {RowError{"", "Import Error", s.message()}});
    }
    rows_.clear();
    uncreated_.clear();
    return Status::Ok();
  }

 private:
  Engine* e_;
  const CaseImportOptions& o_;
  std::string id_;
  int64_t time_;
  CaseImportResult* r_;
  Results* res_;
  std::vector<RowPlan> rows_;
  std::set<std::string> uncreated_;
};

Status CheckOptions(const CaseImportOptions& o) {
  if (o.domain.empty()) return Status::InvalidArgument("domain: is required");
  if (o.case_type.empty()) return Status::InvalidArgument("case_type: is required");
  if (o.search_field != "case_id" && o.search_field != "external_id")
    return Status::InvalidArgument("search_field: must be case_id or external_id");
  if (o.chunk_size < 1 || o.chunk_size > 1000)
    return Status::InvalidArgument("chunk_size: must be 1..1000");
  return Status::Ok();
}

}  // namespace
}  // namespace importer

Result<CaseImportResult> ImportCases(Engine* engine, meta::MetaStore* meta,
                                     const CaseImportOptions& options, const std::string& path,
                                     const ImportProgress& progress,
                                     const ImportProblemSink& problems) {
  using namespace importer;
  CC_RETURN_IF_ERROR(CheckOptions(options));
  CaseImportResult r;
  r.dry_run = options.dry_run;
  r.import_id = options.import_id;
  if (r.import_id.empty()) {
    CC_ASSIGN_OR_RETURN(r.import_id, ImportIdOf(options, path));
  }
  CC_ASSIGN_OR_RETURN(auto table, OpenTable(path));
  std::vector<std::string> cells;
  CC_ASSIGN_OR_RETURN(bool has_header, table->Next(&cells));
  if (!has_header) return Status::InvalidArgument("bad header: the file is empty");
  CC_ASSIGN_OR_RETURN(Header header, ReadHeader(cells, options));
  OwnerLookup owners(meta, options.domain);
  CaseLookup cases(engine, options.domain);
  const int64_t time = options.time ? options.time : util::NowMicros();
  PlanContext ctx{&options, &header, r.import_id, time, &owners, &cases};
  Results results(&r, problems);
  CC_RETURN_IF_ERROR(results.OpenFile(options.dry_run ? "" : options.result_path));
  Chunker chunks(engine, options, r.import_id, time, &r, &results);
  for (;;) {
    CC_ASSIGN_OR_RETURN(bool more, table->Next(&cells));
    if (!more) break;
    ++r.rows;
    CC_ASSIGN_OR_RETURN(RowPlan p, PlanRow(ctx, table->RowNumber(), cells));
    switch (p.action) {
      case RowPlan::Action::kBlank:
        ++r.blank_count;
        break;
      case RowPlan::Action::kSkip:
        results.Skip(p.row);
        break;
      case RowPlan::Action::kFail:
        results.Fail(p.row, p.errors);
        break;
      default:
        if (p.action == RowPlan::Action::kCreate)
          cases.Created(options.case_type, p.external_id, p.case_id);
        CC_RETURN_IF_ERROR(chunks.Add(std::move(p)));
    }
    if (progress && r.rows % 500 == 0 && !progress(r.rows, table->EstimatedRows() - 1))
      return Status::Aborted("the import was stopped");
  }
  CC_RETURN_IF_ERROR(chunks.Flush());
  CC_RETURN_IF_ERROR(results.Finish());
  if (progress) progress(r.rows, r.rows);
  return r;
}

}  // namespace commcare
