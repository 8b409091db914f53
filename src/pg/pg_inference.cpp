// Module entry point: the inference.* settings, shared memory, and (when preloaded) the
// background workers.
#include "cpp_wall.h"

extern "C" {
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;
void _PG_init(void);
}

#include "breakers.h"
#include "budgets.h"
#include "catalog_generation.h"
#include "gateway_worker.h"
#include "governance.h"
#include "health_worker.h"
#include "context_trim.h"
#include "log_redaction.h"
#include "pipeline_worker.h"
#include "primary_link.h"
#include "request_log.h"
#include "restrictions.h"
#include "settings.h"
#include "status_store.h"
#include "worker_connection.h"

namespace pgi::pg {

char *setting_database = nullptr;
char *setting_secret_key_file = nullptr;
int setting_connect_timeout_ms = 10000;
int setting_request_timeout_ms = 120000;
int setting_max_response_size_kb = 64 * 1024;
int setting_max_retries = 2;
int setting_max_concurrency = 8;
int setting_embedding_batch_size = 128;
int setting_default_max_tokens = 1024;
int setting_health_check_interval_s = 300;
int setting_health_check_timeout_ms = 10000;
int setting_max_services = 10000;
bool loaded_at_startup = false;

namespace {

shmem_startup_hook_type prev_shmem_startup_hook = nullptr;
#if PG_VERSION_NUM >= 150000
shmem_request_hook_type prev_shmem_request_hook = nullptr;
#endif

void request_shmem() {
#if PG_VERSION_NUM >= 150000
    if (prev_shmem_request_hook)
        prev_shmem_request_hook();
#endif
    status_store_request_shmem();
    breakers_request_shmem();
    catalog_generation_request_shmem();
    health_worker_request_shmem();
    governance_request_shmem();
    budgets_request_shmem();
    request_log_request_shmem();
    worker_connection_request_shmem();
}

void startup_shmem() {
    if (prev_shmem_startup_hook)
        prev_shmem_startup_hook();
    status_store_init_shmem();
    breakers_init_shmem();
    catalog_generation_init_shmem();
    health_worker_init_shmem();
    governance_init_shmem();
    budgets_init_shmem();
    request_log_init_shmem();
    worker_connection_init_shmem();
}

void define_settings() {
    // PostgreSQL refuses (FATAL) to define PGC_POSTMASTER settings after startup, and without
    // preloading there are no workers or shared memory for them to configure.
    if (process_shared_preload_libraries_in_progress) {
        DefineCustomStringVariable(
            "inference.database", "Database where the pg_inference extension lives.",
            "The health-check and gateway workers connect to it.", &setting_database, "postgres",
            PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable("inference.max_services",
                                "Services whose health status shared memory can hold.", nullptr,
                                &setting_max_services, 10000, 16, 1000000, PGC_POSTMASTER, 0,
                                nullptr, nullptr, nullptr);
    }
    DefineCustomStringVariable(
        "inference.secret_key_file", "File holding the cluster key that encrypts API keys.",
        "Empty: pg_inference.key in the data directory, created on first use with mode 0600.",
        &setting_secret_key_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("inference.connect_timeout",
                            "Time allowed to connect to an upstream service.", nullptr,
                            &setting_connect_timeout_ms, 10000, 1, 3600 * 1000, PGC_USERSET,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("inference.request_timeout",
                            "Time allowed for one whole upstream request.", nullptr,
                            &setting_request_timeout_ms, 120000, 1, 24 * 3600 * 1000, PGC_USERSET,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("inference.max_response_size",
                            "Largest upstream response body accepted.", nullptr,
                            &setting_max_response_size_kb, 64 * 1024, 1, 1024 * 1024, PGC_USERSET,
                            GUC_UNIT_KB, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("inference.max_retries",
                            "Retries of an upstream request after a connection failure or a "
                            "retryable status (408, 429, 500, 502, 503, 504, 529).",
                            nullptr, &setting_max_retries, 2, 0, 10, PGC_USERSET, 0, nullptr,
                            nullptr, nullptr);
    DefineCustomIntVariable(
        "inference.max_concurrency", "Upstream requests one SQL call may have in flight at once.",
        nullptr, &setting_max_concurrency, 8, 1, 256, PGC_USERSET, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("inference.embedding_batch_size",
                            "Inputs per upstream request in encode_text_batch.", nullptr,
                            &setting_embedding_batch_size, 128, 1, 2048, PGC_USERSET, 0, nullptr,
                            nullptr, nullptr);
    DefineCustomIntVariable("inference.default_max_tokens",
                            "max_tokens sent to upstreams that require it (Anthropic) when the "
                            "caller gives none.",
                            nullptr, &setting_default_max_tokens, 1024, 1, 1000000, PGC_USERSET, 0,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable("inference.health_check_interval",
                            "Time between two rounds of health checks.", nullptr,
                            &setting_health_check_interval_s, 300, 1, 7 * 24 * 3600, PGC_SIGHUP,
                            GUC_UNIT_S, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("inference.health_check_timeout",
                            "Time allowed for one connectivity probe.", nullptr,
                            &setting_health_check_timeout_ms, 10000, 100, 600 * 1000, PGC_SIGHUP,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);
    restrictions_define_settings();
    breakers_define_settings();
    gateway_define_settings();
    governance_define_settings();
    pipeline_worker_define_settings();
    budgets_define_settings();
    request_log_define_settings();
    primary_link_define_settings();
    MarkGUCPrefixReserved("inference");
}

}  // namespace
}  // namespace pgi::pg

void _PG_init(void) {
    using namespace pgi::pg;
    define_settings();
    // In every process that loads the library: preloaded, every backend inherits it.
    log_redaction_install();
    context_trim_install();
    if (!process_shared_preload_libraries_in_progress)
        return;
    loaded_at_startup = true;
    catalog_generation_install_hooks();
#if PG_VERSION_NUM >= 150000
    prev_shmem_request_hook = shmem_request_hook;
    shmem_request_hook = request_shmem;
#else
    request_shmem();
#endif
    prev_shmem_startup_hook = shmem_startup_hook;
    shmem_startup_hook = startup_shmem;
    health_worker_register();
    gateway_workers_register();
    pipeline_worker_register();
}
