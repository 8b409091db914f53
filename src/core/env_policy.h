// Which server environment variables a restricted role may name in api_key => 'env:NAME'
// (inference.allowed_env_keys). The server's environment holds its own secrets (PGPASSWORD, cloud
// credentials); a role that could name any of them could have it sent to a host of its choosing.
#pragma once

#include <string>
#include <vector>

namespace pgi::validate {

// Parses "NAME, NAME, ..." (blanks around names ignored; empty list allowed). Each NAME is
// [A-Za-z_][A-Za-z0-9_]*, as in env:NAME. Throws pgi::Error (22023) naming the bad element.
std::vector<std::string> parse_env_key_list(const std::string &list);

// Refuses (42501, with a hint naming inference.allowed_env_keys) a variable that is not listed.
// Names compare exactly: the environment is case-sensitive.
void check_env_key_allowed(const std::string &name, const std::vector<std::string> &allowed);

}  // namespace pgi::validate
