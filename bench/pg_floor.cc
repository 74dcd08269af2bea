// submit_bench's PostgreSQL floor (bench/pg_floor.h).
#include "pg_floor.h"

#include <expat.h>
#include <fmt/format.h>
#include <libpq-fe.h>

#include <cstdio>
#include <cstdlib>

#include "bench_util.h"

namespace bench {
namespace {

void Exec(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const auto st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    fmt::print(stderr, "pg floor: {}: {}\n", sql.substr(0, 80), PQerrorMessage(c));
    std::exit(1);
  }
  PQclear(r);
}

}  // namespace

double RunPgFloor(const std::string& conninfo, long n, long ncases) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    fmt::print(stderr, "pg floor: {}\n", PQerrorMessage(c));
    std::exit(1);
  }
  // The PostgreSQL store's tables for these rows (src/storage/postgres/), durable commits.
  Exec(c,
       "SET client_min_messages=warning; DROP SCHEMA IF EXISTS bench_floor CASCADE; "
       "CREATE SCHEMA bench_floor; SET search_path=bench_floor; SET synchronous_commit=on;"
       "CREATE TABLE forms(id BIGSERIAL PRIMARY KEY, form_id TEXT NOT NULL UNIQUE, domain TEXT "
       "NOT NULL, state INT NOT NULL, doc TEXT NOT NULL);"
       "CREATE TABLE cases(id BIGSERIAL PRIMARY KEY, case_id TEXT NOT NULL UNIQUE, domain TEXT "
       "NOT NULL, type TEXT, owner_id TEXT, closed BOOLEAN, deleted BOOLEAN, rev BIGINT NOT "
       "NULL, doc TEXT NOT NULL);"
       "CREATE INDEX cases_owner ON cases(domain, owner_id);"
       "CREATE TABLE case_transactions(seq BIGSERIAL PRIMARY KEY, case_id TEXT NOT NULL, "
       "form_id TEXT NOT NULL, doc TEXT NOT NULL);"
       "CREATE INDEX case_transactions_case ON case_transactions(case_id);"
       "CREATE TABLE outbox(seq BIGSERIAL PRIMARY KEY, doc_id TEXT NOT NULL, meta TEXT NOT "
       "NULL);");
  // Document sizes as the engine writes them for these forms (as the SQLite floor's).
  const std::string form_doc(1100, 'f'), case_doc(1900, 'c'), tx_doc(230, 't'), meta(260, 'm');
  std::string forms, cases, txs, outbox;
  auto t0 = Clock::now();
  for (long i = 0; i < n; ++i) {
    std::string xml = MakeForm(i, ncases);
    XML_Parser p = XML_ParserCreateNS(nullptr, '\x01');
    XML_Parse(p, xml.data(), static_cast<int>(xml.size()), XML_TRUE);
    XML_ParserFree(p);
    const std::string fid = fmt::format("bench-form-{}", i);
    const std::string cid = fmt::format("bench-case-{}", i % ncases);
    const char* sep = forms.empty() ? "" : ",";
    forms += fmt::format("{}('{}','bench',1,'{}')", sep, fid, form_doc);
    cases +=
        fmt::format("{}('{}','bench','patient','u',false,false,{},'{}')", sep, cid, i, case_doc);
    txs += fmt::format("{}('{}','{}','{}')", sep, cid, fid, tx_doc);
    outbox += fmt::format("{}('{}','{}'),('{}','{}')", sep, fid, meta, cid, meta);
    if (i % 1000 == 999 || i == n - 1) {
      Exec(c,
           "BEGIN; INSERT INTO forms(form_id,domain,state,doc) VALUES " + forms +
               " ON CONFLICT (form_id) DO UPDATE SET doc=EXCLUDED.doc;"
               " INSERT INTO cases(case_id,domain,type,owner_id,closed,deleted,rev,doc) VALUES " +
               cases +
               " ON CONFLICT (case_id) DO UPDATE SET rev=EXCLUDED.rev, doc=EXCLUDED.doc;"
               " INSERT INTO case_transactions(case_id,form_id,doc) VALUES " +
               txs + "; INSERT INTO outbox(doc_id,meta) VALUES " + outbox + "; COMMIT");
      forms.clear(), cases.clear(), txs.clear(), outbox.clear();
    }
  }
  const double s = Seconds(t0, Clock::now());
  Exec(c, "DROP SCHEMA bench_floor CASCADE");
  PQfinish(c);
  return s;
}

}  // namespace bench
