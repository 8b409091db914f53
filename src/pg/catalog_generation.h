// A counter in shared memory bumped by every committed change to the catalog tables the gateway
// serves from (services, secrets, access keys) and by every committed CREATE or DROP of an
// extension. Workers poll it and reload their snapshot when it moves, so a change reaches every
// listener within a second without any SQL on the request path.
#pragma once

#include <cstdint>

namespace pgi::pg {

// From _PG_init in every process that loads the library: notices CREATE/DROP EXTENSION.
void catalog_generation_install_hooks();
void catalog_generation_request_shmem();
void catalog_generation_init_shmem();
// 0 when shared memory is absent (library not preloaded).
uint64_t catalog_generation();

}  // namespace pgi::pg
