// A rule run's locations and users (RuleRunOptions::locations) from the MetaStore.
#pragma once

#include <string_view>

#include "commcare/rules.h"
#include "commcare/status.h"

namespace commcare {
namespace meta {
class MetaStore;
}

namespace rules {

// The domain's locations (id -> parent_id) and its users' primary locations (the first of
// location_ids), as a location criterion needs them.
Result<RuleLocations> LoadRuleLocations(meta::MetaStore* meta, std::string_view domain);

}  // namespace rules
}  // namespace commcare
