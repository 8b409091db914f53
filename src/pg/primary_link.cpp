#include "primary_link.h"

#include "cpp_wall.h"

extern "C" {
#include "utils/guc.h"

#include "libpq-fe.h"
}

#include <cstring>
#include <unistd.h>
#include <vector>

#include "error.h"
#include "settings.h"

namespace pgi::pg {

namespace {

char *setting_primary_conninfo = nullptr;

PGconn *conn = nullptr;
std::string conn_made_from;  // the connection string `conn` was made from

// Bounds on every wait: a primary that does not answer costs the flush seconds, not forever.
constexpr const char *kConnectTimeoutS = "5";
constexpr const char *kStatementTimeout = "-c statement_timeout=30000";
constexpr const char *kTcpUserTimeoutMs = "10000";

std::string current_conninfo() {
    if (setting_primary_conninfo != nullptr && *setting_primary_conninfo != '\0')
        return setting_primary_conninfo;
    const char *standby =
        pg_guard([]() { return GetConfigOption("primary_conninfo", true, false); });
    return standby != nullptr ? standby : "";
}

// libpq's text of a failure, on one line and without the server's severity word (a LOG line
// saying "FATAL:" would read as a fatal error of this server).
std::string reason(const char *text) {
    std::string why = text != nullptr ? text : "";
    for (const char *severity : {"FATAL:  ", "ERROR:  "}) {
        for (std::size_t at; (at = why.find(severity)) != std::string::npos;)
            why.erase(at, std::strlen(severity));
    }
    std::string out;
    for (char c : why) {
        const bool space = c == '\n' || c == '\t' || c == ' ';
        if (space && (out.empty() || out.back() == ' '))
            continue;
        out += space ? ' ' : c;
    }
    while (!out.empty() && out.back() == ' ')
        out.pop_back();
    return out;
}

void drop_connection() {
    if (conn != nullptr)
        PQfinish(conn);
    conn = nullptr;
}

// The primary's connection string with the database of the extension and this link's own
// bounds; what the administrator wrote wins for anything else.
void connect(const std::string &conninfo) {
    char *parse_error = nullptr;
    PQconninfoOption *options = PQconninfoParse(conninfo.c_str(), &parse_error);
    if (options == nullptr) {
        // libpq's reason may quote a piece of the string, which may hold a password.
        PQfreemem(parse_error);
        throw Error(sqlstate::kConfigFileError,
                    "the connection string for the primary is not valid",
                    "Set inference.primary_conninfo (or the standby's primary_conninfo) to a "
                    "libpq connection string.");
    }
    std::vector<const char *> keys, values;
    bool has_connect_timeout = false;
    std::string server_options = kStatementTimeout;
    for (PQconninfoOption *o = options; o->keyword != nullptr; o++) {
        if (o->val == nullptr || *o->val == '\0')
            continue;
        std::string key = o->keyword;
        // The standby's primary_conninfo is for physical replication: its database (if any)
        // is not the extension's.
        if (key == "dbname" || key == "replication" || key == "application_name")
            continue;
        if (key == "options") {
            server_options = std::string(o->val) + " " + kStatementTimeout;
            continue;
        }
        has_connect_timeout = has_connect_timeout || key == "connect_timeout";
        keys.push_back(o->keyword);
        values.push_back(o->val);
    }
    keys.push_back("dbname");
    values.push_back(setting_database);
    keys.push_back("application_name");
    values.push_back("pg_inference usage writer");
    keys.push_back("options");
    values.push_back(server_options.c_str());
    keys.push_back("tcp_user_timeout");
    values.push_back(kTcpUserTimeoutMs);
    if (!has_connect_timeout) {
        keys.push_back("connect_timeout");
        values.push_back(kConnectTimeoutS);
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    conn = PQconnectdbParams(keys.data(), values.data(), 0);
    PQconninfoFree(options);
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
        std::string why = conn != nullptr ? reason(PQerrorMessage(conn)) : "out of memory";
        drop_connection();
        throw Error(sqlstate::kUpstreamUnreachable, "could not connect to the primary: " + why,
                    "The counts wait in shared memory and are sent when the primary is back.");
    }
    conn_made_from = conninfo;
}

}  // namespace

void primary_link_define_settings() {
    DefineCustomStringVariable(
        "inference.primary_conninfo",
        "Connection string a hot standby uses to record its gateway's usage on the primary.",
        "Empty: the standby's primary_conninfo, with the database set to inference.database.",
        &setting_primary_conninfo, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
}

namespace {

// Runs one statement on the primary over this process's connection (made or remade as needed)
// and returns the first row's values.
std::vector<std::string> query_primary(const char *sql, const std::vector<std::string> &args) {
    const std::string conninfo = current_conninfo();
    if (conninfo.empty()) {
        throw Error(sqlstate::kConfigFileError,
                    "this standby has no connection string for its primary",
                    "Set inference.primary_conninfo, or primary_conninfo.");
    }
    if (conn != nullptr && (conninfo != conn_made_from || PQstatus(conn) != CONNECTION_OK))
        drop_connection();
    if (conn == nullptr)
        connect(conninfo);
    std::vector<const char *> params;
    for (const std::string &a : args)
        params.push_back(a.c_str());
    PGresult *res = PQexecParams(conn, sql, static_cast<int>(params.size()), nullptr, params.data(),
                                 nullptr, nullptr, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        std::string why = reason(PQresultErrorMessage(res));
        if (why.empty())
            why = reason(PQerrorMessage(conn));
        PQclear(res);
        // Whatever failed, the next try starts from a fresh connection.
        drop_connection();
        throw Error(sqlstate::kUpstreamUnreachable, "the primary did not answer: " + why,
                    "Counts wait in shared memory and are sent again.");
    }
    std::vector<std::string> row;
    for (int i = 0; i < PQnfields(res); i++)
        row.emplace_back(PQgetvalue(res, 0, i));
    PQclear(res);
    return row;
}

}  // namespace

bool record_usage_on_primary(const std::string &batch_id, const std::string &node,
                             const std::string &rows) {
    return query_primary("SELECT inference_internal.record_usage($1::uuid, $2, $3::jsonb)",
                         {batch_id, node, rows})
               .at(0) == "t";
}

governance::Lease lend_on_primary(const std::string &key, int64_t requests, int64_t tokens) {
    std::vector<std::string> row =
        query_primary("SELECT requests, tokens FROM inference_internal.lend_limits($1, $2, $3)",
                      {key, std::to_string(requests), std::to_string(tokens)});
    return {std::stoll(row.at(0)), std::stoll(row.at(1)), true};
}

std::string node_name() {
    const char *cluster = pg_guard([]() { return GetConfigOption("cluster_name", true, false); });
    if (cluster != nullptr && *cluster != '\0')
        return cluster;
    char host[256] = {0};
    if (gethostname(host, sizeof(host) - 1) != 0)
        host[0] = '\0';
    const char *port = pg_guard([]() { return GetConfigOption("port", true, false); });
    return std::string(host) + ":" + (port != nullptr ? port : "");
}

}  // namespace pgi::pg
