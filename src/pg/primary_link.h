// A hot standby's connection to its primary, for what only a primary can record: the usage its
// gateway served. libpq, from the process that flushes (the usage writer, or a listener at
// exit), with every wait bounded. docs/replicas.md has the design.
#pragma once

#include <cstdint>
#include <string>

#include "rate_limiter.h"

namespace pgi::pg {

// inference.primary_conninfo (SIGHUP, superuser only).
void primary_link_define_settings();

// Records a batch of usage rows (inference_internal.record_usage's jsonb) under `batch_id` (a uuid) in
// the primary's ledger, over this process's connection (made or remade as needed). Returns
// false when the primary had recorded that batch already. Throws pgi::Error when the primary
// cannot be reached or refuses; the message never holds the connection string.
bool record_usage_on_primary(const std::string &batch_id, const std::string &node,
                             const std::string &rows);

// Borrows a block of an access key's limits from the primary (inference_internal.lend_limits): what it
// lent. Throws as record_usage_on_primary does.
governance::Lease lend_on_primary(const std::string &key, int64_t requests, int64_t tokens);

// A name for this server in the primary's batch records: cluster_name, or host and port.
std::string node_name();

}  // namespace pgi::pg
