#include "gateway_worker.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xact.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void pgi_gateway_worker_main(Datum arg);
}

#include <algorithm>
#include <event2/event.h>
#include <memory>
#include <sstream>

#include "catalog_generation.h"
#include "gateway.h"
#include "governance.h"
#include "restrictions.h"
#include "service_catalog.h"
#include "settings.h"
#include "usage_writer.h"
#include "worker_connection.h"
#include "worker_transaction.h"

namespace pgi::pg {

namespace {

int setting_gateway_port = 8765;
char *setting_listen_addresses = nullptr;
int setting_gateway_workers = 2;
char *setting_tls_cert_file = nullptr;
char *setting_tls_key_file = nullptr;
bool setting_require_key = true;
int setting_max_body_kb = 16 * 1024;
int setting_client_timeout_s = 60;
int setting_header_timeout_s = 10;
int setting_max_connections = 10000;
char *setting_model_header = nullptr;
char *setting_user_header = nullptr;

// How often a listener looks at the catalog generation, signals and the postmaster: the bound on
// how long a committed change takes to reach it.
constexpr int kHousekeepingMs = 100;

std::vector<std::string> split_addresses(const char *list) {
    std::vector<std::string> out;
    std::stringstream ss(list ? list : "");
    std::string item;
    while (std::getline(ss, item, ',')) {
        size_t b = item.find_first_not_of(" \t");
        size_t e = item.find_last_not_of(" \t");
        if (b != std::string::npos)
            out.push_back(item.substr(b, e - b + 1));
    }
    return out;
}

// A reload runs on the listener's event loop, so its waits are bounded tightly: a lock held on
// the catalog (LOCK TABLE, VACUUM FULL, a long ALTER) costs callers at most kReloadLockTimeoutMs
// per try, and the listener keeps serving from its last snapshot until a try succeeds. The
// statement timeout bounds the whole read (thousands of services and keys take milliseconds).
constexpr int kReloadLockTimeoutMs = 20;
constexpr int kReloadStatementTimeoutMs = 2000;
// Tries after a failed reload back off from one tick to this, so a change still lands within a
// second of a lock's release while a long lock costs callers a few milliseconds a second.
constexpr int kReloadRetryMaxMs = 400;

// Why the gateway cannot serve: the extension is not installed, or is at another version than
// the library; nothing when it can.
std::optional<std::string> unavailable_reason() {
    const ExtensionState state = extension_state("pg_inference gateway");
    if (state.ready)
        return std::nullopt;
    if (!state.installed)
        return std::string("pg_inference is not installed in database \"") + setting_database +
               "\"; the gateway serves nothing until CREATE EXTENSION pg_inference";
    return std::string("pg_inference in database \"") + setting_database + "\" is at version " +
           state.installed->version + ", its library at " + library_version() +
           "; the gateway serves nothing until ALTER EXTENSION pg_inference UPDATE";
}

// Reads services (with their keys) and access keys in one short transaction. A service whose key
// cannot be opened is left out (with a WARNING) rather than failing the whole snapshot. Without
// the extension, the snapshot is one that refuses every request.
std::shared_ptr<gateway::Snapshot> load_snapshot(uint64_t generation) {
    auto snapshot = std::make_shared<gateway::Snapshot>();
    snapshot->generation = generation;
    std::vector<std::string> left_out;
    TransactionLimits limits;
    limits.lock_timeout_ms = kReloadLockTimeoutMs;
    limits.statement_timeout_ms = kReloadStatementTimeoutMs;
    run_in_transaction("pg_inference gateway: loading the catalog", limits, [&]() {
        if (std::optional<std::string> reason = unavailable_reason()) {
            snapshot->unavailable = std::move(*reason);
            return;
        }
        for (const ServiceRow &row : all_services()) {
            try {
                snapshot->services.emplace(row.name, endpoint_of(row));
                if (row.rerank_route)
                    snapshot->rerank_routes[row.name] = *row.rerank_route;
            } catch (const pgi::Error &e) {
                left_out.push_back("service \"" + row.name + "\" left out: " + e.what());
            }
        }
        for (auto &key : all_access_keys())
            snapshot->keys.emplace(key.key_hash, std::move(key));
        // A target left out above is skipped by the route (as one deregistered meanwhile).
        for (RouteRow &row : all_routes()) {
            gateway::RouteEntry route;
            route.targets = std::move(row.targets);
            route.fallback_on = std::move(row.fallback_on);
            route.cooldown_us = row.cooldown_us;
            snapshot->routes.emplace(row.name, std::move(route));
        }
    });
    for (const std::string &why : left_out) {
        pg_guard_void(
            [&]() { ereport(WARNING, (errmsg("pg_inference gateway: %s", why.c_str()))); });
    }
    return snapshot;
}

// What a listener serves before its first successful load (the catalog may be locked while the
// listener starts): a clear 503, not an empty catalog's 401s.
std::shared_ptr<gateway::Snapshot> loading_snapshot() {
    auto snapshot = std::make_shared<gateway::Snapshot>();
    snapshot->unavailable =
        "the gateway is still loading its catalog; please try again in a moment";
    return snapshot;
}

// Everything a listener keeps between housekeeping ticks. The governor is declared before the
// server, so it outlives the server, which reports to it until destroyed.
struct Listener {
    event_base *base = nullptr;
    Governance governor;  // rate limits, usage and metrics in shared memory
    std::unique_ptr<gateway::Server> server;
    uint64_t loaded_generation = 0;  // 0: nothing loaded yet
    // The snapshot's services carry inference.blocked_networks and were checked against
    // inference.allowed_env_keys when loaded: a reload that changes either reloads them.
    std::string restrictions = restriction_settings();
    bool restrictions_changed = false;
    TimestampTz next_try = 0;  // no reload before this after a failure
    int retry_ms = 0;
    TimestampTz last_failure_log = 0;
    // Where PostgreSQL errors caught during a tick are copied; reset at every tick, so none
    // outlives the tick that handled it.
    MemoryContext tick_cxt = nullptr;
};

void reload_if_changed(Listener &l) {
    uint64_t generation = catalog_generation();
    if (generation == l.loaded_generation && !l.restrictions_changed)
        return;
    TimestampTz now = GetCurrentTimestamp();
    if (now < l.next_try)
        return;
    try {
        l.server->set_snapshot(load_snapshot(generation));
        l.loaded_generation = generation;
        l.restrictions_changed = false;
        l.retry_ms = 0;
        l.governor.snapshot_loaded();
    } catch (const std::exception &e) {
        // A failing database must not turn into 401s for everyone: keep serving from the last
        // snapshot and try again soon (logging at most every 10 s).
        l.retry_ms = std::min(kReloadRetryMaxMs, std::max(kHousekeepingMs, 2 * l.retry_ms));
        l.next_try = TimestampTzPlusMilliseconds(now, l.retry_ms);
        if (TimestampDifferenceExceeds(l.last_failure_log, now, 10000)) {
            l.last_failure_log = now;
            std::string msg = e.what();
            pg_guard_void([&]() {
                ereport(WARNING, (errmsg("pg_inference gateway: could not reload the catalog: %s",
                                         msg.c_str()),
                                  errdetail("Serving from the previous snapshot; trying again.")));
            });
        }
    }
}

gateway::Config listener_config() {
    gateway::Config c;
    c.listen_addresses = split_addresses(setting_listen_addresses);
    c.port = setting_gateway_port;
    c.tls_cert_file = setting_tls_cert_file ? setting_tls_cert_file : "";
    c.tls_key_file = setting_tls_key_file ? setting_tls_key_file : "";
    c.require_key = setting_require_key;
    c.max_body_size = static_cast<size_t>(setting_max_body_kb) * 1024;
    c.max_response_size = static_cast<size_t>(setting_max_response_size_kb) * 1024;
    c.connect_timeout_ms = setting_connect_timeout_ms;
    c.request_timeout_ms = setting_request_timeout_ms;
    c.client_timeout_s = setting_client_timeout_s;
    c.header_timeout_s = setting_header_timeout_s;
    c.default_max_tokens = setting_default_max_tokens;
    c.max_retries = setting_max_retries;
    c.max_connections = static_cast<size_t>(setting_max_connections);
    c.model_header = setting_model_header ? setting_model_header : "";
    c.user_header = setting_user_header ? setting_user_header : "";
    return c;
}

void housekeeping(evutil_socket_t, short, void *arg) {
    auto &l = *static_cast<Listener *>(arg);
    MemoryContextReset(l.tick_cxt);
    MemoryContextSwitchTo(l.tick_cxt);
    try {
        // SIGTERM (die) and pg_terminate_backend end the process here with PostgreSQL's FATAL.
        check_for_interrupts();
        if (!PostmasterIsAlive())
            proc_exit(1);
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            pg_guard_void([]() { ProcessConfigFile(PGC_SIGHUP); });
            // Keys required or not, body size, client timeout and the upstream settings apply
            // to the next request; addresses, port, TLS files and workers need a restart.
            l.server->reconfigure(listener_config());
            if (std::string now = restriction_settings(); now != l.restrictions) {
                l.restrictions = std::move(now);
                l.restrictions_changed = true;
            }
        }
        catalog_poll_replay();
        reload_if_changed(l);
        l.governor.housekeeping(l.server->in_flight(), l.server->connection_stats());
    } catch (const std::exception &e) {
        // A listener runs no statement a cancel could stop, so pg_cancel_backend only costs a
        // reload try; it is not worth a log line each time.
        int level = is_cancel(e) ? DEBUG1 : LOG;
        std::string msg = e.what();
        pg_guard_void([&]() { ereport(level, (errmsg("pg_inference gateway: %s", msg.c_str()))); });
    }
}

void run_listener(int index) {
    Listener l;
    l.tick_cxt =
        AllocSetContextCreate(TopMemoryContext, "pg_inference gateway tick", ALLOCSET_SMALL_SIZES);
    MemoryContextSwitchTo(l.tick_cxt);
    l.base = gateway::new_event_base();
    if (!l.base)
        throw pgi::Error(sqlstate::kInternalError, "could not create an event base");
    gateway::Config config = listener_config();
    l.governor.start(index);
    l.server = std::make_unique<gateway::Server>(l.base, config, l.governor);
    l.server->set_snapshot(loading_snapshot());
    reload_if_changed(l);
    // Read-your-writes: a request arriving after a committed catalog change reloads first
    // rather than waiting for the next tick (a key used right after create_access_key).
    l.server->set_catalog_check([&l]() { reload_if_changed(l); });
    l.server->listen();
    pg_guard_void([&]() {
        ereport(LOG, (errmsg("pg_inference gateway listener %d serving on port %d", index,
                             l.server->port())));
    });

    event *tick = event_new(l.base, -1, EV_PERSIST, housekeeping, &l);
    timeval interval{0, kHousekeepingMs * 1000};
    event_add(tick, &interval);
    event_base_dispatch(l.base);
    event_free(tick);
    l.server.reset();
    event_base_free(l.base);
}

}  // namespace

void gateway_define_settings() {
    if (process_shared_preload_libraries_in_progress) {
        DefineCustomIntVariable("inference.gateway_port",
                                "TCP port of the OpenAI-compatible gateway; 0 turns it off.",
                                nullptr, &setting_gateway_port, 8765, 0, 65535, PGC_POSTMASTER, 0,
                                nullptr, nullptr, nullptr);
        DefineCustomStringVariable("inference.gateway_listen_addresses",
                                   "Addresses the gateway listens on (comma-separated, * for all).",
                                   nullptr, &setting_listen_addresses, "localhost", PGC_POSTMASTER,
                                   0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable(
            "inference.gateway_workers", "Listener processes sharing the gateway port.", nullptr,
            &setting_gateway_workers, 2, 1, 64, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
        DefineCustomStringVariable(
            "inference.gateway_tls_cert_file", "Certificate of the gateway's HTTPS listener.",
            nullptr, &setting_tls_cert_file, "", PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
        DefineCustomStringVariable("inference.gateway_tls_key_file",
                                   "Private key of the gateway's HTTPS listener.", nullptr,
                                   &setting_tls_key_file, "", PGC_POSTMASTER, GUC_SUPERUSER_ONLY,
                                   nullptr, nullptr, nullptr);
        DefineCustomBoolVariable(
            "inference.gateway_require_key", "Whether gateway callers must present an access key.",
            nullptr, &setting_require_key, true, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("inference.gateway_max_body_size",
                                "Largest request body the gateway accepts.", nullptr,
                                &setting_max_body_kb, 16 * 1024, 1, 1024 * 1024, PGC_SIGHUP,
                                GUC_UNIT_KB, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("inference.gateway_client_timeout",
                                "Time a gateway client may stay idle, send a request slowly or "
                                "stall a response before it is disconnected.",
                                nullptr, &setting_client_timeout_s, 60, 1, 3600, PGC_SIGHUP,
                                GUC_UNIT_S, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("inference.gateway_header_timeout",
                                "Time a gateway client has to send a request's headers, and again "
                                "its body, before it is disconnected.",
                                nullptr, &setting_header_timeout_s, 10, 1, 3600, PGC_SIGHUP,
                                GUC_UNIT_S, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("inference.gateway_max_connections",
                                "Client connections each gateway listener keeps open; past it a "
                                "new connection is answered 503 and closed.",
                                nullptr, &setting_max_connections, 10000, 1, 1000000, PGC_SIGHUP, 0,
                                nullptr, nullptr, nullptr);
        DefineCustomStringVariable("inference.gateway_model_header",
                                   "Request header whose value names the service or route a "
                                   "gateway request goes to; empty: none.",
                                   nullptr, &setting_model_header, "x-ai-eg-model", PGC_SIGHUP, 0,
                                   nullptr, nullptr, nullptr);
        DefineCustomStringVariable("inference.gateway_user_header",
                                   "Request header naming the end user a gateway request is for "
                                   "(per-user limits); empty: only the body's user.",
                                   nullptr, &setting_user_header, "x-user-id", PGC_SIGHUP, 0,
                                   nullptr, nullptr, nullptr);
    }
}

void gateway_workers_register() {
    if (setting_gateway_port == 0)
        return;
    usage_writer_register();
    for (int i = 1; i <= setting_gateway_workers; i++) {
        std::string name = "pg_inference gateway listener " + std::to_string(i);
        worker_register("pgi_gateway_worker_main", name.c_str(), "pg_inference gateway", true, i);
    }
}

std::string gateway_base_url() {
    if (!loaded_at_startup || setting_gateway_port == 0)
        return "";
    auto addresses = split_addresses(setting_listen_addresses);
    std::string host = addresses.empty() ? "localhost" : addresses.front();
    if (host == "*" || host == "0.0.0.0" || host == "::")
        host = "localhost";
    if (host.find(':') != std::string::npos)
        host = "[" + host + "]";
    bool tls = setting_tls_cert_file && *setting_tls_cert_file && setting_tls_key_file &&
               *setting_tls_key_file;
    return std::string(tls ? "https" : "http") + "://" + host + ":" +
           std::to_string(setting_gateway_port);
}

}  // namespace pgi::pg

void pgi_gateway_worker_main(Datum arg) {
    using namespace pgi::pg;
    int index = DatumGetInt32(arg);
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    worker_connect("pg_inference gateway listener");
    const std::string failure = run_worker_loop([&]() { run_listener(index); });
    // Outside the catch blocks: an ERROR in a background worker ends it with exit code 1, and
    // the postmaster starts it again after bgw_restart_time without touching the others.
    if (!failure.empty())
        ereport(ERROR,
                (errmsg("pg_inference gateway listener %d stopped: %s", index, failure.c_str())));
    proc_exit(0);
}

// inference_internal.gateway_base_url() RETURNS text: NULL when the gateway is off.
PGI_FUNCTION(pgi_gateway_base_url) {
    std::string url = pgi::pg::gateway_base_url();
    if (url.empty())
        PG_RETURN_NULL();
    return pgi::pg::text_datum(url);
}
