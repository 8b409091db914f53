#include "env_policy.h"

#include <algorithm>

#include "error.h"
#include "setting_list.h"
#include "validation.h"

namespace pgi::validate {

std::vector<std::string> parse_env_key_list(const std::string &list) {
    std::vector<std::string> names;
    for (const std::string &name : split_setting_list(list)) {
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
