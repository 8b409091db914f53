// An emit_log_hook that takes the lines describing the extension's own SQL wrappers out of an
// error's CONTEXT (src/core/wrapper_context.h), before the report reaches the client and the log.
#pragma once

namespace pgi::pg {

// From _PG_init, in every process that loads the library, after log_redaction_install: this hook
// then runs first, so the redaction reads only what remains.
void context_trim_install();

}  // namespace pgi::pg
