// The service registry's SQL functions. The SQL wrappers in the extension script
// shape results as inference.service_info; these bodies validate, probe and write the catalog.
#include "cpp_wall.h"

extern "C" {
#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/timestamp.h"
}

#include "backend_http.h"
#include "error.h"
#include "health_worker.h"
#include "probe.h"
#include "restrictions.h"
#include "secrets.h"
#include "service_catalog.h"
#include "settings.h"
#include "status_store.h"
#include "validation.h"

namespace pgi::pg {

namespace {

probe::Settings probe_settings() {
    probe::Settings s;
    s.timeout_ms = setting_health_check_timeout_ms;
    s.connect_timeout_ms = std::min(setting_connect_timeout_ms, setting_health_check_timeout_ms);
    return s;
}

void record_status(const std::string &name, const StatusRecord &rec) {
    status_put(name, rec);
    persist_status(name, rec);
}

// Probes a service before it is stored or its key replaced; a failure is the caller's error.
void probe_or_fail(const ServiceEndpoint &endpoint, const char *action) {
    probe::Result r =
        probe::probe_one(backend_client(), endpoint, probe_settings(), check_for_interrupts);
    if (r.ok)
        return;
    std::string hint = r.hint.empty()
                           ? "Fix the endpoint or key and try again; validate => false registers "
                             "without a check."
                           : r.hint;
    throw pgi::Error(
        r.sqlstate, "service \"" + endpoint.name + "\" failed its connectivity check: " + r.message,
        hint, std::string("The service was not ") + action + ".");
}

// A key as given (plain or env:NAME) → what to store and the plain key to probe with.
struct KeyInput {
    SecretValue secret;
    std::string plain;
};

KeyInput key_input(const std::string &service, const std::optional<std::string> &api_key) {
    KeyInput k;
    if (!api_key)
        return k;
    validate::api_key(*api_key);
    if (auto env = validate::env_key_name(*api_key)) {
        // Before the variable is read: whether an unlisted variable is set is not for this role
        // to learn either.
        check_env_key_for_caller(*env);
        k.plain = read_env_api_key(*env);
        k.secret.key_env = *env;
    } else {
        k.plain = *api_key;
        k.secret.sealed_key = seal_api_key(service, *api_key);
    }
    return k;
}

Protocol protocol_arg(const std::string &text) {
    auto p = parse_protocol(text);
    if (!p)
        throw pgi::Error(sqlstate::kInvalidParameterValue, "invalid protocol \"" + text + "\"",
                         "Use OPENAI_V1, GEMINI_V1_BETA or ANTHROPIC_V1.");
    return *p;
}

// request_timeout: from 1 ms to a day (inference.request_timeout's range). In an update, 0 puts
// the service back on inference.request_timeout.
std::optional<int64_t> timeout_arg_ms(FunctionCallInfo fcinfo, int n, bool zero_clears) {
    std::optional<int64_t> us = interval_arg_us(fcinfo, n);
    if (!us)
        return std::nullopt;
    if (zero_clears && *us == 0)
        return 0;
    if (*us < 1000 || *us > 24LL * 3600 * 1000 * 1000)
        throw pgi::Error(sqlstate::kInvalidParameterValue,
                         "request_timeout must be between 1 millisecond and 1 day",
                         zero_clears ? "Pass e.g. '30 seconds'; '0' goes back to "
                                       "inference.request_timeout."
                                     : "Pass e.g. '30 seconds', or leave it out for "
                                       "inference.request_timeout.");
    return *us / 1000;
}

// ca_file, client_cert_file and client_key_file from arguments n to n + 2, over `current`: NULL
// keeps a path, '' removes it. nullopt when none is given. Only superusers set them: the server
// reads these files as its own operating-system user, and sends the client certificate.
std::optional<tls::Files> tls_args(FunctionCallInfo fcinfo, int n, const tls::Files &current) {
    std::optional<std::string> ca = text_arg(fcinfo, n), cert = text_arg(fcinfo, n + 1),
                               key = text_arg(fcinfo, n + 2);
    if (!ca && !cert && !key)
        return std::nullopt;
    if (!caller_is_superuser())
        throw pgi::Error(sqlstate::kInsufficientPrivilege,
                         "only superusers may set ca_file, client_cert_file or client_key_file",
                         "The server reads these files as its own operating-system user; ask a "
                         "superuser to set them.");
    tls::Files files = current;
    if (ca)
        files.ca_file = *ca;
    if (cert)
        files.client_cert_file = *cert;
    if (key)
        files.client_key_file = *key;
    tls::check(files);
    return files;
}

void refuse_change(const std::string &service, const char *field) {
    throw pgi::Error(
        sqlstate::kInvalidParameterValue,
        std::string(field) + " of service \"" + service + "\" cannot be changed",
        std::string("Deregister the service and register it again with the new ") + field + ".");
}

}  // namespace

}  // namespace pgi::pg

using namespace pgi;
using namespace pgi::pg;

// inference_internal.register_external_service(name, model, base_url, api_key, protocol, functions,
// tags, allow_insecure, validate, request_timeout, ca_file, client_cert_file, client_key_file)
// RETURNS void
PGI_FUNCTION(pgi_register_external_service) {
    ServiceRow row;
    row.name = required_text_arg(fcinfo, 0, "name");
    row.model = required_text_arg(fcinfo, 1, "model");
    std::string base_url = required_text_arg(fcinfo, 2, "base_url");
    auto api_key = text_arg(fcinfo, 3);
    std::string protocol = text_arg(fcinfo, 4).value_or("OPENAI_V1");
    bool allow_insecure = bool_arg(fcinfo, 7).value_or(false);
    bool validate_now = bool_arg(fcinfo, 8).value_or(true);
    row.request_timeout_ms = timeout_arg_ms(fcinfo, 9, false);

    validate::service_name(row.name);
    validate::model(row.model);
    row.base_url = validate::base_url(base_url);
    row.protocol = protocol_arg(protocol);
    row.functions = labels_arg(fcinfo, 5, "functions");
    row.tags = labels_arg(fcinfo, 6, "tags");
    row.allow_insecure = allow_insecure;
    if (std::optional<tls::Files> files = tls_args(fcinfo, 10, {}))
        row.tls = *files;
    if (find_service(row.name))
        throw pgi::Error(sqlstate::kUniqueViolation, "service \"" + row.name + "\" already exists",
                         "Use inference.update_external_service() to change it, or deregister "
                         "it first.");
    if (find_route(row.name))
        throw route_name_taken(row.name);
    row.registered_by_superuser = caller_is_superuser();
    check_base_url_for_caller(row.base_url);
    KeyInput key = key_input(row.name, api_key);

    ServiceEndpoint endpoint = endpoint_with_key(row, key.plain);
    StatusRecord status;
    if (validate_now) {
        probe_or_fail(endpoint, "registered");
        status.status = HealthStatus::kReady;
        status.checked_at = GetCurrentTimestamp();
    } else {
        status.status = HealthStatus::kUnknown;
        status.message =
            "not yet verified: registered with validate => false; run inference.check_service()";
    }
    insert_service(row, key.secret);
    record_status(row.name, status);
    PG_RETURN_VOID();
}

// inference_internal.update_external_service(name, api_key, functions, tags, model, base_url, protocol,
// allow_insecure, request_timeout, ca_file, client_cert_file, client_key_file) RETURNS void
PGI_FUNCTION(pgi_update_external_service) {
    std::string name = required_text_arg(fcinfo, 0, "name");
    ServiceRow row = require_service(name);

    if (auto model = text_arg(fcinfo, 4); model && *model != row.model)
        refuse_change(name, "model");
    if (auto url = text_arg(fcinfo, 5); url) {
        if (validate::base_url(*url) != row.base_url)
            refuse_change(name, "base_url");
    }
    if (auto protocol = text_arg(fcinfo, 6); protocol && protocol_arg(*protocol) != row.protocol)
        refuse_change(name, "protocol");
    if (auto insecure = bool_arg(fcinfo, 7); insecure && *insecure != row.allow_insecure)
        refuse_change(name, "allow_insecure");

    std::optional<int64_t> timeout_ms = timeout_arg_ms(fcinfo, 8, true);
    std::optional<std::vector<std::string>> functions, tags;
    if (!PG_ARGISNULL(2))
        functions = labels_arg(fcinfo, 2, "functions");
    if (!PG_ARGISNULL(3))
        tags = labels_arg(fcinfo, 3, "tags");

    // A new key or new TLS files are probed together before either applies.
    std::optional<tls::Files> files = tls_args(fcinfo, 9, row.tls);
    std::optional<std::string> api_key = text_arg(fcinfo, 1);
    if (api_key || files) {
        ServiceRow next = row;
        if (files)
            next.tls = *files;
        if (api_key) {
            // The service becomes as restricted as the role that sets its key.
            next.registered_by_superuser = caller_is_superuser();
            check_base_url_for_caller(row.base_url);
            KeyInput key = key_input(name, api_key);
            probe_or_fail(endpoint_with_key(next, key.plain), "changed");
            replace_secret(name, key.secret, next.registered_by_superuser);
        } else {
            probe_or_fail(endpoint_of(next), "changed");
        }
        if (files)
            update_service_tls(name, *files);
        StatusRecord status;
        status.status = HealthStatus::kReady;
        status.checked_at = GetCurrentTimestamp();
        record_status(name, status);
    }
    if (functions || tags)
        update_service_labels(name, functions, tags);
    if (timeout_ms)
        update_service_timeout(name, *timeout_ms > 0 ? timeout_ms : std::nullopt);
    PG_RETURN_VOID();
}

// inference_internal.deregister_external_service(name) RETURNS void
PGI_FUNCTION(pgi_deregister_external_service) {
    std::string name = required_text_arg(fcinfo, 0, "name");
    require_service(name);
    delete_service(name);
    status_forget(name);
    PG_RETURN_VOID();
}

// inference_internal.live_status(name, OUT status, OUT status_message, OUT checked_at)
PGI_FUNCTION(pgi_live_status) {
    std::string name = required_text_arg(fcinfo, 0, "name");
    StatusRecord rec = status_get(name);
    Datum values[3];
    bool nulls[3] = {false, rec.message.empty(), !rec.checked_at.has_value()};
    values[0] = text_datum(health_status_name(rec.status));
    values[1] = rec.message.empty() ? 0 : text_datum(rec.message);
    values[2] = rec.checked_at ? TimestampTzGetDatum(*rec.checked_at) : 0;
    return composite_datum(fcinfo, values, nulls);
}

// inference_internal.check_services(name) RETURNS SETOF record(name, status, status_message, checked_at)
// Probes one service or all of them concurrently and records the results.
PGI_FUNCTION(pgi_check_services) {
    auto name = text_arg(fcinfo, 0);
    std::vector<ServiceRow> rows;
    if (name)
        rows.push_back(require_service(*name));
    else
        rows = all_services();

    // The same steps as the health worker's rounds (health_worker.h), in the caller's transaction.
    probe::Settings settings = probe_settings();
    settings.max_concurrency = 64;
    std::vector<StatusRecord> records =
        probe_services(backend_client(), rows, settings, check_for_interrupts);
    record_statuses(rows, records);

    std::vector<Datum> names, statuses, messages, times;
    for (size_t i = 0; i < rows.size(); i++) {
        names.push_back(text_datum(rows[i].name));
        statuses.push_back(text_datum(health_status_name(records[i].status)));
        messages.push_back(text_datum(records[i].message));
        times.push_back(TimestampTzGetDatum(*records[i].checked_at));
    }
    pg_guard_void([&]() {
        InitMaterializedSRF(fcinfo, 0);
        auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        for (size_t i = 0; i < names.size(); i++) {
            Datum values[4] = {names[i], statuses[i], messages[i], times[i]};
            bool nulls[4] = {false, false, records[i].message.empty(), false};
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    });
    return static_cast<Datum>(0);
}
