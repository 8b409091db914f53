// Access keys' limits held for the whole cluster (inference.limits_scope = 'cluster'): the
// primary lends blocks of a key's limits (inference_internal.lend_limits), and a hot standby's usage
// writer keeps the blocks of the keys in use topped up. docs/replicas.md has the design.
#pragma once

namespace pgi::pg {

// On a standby under cluster-wide limits, from the usage writer's loop: asks the primary for
// the blocks the listeners need. A failure (the primary away) is thrown; the listeners then
// spend what they hold and refuse the rest.
void top_up_leases();

}  // namespace pgi::pg
