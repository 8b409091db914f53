// Removing secrets from text that leaves the extension. Upstreams sometimes quote a rejected key
// back, whole or shortened; every upstream text bound for an error, a status message, a log line
// or a gateway answer goes through here first. One function, so every path scrubs the same way.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "protocol.h"

namespace pgi {

// What stands in for a removed secret.
inline constexpr std::string_view kRedacted = "[redacted]";

// The text with every occurrence of every secret replaced by kRedacted. One pass over the
// original text: the replacement is never searched again, so a secret that occurs inside
// "[redacted]" (or is "[redacted]") cannot loop. Overlapping or touching occurrences, of one
// secret or several, become one kRedacted. Empty secrets are ignored.
//
// Shortened echoes count too: for a secret longer than 4 characters, an ellipsis ("…" or "...")
// or a run of 3 or more '*' followed by the secret's last 4 characters is removed, together with
// the visible part before it when that is a prefix of the secret ("sk-proj-…abcd").
//
// An occurrence lying wholly inside an occurrence of one of keep (the service name, which may
// happen to contain a short key) stays as it is: the name is not a secret.
//
// Time O(n · secrets) for a text of n bytes, plus sorting the matches.
std::string redact(std::string_view text, const std::vector<std::string_view> &secrets,
                   const std::vector<std::string_view> &keep = {});

// The service's upstream key removed from a text the service (or its transport) produced; the
// service's name is kept.
std::string redact_key(std::string_view text, const ServiceEndpoint &service);

}  // namespace pgi
