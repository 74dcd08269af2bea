// The forwarding pillow: follows form-sql and case-sql and makes one repeat record per
// (forwarder, document) that a forwarder wants, in the transaction that stores the pillow's
// checkpoint — no record lost, none doubled. After the commit it enqueues delivery.
#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <set>

#include "commcare/log.h"
#include "integrations/forwarding/forwarding.h"
#include "pillows/processor.h"
#include "util/time.h"

namespace commcare::forwarding {
namespace {

using pillows::Failures;
using util::SqlDb;

bool Contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// create: the case's opening block is its last change; close: it is closed; else update.
std::string CaseEvent(const CaseRecord& c) {
  if (c.closed) return "close";
  return c.opened_on == c.modified_on ? "create" : "update";
}

constexpr const char* kInsertRecord =
    "INSERT INTO fwd_records(forwarder, domain, doc_id, doc_type, event, order_key, once_key, "
    "state, open, attempts, tries, created_at, next_check, last_checked, change_ts) "
    "VALUES(?,?,?,?,?,?,?,1,1,0,0,?,?,0,?) ON CONFLICT(once_key) DO NOTHING";

class ForwardingProcessor final : public pillows::Processor {
 public:
  explicit ForwardingProcessor(TaskQueue* tasks) : tasks_(tasks) {}

  bool WritesSql() const override { return true; }
  Status Setup(SqlDb& db) override { return forwarding::Setup(db); }
  Status Reset(SqlDb& db) override { return Status::Ok(); }  // records are history: kept

  Status ProcessBatch(SqlDb& db, Engine& engine, const std::vector<const Change*>& changes,
                      Failures* failed) override {
    CC_ASSIGN_OR_RETURN(auto all, ActiveForwarders(db, /*include_paused=*/true));
    if (all.empty()) return Status::Ok();
    const int64_t now = util::NowMicros();
    for (size_t i = 0; i < changes.size(); ++i) {
      const Change& c = *changes[i];
      if (c.meta.is_deletion) continue;
      std::vector<const Forwarder*> fs;
      const bool form = c.topic == "form-sql";
      for (const auto& f : all)
        if (f.domain == c.meta.domain && f.kind == (form ? "form" : "case")) fs.push_back(&f);
      if (fs.empty()) continue;
      Status s = form ? Form(db, engine, c, fs, now) : Case(db, engine, c, fs, now);
      if (!s.ok()) failed->emplace_back(i, s.ToString());
    }
    return Status::Ok();
  }

  void Committed() override {
    std::set<std::pair<std::string, std::string>> todo;
    {
      std::lock_guard l(mu_);
      todo.swap(made_);
    }
    for (const auto& [domain, id] : todo)
      if (Status s = EnqueueDelivery(tasks_, domain, id); !s.ok())
        Log(LogLevel::kWarning,
            fmt::format("forwarding: enqueueing delivery for forwarder {} failed: {}", id,
                        s.ToString()),
            {{"component", "forwarding"},
             {"next", "the minute sweep enqueues it (records wait, pending)"}});
  }

 private:
  Status Form(SqlDb& db, Engine& engine, const Change& c, const std::vector<const Forwarder*>& fs,
              int64_t now) {
    auto form = engine.GetForm(c.meta.domain, c.meta.document_id);
    if (!form.ok()) return form.status().IsNotFound() ? Status::Ok() : form.status();
    if (form->state != FormState::kNormal || form->xmlns == kDeviceLogXmlns) return Status::Ok();
    for (const Forwarder* f : fs) {
      if (!f->xmlns.empty() && !Contains(f->xmlns, form->xmlns)) continue;
      // Once per (forwarder, form version): archiving and unarchiving send nothing again.
      const std::string once = fmt::format("{}:{}:{}", f->id, form->form_id, form->md5);
      CC_RETURN_IF_ERROR(Insert(db, *f, form->form_id, "form", "", form->form_id, once, now, c));
    }
    return Status::Ok();
  }

  Status Case(SqlDb& db, Engine& engine, const Change& c, const std::vector<const Forwarder*>& fs,
              int64_t now) {
    auto k = engine.GetCase(c.meta.domain, c.meta.document_id);
    if (!k.ok()) return k.status().IsNotFound() ? Status::Ok() : k.status();
    if (k->deleted) return Status::Ok();
    const std::string event = CaseEvent(*k);
    for (const Forwarder* f : fs) {
      if (!f->case_types.empty() && !Contains(f->case_types, k->type)) continue;
      if (!f->events.empty() && !Contains(f->events, event)) continue;
      CC_RETURN_IF_ERROR(Insert(db, *f, k->case_id, "case", event, k->case_id, "", now, c));
    }
    return Status::Ok();
  }

  Status Insert(SqlDb& db, const Forwarder& f, const std::string& doc, const char* type,
                const std::string& event, const std::string& order_key, const std::string& once,
                int64_t now, const Change& c) {
    util::SqlParam once_param =
        once.empty() ? util::SqlParam(nullptr) : util::SqlParam(std::string_view(once));
    CC_ASSIGN_OR_RETURN(auto r, db.Run("making a repeat record", kInsertRecord,
                                       {f.id, f.domain, doc, type, event, order_key, once_param,
                                        now, now, c.timestamp}));
    if (r.changed > 0) {
      std::lock_guard l(mu_);
      made_.emplace(f.domain, f.id);
    }
    return Status::Ok();
  }

  TaskQueue* tasks_;
  std::mutex mu_;
  std::set<std::pair<std::string, std::string>> made_;  // (domain, forwarder) since the commit
};

}  // namespace

Status AddForwardingPillow(PillowHost* host, TaskQueue* tasks) {
  PillowConfig cfg;
  cfg.name = kPillow;
  cfg.topics = {"case-sql", "form-sql"};
  return pillows::AddBuiltinPillow(host, cfg, std::make_unique<ForwardingProcessor>(tasks));
}

}  // namespace commcare::forwarding
