// What an administrator who is not a superuser may make the server reach: which environment
// variables env:NAME may read (inference.allowed_env_keys) and which upstream addresses are off
// limits (inference.blocked_networks). Both settings are superuser-only.
//
// A registration or key update is checked against the role that makes it. The service row then
// remembers whether that role was a superuser (inference.services.registered_by_superuser); when
// it was not, every later use of the service, by whoever calls it, is restricted too: its env:NAME
// must still be listed and every connection made for it is checked against the blocked networks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "address_filter.h"

namespace pgi::pg {

void restrictions_define_settings();

// Whether the role calling the extension's SQL function is a superuser. The functions are
// SECURITY DEFINER, so this asks about the role outside them (the session's role, after SET
// ROLE), never the extension owner's.
bool caller_is_superuser();

// The parsed inference.blocked_networks; null when the list is empty.
std::shared_ptr<const net::AddressFilter> blocked_networks();
// The parsed inference.allowed_env_keys.
const std::vector<std::string> &allowed_env_keys();

// Registration and key-update checks; nothing is refused to a superuser.
void check_env_key_for_caller(const std::string &env_name);
void check_base_url_for_caller(const std::string &base_url);

// Both settings' current values in one string, so a process that holds services can notice that
// a configuration reload changed them.
std::string restriction_settings();

}  // namespace pgi::pg
