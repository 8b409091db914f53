// The extension's configuration settings (inference.*), defined in pg_inference.cpp.
#pragma once

#include "cpp_wall.h"

namespace pgi::pg {

extern char *setting_database;
extern char *setting_secret_key_file;
extern int setting_connect_timeout_ms;
extern int setting_request_timeout_ms;
extern int setting_max_response_size_kb;
extern int setting_max_retries;
extern int setting_max_concurrency;
extern int setting_embedding_batch_size;
extern int setting_default_max_tokens;
extern int setting_health_check_interval_s;
extern int setting_health_check_timeout_ms;
extern int setting_max_services;

// True when the library was loaded through shared_preload_libraries (shared memory and the
// background workers exist only then).
extern bool loaded_at_startup;

}  // namespace pgi::pg
