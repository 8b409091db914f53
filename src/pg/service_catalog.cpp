#include "service_catalog.h"

#include <cstdlib>

#include "cpp_wall.h"

extern "C" {
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/date.h"
#include "utils/timestamp.h"
}

#include "budget.h"
#include "budgets.h"
#include "env_policy.h"
#include "error.h"
#include "governance.h"
#include "restrictions.h"
#include "secrets.h"
#include "spi_connection.h"

namespace pgi::pg {

namespace {

constexpr const char *kSelectServices =
    "SELECT s.name, s.model, s.base_url, s.protocol, s.functions, s.tags, s.allow_insecure, "
    "       k.api_key_sealed, k.api_key_env, s.rerank_route, s.registered_by_superuser, "
    "       (extract(epoch FROM s.request_timeout) * 1000)::bigint::text, "
    "       s.ca_file, s.client_cert_file, s.client_key_file, "
    "       p.id::text, p.input_per_mtok::text, p.output_per_mtok::text, "
    "       coalesce(p.cached_input_per_mtok, p.input_per_mtok)::text, p.currency "
    "  FROM inference.services s LEFT JOIN inference.service_secrets k ON k.service = s.name "
    "  LEFT JOIN LATERAL (SELECT * FROM inference.price_store p WHERE p.service = s.name "
    "                      ORDER BY p.id DESC LIMIT 1) p ON true ";

// A numeric price as a double for /metrics. strtod rather than a cast in SQL: a price beyond a
// double's range gives infinity or 0 here, where the cast would fail the whole catalog read.
double rate_of(const std::optional<std::string> &text) {
    return text ? std::strtod(text->c_str(), nullptr) : 0;
}
// The same exactly, in nano-units per million tokens for budgets (rounded up past 9 decimals).
int64_t nano_rate_of(const std::optional<std::string> &text) {
    return text ? governance::nano_of_decimal(*text, true).value_or(0) : 0;
}

std::vector<ServiceRow> read_services(SpiConnection &spi, uint64 n) {
    std::vector<ServiceRow> rows;
    for (uint64 i = 0; i < n; i++) {
        ServiceRow r;
        r.name = spi.string_at(i, 1).value_or("");
        r.model = spi.string_at(i, 2).value_or("");
        r.base_url = spi.string_at(i, 3).value_or("");
        r.protocol = parse_protocol(spi.string_at(i, 4).value_or("")).value_or(Protocol::kOpenAiV1);
        r.functions = spi.strings_at(i, 5);
        r.tags = spi.strings_at(i, 6);
        r.allow_insecure = spi.bool_at(i, 7);
        r.sealed_key = spi.string_at(i, 8);
        r.key_env = spi.string_at(i, 9);
        r.rerank_route = spi.string_at(i, 10);
        r.registered_by_superuser = spi.bool_at(i, 11);
        if (std::optional<std::string> ms = spi.string_at(i, 12))
            r.request_timeout_ms = std::stoll(*ms);
        r.tls.ca_file = spi.string_at(i, 13).value_or("");
        r.tls.client_cert_file = spi.string_at(i, 14).value_or("");
        r.tls.client_key_file = spi.string_at(i, 15).value_or("");
        if (std::optional<std::string> price = spi.string_at(i, 16)) {
            r.price.id = std::stoll(*price);
            r.price.input_per_mtok = rate_of(spi.string_at(i, 17));
            r.price.output_per_mtok = rate_of(spi.string_at(i, 18));
            r.price.cached_input_per_mtok = rate_of(spi.string_at(i, 19));
            r.price.input_nano = nano_rate_of(spi.string_at(i, 17));
            r.price.output_nano = nano_rate_of(spi.string_at(i, 18));
            r.price.cached_input_nano = nano_rate_of(spi.string_at(i, 19));
            r.price.currency = spi.string_at(i, 20).value_or("");
        }
        rows.push_back(std::move(r));
    }
    return rows;
}

}  // namespace

std::optional<ServiceRow> find_service(const std::string &name) {
    SpiConnection spi;
    std::string sql = std::string(kSelectServices) + "WHERE s.name = $1";
    uint64 n = spi.exec(sql.c_str(), {spi_text(name)}, true);
    auto rows = read_services(spi, n);
    if (rows.empty())
        return std::nullopt;
    return rows.front();
}

std::vector<ServiceRow> all_services() {
    SpiConnection spi;
    std::string sql = std::string(kSelectServices) + "ORDER BY s.name";
    uint64 n = spi.exec(sql.c_str(), {}, true);
    return read_services(spi, n);
}

pgi::Error route_name_taken(const std::string &name) {
    return pgi::Error(sqlstate::kDuplicateObject, "name \"" + name + "\" is taken by a route",
                      "Routes and services share one namespace; choose another name.");
}

ServiceRow require_service(const std::string &name) {
    auto row = find_service(name);
    if (!row)
        throw pgi::Error(sqlstate::kUndefinedObject, "service \"" + name + "\" does not exist",
                         "Call inference.list_models() to see the registered services.");
    return *row;
}

void lock_names() {
    pg_guard_void([]() {
        LockDatabaseObject(ExtensionRelationId, get_extension_oid("pg_inference", false), 1,
                           ExclusiveLock);
    });
}

namespace {

constexpr const char *kSelectRoutes =
    "SELECT r.name, r.targets::text, r.fallback_on, "
    "       (extract(epoch FROM r.cooldown) * 1000000)::bigint::text "
    "  FROM inference.route_store r ";

std::vector<RouteRow> read_routes(SpiConnection &spi, uint64 n) {
    std::vector<RouteRow> rows;
    for (uint64 i = 0; i < n; i++) {
        RouteRow r;
        r.name = spi.string_at(i, 1).value_or("");
        r.targets = routing::parse_targets(nlohmann::json::parse(spi.string_at(i, 2).value_or("")));
        r.fallback_on = spi.strings_at(i, 3);
        r.cooldown_us = std::stoll(spi.string_at(i, 4).value_or("0"));
        rows.push_back(std::move(r));
    }
    return rows;
}

}  // namespace

std::optional<RouteRow> find_route(const std::string &name) {
    SpiConnection spi;
    std::string sql = std::string(kSelectRoutes) + "WHERE r.name = $1";
    uint64 n = spi.exec(sql.c_str(), {spi_text(name)}, true);
    auto rows = read_routes(spi, n);
    if (rows.empty())
        return std::nullopt;
    return rows.front();
}

std::vector<RouteRow> all_routes() {
    SpiConnection spi;
    std::string sql = std::string(kSelectRoutes) + "ORDER BY r.name";
    return read_routes(spi, spi.exec(sql.c_str(), {}, true));
}

void insert_service(const ServiceRow &row, const SecretValue &secret) {
    // Under the names lock, a route's name committed meanwhile is seen here.
    lock_names();
    if (find_route(row.name))
        throw route_name_taken(row.name);
    SpiConnection spi;
    spi.exec(
        "INSERT INTO inference.services (name, model, base_url, protocol, functions, tags, "
        "allow_insecure, registered_by_superuser, request_timeout, ca_file, client_cert_file, "
        "client_key_file) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9 * interval '1 millisecond', "
        "        nullif($10, ''), nullif($11, ''), nullif($12, ''))",
        {spi_text(row.name), spi_text(row.model), spi_text(row.base_url),
         spi_text(protocol_name(row.protocol)), spi_text_array(row.functions),
         spi_text_array(row.tags), spi_bool(row.allow_insecure),
         spi_bool(row.registered_by_superuser), spi_int8(row.request_timeout_ms),
         spi_text(row.tls.ca_file), spi_text(row.tls.client_cert_file),
         spi_text(row.tls.client_key_file)},
        false);
    if (secret.sealed_key || secret.key_env)
        spi.exec(
            "INSERT INTO inference.service_secrets (service, api_key_sealed, api_key_env) "
            "VALUES ($1, $2, $3)",
            {spi_text(row.name), spi_bytea(secret.sealed_key), spi_text(secret.key_env)}, false);
}

void update_service_labels(const std::string &name,
                           const std::optional<std::vector<std::string>> &functions,
                           const std::optional<std::vector<std::string>> &tags) {
    SpiConnection spi;
    spi.exec(
        "UPDATE inference.services SET functions = coalesce($2, functions), "
        "tags = coalesce($3, tags), updated_at = now() WHERE name = $1",
        {spi_text(name), spi_text_array(functions), spi_text_array(tags)}, false);
}

void update_service_timeout(const std::string &name, std::optional<int64_t> timeout_ms) {
    SpiConnection spi;
    spi.exec(
        "UPDATE inference.services SET request_timeout = $2 * interval '1 millisecond', "
        "updated_at = now() WHERE name = $1",
        {spi_text(name), spi_int8(timeout_ms)}, false);
}

void update_service_tls(const std::string &name, const tls::Files &files) {
    SpiConnection spi;
    spi.exec(
        "UPDATE inference.services SET ca_file = nullif($2, ''), "
        "client_cert_file = nullif($3, ''), client_key_file = nullif($4, ''), updated_at = now() "
        "WHERE name = $1",
        {spi_text(name), spi_text(files.ca_file), spi_text(files.client_cert_file),
         spi_text(files.client_key_file)},
        false);
}

void replace_secret(const std::string &name, const SecretValue &secret, bool by_superuser) {
    SpiConnection spi;
    spi.exec("DELETE FROM inference.service_secrets WHERE service = $1", {spi_text(name)}, false);
    if (secret.sealed_key || secret.key_env)
        spi.exec(
            "INSERT INTO inference.service_secrets (service, api_key_sealed, api_key_env) "
            "VALUES ($1, $2, $3)",
            {spi_text(name), spi_bytea(secret.sealed_key), spi_text(secret.key_env)}, false);
    spi.exec(
        "UPDATE inference.services SET updated_at = now(), registered_by_superuser = $2 "
        "WHERE name = $1",
        {spi_text(name), spi_bool(by_superuser)}, false);
}

void delete_service(const std::string &name) {
    SpiConnection spi;
    spi.exec("DELETE FROM inference.services WHERE name = $1", {spi_text(name)}, false);
}

void persist_status(const std::string &name, const StatusRecord &record) {
    SpiConnection spi;
    SpiArg checked = record.checked_at
                         ? SpiArg{TIMESTAMPTZOID, TimestampTzGetDatum(*record.checked_at), false}
                         : SpiArg{TIMESTAMPTZOID, 0, true};
    spi.exec(
        "INSERT INTO inference.service_status AS st (service, status, status_message, checked_at) "
        "SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM inference.services WHERE name = $1) "
        "ON CONFLICT (service) DO UPDATE SET status = excluded.status, "
        "status_message = excluded.status_message, checked_at = excluded.checked_at",
        {spi_text(name), spi_text(health_status_name(record.status)), spi_text(record.message),
         checked},
        false);
}

std::vector<std::string> persist_statuses(const std::vector<std::string> &names,
                                          const std::vector<StatusRecord> &records) {
    std::vector<std::string> statuses, messages;
    std::vector<Datum> times;
    for (const auto &r : records) {
        statuses.emplace_back(health_status_name(r.status));
        messages.push_back(r.message);
        times.push_back(TimestampTzGetDatum(r.checked_at.value_or(0)));
    }
    Datum times_array = pg_guard([&]() {
        return PointerGetDatum(construct_array(times.data(), static_cast<int>(times.size()),
                                               TIMESTAMPTZOID, sizeof(TimestampTz), FLOAT8PASSBYVAL,
                                               TYPALIGN_DOUBLE));
    });
    SpiConnection spi;
    // Rows locked by another transaction are skipped instead of waited for: a service being
    // deregistered (its row is locked FOR UPDATE) is left out altogether, and a status row that
    // some open transaction has written keeps its value until the next write. A health check
    // must never queue behind a user's transaction, and one such row must not fail the batch.
    uint64 n = spi.exec(
        "WITH u AS ("
        "    SELECT * FROM unnest($1, $2, $3, $4) AS u(service, status, status_message, checked_at)"
        "), live AS ("
        "    SELECT s.name FROM inference.services s WHERE s.name = ANY ($1)"
        "       FOR KEY SHARE SKIP LOCKED"
        "), unlocked AS ("
        "    SELECT st.service FROM inference.service_status st"
        "     WHERE st.service IN (SELECT name FROM live) FOR UPDATE SKIP LOCKED"
        "), updated AS ("
        "    UPDATE inference.service_status st SET status = u.status,"
        "           status_message = u.status_message, checked_at = u.checked_at"
        "      FROM u JOIN unlocked ON unlocked.service = u.service"
        "     WHERE st.service = u.service"
        "), inserted AS ("
        "    INSERT INTO inference.service_status (service, status, status_message, checked_at)"
        "    SELECT u.* FROM u JOIN live ON live.name = u.service"
        "     WHERE NOT EXISTS (SELECT 1 FROM inference.service_status st"
        "                        WHERE st.service = u.service)"
        "    ON CONFLICT (service) DO NOTHING"
        ") SELECT name FROM live",
        {spi_text_array(names), spi_text_array(statuses), spi_text_array(messages),
         SpiArg{TIMESTAMPTZARRAYOID, times_array, false}},
        false);
    std::vector<std::string> live;
    live.reserve(n);
    for (uint64 i = 0; i < n; i++)
        live.push_back(spi.string_at(i, 1).value_or(""));
    return live;
}

void remember_rerank_route(const std::string &name, const std::string &route) {
    SpiConnection spi;
    spi.exec("UPDATE inference.services SET rerank_route = $2 WHERE name = $1",
             {spi_text(name), spi_text(route)}, false);
}

ServiceEndpoint endpoint_with_key(const ServiceRow &row, const std::string &plain_key) {
    ServiceEndpoint e;
    e.name = row.name;
    e.model = row.model;
    e.base_url = row.base_url;
    e.protocol = row.protocol;
    e.api_key = plain_key;
    e.allow_insecure = row.allow_insecure;
    e.request_timeout_ms = static_cast<long>(row.request_timeout_ms.value_or(0));
    e.tls = row.tls;
    e.price = row.price;
    if (!row.registered_by_superuser)
        e.blocked_networks = blocked_networks();
    return e;
}

ServiceEndpoint endpoint_of(const ServiceRow &row) {
    // The list may have shrunk since the service was registered.
    if (!row.registered_by_superuser && row.key_env)
        validate::check_env_key_allowed(*row.key_env, allowed_env_keys());
    ServiceEndpoint e = endpoint_with_key(row, {});
    if (row.sealed_key)
        e.api_key = open_api_key(row.name, *row.sealed_key);
    else if (row.key_env)
        e.api_key = read_env_api_key(*row.key_env);
    return e;
}

namespace {

// The first day of the period `now` falls in, as a date parameter.
SpiArg date_arg(governance::Period period, int64_t now) {
    // PostgreSQL's dates count days from 2000-01-01; ours from 1970-01-01.
    const int32_t days = governance::period_first_day(period, now) - 10957;
    return SpiArg{DATEOID, DateADTGetDatum(days), false};
}

// A budget from its amount, period and the ledger's spending of the period (numeric text).
governance::Budget budget_at(const std::optional<std::string> &amount,
                             const std::optional<std::string> &period,
                             const std::optional<std::string> &spent, int64_t now) {
    governance::Budget b;
    if (!amount)
        return b;
    b.limit_nano = governance::nano_of_decimal(*amount, false).value_or(0);
    b.period = governance::period_of(period.value_or("")).value_or(governance::Period::kMonth);
    b.amount = *amount;
    b.loaded_period = governance::period_id(b.period, now);
    // Rounded up: the count may only be ahead of the ledger, never behind it.
    if (spent)
        b.spent_at_load_nano = governance::nano_of_decimal(*spent, true).value_or(0);
    return b;
}

}  // namespace

std::vector<gateway::AccessKey> all_access_keys() {
    const int64_t now = budget_clock_ms();
    SpiConnection spi;
    uint64 n = spi.exec(
        "SELECT name, k.tenant, key_hash, services, "
        "       (extract(epoch FROM expires_at) * 1000)::bigint::text, revoked_at IS NOT NULL, "
        "       k.requests_per_minute::text, k.requests_per_hour::text, k.burst::text, "
        "       k.tokens_per_hour::text, services IS NULL, passthrough, "
        "       t.requests_per_minute::text, t.requests_per_hour::text, t.burst::text, "
        "       t.tokens_per_hour::text, k.user_requests_per_minute::text, "
        "       k.user_tokens_per_hour::text, "
        "       k.budget::text, k.budget_period, t.budget::text, t.budget_period, "
        // What the ledger holds of each budget's current period: where this server's count
        // starts when it has none yet. $1..$3: the first day of this day, week and month.
        "       CASE WHEN k.budget IS NOT NULL THEN "
        "         (SELECT sum(u.cost) FROM inference.usage_ledger u "
        "           WHERE u.key_name = k.name AND u.end_user = '' "
        "             AND u.day >= CASE k.budget_period WHEN 'day' THEN $1 WHEN 'week' THEN $2 "
        "                           WHEN 'month' THEN $3 ELSE '-infinity'::date END)"
        "       END::text, "
        "       CASE WHEN t.budget IS NOT NULL THEN "
        "         (SELECT sum(u.cost) FROM inference.usage_ledger u "
        "           WHERE u.end_user = '' "
        "             AND u.key_name IN (SELECT o.name FROM inference.access_key_store o "
        "                                 WHERE o.tenant = k.tenant) "
        "             AND u.day >= CASE t.budget_period WHEN 'day' THEN $1 WHEN 'week' THEN $2 "
        "                           WHEN 'month' THEN $3 ELSE '-infinity'::date END)"
        "       END::text "
        "  FROM inference.access_key_store k "
        "  LEFT JOIN inference.tenant_limit_store t ON t.tenant = k.tenant",
        {date_arg(governance::Period::kDay, now), date_arg(governance::Period::kWeek, now),
         date_arg(governance::Period::kMonth, now)},
        true);
    std::vector<gateway::AccessKey> keys;
    auto number = [](const std::optional<std::string> &s) -> std::optional<long long> {
        if (!s)
            return std::nullopt;
        return std::stoll(*s);
    };
    // requests_per_minute, requests_per_hour, burst and tokens_per_hour from column `first` on.
    auto limits_at = [&](uint64 row, int first) {
        gateway::LimitValues l;
        if (auto v = number(spi.string_at(row, first)))
            l.rpm = static_cast<int>(*v);
        if (auto v = number(spi.string_at(row, first + 1)))
            l.rph = static_cast<int>(*v);
        if (auto v = number(spi.string_at(row, first + 2)))
            l.burst = static_cast<int>(*v);
        l.tokens_per_hour = number(spi.string_at(row, first + 3));
        return l;
    };
    for (uint64 i = 0; i < n; i++) {
        gateway::AccessKey k;
        k.name = spi.string_at(i, 1).value_or("");
        k.tenant = spi.string_at(i, 2).value_or("");
        k.key_hash = spi.string_at(i, 3).value_or("");
        if (!spi.bool_at(i, 11))
            k.services = spi.strings_at(i, 4);
        k.expires_at_ms = number(spi.string_at(i, 5));
        k.revoked = spi.bool_at(i, 6);
        k.limits = limits_at(i, 7);
        k.passthrough = spi.bool_at(i, 12);
        k.tenant_limits = limits_at(i, 13);
        if (auto v = number(spi.string_at(i, 17)))
            k.user_rpm = static_cast<int>(*v);
        k.user_tokens_per_hour = number(spi.string_at(i, 18));
        k.budget = budget_at(spi.string_at(i, 19), spi.string_at(i, 20), spi.string_at(i, 23), now);
        k.tenant_budget =
            budget_at(spi.string_at(i, 21), spi.string_at(i, 22), spi.string_at(i, 24), now);
        keys.push_back(std::move(k));
    }
    return keys;
}

}  // namespace pgi::pg
