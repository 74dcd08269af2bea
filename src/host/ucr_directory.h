// The UCR evaluator's Directory over the MetaStore (docs/ucr.md): users, groups and locations as
// HQ's CommCareUser, Group and Location documents.
#pragma once

#include <memory>

#include "pillows/ucr.h"

namespace commcare {
namespace meta {
class MetaStore;
}

// A Directory reading meta, which must outlive it.
std::shared_ptr<pillows::ucr::Directory> NewMetaDirectory(meta::MetaStore* meta);

}  // namespace commcare
