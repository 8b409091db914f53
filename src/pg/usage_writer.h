// The usage writer background worker (see usage_writer.cpp).
#pragma once

namespace pgi::pg {

// From _PG_init, when the gateway is on.
void usage_writer_register();

}  // namespace pgi::pg
