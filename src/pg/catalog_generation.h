// A counter in shared memory bumped by every committed change to the catalog tables the gateway
// serves from (services, secrets, access keys) and by every committed CREATE or DROP of an
// extension. Workers poll it and reload their snapshot when it moves, so a change reaches every
// listener within a second without any SQL on the request path.
//
// On a hot standby no trigger or hook fires: changes arrive by WAL replay. The same trigger also
// sends a relcache invalidation of its table at commit, which the commit record carries to
// every standby; a worker there polls for them (catalog_poll_replay) and counts each as a change
// of its own. docs/replicas.md has the design.
#pragma once

#include <cstdint>

namespace pgi::pg {

// From _PG_init in every process that loads the library: notices CREATE/DROP EXTENSION.
void catalog_generation_install_hooks();
void catalog_generation_request_shmem();
void catalog_generation_init_shmem();
// 0 when shared memory is absent (library not preloaded). In a process that polls replay, the
// changes it saw replayed are added.
uint64_t catalog_generation();
// During recovery, reads the invalidations replayed since the last call (a short transaction
// of its own, outside any other) and counts a change when one concerns the catalog tables, or
// any relation while the extension is absent (its creation is being replayed). Does nothing
// once the server is a primary. Workers call it on every turn of their loop.
void catalog_poll_replay();

}  // namespace pgi::pg
