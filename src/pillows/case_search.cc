// The case-search pillow: a per-domain case index in SQLite. Cases are rows with typed columns
// for the Case API v2 fields; properties go to a side table keyed for exact and range lookups
// (text, and a numeric column for values that are numbers); name and property values go to a
// contentless FTS5 table for full text. Pages are ordered by (indexed_on, row id).
#include <fmt/format.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <unordered_set>

#include "pillows/processor.h"
#include "util/time.h"

namespace commcare::pillows {
namespace {

using util::Bind;
using util::Col;

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS cs_cases(
  id INTEGER PRIMARY KEY, case_id TEXT NOT NULL UNIQUE, domain TEXT NOT NULL,
  type TEXT NOT NULL, owner_id TEXT NOT NULL, closed INTEGER NOT NULL, name TEXT NOT NULL,
  external_id TEXT NOT NULL, date_opened TEXT NOT NULL, last_modified TEXT NOT NULL,
  server_last_modified TEXT NOT NULL, date_closed TEXT NOT NULL, indexed_on INTEGER NOT NULL,
  props TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS cs_cases_page ON cs_cases(domain, indexed_on, id);
CREATE INDEX IF NOT EXISTS cs_cases_type ON cs_cases(domain, type, indexed_on, id);
CREATE INDEX IF NOT EXISTS cs_cases_owner ON cs_cases(domain, owner_id);
CREATE TABLE IF NOT EXISTS cs_props(
  domain TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, num REAL,
  case_rowid INTEGER NOT NULL, PRIMARY KEY(domain, key, value, case_rowid)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cs_props_num ON cs_props(domain, key, num) WHERE num IS NOT NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS cs_fts USING fts5(name, body, content='');
)";

// Properties as stored in cs_cases.props: key US value RS ... (XML text cannot hold either).
std::string EncodeProps(const std::map<std::string, std::string>& props) {
  std::string out;
  for (const auto& [k, v] : props) {
    out += k;
    out += '\x1f';
    out += v;
    out += '\x1e';
  }
  return out;
}
template <typename F>
void ForEachProp(std::string_view enc, F fn) {
  while (!enc.empty()) {
    size_t us = enc.find('\x1f'), rs = enc.find('\x1e');
    if (us == std::string_view::npos || rs == std::string_view::npos || us > rs) return;
    fn(enc.substr(0, us), enc.substr(us + 1, rs - us - 1));
    enc.remove_prefix(rs + 1);
  }
}
std::string FtsBody(std::string_view enc) {
  std::string body;
  ForEachProp(enc, [&](std::string_view, std::string_view v) {
    if (!body.empty()) body += ' ';
    body += v;
  });
  return body;
}

// A property value as a number, if all of it is one.
bool AsNumber(std::string_view v, double* out) {
  if (v.empty() || v.size() > 64) return false;
  const char* b = v.data();
  const char* e = v.data() + v.size();
  if (*b == '+') ++b;
  auto [p, ec] = std::from_chars(b, e, *out);
  return ec == std::errc() && p == e && std::isfinite(*out);
}

// A change that makes the pillow look at a case again (Missing).
ChangeMeta Meta(std::string id, std::string domain, std::string type, bool deletion) {
  ChangeMeta m;
  m.topic = "case-sql";
  m.document_id = std::move(id);
  m.data_source_name = "case-sql";
  m.document_type = "CommCareCase";
  m.document_subtype = std::move(type);
  m.domain = std::move(domain);
  m.is_deletion = deletion;
  m.publish_timestamp = util::NowMicros();
  return m;
}

// The document the index serves: the case's Case API JSON with the time it was indexed.
std::string IndexedDoc(const CaseRecord& c, int64_t now) {
  std::string doc = CaseToJson(c);
  if (!doc.empty() && doc.back() == '}') {
    doc.pop_back();
    doc += fmt::format(",\"indexed_on\":\"{}\"}}", util::FormatIsoTime(now));
  }
  return doc;
}

Status StepDone(Conn& db, sqlite3_stmt* s, const char* what) {
  if (!s || sqlite3_step(s) != SQLITE_DONE) return db.Err(what);
  return Status::Ok();
}

class CaseSearch final : public Processor {
 public:
  bool WritesSql() const override { return true; }
  Status Setup(SqlDb& db) override { return db.sqlite()->Exec(kSchema); }
  Status Reset(SqlDb& db) override {
    return db.sqlite()->Exec(
        "DELETE FROM cs_cases; DELETE FROM cs_props; INSERT INTO cs_fts(cs_fts) "
        "VALUES('delete-all');");
  }

  Status ProcessBatch(SqlDb& sdb, Engine& engine, const std::vector<const Change*>& changes,
                      Failures* failed) override {
    Conn& db = *sdb.sqlite();
    auto fetched = FetchCases(engine, changes);
    for (size_t i = 0; i < changes.size(); ++i) {
      const ChangeMeta& m = changes[i]->meta;
      auto& c = fetched[i];
      if (!c.ok() && !c.status().IsNotFound()) {
        failed->emplace_back(i, c.status().ToString());
        continue;
      }
      if (!c.ok() || c->deleted) {
        CC_RETURN_IF_ERROR(Remove(db, m.document_id));
      } else {
        CC_RETURN_IF_ERROR(Upsert(db, *c));
      }
    }
    return Status::Ok();
  }

  Result<std::vector<ChangeMeta>> Missing(SqlDb& sdb, Engine& engine) override {
    Conn& db = *sdb.sqlite();
    std::vector<ChangeMeta> out;
    std::unordered_set<std::string> live;
    storage::CaseFilter all;
    sqlite3_stmt* q = db.Prep("SELECT server_last_modified FROM cs_cases WHERE case_id=?");
    Status inner;
    CC_RETURN_IF_ERROR(engine.ListCases(all, [&](const CaseRecord& c) {
      live.insert(c.case_id);
      sqlite3_reset(q);
      Bind(q, 1, c.case_id);
      bool fresh =
          sqlite3_step(q) == SQLITE_ROW && Col(q, 0) == util::FormatIsoTime(c.server_modified_on);
      if (!fresh) out.push_back(Meta(c.case_id, c.domain, c.type, false));
      return true;
    }));
    sqlite3_reset(q);
    sqlite3_stmt* s = db.Prep("SELECT case_id, domain, type FROM cs_cases");
    while (sqlite3_step(s) == SQLITE_ROW)
      if (!live.count(std::string(Col(s, 0))))
        out.push_back(
            Meta(std::string(Col(s, 0)), std::string(Col(s, 1)), std::string(Col(s, 2)), true));
    sqlite3_reset(s);
    return out;
  }

 private:
  // Removes the old row's property rows and text (the row itself stays for an update). With
  // next (an update, whose text body is next_body), property rows next still has are kept and
  // listed in *unchanged, and the text is removed only if next changes it (*text_changed).
  Status DropOld(Conn& db, int64_t rowid, std::string_view domain, std::string_view name,
                 std::string_view props, const CaseRecord* next = nullptr,
                 std::string_view next_body = {},
                 std::set<std::string, std::less<>>* unchanged = nullptr,
                 bool* text_changed = nullptr) {
    const bool same_domain = next && next->domain == domain;
    Status st;
    ForEachProp(props, [&](std::string_view k, std::string_view v) {
      if (!st.ok()) return;
      if (same_domain) {
        auto it = next->properties.find(std::string(k));
        if (it != next->properties.end() && it->second == v) {
          unchanged->emplace(k);
          return;
        }
      }
      sqlite3_stmt* d =
          db.Prep("DELETE FROM cs_props WHERE domain=? AND key=? AND value=? AND case_rowid=?");
      Bind(d, 1, domain);
      Bind(d, 2, k);
      Bind(d, 3, v);
      Bind(d, 4, rowid);
      st = StepDone(db, d, "deleting case properties");
    });
    CC_RETURN_IF_ERROR(st);
    const std::string body = FtsBody(props);
    if (next) {
      *text_changed = name != next->name || body != next_body;
      if (!*text_changed) return Status::Ok();
    }
    sqlite3_stmt* f =
        db.Prep("INSERT INTO cs_fts(cs_fts, rowid, name, body) VALUES('delete', ?, ?, ?)");
    Bind(f, 1, rowid);
    Bind(f, 2, name);
    Bind(f, 3, body);
    return StepDone(db, f, "deleting case text");
  }

  Status Remove(Conn& db, std::string_view case_id) {
    sqlite3_stmt* q = db.Prep("SELECT id, domain, name, props FROM cs_cases WHERE case_id=?");
    Bind(q, 1, case_id);
    if (sqlite3_step(q) != SQLITE_ROW) {
      sqlite3_reset(q);
      return Status::Ok();
    }
    int64_t id = sqlite3_column_int64(q, 0);
    std::string domain(Col(q, 1)), name(Col(q, 2)), props(Col(q, 3));
    sqlite3_reset(q);
    CC_RETURN_IF_ERROR(DropOld(db, id, domain, name, props));
    sqlite3_stmt* d = db.Prep("DELETE FROM cs_cases WHERE id=?");
    Bind(d, 1, id);
    return StepDone(db, d, "deleting an indexed case");
  }

  Status Upsert(Conn& db, const CaseRecord& c) {
    const int64_t now = util::NowMicros();
    const std::string doc = IndexedDoc(c, now);
    std::string props = EncodeProps(c.properties);
    const std::string body = FtsBody(props);
    sqlite3_stmt* q = db.Prep("SELECT id, domain, name, props FROM cs_cases WHERE case_id=?");
    Bind(q, 1, c.case_id);
    int64_t id = 0;
    // An update touches only what changed: property rows whose value changed, and the text
    // only if the name or a value did.
    std::set<std::string, std::less<>> unchanged;
    bool text_changed = true;
    if (sqlite3_step(q) == SQLITE_ROW) {
      id = sqlite3_column_int64(q, 0);
      std::string domain(Col(q, 1)), name(Col(q, 2)), old(Col(q, 3));
      sqlite3_reset(q);
      CC_RETURN_IF_ERROR(DropOld(db, id, domain, name, old, &c, body, &unchanged, &text_changed));
    }
    sqlite3_reset(q);
    sqlite3_stmt* w =
        id ? db.Prep(
                 "UPDATE cs_cases SET case_id=?1, domain=?2, type=?3, owner_id=?4, closed=?5, "
                 "name=?6, external_id=?7, date_opened=?8, last_modified=?9, "
                 "server_last_modified=?10, date_closed=?11, indexed_on=?12, props=?13, doc=?14 "
                 "WHERE id=?15")
           : db.Prep(
                 "INSERT INTO cs_cases(case_id, domain, type, owner_id, closed, name, "
                 "external_id, date_opened, last_modified, server_last_modified, date_closed, "
                 "indexed_on, props, doc) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)");
    Bind(w, 1, c.case_id);
    Bind(w, 2, c.domain);
    Bind(w, 3, c.type);
    Bind(w, 4, c.owner_id);
    Bind(w, 5, static_cast<int64_t>(c.closed ? 1 : 0));
    Bind(w, 6, c.name);
    Bind(w, 7, c.external_id);
    Bind(w, 8, util::FormatIsoTime(c.opened_on));
    Bind(w, 9, util::FormatIsoTime(c.modified_on));
    Bind(w, 10, util::FormatIsoTime(c.server_modified_on));
    Bind(w, 11, util::FormatIsoTime(c.closed_on));
    Bind(w, 12, now);
    Bind(w, 13, props);
    Bind(w, 14, doc);
    if (id) Bind(w, 15, id);
    CC_RETURN_IF_ERROR(StepDone(db, w, "indexing a case"));
    if (!id) id = sqlite3_last_insert_rowid(db.db());
    for (const auto& [k, v] : c.properties) {
      if (unchanged.count(k)) continue;
      sqlite3_stmt* p = db.Prep(
          "INSERT OR IGNORE INTO cs_props(domain, key, value, num, case_rowid) VALUES(?,?,?,?,?)");
      Bind(p, 1, c.domain);
      Bind(p, 2, k);
      Bind(p, 3, v);
      double num;
      if (AsNumber(v, &num))
        sqlite3_bind_double(p, 4, num);
      else
        sqlite3_bind_null(p, 4);
      Bind(p, 5, id);
      CC_RETURN_IF_ERROR(StepDone(db, p, "indexing case properties"));
    }
    if (!text_changed) return Status::Ok();
    sqlite3_stmt* f = db.Prep("INSERT INTO cs_fts(rowid, name, body) VALUES(?,?,?)");
    Bind(f, 1, id);
    Bind(f, 2, c.name);
    Bind(f, 3, body);
    return StepDone(db, f, "indexing case text");
  }
};

// The index on PostgreSQL: the same rows, properties as a jsonb object (equality through a GIN
// index, `@>`), name and values in a tsvector (GIN; the 'simple' configuration: lower-cased
// words, no stemming), and ranges checked per case with cs_num() (see docs/operations.md).
constexpr const char* kPostgresSchema = R"(
CREATE TABLE IF NOT EXISTS cs_cases(
  id BIGSERIAL PRIMARY KEY, case_id TEXT COLLATE "C" NOT NULL UNIQUE,
  domain TEXT COLLATE "C" NOT NULL, type TEXT COLLATE "C" NOT NULL,
  owner_id TEXT COLLATE "C" NOT NULL, closed INTEGER NOT NULL, name TEXT COLLATE "C" NOT NULL,
  external_id TEXT COLLATE "C" NOT NULL, date_opened TEXT COLLATE "C" NOT NULL,
  last_modified TEXT COLLATE "C" NOT NULL, server_last_modified TEXT COLLATE "C" NOT NULL,
  date_closed TEXT COLLATE "C" NOT NULL, indexed_on BIGINT NOT NULL, props JSONB NOT NULL,
  fts TSVECTOR NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS cs_cases_page ON cs_cases(domain, indexed_on, id);
CREATE INDEX IF NOT EXISTS cs_cases_type ON cs_cases(domain, type, indexed_on, id);
CREATE INDEX IF NOT EXISTS cs_cases_owner ON cs_cases(domain, owner_id);
CREATE INDEX IF NOT EXISTS cs_cases_props ON cs_cases USING GIN (props jsonb_path_ops);
CREATE INDEX IF NOT EXISTS cs_cases_fts ON cs_cases USING GIN (fts);
CREATE OR REPLACE FUNCTION cs_num(v TEXT) RETURNS DOUBLE PRECISION LANGUAGE SQL IMMUTABLE AS $$
  SELECT CASE WHEN length(v) <= 64 AND
                   v ~ '^[+]?-?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]{1,4})?$' THEN
    (SELECT CASE WHEN abs(n) < 1e308 AND (n = 0 OR abs(n) > 2.3e-308)
                 THEN CAST(n AS DOUBLE PRECISION) END
     FROM (SELECT CAST(ltrim(v, '+') AS NUMERIC) AS n) x)
  END
$$;
)";

class PostgresCaseSearch final : public Processor {
 public:
  bool WritesSql() const override { return true; }
  Status Setup(SqlDb& db) override {
    return db.Exec("creating the case search index", kPostgresSchema);
  }
  Status Reset(SqlDb& db) override {
    return db.Exec("emptying the case search index", "DELETE FROM cs_cases");
  }

  // The batch in two statements: its deletions, then its cases as one jsonb array of rows
  // (a statement per case: 1,479 case changes/s; batched: 1,848, bench/pillow_bench --pillows).
  Status ProcessBatch(SqlDb& db, Engine& engine, const std::vector<const Change*>& changes,
                      Failures* failed) override {
    namespace json = boost::json;
    auto fetched = FetchCases(engine, changes);
    json::array rows, gone;
    const int64_t now = util::NowMicros();
    for (size_t i = 0; i < changes.size(); ++i) {
      auto& c = fetched[i];
      if (!c.ok() && !c.status().IsNotFound()) {
        failed->emplace_back(i, c.status().ToString());
        continue;
      }
      if (!c.ok() || c->deleted) {
        gone.emplace_back(changes[i]->meta.document_id);
        continue;
      }
      std::string text = c->name;
      json::object props;
      for (const auto& [k, v] : c->properties) {
        text += ' ' + v;
        props[k] = v;
      }
      rows.emplace_back(
          json::object{{"case_id", c->case_id},
                       {"domain", c->domain},
                       {"type", c->type},
                       {"owner_id", c->owner_id},
                       {"closed", c->closed ? 1 : 0},
                       {"name", c->name},
                       {"external_id", c->external_id},
                       {"date_opened", util::FormatIsoTime(c->opened_on)},
                       {"last_modified", util::FormatIsoTime(c->modified_on)},
                       {"server_last_modified", util::FormatIsoTime(c->server_modified_on)},
                       {"date_closed", util::FormatIsoTime(c->closed_on)},
                       {"indexed_on", now},
                       {"props", std::move(props)},
                       {"text", std::move(text)},
                       {"doc", IndexedDoc(*c, now)}});
    }
    if (!gone.empty())
      CC_RETURN_IF_ERROR(db.Run("deleting indexed cases",
                                "DELETE FROM cs_cases WHERE case_id IN (SELECT "
                                "jsonb_array_elements_text(CAST(? AS JSONB)))",
                                {json::serialize(gone)})
                             .status());
    if (rows.empty()) return Status::Ok();
    return db
        .Run("indexing cases",
             "INSERT INTO cs_cases(case_id, domain, type, owner_id, closed, name, external_id, "
             "date_opened, last_modified, server_last_modified, date_closed, indexed_on, props, "
             "fts, doc) SELECT case_id, domain, type, owner_id, closed, name, external_id, "
             "date_opened, last_modified, server_last_modified, date_closed, indexed_on, props, "
             "to_tsvector('simple', text), doc FROM jsonb_to_recordset(CAST(? AS JSONB)) AS "
             "x(case_id TEXT, domain TEXT, type TEXT, owner_id TEXT, closed INTEGER, name TEXT, "
             "external_id TEXT, date_opened TEXT, last_modified TEXT, server_last_modified TEXT, "
             "date_closed TEXT, indexed_on BIGINT, props JSONB, text TEXT, doc TEXT) "
             "ON CONFLICT(case_id) DO UPDATE SET domain=excluded.domain, type=excluded.type, "
             "owner_id=excluded.owner_id, closed=excluded.closed, name=excluded.name, "
             "external_id=excluded.external_id, date_opened=excluded.date_opened, "
             "last_modified=excluded.last_modified, "
             "server_last_modified=excluded.server_last_modified, "
             "date_closed=excluded.date_closed, indexed_on=excluded.indexed_on, "
             "props=excluded.props, fts=excluded.fts, doc=excluded.doc",
             {json::serialize(rows)})
        .status();
  }

  Result<std::vector<ChangeMeta>> Missing(SqlDb& db, Engine& engine) override {
    std::vector<ChangeMeta> out;
    std::unordered_set<std::string> live;
    Status inner;
    CC_RETURN_IF_ERROR(engine.ListCases(storage::CaseFilter{}, [&](const CaseRecord& c) {
      live.insert(c.case_id);
      auto q = db.Run("reading an indexed case",
                      "SELECT server_last_modified FROM cs_cases WHERE case_id=?", {c.case_id});
      if (!q.ok()) {
        inner = q.status();
        return false;
      }
      if (q->empty() || q->Str(0, 0) != util::FormatIsoTime(c.server_modified_on))
        out.push_back(Meta(c.case_id, c.domain, c.type, false));
      return true;
    }));
    CC_RETURN_IF_ERROR(inner);
    CC_ASSIGN_OR_RETURN(
        auto all, db.Run("listing indexed cases", "SELECT case_id, domain, type FROM cs_cases"));
    for (size_t r = 0; r < all.size(); ++r)
      if (!live.count(std::string(all.Str(r, 0))))
        out.push_back(Meta(std::string(all.Str(r, 0)), std::string(all.Str(r, 1)),
                           std::string(all.Str(r, 2)), true));
    return out;
  }
};

// The terms of a search text, each a phrase of one or more words. Words are as FTS5's
// unicode61 tokenizer splits them: runs of letters, digits and non-ASCII characters; anything
// else separates them and is never query syntax. The documented operators: "double quotes"
// make a phrase (an unclosed quote runs to the end), and a term ending in '*' matches its last
// word as a prefix (the star is kept as the term's last character).
using SearchTerm = std::vector<std::string>;
std::vector<SearchTerm> SearchTerms(std::string_view text) {
  std::vector<SearchTerm> terms;
  SearchTerm term;
  std::string word;
  bool quoted = false;
  auto end_word = [&] {
    if (!word.empty()) term.push_back(std::move(word));
    word.clear();
  };
  auto end_term = [&] {
    end_word();
    if (!term.empty()) terms.push_back(std::move(term));
    term.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80 || std::isalnum(c)) {
      word.push_back(static_cast<char>(c));
    } else if (c == '*' && !word.empty() &&
               (i + 1 == text.size() || text[i + 1] == '"' ||
                std::isspace(static_cast<unsigned char>(text[i + 1])))) {
      word.push_back('*');
      end_word();
      if (!quoted) end_term();
    } else if (c == '"') {
      end_term();
      quoted = !quoted;
    } else {
      end_word();
      if (!quoted) end_term();
    }
  }
  end_term();
  // A star inside a phrase applies to the phrase's last word only.
  for (auto& t : terms)
    for (size_t i = 0; i + 1 < t.size(); ++i)
      if (t[i].back() == '*') t[i].pop_back();
  return terms;
}

// The terms as an FTS5 query: each a quoted string (never an operator), all required.
std::string FtsQuery(const std::vector<SearchTerm>& terms) {
  std::string out;
  for (const auto& t : terms) {
    std::string phrase;
    for (const auto& w : t) phrase += (phrase.empty() ? "" : " ") + w;
    const bool prefix = phrase.back() == '*';
    if (prefix) phrase.pop_back();
    out += (out.empty() ? "\"" : " \"") + phrase + (prefix ? "\"*" : "\"");
  }
  return out;
}

// The terms as a PostgreSQL tsquery for to_tsquery('simple', ...): quoted lexemes, a phrase's
// words joined by <->, the terms by &.
std::string TsQuery(const std::vector<SearchTerm>& terms) {
  std::string out;
  for (const auto& t : terms) {
    std::string phrase;
    for (const auto& w : t) {
      const bool prefix = w.back() == '*';
      phrase += (phrase.empty() ? "'" : " <-> '") + w.substr(0, w.size() - (prefix ? 1 : 0)) +
                (prefix ? "':*" : "'");
    }
    out += (out.empty() ? "(" : " & (") + phrase + ")";
  }
  return out;
}

// Case API v2 date fields a range filter may name directly (else it names a property).
const char* DateColumn(std::string_view field) {
  if (field == "date_opened") return "c.date_opened";
  if (field == "last_modified") return "c.last_modified";
  if (field == "server_last_modified") return "c.server_last_modified";
  if (field == "date_closed") return "c.date_closed";
  return nullptr;
}
const char* SqlOp(std::string_view op) {
  if (op == "gt") return ">";
  if (op == "gte") return ">=";
  if (op == "lt") return "<";
  if (op == "lte") return "<=";
  return nullptr;
}

}  // namespace

std::unique_ptr<Processor> NewCaseSearchProcessor(bool postgres) {
  if (postgres) return std::make_unique<PostgresCaseSearch>();
  return std::make_unique<CaseSearch>();
}

namespace {

// The conditions on a case's own fields, their values given to text() in order (both backends).
template <typename F>
void FieldConditions(const CaseSearchQuery& q, std::string* sql, F&& text) {
  if (!q.case_type.empty()) *sql += " AND c.type=?", text(q.case_type);
  if (!q.owner_id.empty()) *sql += " AND c.owner_id=?", text(q.owner_id);
  if (!q.case_name.empty()) *sql += " AND c.name=?", text(q.case_name);
  if (!q.external_id.empty()) *sql += " AND c.external_id=?", text(q.external_id);
  if (q.closed) *sql += *q.closed ? " AND c.closed=1" : " AND c.closed=0";
}

// The any_of conditions (both backends: postgres picks the SQL of properties and indices),
// their values given to text() in order.
template <typename F>
Status AnyOfConditions(const CaseSearchQuery& q, bool postgres, std::string* sql, F&& text) {
  for (const auto& [field, values] : q.any_of) {
    if (values.empty()) return Status::InvalidArgument(fmt::format("{}: no value to match", field));
    std::string lhs, key;
    if (field == "case_type") {
      lhs = "c.type";
    } else if (field == "owner_id" || field == "external_id") {
      lhs = "c." + field;
    } else if (field == "case_name") {
      lhs = "c.name";
    } else if (field.starts_with("properties.") && field.size() > 11) {
      key = field.substr(11);
      lhs = postgres ? "COALESCE(c.props->>CAST(? AS TEXT), '')"
                     : "COALESCE(cs_prop(c.props, ?), '')";
    } else if (field.starts_with("indices.") && field.size() > 8) {
      key = field.substr(8);
      if (key.find_first_of("\"\\") != std::string::npos)
        return Status::InvalidArgument(
            fmt::format("'{}' is not a valid parameter: not an index identifier", field));
      if (postgres) {
        lhs = "(CAST(c.doc AS JSONB)->'indices'->CAST(? AS TEXT)->>'case_id')";
      } else {
        lhs = "json_extract(c.doc, ?)";
        key = "$.indices.\"" + key + "\".case_id";
      }
    } else {
      return Status::InvalidArgument(fmt::format("'{}' is not a valid parameter", field));
    }
    if (!key.empty()) text(key);
    *sql += " AND " + lhs + " IN (";
    for (size_t i = 0; i < values.size(); ++i) {
      *sql += i ? ",?" : "?";
      text(values[i]);
    }
    *sql += ")";
  }
  return Status::Ok();
}

// A SQL string literal of text (keys go into the statement as literals, so that an expression
// index such as ((cs_num(props->>'age'))) matches them).
std::string Literal(std::string_view text) {
  std::string out = "'";
  for (char ch : text) {
    out += ch;
    if (ch == '\'') out += '\'';
  }
  return out + "'";
}

// The search on PostgreSQL: one statement; its planner picks the index.
Result<CaseSearchPage> SearchPostgres(StoreLease& db, const CaseSearchQuery& q, int64_t cur_indexed,
                                      int64_t cur_id) {
  std::string sql = "SELECT c.indexed_on, c.id, c.doc FROM cs_cases c WHERE c.domain=?";
  std::deque<std::string> hold;  // parameter text (SqlParam holds views: they must stay put)
  std::vector<util::SqlParam> params;
  auto text = [&](std::string v) { params.emplace_back(hold.emplace_back(std::move(v))); };
  text(q.domain);
  FieldConditions(q, &sql, text);
  CC_RETURN_IF_ERROR(AnyOfConditions(q, true, &sql, text));
  for (const auto& [k, v] : q.equals) {
    sql += " AND c.props @> CAST(? AS JSONB)";
    text(boost::json::serialize(boost::json::object{{k, v}}));
  }
  for (const auto& r : q.ranges) {
    const char* op = SqlOp(r.op);
    if (!op)
      return Status::InvalidArgument(
          fmt::format("range operator '{}' must be gt, gte, lt or lte", r.op));
    if (const char* col = DateColumn(r.property)) {
      sql += fmt::format(" AND {} <> '' AND {} {} ?", col, col, op);
      text(r.value);
      continue;
    }
    double num;
    if (AsNumber(r.value, &num)) {
      sql += fmt::format(" AND cs_num(c.props->>{}) {} ?", Literal(r.property), op);
      params.emplace_back(num);
    } else {
      sql += fmt::format(" AND (c.props->>{}) COLLATE \"C\" {} ?", Literal(r.property), op);
      text(r.value);
    }
  }
  if (auto terms = SearchTerms(q.text); !terms.empty()) {
    sql += " AND c.fts @@ to_tsquery('simple', ?)";
    text(TsQuery(terms));
  }
  CaseSearchPage page;
  if (q.count) {
    auto n = db.Query("counting cases", "SELECT COUNT(*)" + sql.substr(sql.find(" FROM ")), params);
    if (!n.ok()) return n.status();
    page.total = n->Int(0, 0);
  }
  if (!q.cursor.empty()) {
    sql += " AND (c.indexed_on, c.id) > (?, ?)";
    params.emplace_back(cur_indexed);
    params.emplace_back(cur_id);
  }
  sql += " ORDER BY c.indexed_on, c.id LIMIT ?";
  params.emplace_back(static_cast<int64_t>(q.limit) + 1);
  auto rows = db.Query("searching cases", sql, params);
  if (!rows.ok()) {
    if (rows.status().code() == StatusCode::kUnavailable || rows.status().IsNotFound())
      return rows.status();
    return Status::InvalidArgument(fmt::format("case search failed: {}", rows.status().message()));
  }
  for (size_t r = 0; r < rows->size(); ++r) {
    if (r == q.limit) {
      page.next_cursor = fmt::format("{}:{}", rows->Int(r - 1, 0), rows->Int(r - 1, 1));
      break;
    }
    page.cases.emplace_back(rows->Str(r, 2));
  }
  return page;
}

}  // namespace
}  // namespace commcare::pillows

namespace commcare {

Result<CaseSearchPage> SearchCases(const std::string& pillows_dir, const CaseSearchQuery& q) {
  using util::Bind;
  if (q.domain.empty()) return Status::InvalidArgument("a case search needs a domain");
  if (q.limit < 1 || q.limit > 5000)
    return Status::InvalidArgument(fmt::format("limit must be 1..5000 (got {})", q.limit));
  int64_t cur_indexed = 0, cur_id = 0;
  if (!q.cursor.empty()) {
    // Exactly "<indexed_on>:<id>": both whole numbers, nothing after.
    const char* begin = q.cursor.data();
    const char* end = begin + q.cursor.size();
    auto colon = q.cursor.find(':');
    auto a = std::from_chars(begin, begin + (colon == std::string::npos ? 0 : colon), cur_indexed);
    auto b = std::from_chars(begin + colon + 1, end, cur_id);
    if (colon == std::string::npos || a.ec != std::errc() || a.ptr != begin + colon ||
        b.ec != std::errc() || b.ptr != end)
      return Status::InvalidArgument(fmt::format("'{}' is not a case search cursor", q.cursor));
  }
  for (const auto& r : q.ranges) {
    int64_t t;
    if (pillows::DateColumn(r.property) && !util::ParseIsoTime(r.value, &t))
      return Status::InvalidArgument(fmt::format(
          "{}.{}: '{}' is not a date (YYYY-MM-DD or an ISO-8601 time)", r.property, r.op, r.value));
  }
  if (util::SqlDb::IsPostgres(pillows_dir)) {
    CC_ASSIGN_OR_RETURN(auto lease, pillows::OpenStore(pillows_dir, "case-search", {}, "cs_cases"));
    return pillows::SearchPostgres(lease, q, cur_indexed, cur_id);
  }
  auto register_functions = [](util::Conn& db) {
    // cs_prop(props, key): a property's value from the row's encoded properties; cs_num: the
    // same as a number (NULL if it is not one), exactly as the property table indexes them.
    for (bool numeric : {false, true})
      sqlite3_create_function_v2(
          db.db(), numeric ? "cs_num" : "cs_prop", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
          reinterpret_cast<void*>(numeric ? 1 : 0),
          [](sqlite3_context* ctx, int, sqlite3_value** argv) {
            const bool num = sqlite3_user_data(ctx) != nullptr;
            const auto* p = reinterpret_cast<const char*>(sqlite3_value_text(argv[0]));
            const auto* k = reinterpret_cast<const char*>(sqlite3_value_text(argv[1]));
            if (!p || !k) return sqlite3_result_null(ctx);
            std::string_view props(p, static_cast<size_t>(sqlite3_value_bytes(argv[0]))), key(k);
            bool done = false;
            pillows::ForEachProp(props, [&](std::string_view pk, std::string_view pv) {
              if (done || pk != key) return;
              done = true;
              double d;
              if (!num)
                sqlite3_result_text(ctx, pv.data(), static_cast<int>(pv.size()), SQLITE_TRANSIENT);
              else if (pillows::AsNumber(pv, &d))
                sqlite3_result_double(ctx, d);
              else
                sqlite3_result_null(ctx);
            });
            if (!done) sqlite3_result_null(ctx);
          },
          nullptr, nullptr, nullptr);
    return Status::Ok();
  };
  CC_ASSIGN_OR_RETURN(
      auto lease, pillows::OpenStore(pillows_dir, "case-search", register_functions, "cs_cases"));
  util::Conn& db = **lease.sqlite;
  // A property condition either lists its matches from the property index (selective: few
  // matches) or is checked per case while walking cases in page order (unselective: the first
  // page's worth of matches comes early). Counting up to scan_above matches picks the plan.
  size_t scan_above = q.scan_above;
  if (scan_above == CaseSearchQuery::kAutoScan) {
    // The largest row id stands in for the number of cases (an O(log n) estimate).
    sqlite3_stmt* n = db.Prep("SELECT COALESCE(MAX(id), 0) FROM cs_cases");
    const double cases = sqlite3_step(n) == SQLITE_ROW ? sqlite3_column_double(n, 0) : 0;
    sqlite3_reset(n);
    scan_above = std::max<size_t>(200, static_cast<size_t>(std::sqrt(23 * cases)));
  }
  // Past this many matches, even building the list to probe costs more than reading each
  // case's properties on the way to the first page.
  const size_t check_above = scan_above * 9;
  auto plan = [&](const std::string& cond,
                  const std::function<void(sqlite3_stmt*, int)>& bind_value,
                  const std::string& key) -> Result<size_t> {
    if (scan_above == 0) return check_above;
    std::string count_sql = fmt::format(
        "SELECT COUNT(*) FROM (SELECT 1 FROM cs_props WHERE domain=? AND key=? AND {} ? LIMIT {})",
        cond, check_above);
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db.db(), count_sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
      return db.Err("planning a case search");
    Bind(s, 1, q.domain);
    Bind(s, 2, key);
    bind_value(s, 3);
    int64_t n = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_finalize(s);
    return static_cast<size_t>(n);
  };

  std::string sql = " WHERE c.domain=?";
  std::vector<std::function<void(sqlite3_stmt*, int)>> binds;
  auto text = [&](std::string v) {
    binds.push_back([v = std::move(v)](sqlite3_stmt* s, int i) { Bind(s, i, v); });
  };
  // The first selective condition drives the query (its few matches are fetched and sorted;
  // left to itself SQLite would rather walk the domain in page order and probe the list); the
  // others filter.
  std::string driver;
  std::vector<std::function<void(sqlite3_stmt*, int)>> driver_binds;
  auto selective = [&](const std::string& subquery, const std::vector<std::string>& texts,
                       const std::function<void(sqlite3_stmt*, int)>& last) {
    auto* to = driver.empty() ? &driver_binds : &binds;
    for (const auto& t : texts) to->push_back([t](sqlite3_stmt* s, int i) { Bind(s, i, t); });
    if (last) to->push_back(last);
    if (driver.empty())
      driver = subquery;
    else
      sql += " AND c.id IN (" + subquery + ")";
  };
  text(q.domain);
  pillows::FieldConditions(q, &sql, text);
  CC_RETURN_IF_ERROR(pillows::AnyOfConditions(q, false, &sql, text));
  for (const auto& [k, v] : q.equals) {
    CC_ASSIGN_OR_RETURN(size_t matches,
                        plan(
                            "value =", [v](sqlite3_stmt* s, int i) { Bind(s, i, v); }, k));
    if (matches >= check_above) {
      sql += " AND cs_prop(c.props, ?) = ?";
      text(k);
      text(v);
      continue;
    }
    if (matches >= scan_above) {
      // Walking the page-order index, each case is probed against the list of matches
      // without reading its row.
      sql +=
          " AND c.id IN (SELECT case_rowid FROM cs_props WHERE domain=? AND key=? AND "
          "value=?)";
      text(q.domain);
      text(k);
      text(v);
      continue;
    }
    selective("SELECT case_rowid FROM cs_props WHERE domain=? AND key=? AND value=?",
              {q.domain, k, v}, {});
  }
  for (const auto& r : q.ranges) {
    const char* op = pillows::SqlOp(r.op);
    if (!op)
      return Status::InvalidArgument(
          fmt::format("range operator '{}' must be gt, gte, lt or lte", r.op));
    if (const char* col = pillows::DateColumn(r.property)) {
      sql += fmt::format(" AND {} <> '' AND {} {} ?", col, col, op);
      text(r.value);
      continue;
    }
    double num;
    const bool numeric = pillows::AsNumber(r.value, &num);
    std::string value = r.value;
    auto bind_value = [numeric, num, value](sqlite3_stmt* s, int i) {
      if (numeric)
        sqlite3_bind_double(s, i, num);
      else
        Bind(s, i, value);
    };
    CC_ASSIGN_OR_RETURN(size_t matches, plan(fmt::format("{} {}", numeric ? "num" : "value", op),
                                             bind_value, r.property));
    if (matches >= scan_above) {
      sql += fmt::format(" AND {}(c.props, ?) {} ?", numeric ? "cs_num" : "cs_prop", op);
      text(r.property);
      binds.push_back(bind_value);
      continue;
    }
    if (numeric)
      selective(
          fmt::format("SELECT case_rowid FROM cs_props WHERE domain=? AND key=? AND num {} ?", op),
          {q.domain, r.property}, bind_value);
    else
      selective(fmt::format(
                    "SELECT case_rowid FROM cs_props WHERE domain=? AND key=? AND value {} ?", op),
                {q.domain, r.property, r.value}, {});
  }
  if (auto terms = pillows::SearchTerms(q.text); !terms.empty()) {
    sql += " AND c.id IN (SELECT rowid FROM cs_fts WHERE cs_fts MATCH ?)";
    text(pillows::FtsQuery(terms));
  }
  const std::string from = driver.empty()
                               ? std::string("cs_cases c")
                               : "(" + driver + ") p CROSS JOIN cs_cases c ON c.id = p.case_rowid";
  CaseSearchPage page;
  if (q.count) {  // every match, before the cursor's condition
    std::vector<std::function<void(sqlite3_stmt*, int)>> all = driver_binds;
    all.insert(all.end(), binds.begin(), binds.end());
    sqlite3_stmt* n = nullptr;
    if (sqlite3_prepare_v2(db.db(), ("SELECT COUNT(*) FROM " + from + sql).c_str(), -1, &n,
                           nullptr) != SQLITE_OK)
      return db.Err("counting cases");
    for (size_t i = 0; i < all.size(); ++i) all[i](n, static_cast<int>(i + 1));
    const int rc = sqlite3_step(n);
    if (rc == SQLITE_ROW) page.total = sqlite3_column_int64(n, 0);
    Status counted = rc == SQLITE_ROW ? Status::Ok()
                                      : Status::InvalidArgument(fmt::format(
                                            "case search failed: {}", sqlite3_errmsg(db.db())));
    sqlite3_finalize(n);
    CC_RETURN_IF_ERROR(counted);
  }
  if (!q.cursor.empty()) {
    sql += " AND (c.indexed_on > ? OR (c.indexed_on = ? AND c.id > ?))";
    for (int64_t v : {cur_indexed, cur_indexed, cur_id})
      binds.push_back([v](sqlite3_stmt* s, int i) { Bind(s, i, v); });
  }
  sql += " ORDER BY c.indexed_on, c.id LIMIT ?";
  const int64_t lim = static_cast<int64_t>(q.limit) + 1;
  binds.push_back([lim](sqlite3_stmt* s, int i) { Bind(s, i, lim); });

  // Ids first, documents after: sorting a driven plan's matches then moves no documents.
  sql = "SELECT c.indexed_on, c.id FROM " + from + sql;
  binds.insert(binds.begin(), driver_binds.begin(), driver_binds.end());
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db.db(), sql.c_str(), -1, &s, nullptr) != SQLITE_OK)
    return db.Err("preparing a case search");
  for (size_t i = 0; i < binds.size(); ++i) binds[i](s, static_cast<int>(i + 1));
  int rc;
  int64_t last_indexed = 0, last_id = 0;
  std::vector<int64_t> ids;
  while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
    if (ids.size() == q.limit) {
      page.next_cursor = fmt::format("{}:{}", last_indexed, last_id);
      break;
    }
    last_indexed = sqlite3_column_int64(s, 0);
    last_id = sqlite3_column_int64(s, 1);
    ids.push_back(last_id);
  }
  Status st =
      (rc == SQLITE_ROW || rc == SQLITE_DONE)
          ? Status::Ok()
          : Status::InvalidArgument(fmt::format("case search failed: {}", sqlite3_errmsg(db.db())));
  sqlite3_finalize(s);
  CC_RETURN_IF_ERROR(st);
  sqlite3_stmt* doc = db.Prep("SELECT doc FROM cs_cases WHERE id=?");
  for (int64_t id : ids) {
    Bind(doc, 1, id);
    if (sqlite3_step(doc) == SQLITE_ROW) page.cases.emplace_back(util::Col(doc, 0));
    sqlite3_reset(doc);
  }
  return page;
}

}  // namespace commcare
