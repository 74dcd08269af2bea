// OData feeds of saved exports, as CommCare HQ serves them to Power BI and Tableau
// (corehq/apps/api/odata/; docs/exports.md, "OData feeds"):
//   GET /a/{domain}/api/odata/{cases|forms}/v1/{name}[/{table}]/            service document
//   GET .../{name}[/{table}]/$metadata                                      EDMX schema
//   GET .../{name}[/{table}]/feed[?limit=&offset=]                          rows, paged
// and the same under /a/{domain}/api/v0.5/odata/{cases|forms}/. {name} is a saved export
// definition of that kind; {table} is 0 (the cases or forms) or a form export's repeat table.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <set>

#include "commcare/engine.h"
#include "commcare/exports.h"
#include "exports/stream.h"
#include "server/app.h"
#include "server/responses.h"
#include "util/xml.h"

namespace commcare::server {

namespace json = boost::json;
using http::Request;
using http::Response;

namespace {

constexpr int64_t kDefaultLimit = 2000, kMaxLimit = 10000;  // HQ's Meta.limit and max_limit
constexpr int64_t kMaxOffset = int64_t{1} << 40;  // far past any export; offset + limit fits

// What a request names: the definition, the table, and the document asked for.
struct FeedPath {
  std::string name;
  size_t table = 0;
  bool table_named = false;  // the URL names the table (its documents' URLs then do too)
  enum class Doc { kService, kMetadata, kFeed } doc = Doc::kService;
};

Result<FeedPath> ParseFeedPath(std::string rest) {
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  std::vector<std::string> parts;
  for (size_t b = 0; b <= rest.size();) {
    size_t e = std::min(rest.find('/', b), rest.size());
    parts.push_back(rest.substr(b, e - b));
    b = e + 1;
  }
  FeedPath p;
  if (parts.empty() || parts[0].empty())
    return Status::NotFound("name a saved export: .../{name}/");
  p.name = parts[0];
  size_t at = 1;
  if (at < parts.size() && !parts[at].empty() &&
      parts[at].find_first_not_of("0123456789") == std::string::npos) {
    if (parts[at].size() > 4) return Status::NotFound("no such table");
    p.table = std::stoul(parts[at]);
    p.table_named = true;
    ++at;
  }
  if (at < parts.size()) {
    if (parts[at] == "$metadata")
      p.doc = FeedPath::Doc::kMetadata;
    else if (parts[at] == "feed")
      p.doc = FeedPath::Doc::kFeed;
    else
      return Status::NotFound(fmt::format("no such OData document \"{}\"", parts[at]));
    ++at;
  }
  if (at != parts.size()) return Status::NotFound("no such OData route");
  return p;
}

// HQ's clean_odata_columns: '@', '#' and ',' removed, '.' and tab made spaces, line ends
// removed, at most 255 characters; the main table's id column is "caseid" / "formid".
std::string ODataName(std::string_view header, bool main_table) {
  if (main_table && header == "case_id") return "caseid";
  if (main_table && header == "form_id") return "formid";
  std::string out;
  for (char c : header) {
    if (c == '@' || c == '#' || c == ',' || c == '\n' || c == '\r') continue;
    out.push_back(c == '.' || c == '\t' ? ' ' : c);
  }
  if (out.size() > 255) {
    out.resize(255);
    while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80)
      out.pop_back();  // do not cut a UTF-8 sequence
    if (!out.empty() && static_cast<unsigned char>(out.back()) >= 0xC0) out.pop_back();
  }
  return out;
}

// HQ's special types (odata/utils.py), by the column's source path; everything else is a string.
const char* ODataType(const ExportDefinition& def, std::string_view header) {
  std::string_view path = header;
  for (const auto& c : def.columns)
    if ((c.label.empty() ? c.path : c.label) == header) path = c.path;
  if (def.kind == ExportDefinition::Kind::kCase) {
    if (path == "closed") return "Edm.Boolean";
    if (path == "modified_on" || path == "server_modified_on" || path == "opened_on")
      return "Edm.DateTimeOffset";
  } else if (path == "received_on" || path == "started_time" || path == "completed_time") {
    return "Edm.DateTimeOffset";
  }
  return "Edm.String";
}

// Keeps rows [offset, offset + limit) of one table and stops the export at the row after them.
class PageWriter final : public exports::TableWriter {
 public:
  PageWriter(size_t table, int64_t offset, int64_t limit,
             std::vector<std::vector<std::string>>* rows, bool* more)
      : table_(table), offset_(offset), limit_(limit), rows_(rows), more_(more) {}
  Status WriteRow(size_t t, std::span<const std::string_view> cells) override {
    if (t != table_) return Status::Ok();
    const int64_t at = seen_++;
    if (at < offset_) return Status::Ok();
    if (at >= offset_ + limit_) {
      *more_ = true;
      return Status::Aborted(kStop);
    }
    rows_->emplace_back(cells.begin(), cells.end());
    return Status::Ok();
  }
  Result<std::string> Finish() override { return std::string(); }
  static constexpr const char* kStop = "odata: page full";

 private:
  size_t table_;
  int64_t offset_, limit_, seen_ = 0;
  std::vector<std::vector<std::string>>* rows_;
  bool* more_;
};

struct Page {
  std::vector<exports::TableSpec> tables;
  std::vector<std::vector<std::string>> rows;
  bool more = false;
};

// Runs the export for one page of one table (limit 0: the tables' columns only).
Result<Page> ReadPage(Engine* engine, const ExportDefinition& def, size_t table, int64_t offset,
                      int64_t limit) {
  Page page;
  exports::ExportSink sink;
  sink.number_by_form_id = true;
  sink.make =
      [&](std::vector<exports::TableSpec> tables) -> Result<std::unique_ptr<exports::TableWriter>> {
    page.tables = std::move(tables);
    if (table >= page.tables.size())
      return Status::NotFound(
          fmt::format("this feed has no table {} (it has {})", table, page.tables.size()));
    return std::unique_ptr<exports::TableWriter>(
        new PageWriter(table, offset, limit, &page.rows, &page.more));
  };
  auto r = exports::RunExportInto(engine, def, sink);
  if (!r.ok() && !(page.more && r.status().message() == PageWriter::kStop)) return r.status();
  return page;
}

Response ODataResponse(Response r) {
  r.headers.emplace_back("OData-Version", "4.0");
  return r;
}

}  // namespace

Response App::ODataApi(const Request& r, const std::string& domain, std::string_view kind,
                       const std::string& rest) {
  if (r.method != "GET") return Error(405, "OData feeds answer GET");
  Response deny;
  if (!Admit(r, domain, meta::kAccessApi, &deny)) return deny;
  auto path = ParseFeedPath(rest);
  if (!path.ok()) return Error(404, path.status().message());
  const std::string& data_dir = engine_->Options().data_dir;
  if (data_dir.empty()) return Error(503, "OData feeds need a data directory (saved exports)");
  auto def = LoadExportDefinition(data_dir, domain, path->name);
  const auto want = kind == "cases" ? ExportDefinition::Kind::kCase : ExportDefinition::Kind::kForm;
  if (!def.ok() || def->kind != want)
    return Error(404, fmt::format("no {} export \"{}\" in this domain: this OData feed does not "
                                  "exist",
                                  kind == "cases" ? "case" : "form", path->name));
  // The URLs the documents name: this server's, under the route the client used.
  const std::string* host = r.Header("host");
  std::string base = fmt::format("{}://{}{}", r.tls ? "https" : "http", host ? *host : "",
                                 r.path.substr(0, r.path.size() - rest.size()));
  base += path->name + "/";
  if (path->table_named) base += std::to_string(path->table) + "/";
  const std::string metadata = base + "$metadata";

  if (path->doc == FeedPath::Doc::kService) {
    if (path->table != 0) {  // a repeat table must exist: the export's columns tell
      auto page = ReadPage(engine_, *def, path->table, 0, 0);
      if (!page.ok()) return Error(StatusFor(page.status()), page.status().message());
    }
    return ODataResponse(Json(
        200,
        json::object{{"@odata.context", metadata},
                     {"value", json::array{json::object{
                                   {"name", "feed"}, {"kind", "EntitySet"}, {"url", "feed"}}}}}));
  }
  int64_t offset = 0, limit = kDefaultLimit;
  for (const auto& [k, v] : r.query) {
    if (k != "limit" && k != "offset") continue;
    char* end = nullptr;
    long long n = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end || n < 0 || n > kMaxOffset)
      return Error(
          400, fmt::format("{} must be a whole number from 0 to {}, not \"{}\"", k, kMaxOffset, v));
    (k == "limit" ? limit : offset) = n;
  }
  if (limit == 0 || limit > kMaxLimit) limit = kMaxLimit;  // tastypie's Paginator
  const bool meta_only = path->doc == FeedPath::Doc::kMetadata;
  auto page = ReadPage(engine_, *def, path->table, offset, meta_only ? 0 : limit);
  if (!page.ok()) return Error(StatusFor(page.status()), page.status().message());
  const auto& headers = page->tables[path->table].headers;
  // Cleaned names may clash ("a.b" and "a b"): a later one gets " (2)", " (3)", ...
  std::vector<std::string> names;
  std::set<std::string> taken;
  for (const auto& h : headers) {
    std::string n = ODataName(h, path->table == 0);
    for (int k = 2; taken.count(n); ++k)
      n = fmt::format("{} ({})", ODataName(h, path->table == 0), k);
    taken.insert(n);
    names.push_back(std::move(n));
  }
  if (meta_only) {
    const std::string key = path->table != 0                             ? "number"
                            : def->kind == ExportDefinition::Kind::kCase ? "caseid"
                                                                         : "formid";
    std::string x =
        "<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\" ?>\n"
        "<edmx:Edmx xmlns:edmx=\"http://docs.oasis-open.org/odata/ns/edmx\" Version=\"4.0\">\n"
        "  <edmx:DataServices>\n"
        "    <Schema xmlns=\"http://docs.oasis-open.org/odata/ns/edm\" Namespace=\"CommCare\">\n"
        "      <EntityType Name=\"feed\">\n";
    if (std::find(names.begin(), names.end(), key) != names.end())
      x += fmt::format("        <Key><PropertyRef Name=\"{}\" /></Key>\n", key);
    for (size_t i = 0; i < names.size(); ++i)
      x += fmt::format("        <Property Name=\"{}\" Type=\"{}\" />\n", util::XmlEscape(names[i]),
                       ODataType(*def, headers[i]));
    x += "      </EntityType>\n"
         "      <EntityContainer Name=\"Container\">\n"
         "        <EntitySet Name=\"feed\" EntityType=\"CommCare.feed\" />\n"
         "      </EntityContainer>\n"
         "    </Schema>\n"
         "  </edmx:DataServices>\n"
         "</edmx:Edmx>\n";
    Response out;
    out.content_type = "application/xml";
    out.body = std::move(x);
    return ODataResponse(std::move(out));
  }
  json::array value;
  for (const auto& row : page->rows) {
    json::object o;
    for (size_t i = 0; i < names.size() && i < row.size(); ++i) o[names[i]] = row[i];
    value.push_back(std::move(o));
  }
  json::object body{{"@odata.context", metadata + "#feed"}};
  if (page->more) {
    std::string next = base + "feed?";
    for (const auto& [k, v] : r.query)
      if (k != "limit" && k != "offset") next += UrlEncode(k) + "=" + UrlEncode(v) + "&";
    body["@odata.nextLink"] = next + fmt::format("limit={}&offset={}", limit, offset + limit);
  }
  body["value"] = std::move(value);
  Response out = SortedJson(200, std::move(body));  // HQ's serializer: sort_keys=True
  out.content_type = "application/json; charset=utf-8";
  return ODataResponse(std::move(out));
}

}  // namespace commcare::server
