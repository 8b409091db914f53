#include "restrictions.h"

#include "cpp_wall.h"

extern "C" {
#include "miscadmin.h"
#include "utils/guc.h"
}

#include <cstring>

#include "env_policy.h"

namespace pgi::pg {

namespace {

char *setting_allowed_env_keys = nullptr;
char *setting_blocked_networks = nullptr;

// Copies a core refusal out of C++ scope, so GUC_check_errmsg (PostgreSQL code that may longjmp on
// out-of-memory) runs with no C++ object alive.
struct CheckFailure {
    char message[512] = {};
    char hint[512] = {};
};

template <typename Parse>
void try_parse(const char *value, CheckFailure &failure, Parse parse) {
    try {
        parse(std::string(value ? value : ""));
    } catch (const pgi::Error &e) {
        strlcpy(failure.message, e.what(), sizeof failure.message);
        strlcpy(failure.hint, e.hint().c_str(), sizeof failure.hint);
    } catch (...) {
        strlcpy(failure.message, "out of memory", sizeof failure.message);
    }
}

bool report(const CheckFailure &failure) {
    if (failure.message[0] == '\0')
        return true;
    GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
    GUC_check_errmsg("%s", failure.message);
    if (failure.hint[0] != '\0')
        GUC_check_errhint("%s", failure.hint);
    return false;
}

bool check_blocked_networks(char **newval, void **, GucSource) {
    CheckFailure failure;
    try_parse(*newval, failure, [](const std::string &v) { net::AddressFilter::parse(v); });
    return report(failure);
}

bool check_allowed_env_keys(char **newval, void **, GucSource) {
    CheckFailure failure;
    try_parse(*newval, failure, [](const std::string &v) { validate::parse_env_key_list(v); });
    return report(failure);
}

// Parsed values, kept with the text they came from and parsed again when it changes. The check
// hooks have accepted the text, so parsing it here cannot fail.
std::string blocked_text, env_text;
std::shared_ptr<const net::AddressFilter> blocked_parsed;
std::vector<std::string> env_parsed;
bool blocked_ready = false, env_ready = false;

}  // namespace

void restrictions_define_settings() {
    DefineCustomStringVariable(
        "inference.allowed_env_keys",
        "Server environment variables that roles other than superusers may use as env:NAME.",
        "Comma-separated variable names. Superusers may use any variable.",
        &setting_allowed_env_keys, "", PGC_SUSET, GUC_SUPERUSER_ONLY, check_allowed_env_keys,
        nullptr, nullptr);
    DefineCustomStringVariable(
        "inference.blocked_networks",
        "Networks that services registered by roles other than superusers may not reach.",
        "Comma-separated CIDRs, checked against the address of every upstream connection after "
        "DNS. Services registered by superusers are not restricted.",
        &setting_blocked_networks, net::kDefaultBlockedNetworks, PGC_SUSET, GUC_SUPERUSER_ONLY,
        check_blocked_networks, nullptr, nullptr);
}

bool caller_is_superuser() {
    return pg_guard([]() { return superuser_arg(GetOuterUserId()); });
}

std::shared_ptr<const net::AddressFilter> blocked_networks() {
    std::string text = setting_blocked_networks ? setting_blocked_networks : "";
    if (!blocked_ready || text != blocked_text) {
        auto filter = std::make_shared<const net::AddressFilter>(net::AddressFilter::parse(text));
        blocked_parsed = filter->empty() ? nullptr : filter;
        blocked_text = text;
        blocked_ready = true;
    }
    return blocked_parsed;
}

const std::vector<std::string> &allowed_env_keys() {
    std::string text = setting_allowed_env_keys ? setting_allowed_env_keys : "";
    if (!env_ready || text != env_text) {
        env_parsed = validate::parse_env_key_list(text);
        env_text = text;
        env_ready = true;
    }
    return env_parsed;
}

void check_env_key_for_caller(const std::string &env_name) {
    if (!caller_is_superuser())
        validate::check_env_key_allowed(env_name, allowed_env_keys());
}

void check_base_url_for_caller(const std::string &base_url) {
    if (caller_is_superuser())
        return;
    if (auto filter = blocked_networks())
        net::check_base_url_allowed(*filter, base_url);
}

std::string restriction_settings() {
    return std::string(setting_blocked_networks ? setting_blocked_networks : "") + "\n" +
           (setting_allowed_env_keys ? setting_allowed_env_keys : "");
}

}  // namespace pgi::pg
