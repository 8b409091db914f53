// Keeps upstream keys out of the server log when PostgreSQL quotes a statement that could carry
// one (see log_redaction.cpp).
#pragma once

namespace pgi::pg {

// Installs the emit_log_hook, chained to the one before it. Called from _PG_init, in every
// process that loads the library (with shared_preload_libraries: the postmaster, so every
// backend has it from its first statement).
void log_redaction_install();

}  // namespace pgi::pg
