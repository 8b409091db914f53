#include "secrets.h"

#include "cpp_wall.h"

extern "C" {
#include "miscadmin.h"
}

#include <cstdlib>

#include "crypto.h"
#include "error.h"
#include "settings.h"

namespace pgi::pg {

namespace {

// The key is read once per backend and kept, together with the path it came from, so a changed
// inference.secret_key_file (SIGHUP) is picked up by the next call.
std::string cached_key;
std::string cached_path;

// Only sealing may create the key file. Opening must not: on a cluster restored without its key
// file, a fresh key made by the first decrypt would seal every later registration under the
// wrong key, and restoring the original file afterwards would break those instead.
const std::string &cluster_key(bool for_sealing) {
    std::string configured = setting_secret_key_file ? setting_secret_key_file : "";
    bool in_data_dir = configured.empty();
    std::string path = in_data_dir ? std::string(DataDir) + "/pg_inference.key" : configured;
    if (!path.empty() && path[0] != '/')
        path = std::string(DataDir) + "/" + path;
    if (cached_key.empty() || cached_path != path) {
        std::string loaded = crypto::load_or_create_key_file(path, in_data_dir && for_sealing);
        // The replaced key is wiped, not merely freed; the new one is copied into the kept
        // buffer and its temporary wiped too.
        crypto::wipe(cached_key);
        cached_key = loaded;
        crypto::wipe(loaded);
        cached_path = path;
    }
    return cached_key;
}

}  // namespace

std::string seal_api_key(const std::string &service, const std::string &api_key) {
    return crypto::encrypt(cluster_key(true), api_key, service);
}

std::string open_api_key(const std::string &service, const std::string &sealed) {
    return crypto::decrypt(cluster_key(false), sealed, service);
}

std::string read_env_api_key(const std::string &env_name) {
    const char *value = std::getenv(env_name.c_str());
    if (value == nullptr || *value == '\0')
        throw pgi::Error(
            sqlstate::kInvalidParameterValue,
            "environment variable \"" + env_name + "\" is not set in the server's environment",
            "Set it in the environment of the PostgreSQL server process and restart "
            "the server, or store the key itself.");
    return value;
}

}  // namespace pgi::pg
