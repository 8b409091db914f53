// The probe diagnosis table, row by row and protocol by protocol, on synthetic
// responses; probe_all over real HTTP is tested in http_client_test.cpp next to its server.
#include "probe.h"

#include <curl/curl.h>
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "http_client.h"
#include "protocol.h"

namespace {

using pgi::Protocol;
using pgi::ServiceEndpoint;
using pgi::http::Response;
using pgi::probe::diagnose;
using pgi::probe::diagnose_list_fallback;
using pgi::probe::Result;

const Protocol kAllProtocols[] = {Protocol::kOpenAiV1, Protocol::kGeminiV1Beta,
                                  Protocol::kAnthropicV1};
const std::string kUrl = "https://api.example.com/v1/models/m";
const char *kTlsHint =
    "A private-CA or self-signed endpoint needs ca_file => the CA's PEM file (a superuser sets "
    "it), or allow_insecure => true. An endpoint that asks for a client certificate needs "
    "client_cert_file and client_key_file.";

ServiceEndpoint endpoint(Protocol protocol, const std::string &model = "m") {
    ServiceEndpoint s;
    s.name = "svc";
    s.model = model;
    s.base_url = "https://api.example.com";
    s.protocol = protocol;
    s.api_key = "sk-secret-key";
    return s;
}

Response answer(long status, const std::string &body = "") {
    Response r;
    r.status = status;
    r.body = body;
    return r;
}

Response transport_failure(int code, const std::string &text, bool tls = false) {
    Response r;
    r.curl_code = code;
    r.transport_error = text;
    r.tls_error = tls;
    return r;
}

void expect_failure(const Result &r, const std::string &sqlstate, const std::string &message,
                    long status) {
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.sqlstate, sqlstate);
    EXPECT_EQ(r.message, message);
    EXPECT_EQ(r.http_status, status);
    EXPECT_EQ(r.url, kUrl);
}

TEST(ProbeUrl, PerProtocolPaths) {
    ServiceEndpoint s = endpoint(Protocol::kOpenAiV1, "gpt-4o");
    EXPECT_EQ(pgi::probe::probe_url(s), "https://api.example.com/v1/models/gpt-4o");
    s.protocol = Protocol::kAnthropicV1;
    EXPECT_EQ(pgi::probe::probe_url(s), "https://api.example.com/v1/models/gpt-4o");
    s.protocol = Protocol::kGeminiV1Beta;
    s.model = "gemini-2.0-flash";
    EXPECT_EQ(pgi::probe::probe_url(s), "https://api.example.com/v1beta/models/gemini-2.0-flash");
    s = endpoint(Protocol::kOpenAiV1, "meta/llama-3.1-8b-instruct");
    s.base_url = "http://nim.local:8000/prefix";
    EXPECT_EQ(pgi::probe::probe_url(s),
              "http://nim.local:8000/prefix/v1/models/meta/llama-3.1-8b-instruct");
    EXPECT_EQ(pgi::probe::probe_url(s).find("sk-"), std::string::npos);
}

TEST(Diagnose, SuccessStatusesAreOk) {
    for (Protocol p : kAllProtocols) {
        for (long status : {200L, 204L}) {
            Result r = diagnose(endpoint(p), kUrl, answer(status, "{}"));
            EXPECT_TRUE(r.ok);
            EXPECT_EQ(r.message, "");
            EXPECT_EQ(r.sqlstate, "");
            EXPECT_EQ(r.hint, "");
            EXPECT_EQ(r.http_status, status);
            EXPECT_EQ(r.url, kUrl);
        }
    }
}

TEST(Diagnose, Unauthorized) {
    const std::string body =
        R"({"error":{"message":"Incorrect API key","code":"invalid_api_key"}})";
    for (Protocol p : {Protocol::kOpenAiV1, Protocol::kGeminiV1Beta})
        expect_failure(diagnose(endpoint(p), kUrl, answer(401, body)), "PI401",
                       "API key is missing or invalid (status 401 from " + kUrl + ")", 401);
    expect_failure(
        diagnose(endpoint(Protocol::kAnthropicV1), kUrl,
                 answer(401, R"({"type":"error","error":{"type":"authentication_error"}})")),
        "PI401",
        "API key is missing/invalid or account credits are exhausted (status 401 from " + kUrl +
            ")",
        401);
    // vLLM's plain shape, and no body at all.
    expect_failure(
        diagnose(endpoint(Protocol::kOpenAiV1), kUrl, answer(401, R"({"error":"Unauthorized"})")),
        "PI401", "API key is missing or invalid (status 401 from " + kUrl + ")", 401);
    expect_failure(diagnose(endpoint(Protocol::kOpenAiV1), kUrl, answer(401)), "PI401",
                   "API key is missing or invalid (status 401 from " + kUrl + ")", 401);
}

const std::string kGeminiBadKey =
    R"({"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",)"
    R"("status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",)"
    R"("reason":"API_KEY_INVALID","domain":"googleapis.com"}]}})";

TEST(Diagnose, GeminiInvalidKeyIsAnAuthFailure) {
    expect_failure(diagnose(endpoint(Protocol::kGeminiV1Beta), kUrl, answer(400, kGeminiBadKey)),
                   "PI401", "API key is missing or invalid (status 400 from " + kUrl + ")", 400);
}

TEST(Diagnose, OtherBadRequestsAreUnexpected) {
    // API_KEY_INVALID only means a bad key on Gemini.
    for (Protocol p : {Protocol::kOpenAiV1, Protocol::kAnthropicV1})
        expect_failure(diagnose(endpoint(p), kUrl, answer(400, kGeminiBadKey)), "PI400",
                       "unexpected status 400 from " + kUrl +
                           ": API key not valid. Please pass a valid API key.",
                       400);
    expect_failure(diagnose(endpoint(Protocol::kGeminiV1Beta), kUrl,
                            answer(400, R"({"error":{"code":400,"message":"bad model",)"
                                        R"("status":"INVALID_ARGUMENT"}})")),
                   "PI400", "unexpected status 400 from " + kUrl + ": bad model", 400);
}

TEST(Diagnose, TheUpstreamsWordsAreRedacted) {
    // The status message is readable by every role: a key quoted back must not reach it.
    ServiceEndpoint s = endpoint(Protocol::kOpenAiV1);
    expect_failure(diagnose(s, kUrl, answer(400, R"({"error":{"message":"key sk-secret-key?"}})")),
                   "PI400", "unexpected status 400 from " + kUrl + ": key [redacted]?", 400);
    // A one-letter key: every occurrence in the upstream's words goes, the URL and ours stay.
    s.api_key = "e";
    expect_failure(diagnose(s, kUrl, answer(409, R"({"error":{"message":"see"}})")), "PI400",
                   "unexpected status 409 from " + kUrl + ": s[redacted]", 409);
    expect_failure(diagnose(s, kUrl, transport_failure(7, "host e down")), "08001",
                   "endpoint unreachable: host [redacted] down", 0);
}

TEST(Diagnose, Forbidden) {
    for (Protocol p : kAllProtocols)
        expect_failure(
            diagnose(endpoint(p), kUrl, answer(403, R"({"error":{"message":"no"}})")), "PI403",
            "API key lacks permission for this endpoint (status 403 from " + kUrl + ")", 403);
}

TEST(Diagnose, NotFound) {
    for (Protocol p : kAllProtocols)
        expect_failure(
            diagnose(endpoint(p), kUrl, answer(404, R"({"detail":"Not Found"})")), "PI404",
            "endpoint not found \u2014 check the base URL and model name (status 404 from " + kUrl +
                ")",
            404);
}

TEST(Diagnose, QuotaExhausted) {
    const char *quota = "account quota exhausted \u2014 check billing and credits";
    // OpenAI sends both type and code; either one is enough.
    for (
        const char *body :
        {R"({"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}})",
         R"({"error":{"message":"quota","type":"requests","code":"insufficient_quota"}})",
         R"({"error":{"message":"quota","type":"insufficient_quota","code":null}})"}) {
        for (Protocol p : kAllProtocols)
            expect_failure(diagnose(endpoint(p), kUrl, answer(429, body)), "PI429", quota, 429);
    }
}

TEST(Diagnose, RateLimited) {
    for (const char *body :
         {R"({"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}})",
          R"({"type":"error","error":{"type":"rate_limit_error","message":"slow"}})",
          R"({"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}})", ""}) {
        for (Protocol p : kAllProtocols)
            expect_failure(diagnose(endpoint(p), kUrl, answer(429, body)), "PI429",
                           "rate limited by upstream", 429);
    }
}

TEST(Diagnose, TemporarilyUnavailable) {
    for (Protocol p : kAllProtocols) {
        for (long status : {503L, 529L})
            expect_failure(diagnose(endpoint(p), kUrl, answer(status, "overloaded")), "PI500",
                           "upstream is temporarily unavailable (status " + std::to_string(status) +
                               " from " + kUrl + ")",
                           status);
    }
}

TEST(Diagnose, OtherServerErrors) {
    for (Protocol p : kAllProtocols) {
        for (long status : {500L, 501L, 502L, 504L, 599L})
            expect_failure(
                diagnose(endpoint(p), kUrl, answer(status, "oops")), "PI500",
                "upstream server error (status " + std::to_string(status) + " from " + kUrl + ")",
                status);
    }
}

TEST(Diagnose, TlsFailureIsUnreachableWithHint) {
    for (Protocol p : kAllProtocols) {
        Result r =
            diagnose(endpoint(p), kUrl,
                     transport_failure(CURLE_PEER_FAILED_VERIFICATION,
                                       "SSL certificate problem: self-signed certificate", true));
        expect_failure(r, "08001",
                       "endpoint unreachable: SSL certificate problem: self-signed certificate", 0);
        EXPECT_EQ(r.hint, kTlsHint);
    }
    Result handshake = diagnose(
        endpoint(Protocol::kOpenAiV1), kUrl,
        transport_failure(CURLE_SSL_CONNECT_ERROR, "OpenSSL SSL_connect: SSL_ERROR_SYSCALL", true));
    EXPECT_EQ(handshake.sqlstate, "08001");
    EXPECT_EQ(handshake.hint, kTlsHint);
}

TEST(Diagnose, TransportFailuresAreUnreachable) {
    struct Case {
        int code;
        const char *text;
    };
    const Case cases[] = {
        {CURLE_COULDNT_RESOLVE_HOST, "Could not resolve host: nowhere.invalid"},
        {CURLE_COULDNT_CONNECT, "Failed to connect to 127.0.0.1 port 1: Connection refused"},
        {CURLE_OPERATION_TIMEDOUT, "Operation timed out after 10001 milliseconds with 0 bytes"},
        {CURLE_GOT_NOTHING, "Empty reply from server"},
    };
    for (Protocol p : kAllProtocols) {
        for (const Case &c : cases) {
            Result r = diagnose(endpoint(p), kUrl, transport_failure(c.code, c.text));
            expect_failure(r, "08001", std::string("endpoint unreachable: ") + c.text, 0);
            EXPECT_EQ(r.hint, "");
        }
    }
    // Cut off after the status line: still a failed probe, not a success.
    Response cut = transport_failure(CURLE_RECV_ERROR, "Recv failure: Connection reset by peer");
    cut.status = 200;
    expect_failure(diagnose(endpoint(Protocol::kOpenAiV1), kUrl, cut), "08001",
                   "endpoint unreachable: Recv failure: Connection reset by peer", 200);
}

TEST(Diagnose, OversizedAnswerIsABadResponse) {
    Response big = transport_failure(CURLE_WRITE_ERROR, "response larger than 1024 bytes");
    big.status = 200;
    big.too_large = true;
    expect_failure(diagnose(endpoint(Protocol::kOpenAiV1), kUrl, big), "PI400",
                   "unexpected response from " + kUrl + ": response larger than 1024 bytes", 200);
}

TEST(Diagnose, AnythingElseIsUnexpected) {
    for (Protocol p : kAllProtocols) {
        expect_failure(
            diagnose(endpoint(p), kUrl, answer(409, R"({"error":{"message":"conflict here"}})")),
            "PI400", "unexpected status 409 from " + kUrl + ": conflict here", 409);
        expect_failure(diagnose(endpoint(p), kUrl, answer(422, R"({"detail":"Unprocessable"})")),
                       "PI400", "unexpected status 422 from " + kUrl + ": Unprocessable", 422);
        expect_failure(diagnose(endpoint(p), kUrl, answer(301)), "PI400",
                       "unexpected status 301 from " + kUrl, 301);
        expect_failure(diagnose(endpoint(p), kUrl, answer(302, "moved\nelsewhere")), "PI400",
                       "unexpected status 302 from " + kUrl + ": moved elsewhere", 302);
    }
}

TEST(Diagnose, NeverShowsTheKey) {
    Response echo = answer(400, R"({"error":{"message":"bad key sk-secret-key"}})");
    Result r = diagnose(endpoint(Protocol::kOpenAiV1), kUrl, echo);
    EXPECT_EQ(r.url.find("sk-secret-key"), std::string::npos);
    // The upstream's own message is quoted as it came; only the URL is ours to keep clean.
    for (long status : {401L, 403L, 404L, 429L, 500L, 503L}) {
        Result d = diagnose(endpoint(Protocol::kOpenAiV1), kUrl, answer(status, "sk-secret-key"));
        EXPECT_EQ(d.message.find("sk-secret-key"), std::string::npos) << status;
    }
}

const std::string kListUrl = "https://api.example.com/v1/models";

TEST(ListFallback, ModelInTheListIsOk) {
    Response list = answer(200, R"({"object":"list","data":[{"id":"other"},{"id":"meta/llama"}]})");
    Result r = diagnose_list_fallback(endpoint(Protocol::kOpenAiV1, "meta/llama"), kUrl,
                                      answer(404, R"({"detail":"Not Found"})"), kListUrl, list);
    EXPECT_TRUE(r.ok);
    EXPECT_EQ(r.http_status, 200);
    EXPECT_EQ(r.url, kListUrl);
}

TEST(ListFallback, ModelMissingFromTheListIsNotFound) {
    const std::string not_found =
        "endpoint not found \u2014 check the base URL and model name (status 404 from " + kUrl +
        ")";
    for (const char *body : {R"({"data":[{"id":"other"}]})", R"({"data":[]})",
                             R"({"data":[{"name":"m"},"m",{"id":7}]})"}) {
        expect_failure(diagnose_list_fallback(endpoint(Protocol::kOpenAiV1), kUrl, answer(404),
                                              kListUrl, answer(200, body)),
                       "PI404", not_found, 404);
    }
    // No list route either.
    expect_failure(diagnose_list_fallback(endpoint(Protocol::kOpenAiV1), kUrl, answer(404),
                                          kListUrl, answer(404)),
                   "PI404", not_found, 404);
}

TEST(ListFallback, UnparsableListIsABadResponse) {
    for (const char *body :
         {"<html>hello</html>", R"({"object":"list"})", R"({"data":{}})", "[1,2]", ""}) {
        Result r = diagnose_list_fallback(endpoint(Protocol::kOpenAiV1), kUrl, answer(404),
                                          kListUrl, answer(200, body));
        EXPECT_FALSE(r.ok);
        EXPECT_EQ(r.sqlstate, "PI400");
        EXPECT_EQ(r.message, "unexpected response from " + kListUrl + ": not a model list");
        EXPECT_EQ(r.url, kListUrl);
        EXPECT_EQ(r.http_status, 200);
    }
}

TEST(ListFallback, FailingListIsDiagnosedItself) {
    Result unauthorized = diagnose_list_fallback(endpoint(Protocol::kOpenAiV1), kUrl, answer(404),
                                                 kListUrl, answer(401, R"({"error":"no"})"));
    EXPECT_EQ(unauthorized.sqlstate, "PI401");
    EXPECT_EQ(unauthorized.message,
              "API key is missing or invalid (status 401 from " + kListUrl + ")");
    EXPECT_EQ(unauthorized.url, kListUrl);

    Result forbidden = diagnose_list_fallback(endpoint(Protocol::kOpenAiV1), kUrl, answer(404),
                                              kListUrl, answer(403));
    EXPECT_EQ(forbidden.sqlstate, "PI403");

    Result server = diagnose_list_fallback(endpoint(Protocol::kOpenAiV1), kUrl, answer(404),
                                           kListUrl, answer(502));
    EXPECT_EQ(server.message, "upstream server error (status 502 from " + kListUrl + ")");

    Result gone = diagnose_list_fallback(
        endpoint(Protocol::kOpenAiV1), kUrl, answer(404), kListUrl,
        transport_failure(CURLE_RECV_ERROR, "Recv failure: Connection reset by peer"));
    EXPECT_EQ(gone.sqlstate, "08001");
    EXPECT_EQ(gone.message, "endpoint unreachable: Recv failure: Connection reset by peer");
}

TEST(ProbeAll, EmptyListProbesNothing) {
    pgi::http::Client client;
    EXPECT_TRUE(pgi::probe::probe_all(client, {}, {}, nullptr).empty());
}

TEST(ProbeAll, UnresolvableHostsAreUnreachable) {
    pgi::http::Client client;
    std::vector<ServiceEndpoint> services = {endpoint(Protocol::kOpenAiV1),
                                             endpoint(Protocol::kGeminiV1Beta)};
    for (auto &s : services)
        s.base_url = "http://host.invalid";
    std::vector<Result> results = pgi::probe::probe_all(client, services, {}, nullptr);
    ASSERT_EQ(results.size(), 2u);
    EXPECT_EQ(results[0].sqlstate, "08001");
    EXPECT_EQ(results[0].url, "http://host.invalid/v1/models/m");
    EXPECT_EQ(results[1].url, "http://host.invalid/v1beta/models/m");
    for (const auto &r : results) {
        EXPECT_FALSE(r.ok);
        EXPECT_EQ(r.message.rfind("endpoint unreachable: ", 0), 0u) << r.message;
    }
}

}  // namespace
