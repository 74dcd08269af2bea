// Data forwarding, internals: the store's schema, the pillow that makes repeat records, the
// payloads, the HTTP sender and the delivery tasks.
#pragma once

#include <boost/json/fwd.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "commcare/engine.h"
#include "commcare/forwarding.h"
#include "commcare/tasks.h"
#include "util/sql_db.h"

namespace commcare {
class PillowHost;
}

namespace commcare::forwarding {

// The pillow's name; its database holds the forwarding tables.
inline constexpr const char* kPillow = "forwarding";
// Task types: deliver one forwarder's due records; find forwarders with due records.
inline constexpr const char* kDeliverTask = "forward.deliver";
inline constexpr const char* kSweepTask = "forward.sweep";
inline constexpr const char* kSweepSchedule = "commcare.forward.sweep";
// CommCare's device log xmlns: never forwarded.
inline constexpr const char* kDeviceLogXmlns = "http://code.javarosa.org/devicereport";

// Checks a forwarder's fields; InvalidArgument names the bad one.
Status CheckForwarder(const Forwarder& f);
// Creates the forwarding tables (idempotent).
Status Setup(util::SqlDb& db);
// Opens the forwarding database of a pillow store (schema set up).
Result<std::unique_ptr<util::SqlDb>> OpenDb(const std::string& pillow_store);

// Forwarders of every domain that are not deleted (nor paused, unless include_paused).
Result<std::vector<Forwarder>> ActiveForwarders(util::SqlDb& db, bool include_paused);
// Reads a forwarder by id alone (deleted ones: NotFound).
Result<Forwarder> LoadForwarder(util::SqlDb& db, std::string_view id);
// Enqueues the delivery task of a forwarder (at most one waiting or running).
Status EnqueueDelivery(TaskQueue* tasks, const std::string& domain, const std::string& id);

// Adds the forwarding pillow (topics form-sql and case-sql) to a pillow host; it enqueues
// delivery on tasks after each batch that made records.
Status AddForwardingPillow(PillowHost* host, TaskQueue* tasks);

// A payload to send.
struct Payload {
  std::string body;
  std::string content_type;
  std::string url_suffix;  // e.g. "?app_id=..."
  std::vector<std::pair<std::string, std::string>> headers;
};
// Builds the payload of a record now (HQ builds it at send time). NotFound: the document is
// gone (the record is Empty); InvalidArgument: it cannot be built (InvalidPayload).
// base_url: the deployment's, the start of its attachment urls ("": paths).
Result<Payload> BuildPayload(Engine& engine, const Forwarder& f, const RepeatRecord& r,
                             std::string_view base_url = {});
// A case as a full v2 case block (create, update, index, close).
std::string CaseXml(const CaseRecord& c);
// A case as HQ's CaseRepeater sends it as case_json: to_api_json(lite=True), i.e.
// CommCareCaseAPISerializer without reverse_indices (domain, case_id, user_id, closed,
// xform_ids, date_closed, date_modified, server_date_modified, properties with case_type,
// case_name, owner_id, external_id and date_opened, indices and attachments as maps).
std::string CaseToLiteApiJson(const CaseRecord& c, const std::vector<std::string>& xform_ids,
                              std::string_view base_url = {});
// HQ's attachment urls are absolute (absolute_reverse): the Form API object's attachment paths
// ("/a/...") get base_url ("scheme://host") in front; nothing changes when it is "".
void PrefixAttachmentUrls(boost::json::value* form, std::string_view base_url);
// HQ's get_properties_in_api_format: the case's properties, then external_id, owner_id,
// case_name, case_type and date_opened (given: its format depends on the serializer), which
// win over a dynamic property of the same name.
boost::json::object CaseApiProperties(const CaseRecord& c, boost::json::value date_opened);
// HQ's CommCareCase.xform_ids from a case's history: its forms not revoked, by server date.
std::vector<std::string> CaseXformIds(const std::vector<CaseTransaction>& history);
// Drops the v2 <case> blocks from form XML.
std::string StripCaseBlocks(std::string_view xml);

// The answer to one POST.
struct HttpResult {
  int status = 0;       // 0: no answer
  std::string excerpt;  // first 1,000 bytes of the body, or the transport error
  int64_t duration_us = 0;
};
// An HTTP client reused across requests of one delivery run (keeps connections alive).
class HttpSender {
 public:
  HttpSender();
  ~HttpSender();
  HttpSender(const HttpSender&) = delete;
  HttpSender& operator=(const HttpSender&) = delete;
  HttpResult Post(const Forwarder& f, const Payload& p);

 private:
  void* curl_;
};

// HQ's retry wait: 3 × the time since the last try, between 1 hour and 7 days.
int64_t RetryWaitMicros(int64_t now, int64_t last_checked);

// The task handlers: deliver one forwarder's due records in order (payload {"forwarder": id});
// enqueue delivery for every forwarder with due records.
TaskHandler DeliverHandler(Engine* engine, std::string pillow_store, std::string base_url = {});
TaskHandler SweepHandler(std::string pillow_store, TaskQueue* tasks);
// Puts the minute sweep schedule (idempotent).
Status EnsureSweepSchedule(TaskQueue* tasks);

// Reads a record row selected with kRecordColumns.
RepeatRecord RecordFromRow(const util::SqlRows& rows, size_t i);
extern const char* const kRecordColumns;

}  // namespace commcare::forwarding
