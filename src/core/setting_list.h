// Comma-separated list settings (inference.allowed_env_keys, inference.blocked_networks): one
// splitter, so that every list reads the same way.
#pragma once

#include <string>
#include <vector>

namespace pgi {

// The elements of a comma-separated list, each without surrounding white space. A blank list has
// no elements; an empty element ("a, , b", a trailing comma) comes back as "" for the caller to
// refuse.
std::vector<std::string> split_setting_list(const std::string &list);

}  // namespace pgi
