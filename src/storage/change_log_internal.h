// Pieces the ChangeLog implementations share (internal).
#pragma once

#include <string_view>

#include "commcare/status.h"

namespace commcare::storage {

// Checks CreateTopic(topic, partitions) against the topic's current partition count (0: no
// such topic). Sets *exists when the topic is there with that count already.
Status CheckCreateTopic(std::string_view topic, int partitions, int current, bool* exists);

}  // namespace commcare::storage
