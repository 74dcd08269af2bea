// Running a case update rule: a scan of the rule's case type, the criteria and effect per case
// (integrations/rules/rule.h), then one system form per changed case through Engine::Submit, as
// HQ does (xmlns http://commcarehq.org/hq_case_update_rule, user "system"). A form's id and its
// bytes are derived from (rule, case, the case's and its parent's last server change), so a
// rerun after a crash between submit and the task's outcome resubmits the same bytes and the
// engine records a duplicate, not a second change.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <boost/json.hpp>
#include <cctype>
#include <map>
#include <mutex>
#include <thread>

#include "commcare/engine.h"
#include "commcare/log.h"
#include "commcare/rules.h"
#include "integrations/rules/rule.h"
#include "util/hash.h"
#include "util/time.h"
#include "util/xml.h"

namespace commcare {

namespace json = boost::json;

namespace {

constexpr size_t kSubmitThreads = 4;

// A matched case with the effect to apply.
struct Planned {
  rules::Effect effect;
  std::string form_id;
  int64_t at = 0;  // the form's times: 1 ms after the latest server change it depends on
};

std::string CaseBlockXml(const std::string& case_id, const std::string& when,
                         const std::map<std::string, std::string>& update, bool close) {
  std::string x = fmt::format(
      R"(<case xmlns="http://commcarehq.org/case/transaction/v2" case_id="{}" date_modified="{}" user_id="system">)",
      util::XmlEscape(case_id), when);
  if (!update.empty()) {
    x += "<update>";
    for (const auto& [k, v] : update) x += fmt::format("<{0}>{1}</{0}>", k, util::XmlEscape(v));
    x += "</update>";
  }
  if (close) x += "<close/>";
  return x + "</case>";
}

std::string FormXml(const rules::Rule& r, const Planned& p) {
  const std::string when = util::FormatIsoTime(p.at);
  std::string blocks = CaseBlockXml(p.effect.case_id, when, p.effect.update, p.effect.close);
  if (!p.effect.parent_update.empty())
    blocks += CaseBlockXml(p.effect.parent_id, when, p.effect.parent_update, false);
  return fmt::format(
      R"(<?xml version="1.0"?><data xmlns="{0}" name="{1}"><meta xmlns="http://openrosa.org/jr/xforms"><deviceID>hq_case_update_rule</deviceID><timeStart>{2}</timeStart><timeEnd>{2}</timeEnd><username>system</username><userID>system</userID><instanceID>{3}</instanceID></meta>{4}</data>)",
      kRuleFormXmlns, util::XmlEscape(r.name), when, p.form_id, blocks);
}

// A property name must be an XML element name to go into <update>.
bool XmlName(std::string_view n) {
  if (n.empty() || !(std::isalpha(static_cast<unsigned char>(n[0])) || n[0] == '_')) return false;
  for (char ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-' && ch != '.')
      return false;
  return true;
}

Planned Plan(const rules::Rule& r, const CaseRecord& c, const CaseRecord* parent) {
  Planned p;
  p.effect = rules::PlanEffect(r, c, parent);
  const int64_t parent_at = parent ? parent->server_modified_on : 0;
  p.at = std::max(c.server_modified_on, parent_at) + 1000;
  p.form_id = util::Md5Hex(fmt::format("{}\n{}\n{}\n{}\n{}", r.domain, r.name, c.case_id,
                                       c.server_modified_on, parent_at));
  return p;
}

// Submits one planned form; false when the engine refused it (logged once).
bool Submit(Engine* engine, const rules::Rule& r, const Planned& p) {
  for (const auto* m : {&p.effect.update, &p.effect.parent_update})
    for (const auto& [k, v] : *m)
      if (!XmlName(k)) {
        Log(LogLevel::kWarning,
            fmt::format("rule {}: property name \"{}\" cannot be written to case {}", r.name, k,
                        p.effect.case_id),
            {{"component", "rules"},
             {"domain", r.domain},
             {"rule", r.name},
             {"next", "the case is skipped until the rule is fixed"}});
        return false;
      }
  SubmitRequest s;
  s.domain = r.domain;
  s.user_id = "system";
  s.body = FormXml(r, p);
  s.content_type = "text/xml";
  s.openrosa_version = "3.0";
  SubmitResponse resp = engine->Submit(s);
  if (resp.http_status == 201 &&
      (!resp.state || *resp.state == FormState::kNormal || *resp.state == FormState::kDuplicate))
    return true;
  Log(LogLevel::kWarning,
      fmt::format("rule {}: the form for case {} was refused ({}): {}", r.name, p.effect.case_id,
                  resp.http_status, resp.message),
      {{"component", "rules"},
       {"domain", r.domain},
       {"rule", r.name},
       {"case_id", p.effect.case_id},
       {"next", "the case is tried again at the rule's next run"}});
  return false;
}

// The parent of a case (index "parent"), when the rule needs it and it exists.
std::optional<CaseRecord> ParentOf(Engine* engine, const rules::Rule& r, const CaseRecord& c) {
  if (!r.NeedsParent()) return std::nullopt;
  for (const auto& i : c.indices)
    if (i.identifier == "parent" && !i.referenced_id.empty()) {
      auto p = engine->GetCase(r.domain, i.referenced_id);
      if (p.ok() && !p->deleted) return std::move(*p);
    }
  return std::nullopt;
}

// One case a deduplicate rule compares: its id and the values of the listed properties.
struct Compared {
  std::string case_id;
  std::vector<std::string> values;
};

// The duplicate groups among the compared cases (each of two or more, ids sorted): ALL, the
// cases whose listed values are all equal; ANY, the cases linked by any one equal non-blank
// value, transitively.
std::vector<std::vector<std::string>> DuplicateGroups(const rules::Deduplicate& d,
                                                      const std::vector<Compared>& cases) {
  std::vector<size_t> up(cases.size());
  for (size_t i = 0; i < up.size(); ++i) up[i] = i;
  auto root = [&](size_t i) {
    while (up[i] != i) i = up[i] = up[up[i]];
    return i;
  };
  if (d.any) {
    std::map<std::pair<size_t, std::string_view>, size_t> first;
    for (size_t i = 0; i < cases.size(); ++i)
      for (size_t p = 0; p < cases[i].values.size(); ++p) {
        if (cases[i].values[p].empty()) continue;
        auto [it, fresh] = first.try_emplace({p, cases[i].values[p]}, i);
        if (!fresh) up[root(i)] = root(it->second);
      }
  } else {
    std::map<std::vector<std::string>, size_t> first;
    for (size_t i = 0; i < cases.size(); ++i) {
      auto [it, fresh] = first.try_emplace(cases[i].values, i);
      if (!fresh) up[root(i)] = root(it->second);
    }
  }
  std::map<size_t, std::vector<std::string>> by_root;
  for (size_t i = 0; i < cases.size(); ++i) by_root[root(i)].push_back(cases[i].case_id);
  std::vector<std::vector<std::string>> groups;
  for (auto& [r, ids] : by_root)
    if (ids.size() > 1) {
      std::sort(ids.begin(), ids.end());
      groups.push_back(std::move(ids));
    }
  return groups;
}

}  // namespace

std::string RuleRunSummary::ToJson(std::string_view domain, std::string_view rule) const {
  return json::serialize(json::object{{"rule", rule},
                                      {"domain", domain},
                                      {"dry_run", dry_run},
                                      {"scanned", scanned},
                                      {"matched", matched},
                                      {"changed", changed},
                                      {"unchanged", unchanged},
                                      {"failed", failed}});
}

Result<RuleRunSummary> RunRule(Engine* engine, std::string_view rule_json,
                               const RuleRunOptions& o) {
  if (!engine) return Status::InvalidArgument("no engine");
  CC_ASSIGN_OR_RETURN(rules::Rule r, rules::ParseRule(rule_json));
  if (!o.dry_run && engine->Options().read_only)
    return Status::FailedPrecondition("a rule run needs a writable engine (or dry_run)");
  if (r.NeedsLocations() && !o.locations)
    return Status::FailedPrecondition(fmt::format(
        "rule {} has a location criterion: the run needs the domain's locations and users "
        "(RuleRunOptions::locations; the CLI, server and task workers load them)",
        r.name));
  const int64_t now = o.now ? o.now : util::NowMicros();
  CC_ASSIGN_OR_RETURN(int64_t today, rules::LocalDay(now, r.time_zone));
  const RuleLocations* locations = o.locations ? &*o.locations : nullptr;
  RuleRunSummary sum;
  sum.dry_run = o.dry_run;
  std::vector<Planned> todo;
  std::atomic<bool> stopped{false};
  std::vector<Compared> compared;  // a deduplicate rule's cases, planned once all are seen
  auto visit = [&](const CaseRecord& c) {
    ++sum.scanned;
    if (o.progress && sum.scanned % 1000 == 0 && !o.progress(sum.scanned)) {
      stopped = true;
      return false;
    }
    std::optional<CaseRecord> parent = ParentOf(engine, r, c);
    if (!rules::Matches(r, c, parent ? &*parent : nullptr, now, today, locations, engine))
      return true;
    if (r.deduplicate) {
      if (auto values = rules::DedupValues(r, c))
        compared.push_back({c.case_id, std::move(*values)});
      return true;
    }
    ++sum.matched;
    Planned p = Plan(r, c, parent ? &*parent : nullptr);
    if (p.effect.Empty()) {
      ++sum.unchanged;
      return true;
    }
    todo.push_back(std::move(p));
    return true;
  };
  if (r.deduplicate) {
    // Every case of the type is compared, even for one changed case: its duplicates may be
    // anywhere among them.
    storage::CaseFilter f;
    f.domain = r.domain;
    f.type = r.case_type;
    if (!r.deduplicate->include_closed) f.closed = false;
    CC_RETURN_IF_ERROR(engine->ListCases(f, visit));
    for (auto& group : DuplicateGroups(*r.deduplicate, compared)) {
      if (stopped) break;
      if (!o.case_id.empty() && !std::binary_search(group.begin(), group.end(), o.case_id))
        continue;
      for (const auto& id : group) {
        auto c = engine->GetCase(r.domain, id);
        if (!c.ok() && !c.status().IsNotFound()) return c.status();
        if (!c.ok()) continue;  // deleted since the scan
        std::optional<CaseRecord> parent = ParentOf(engine, r, *c);
        ++sum.matched;
        Planned p = Plan(r, *c, parent ? &*parent : nullptr);
        for (const auto& other : group)
          if (other != id) p.effect.duplicates.push_back(other);
        if (p.effect.Empty()) {
          ++sum.unchanged;
          continue;
        }
        todo.push_back(std::move(p));
      }
    }
  } else if (!o.case_id.empty()) {
    auto c = engine->GetCase(r.domain, o.case_id);
    if (!c.ok() && !c.status().IsNotFound()) return c.status();
    if (c.ok()) visit(*c);
  } else {
    storage::CaseFilter f;
    f.domain = r.domain;
    f.type = r.case_type;
    if (r.case_status != rules::Rule::CaseStatus::kAny)
      f.closed = r.case_status == rules::Rule::CaseStatus::kClosed;
    CC_RETURN_IF_ERROR(engine->ListCases(f, visit));
  }
  // Forms go after the scan (its readers never wait on the writer), from a few threads so the
  // engine's group commit shares each flush among them.
  std::atomic<size_t> next{0};
  std::mutex mu;
  auto submit = [&] {
    for (size_t i; !stopped && (i = next++) < todo.size();) {
      const Planned& p = todo[i];
      const bool ok = o.dry_run || Submit(engine, r, p);
      std::lock_guard l(mu);
      if (!ok) {
        ++sum.failed;
        continue;
      }
      ++sum.changed;
      if (o.on_change && !o.on_change(p.effect.ToJson(o.dry_run ? "" : p.form_id))) stopped = true;
    }
  };
  std::vector<std::thread> threads;
  const size_t n = o.dry_run || todo.size() < 64 ? 0 : kSubmitThreads - 1;
  for (size_t t = 0; t < n; ++t) threads.emplace_back(submit);
  submit();
  for (auto& t : threads) t.join();
  return sum;
}

}  // namespace commcare
