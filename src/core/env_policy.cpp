#include "env_policy.h"

#include <algorithm>

#include "error.h"
#include "validation.h"

namespace pgi::validate {

namespace {

std::string trim(const std::string &s) {
    std::size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos)
        return {};
    std::size_t e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

}  // namespace

std::vector<std::string> parse_env_key_list(const std::string &list) {
    std::vector<std::string> names;
    if (trim(list).empty())
        return names;
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t comma = list.find(',', start);
        if (comma == std::string::npos)
            comma = list.size();
        const std::string name = trim(list.substr(start, comma - start));
        start = comma + 1;
        if (!env_key_name("env:" + name))
            throw Error(sqlstate::kInvalidParameterValue,
                        "invalid variable name \"" + display_value(name) +
                            "\" in inference.allowed_env_keys",
                        "List variable names separated by commas; a name is letters, digits and "
                        "\"_\" and does not start with a digit.");
        names.push_back(name);
    }
    return names;
}

void check_env_key_allowed(const std::string &name, const std::vector<std::string> &allowed) {
    if (std::find(allowed.begin(), allowed.end(), name) != allowed.end())
        return;
    throw Error(sqlstate::kInsufficientPrivilege,
                "environment variable \"" + name + "\" is not in inference.allowed_env_keys",
                "Only a superuser may use env:NAME for a variable not listed in "
                "inference.allowed_env_keys: ask one to add it there, or store the key itself.");
}

}  // namespace pgi::validate
