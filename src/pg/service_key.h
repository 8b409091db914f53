// The key of the per-service tables in shared memory (statuses, breakers): the database as well
// as the name, since two databases of one cluster may each have the extension and a service of
// the same name. Fixed size and zero-padded, for HASH_BLOBS.
#pragma once

#include "cpp_wall.h"

extern "C" {
#include "miscadmin.h"
}

#include <cstring>
#include <string>

namespace pgi::pg {

struct ServiceKey {
    Oid dboid;
    char name[64];  // service names are at most 63 characters
};

// The key of a service of this backend's database.
inline ServiceKey service_key(const std::string &service) {
    ServiceKey key;
    std::memset(&key, 0, sizeof(key));
    key.dboid = MyDatabaseId;
    std::strncpy(key.name, service.c_str(), sizeof(key.name) - 1);
    return key;
}

}  // namespace pgi::pg
