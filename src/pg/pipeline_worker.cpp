// The pipeline worker: a background worker that keeps each pipeline's embeddings up to date
// (docs/pipelines.md). For each active pipeline with queued rows it takes a batch and works in
// three steps, each its own transaction:
//   1. read:  the queued keys, and as the pipeline's owner the rows' current input and its hash;
//   2. embed: the inputs whose hash differs from the one last embedded, with the SQL path's
//             client (curl multi, retries), in a transaction that touches no source table, so
//             no lock on the source is held while waiting on the network;
//   3. write: as the owner, each result only where the row's input still has the hash it was
//             computed from (the UPDATE re-checks it under the row's lock); then the queue: a row
//             leaves it only if it was not queued again meanwhile.
// A crash anywhere loses nothing: the queue is a table, and a step that did not commit is redone.
#include "pipeline_worker.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

PGDLLEXPORT void pgi_pipeline_worker_main(Datum arg);
PGDLLEXPORT Datum pgi_calling_role(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(pgi_calling_role);
}

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "chunking.h"
#include "json_array.h"
#include "model_calls.h"
#include "route_calls.h"
#include "service_catalog.h"
#include "settings.h"
#include "spi_connection.h"
#include "translate_util.h"
#include "worker_connection.h"
#include "worker_transaction.h"

namespace pgi::pg {

int setting_pipeline_max_attempts = 5;
int setting_pipeline_workers = 2;

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// How often an idle worker looks for queued rows: the lag of a quiet pipeline.
constexpr long kIdleWaitMs = 100;
// Each step's statements; the embed step is bounded by the requests' own timeouts.
constexpr int kStatementTimeoutMs = 60000;

// This worker's share of every queue: the pool's workers split the rows by a hash of their key,
// so no two of them ever hold the same row, its hash or its chunks, and no claim is needed.
struct Share {
    int index = 0;  // 0 .. count - 1
    int count = 1;
};

struct Pipeline {
    std::string name, source, input, service, destination, chunk_table, dest_type, owner;
    std::vector<std::string> keys, key_types;
    int chunk_size = 0, overlap = 0, batch = 0;
};

struct Row {
    std::string key;  // the key as jsonb text
    int64_t version = 0;
    bool deleted = false;
    std::optional<std::string> stored_md5;  // what the embedding in place was made from
    std::optional<std::string> input, md5;  // the row's input now; none: the row is gone
    std::vector<std::string> chunks;
    std::vector<std::vector<float>> vectors;
};

using Rows = std::vector<SpiTextRow>;

// Runs a statement with text parameters through SPI in the current transaction; its rows.
Rows query(const std::string &sql, const std::vector<std::string> &args) {
    SpiConnection spi;
    spi.exec(sql.c_str(), spi_texts(args), false);
    return spi.text_rows();
}

// Runs what follows as `role`, restricted as PostgreSQL restricts maintenance commands run for a
// table's owner: the input expression and the writes never get the worker's rights. An error
// restores the worker's own identity with the transaction's abort.
class AsRole {
  public:
    explicit AsRole(const std::string &role) {
        pg_guard_void([&]() {
            GetUserIdAndSecContext(&saved_user_, &saved_context_);
            const Oid id = get_role_oid(role.c_str(), false);
            SetUserIdAndSecContext(
                id, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
        });
    }
    ~AsRole() { SetUserIdAndSecContext(saved_user_, saved_context_); }
    AsRole(const AsRole &) = delete;
    AsRole &operator=(const AsRole &) = delete;

  private:
    Oid saved_user_ = InvalidOid;
    int saved_context_ = 0;
};

std::string ident(const std::string &name) {
    return pg_guard([&]() { return std::string(quote_identifier(name.c_str())); });
}

std::string literal(const std::string &text) {
    return pg_guard([&]() { return std::string(quote_literal_cstr(text.c_str())); });
}

// (k1, k2) = ((<json>->>'k1')::type1, ...): a row of the key's columns against a jsonb key.
std::string key_match(const Pipeline &p, const std::string &qualifier, const std::string &json) {
    std::string left, right;
    for (size_t i = 0; i < p.keys.size(); i++) {
        left += (i ? ", " : "") + qualifier + ident(p.keys[i]);
        right += std::string(i ? ", " : "") + "(" + json + "->>" + literal(p.keys[i]) +
                 ")::" + p.key_types[i];
    }
    return "(" + left + ") = (" + right + ")";
}

std::string pg_array(const std::vector<float> &v) {
    std::string out = "{";
    char buf[32];
    for (size_t i = 0; i < v.size(); i++) {
        std::snprintf(buf, sizeof(buf), "%s%.9g", i ? "," : "", static_cast<double>(v[i]));
        out += buf;
    }
    return out + "}";
}

std::vector<std::string> text_array(const std::optional<std::string> &literal_array) {
    std::vector<std::string> out;
    if (!literal_array)
        return out;
    // A text[] of plain identifiers and type names, as array_out writes them.
    std::string s = literal_array->substr(1, literal_array->size() - 2);
    std::string item;
    bool quoted = false;
    for (size_t i = 0; i < s.size(); i++) {
        const char c = s[i];
        if (c == '"') {
            quoted = !quoted;
        } else if (c == '\\' && i + 1 < s.size()) {
            item += s[++i];
        } else if (c == ',' && !quoted) {
            out.push_back(item);
            item.clear();
        } else {
            item += c;
        }
    }
    out.push_back(item);
    return out;
}

std::vector<Pipeline> ready_pipelines() {
    // Until CREATE EXTENSION in inference.database (or ALTER EXTENSION ... UPDATE after a new
    // library) there is nothing to do, and nothing to say.
    if (!extension_ready("pg_inference pipeline worker"))
        return {};
    Rows rows = query(
        "SELECT p.name, p.source::text, p.input, p.service, p.destination, p.chunk_table::text, "
        "       p.dest_type, p.owner, p.key_columns::text, "
        "       (SELECT array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY k.n)::text "
        "          FROM unnest(p.key_columns) WITH ORDINALITY AS k (col, n) "
        "          JOIN pg_attribute a ON a.attrelid = p.source AND a.attname = k.col), "
        "       coalesce(p.chunk_size, 0)::text, p.chunk_overlap::text, "
        "       coalesce(p.batch_size, $1::int)::text "
        "  FROM inference.pipeline_store p "
        " WHERE p.state = 'active' AND EXISTS ( "
        "       SELECT 1 FROM inference.pipeline_queue q WHERE q.pipeline = p.name "
        "          AND (q.not_before IS NULL OR q.not_before <= now())) "
        " ORDER BY p.name",
        {std::to_string(setting_embedding_batch_size)});
    std::vector<Pipeline> out;
    for (auto &r : rows) {
        Pipeline p;
        p.name = *r[0];
        p.source = *r[1];
        p.input = *r[2];
        p.service = *r[3];
        p.destination = r[4].value_or("");
        p.chunk_table = r[5].value_or("");
        p.dest_type = *r[6];
        p.owner = *r[7];
        p.keys = text_array(r[8]);
        p.key_types = text_array(r[9]);
        p.chunk_size = std::stoi(*r[10]);
        p.overlap = std::stoi(*r[11]);
        p.batch = std::stoi(*r[12]);
        out.push_back(std::move(p));
    }
    return out;
}

// Step 1: a batch of this worker's queued rows, and their inputs now.
std::vector<Row> read_batch(const Pipeline &p, const Share &share) {
    std::vector<Row> batch;
    const int limit = p.batch * std::max(1, setting_max_concurrency);
    Rows queued = query(
        // The batch first (the oldest changes, by the queue's index), then each row's hash by
        // its key: a join of the whole queue with every hash would cost a pass over both for
        // every batch.
        "SELECT q.row_key::text, q.version::text, q.deleted, "
        "       (SELECT r.input_md5 FROM inference.pipeline_rows r "
        "         WHERE r.pipeline = q.pipeline AND r.row_key = q.row_key) "
        "  FROM (SELECT * FROM inference.pipeline_queue q "
        "         WHERE q.pipeline = $1 AND (q.not_before IS NULL OR q.not_before <= now()) "
        "           AND (hashtext(q.row_key::text) & 2147483647) % $3::int = $4::int "
        "         ORDER BY q.queued_at LIMIT $2::int) AS q",
        {p.name, std::to_string(limit), std::to_string(share.count), std::to_string(share.index)});
    // Keys go into the batches' JSON as the jsonb text PostgreSQL wrote them (valid JSON, and the
    // same text for the same key every time, so they are also compared as text), hashes as hex
    // and embeddings as array literals of numbers: only chunks and errors need escaping.
    JsonArray keys;
    for (auto &q : queued) {
        Row row;
        row.key = *q[0];
        row.version = std::stoll(*q[1]);
        row.deleted = *q[2] == "t";
        row.stored_md5 = q[3];
        if (!row.deleted)
            keys.value(row.key);
        batch.push_back(std::move(row));
    }
    if (keys.empty())
        return batch;
    // Each row by its key (an index lookup each), never a pass over the source.
    const std::string read =
        "SELECT pgi_k.pgi_key::text, pgi_v.pgi_input, md5(pgi_v.pgi_input)"
        "  FROM jsonb_array_elements($1::jsonb) AS pgi_k (pgi_key)"
        "  CROSS JOIN LATERAL (SELECT (" +
        p.input + ")::text AS pgi_input FROM " + p.source + " AS pgi_s WHERE " +
        key_match(p, "pgi_s.", "pgi_k.pgi_key") + ") AS pgi_v";
    Rows inputs;
    {
        AsRole owner(p.owner);
        inputs = query(read, {keys.take()});
    }
    std::map<std::string, std::pair<std::optional<std::string>, std::optional<std::string>>> now;
    for (auto &i : inputs)
        now[*i[0]] = {i[1], i[2]};
    for (Row &row : batch) {
        auto it = now.find(row.key);
        if (it != now.end() && it->second.first && !it->second.first->empty()) {
            row.input = it->second.first;
            row.md5 = it->second.second;
        }
    }
    return batch;
}

// Step 2: embeds the rows whose input changed; an upstream failure is thrown.
void embed_rows(const Pipeline &p, std::vector<Row *> &todo) {
    std::vector<std::string> inputs;
    for (Row *row : todo) {
        row->chunks = p.chunk_size > 0 ? chunk_text(*row->input, static_cast<size_t>(p.chunk_size),
                                                    static_cast<size_t>(p.overlap))
                                       : std::vector<std::string>{*row->input};
        inputs.insert(inputs.end(), row->chunks.begin(), row->chunks.end());
    }
    std::vector<std::vector<float>> vectors;
    TransactionLimits limits;
    run_in_transaction("pg_inference pipeline worker: embedding", limits, [&]() {
        call_named(p.service, [&](const ServiceRow &service, translate::Usage &usage) {
            vectors = embed(endpoint_of(service), inputs, json::object(), usage);
        });
    });
    size_t next = 0;
    for (Row *row : todo) {
        row->vectors.assign(vectors.begin() + static_cast<long>(next),
                            vectors.begin() + static_cast<long>(next + row->chunks.size()));
        next += row->chunks.size();
    }
}

// Step 3: writes the results whose row still has the input they were made from; returns the
// keys written.
std::set<std::string> write_results(const Pipeline &p, const std::vector<Row *> &done,
                                    const std::vector<Row *> &removed) {
    std::set<std::string> written;
    AsRole owner(p.owner);
    if (p.dest_type != "table") {
        // A row whose input became NULL or empty has no embedding any more (a deleted row's
        // went with it).
        JsonArray cleared;
        for (const Row *row : removed)
            cleared.value(row->key);
        if (!cleared.empty())
            query("UPDATE " + p.source + " AS pgi_s SET " + ident(p.destination) +
                      " = NULL FROM jsonb_array_elements($1::jsonb) AS pgi_k (pgi_key) WHERE " +
                      key_match(p, "pgi_s.", "pgi_k.pgi_key") + " AND pgi_s." +
                      ident(p.destination) + " IS NOT NULL AND coalesce((" + p.input +
                      ")::text, '') = ''",
                  {cleared.take()});
        if (done.empty())
            return written;
        JsonArray rows;
        for (const Row *row : done)
            rows.object()
                .raw("pgi_key", row->key)
                .text("pgi_h", *row->md5)
                .text("pgi_emb", pg_array(row->vectors.front()));
        const std::string cast = p.dest_type == "vector" ? "::real[]::vector" : "::real[]";
        Rows out = query("UPDATE " + p.source + " AS pgi_s SET " + ident(p.destination) +
                             " = pgi_r.pgi_emb" + cast +
                             "  FROM json_to_recordset($1::json) AS pgi_r (pgi_key jsonb, pgi_h "
                             "text, pgi_emb text)"
                             " WHERE " +
                             key_match(p, "pgi_s.", "pgi_r.pgi_key") + "   AND md5((" + p.input +
                             ")::text) = pgi_r.pgi_h"
                             " RETURNING pgi_r.pgi_key::text",
                         {rows.take()});
        for (auto &r : out)
            written.insert(*r[0]);
        return written;
    }
    // A table of chunks: lock the rows whose input is unchanged, replace their chunks.
    JsonArray check;
    for (const Row *row : done)
        check.object().raw("pgi_key", row->key).text("pgi_h", *row->md5);
    if (!done.empty()) {
        Rows out = query(
            "SELECT pgi_r.pgi_key::text FROM json_to_recordset($1::json) AS pgi_r "
            "(pgi_key jsonb, pgi_h text) JOIN " +
                p.source + " AS pgi_s ON " + key_match(p, "pgi_s.", "pgi_r.pgi_key") +
                " WHERE md5((" + p.input +
                ")::text) = pgi_r.pgi_h"
                " FOR UPDATE OF pgi_s",
            {check.take()});
        for (auto &r : out)
            written.insert(*r[0]);
    }
    JsonArray clear;
    JsonArray chunks;
    for (const Row *row : done) {
        if (!written.count(row->key))
            continue;
        clear.value(row->key);
        for (size_t i = 0; i < row->chunks.size(); i++)
            chunks.object()
                .raw("pgi_key", row->key)
                .raw("pgi_seq", std::to_string(i + 1))
                .text("pgi_chunk", row->chunks[i])
                .text("pgi_emb", pg_array(row->vectors[i]));
    }
    for (const Row *row : removed)
        clear.value(row->key);
    if (!clear.empty())
        query("DELETE FROM " + p.chunk_table +
                  " AS pgi_c USING jsonb_array_elements($1::jsonb) "
                  "AS pgi_k (pgi_key) WHERE " +
                  key_match(p, "pgi_c.", "pgi_k.pgi_key"),
              {clear.take()});
    if (!chunks.empty()) {
        std::string columns, values;
        for (size_t i = 0; i < p.keys.size(); i++) {
            columns += ident(p.keys[i]) + ", ";
            values += "(pgi_r.pgi_key->>" + literal(p.keys[i]) + ")::" + p.key_types[i] + ", ";
        }
        query("INSERT INTO " + p.chunk_table + " (" + columns +
                  "chunk_seq, chunk, embedding) SELECT " + values +
                  "pgi_r.pgi_seq, pgi_r.pgi_chunk, pgi_r.pgi_emb::real[] FROM "
                  "json_to_recordset($1::json) AS pgi_r (pgi_key jsonb, pgi_seq int, pgi_chunk "
                  "text, pgi_emb text)",
              {chunks.take()});
    }
    return written;
}

// Records the batch's outcome in the queue and the catalog (as the worker).
void settle(const Pipeline &p, JsonArray &outcome, double rows_per_second) {
    query("SELECT inference_internal.pipeline_settle($1, $2::jsonb, $3::int, $4::float8)",
          {p.name, outcome.take(), std::to_string(setting_pipeline_max_attempts),
           std::to_string(rows_per_second)});
}

// Whether a failure is the upstream's (down, overloaded, too slow: the row waits, however long)
// or the input's (refused: it counts towards inference.pipeline_max_attempts).
bool upstream_trouble(const std::exception &e) {
    const auto *failed = dynamic_cast<const AttemptFailed *>(&e);
    if (failed == nullptr)
        return true;  // not an answer about the input: the catalog, a cancel
    const routing::Failure &f = failed->failure();
    return f.kind != routing::Failure::Kind::kStatus || f.status == 408 || f.status == 429 ||
           f.status >= 500;
}

void entry(JsonArray &out, const Row &row, const char *what, const std::string &error = {}) {
    out.object().raw("k", row.key).raw("v", std::to_string(row.version)).text("o", what);
    if (row.md5)
        out.text("h", *row.md5);
    if (!error.empty())
        out.text("e", error);
}

// One batch of one pipeline. Returns the rows it handled.
size_t run_batch(const Pipeline &p, const Share &share) {
    const auto started = Clock::now();
    std::vector<Row> batch;
    TransactionLimits limits;
    limits.lock_timeout_ms = 1000;
    limits.statement_timeout_ms = kStatementTimeoutMs;
    run_in_transaction("pg_inference pipeline worker: reading", limits,
                       [&]() { batch = read_batch(p, share); });
    if (batch.empty())
        return 0;
    std::vector<Row *> todo, removed, unchanged;
    for (Row &row : batch) {
        if (!row.input)
            removed.push_back(&row);
        else if (row.stored_md5 && row.md5 == row.stored_md5)
            unchanged.push_back(&row);
        else
            todo.push_back(&row);
    }
    JsonArray outcome;
    if (!todo.empty()) {
        std::string failure;
        bool trouble = false;
        try {
            embed_rows(p, todo);
        } catch (const std::exception &e) {
            failure = e.what();
            trouble = upstream_trouble(e);
        }
        if (!failure.empty() && trouble) {
            // The upstream is down or overloaded: every row waits for the next try.
            for (Row *row : todo)
                entry(outcome, *row, "waiting", failure);
            todo.clear();
        } else if (!failure.empty()) {
            // An input was refused: the rows are tried one by one, so that an input that always
            // fails keeps no other row from its embedding.
            std::vector<Row *> ok;
            for (Row *row : todo) {
                std::vector<Row *> one{row};
                try {
                    embed_rows(p, one);
                    ok.push_back(row);
                } catch (const std::exception &e) {
                    entry(outcome, *row, upstream_trouble(e) ? "waiting" : "failed", e.what());
                }
            }
            todo = ok;
        }
    }
    size_t written_count = 0;
    run_in_transaction("pg_inference pipeline worker: writing", limits, [&]() {
        const std::set<std::string> written = write_results(p, todo, removed);
        for (const Row *row : todo) {
            entry(outcome, *row, written.count(row->key) > 0 ? "written" : "stale");
        }
        written_count = written.size();
        for (const Row *row : removed)
            entry(outcome, *row, "removed");
        for (const Row *row : unchanged)
            entry(outcome, *row, "unchanged");
        const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
        // The pool's workers take their shares side by side: the pipeline's rate is about as
        // many times this batch's.
        settle(p, outcome,
               seconds > 0 ? static_cast<double>(written_count) * share.count / seconds : 0);
    });
    return batch.size();
}

// Every statement of the worker reads or writes rows by key: a batch of keys against the queue,
// the hashes, the source and the chunk table. The queue and the hashes change size by orders of
// magnitude (a backfill queues every row of the source at once, the hashes grow from none to all)
// long before autovacuum's statistics follow, and with stale statistics the planner sorted the
// whole queue for every batch or scanned the hashes once per row. So the worker plans nested
// loops over indexes whatever the statistics say.
void plan_lookups_by_key() {
    pg_guard_void([]() {
        for (const char *name : {"enable_seqscan", "enable_bitmapscan", "enable_sort",
                                 "enable_hashjoin", "enable_mergejoin", "enable_material"})
            SetConfigOption(name, "off", PGC_SUSET, PGC_S_OVERRIDE);
    });
}

void worker_loop(const Share &share) {
    plan_lookups_by_key();
    MemoryContext turn_cxt =
        AllocSetContextCreate(TopMemoryContext, "pg_inference pipelines", ALLOCSET_SMALL_SIZES);
    MemoryContextSwitchTo(turn_cxt);
    int64_t last_log_ms = 0;
    for (;;) {
        MemoryContextReset(turn_cxt);
        size_t handled = 0;
        try {
            pg_guard_void([&]() {
                CHECK_FOR_INTERRUPTS();
                if (ConfigReloadPending) {
                    ConfigReloadPending = false;
                    ProcessConfigFile(PGC_SIGHUP);
                }
            });
            if (!pg_guard([]() { return RecoveryInProgress(); })) {
                std::vector<Pipeline> ready;
                TransactionLimits limits;
                limits.lock_timeout_ms = 1000;
                limits.statement_timeout_ms = kStatementTimeoutMs;
                run_in_transaction("pg_inference pipeline worker: looking for work", limits,
                                   [&]() { ready = ready_pipelines(); });
                for (const Pipeline &p : ready)
                    handled += run_batch(p, share);
            }
        } catch (const std::exception &e) {
            // A failure outside an upstream call (a lock, a dropped table, a cancel): logged at
            // most every 10 s; the queue keeps the rows for the next turn.
            const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                    Clock::now().time_since_epoch())
                                    .count();
            if (now - last_log_ms >= 10000) {
                last_log_ms = now;
                std::string msg = e.what();
                pg_guard_void([&]() {
                    ereport(LOG, (errmsg("pg_inference pipeline worker: %s", msg.c_str())));
                });
            }
        }
        if (handled == 0) {
            pg_guard_void([&]() {
                (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                kIdleWaitMs, PG_WAIT_EXTENSION);
                ResetLatch(MyLatch);
            });
        }
    }
}

}  // namespace

void pipeline_worker_define_settings() {
    DefineCustomIntVariable("inference.pipeline_max_attempts",
                            "Failed tries after which a pipeline's row goes to "
                            "inference.pipeline_errors.",
                            nullptr, &setting_pipeline_max_attempts, 5, 1, 1000, PGC_SIGHUP, 0,
                            nullptr, nullptr, nullptr);
    if (process_shared_preload_libraries_in_progress)
        DefineCustomIntVariable("inference.pipeline_workers",
                                "Background workers draining the pipelines' queues side by side.",
                                nullptr, &setting_pipeline_workers, 2, 1, 16, PGC_POSTMASTER, 0,
                                nullptr, nullptr, nullptr);
}

void pipeline_worker_register() {
    for (int i = 0; i < setting_pipeline_workers; i++) {
        const std::string name = "pg_inference pipeline worker " + std::to_string(i + 1);
        worker_register("pgi_pipeline_worker_main", name.c_str(), "pg_inference pipeline worker",
                        false, i);
    }
}

}  // namespace pgi::pg

void pgi_pipeline_worker_main(Datum arg) {
    using namespace pgi::pg;
    const Share share{DatumGetInt32(arg), setting_pipeline_workers};
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    worker_connect("pg_inference pipeline worker");
    const std::string failure = run_worker_loop([&]() { worker_loop(share); });
    ereport(FATAL, (errmsg("pg_inference pipeline worker stopped: %s", failure.c_str())));
}

// inference_internal.calling_role(): the role outside the SECURITY DEFINER function that calls it.
Datum pgi_calling_role(PG_FUNCTION_ARGS) {
    (void)fcinfo;
    const char *name = GetUserNameFromId(GetOuterUserId(), false);
    return DirectFunctionCall1(namein, CStringGetDatum(name));
}
