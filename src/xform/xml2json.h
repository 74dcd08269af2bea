// Form XML as CommCare's form JSON (what UCR expressions and the form API read).
#pragma once

#include <boost/json.hpp>
#include <string_view>

#include "commcare/status.h"

namespace commcare::xform {

// CommCare's xml2json: an element with only text is its text ("" if empty); otherwise an
// object of "@attr" values, child elements by local name (repeats become arrays) and "#text".
// An element whose namespace differs from its parent's gets "@xmlns". The root element's
// object also has "#type": its local name.
Result<boost::json::object> FormXmlToJson(std::string_view xml);

// HQ's adjust_datetimes (corehq/form_processor/utils/xform.py): every string that is a date-time
// with a zone ("2024-03-02T10:21:48.715+01:00") becomes UTC "2024-03-02T09:21:48.715000Z";
// dates, zone-less times and other text are kept.
void AdjustDatetimes(boost::json::value& v);

}  // namespace commcare::xform
