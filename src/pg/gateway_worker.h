// The gateway listeners: inference.gateway_workers background workers, each a
// single-threaded libevent loop running the core's gateway::Server on a shared SO_REUSEPORT port.
#pragma once

#include <string>

namespace pgi::pg {

// Defines the inference.gateway_* settings; the restart-only ones exist only when preloading.
void gateway_define_settings();
// From _PG_init when preloaded and inference.gateway_port is not 0.
void gateway_workers_register();
// "http(s)://host:port" where the gateway listens, or "" when it is off.
std::string gateway_base_url();

}  // namespace pgi::pg
