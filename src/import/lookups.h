// What the importer looks up per row, cached for the run: case owners (users, case-sharing
// groups and locations from the MetaStore, as HQ's _OwnerAccessor) and cases by id or by
// external id within a case type (an index built by one scan of the type).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "commcare/engine.h"
#include "commcare/status.h"

namespace commcare::meta {
class MetaStore;
}

namespace commcare::importer {

// A row problem: HQ's error title and a sentence.
struct RowError {
  std::string column, title, reason;
};

class OwnerLookup {
 public:
  OwnerLookup(meta::MetaStore* meta, std::string domain)
      : meta_(meta), domain_(std::move(domain)) {}
  // The owner id for an owner_name: a username (plain or name@<domain>.commcarehq.org), then a
  // case-sharing group's name, then a location's name or site code. Errors name owner_name.
  Result<std::string> IdFromName(const std::string& name, RowError* err);
  // Whether owner_id is a member user, a case-sharing group or a case-sharing location.
  bool CheckId(const std::string& owner_id, RowError* err);

 private:
  Status Load();
  meta::MetaStore* meta_;
  std::string domain_;
  bool loaded_ = false;
  std::map<std::string, std::string> user_by_name_;  // username -> user id
  std::set<std::string> users_;                      // member user ids
  std::map<std::string, bool> groups_;               // group id -> case_sharing
  std::multimap<std::string, std::string> group_by_name_;
  std::map<std::string, bool> locations_;                     // location id -> shares_cases
  std::multimap<std::string, std::string> location_by_name_;  // lower-case name / site code
};

// A case found for a row.
struct FoundCase {
  std::string case_id, type;
};

class CaseLookup {
 public:
  CaseLookup(Engine* engine, std::string domain) : engine_(engine), domain_(std::move(domain)) {}
  // The live case of that id and type (nullopt when none).
  Result<std::optional<FoundCase>> ById(const std::string& case_id, const std::string& type);
  // The case ids of that type with that external id (built by one scan per type), plus the cases
  // this import created so far.
  Result<std::vector<std::string>> ByExternalId(const std::string& external_id,
                                                const std::string& type);
  // Records a case this import creates (visible to later rows' external-id lookups).
  void Created(const std::string& type, const std::string& external_id, const std::string& case_id);

 private:
  Status Index(const std::string& type);
  Engine* engine_;
  std::string domain_;
  std::map<std::string, std::multimap<std::string, std::string>> by_external_;  // type -> ext -> id
  std::map<std::string, std::multimap<std::string, std::string>> created_;      // by this import
};

}  // namespace commcare::importer
