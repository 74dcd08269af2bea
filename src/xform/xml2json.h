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

}  // namespace commcare::xform
