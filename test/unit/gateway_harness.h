// The in-process harness of the gateway tests: a Server and a fake upstream (libevent evhttp
// imitating OpenAI, Anthropic, Gemini, NIM and vLLM) share an event_base running on a thread of
// the test, and the test thread calls the gateway with libcurl or raw sockets, as any client
// would. Each test file that includes it gets its own copy (everything is in an unnamed
// namespace).
#pragma once

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <functional>
#include <future>
#include <gtest/gtest.h>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <set>
#include <signal.h>
#include <string>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "address_filter.h"
#include "base64.h"
#include "crypto.h"
#include "gateway.h"
#include "gateway_request.h"
#include "http_async.h"

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using pgi::gateway::AccessKey;
using pgi::gateway::Admission;
using pgi::gateway::Config;
using pgi::gateway::Governor;
using pgi::gateway::Server;
using pgi::gateway::Snapshot;

constexpr const char *kUpstreamKey = "sk-up-secret-4711";
constexpr const char *kGatewayKey = "gw-key-1";

// ------------------------------------------------------------------------------------------------
// The event loop on its own thread. Everything libevent-side happens on that thread; the test
// thread reaches it only through run(), which wakes the loop through a socketpair.

class LoopThread {
  public:
    LoopThread() {
        base_ = event_base_new();
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, wake_) != 0)
            std::abort();
        evutil_make_socket_nonblocking(wake_[0]);
        wake_event_ = event_new(base_, wake_[0], EV_READ | EV_PERSIST, &LoopThread::on_wake, this);
        event_add(wake_event_, nullptr);
    }
    ~LoopThread() {
        stop();
        event_free(wake_event_);
        event_base_free(base_);
        close(wake_[0]);
        close(wake_[1]);
    }

    event_base *base() { return base_; }

    void start() {
        thread_ = std::thread([this] { event_base_loop(base_, EVLOOP_NO_EXIT_ON_EMPTY); });
    }

    void stop() {
        if (!thread_.joinable())
            return;
        run([this] { event_base_loopbreak(base_); });
        thread_.join();
    }

    // Runs f on the loop thread and waits for it.
    template <class F>
    auto run(F f) -> decltype(f()) {
        using R = decltype(f());
        if (!thread_.joinable())
            return f();
        auto task = std::make_shared<std::packaged_task<R()>>(std::move(f));
        std::future<R> result = task->get_future();
        {
            std::lock_guard<std::mutex> lock(mu_);
            queue_.push_back([task] { (*task)(); });
        }
        char byte = 1;
        if (write(wake_[1], &byte, 1) != 1)
            std::abort();
        return result.get();
    }

  private:
    static void on_wake(evutil_socket_t fd, short, void *arg) {
        auto *self = static_cast<LoopThread *>(arg);
        char buf[64];
        while (read(fd, buf, sizeof(buf)) > 0) {
        }
        std::vector<std::function<void()>> tasks;
        {
            std::lock_guard<std::mutex> lock(self->mu_);
            tasks.swap(self->queue_);
        }
        for (auto &t : tasks)
            t();
    }

    event_base *base_;
    int wake_[2];
    event *wake_event_;
    std::thread thread_;
    std::mutex mu_;
    std::vector<std::function<void()>> queue_;
};

// ------------------------------------------------------------------------------------------------
// The fake upstream. A base URL http://127.0.0.1:PORT/s/<label> selects behaviour by label:
//   ok (anything unknown), e429 / e503 (Retry-After: 0), e401 (echoes the key it got), e400,
//   flaky (503 twice, then ok), midfail (streams break off after two events), slow (stream events
//   every 100 ms for 10 s), floats (embeddings ignore encoding_format), rejectb64 (400 for
//   base64), vllm (no /v1/ranking), hang (never answers), bulk (a chat stream of about 26 MB,
//   written as fast as the gateway reads it).

struct Recorded {
    std::string method;
    std::string path;  // without /s/<label>
    std::string label;
    std::string query;
    std::map<std::string, std::string> headers;  // names lowercased
    std::string body;
    int peer_port = 0;

    std::string header(const std::string &name) const {
        auto it = headers.find(name);
        return it == headers.end() ? std::string() : it->second;
    }
};

std::string lower(std::string s) {
    for (char &c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

class FakeUpstream {
  public:
    explicit FakeUpstream(event_base *base) : base_(base) {
        http_ = evhttp_new(base);
        evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
        evhttp_set_gencb(http_, &FakeUpstream::on_request, this);
        evhttp_bound_socket *socket = evhttp_bind_socket_with_handle(http_, "127.0.0.1", 0);
        if (socket == nullptr)
            std::abort();
        sockaddr_in addr{};
        socklen_t len = sizeof(addr);
        getsockname(evhttp_bound_socket_get_fd(socket), reinterpret_cast<sockaddr *>(&addr), &len);
        port_ = ntohs(addr.sin_port);
    }
    ~FakeUpstream() {
        for (Stream *s : streams_)
            delete s;
        evhttp_free(http_);
    }

    int port() const { return port_; }
    std::string url(const std::string &label) const {
        return "http://127.0.0.1:" + std::to_string(port_) + "/s/" + label;
    }

    std::vector<Recorded> requests() {
        std::lock_guard<std::mutex> lock(mu_);
        return recorded_;
    }
    std::vector<Recorded> requests(const std::string &label) {
        std::vector<Recorded> out;
        for (auto &r : requests())
            if (r.label == label)
                out.push_back(r);
        return out;
    }
    Recorded last() {
        std::lock_guard<std::mutex> lock(mu_);
        return recorded_.empty() ? Recorded() : recorded_.back();
    }
    // Stream bytes the gateway has taken from the upstream so far: written minus what still waits
    // in the upstream's output buffer. On the loop thread.
    size_t stream_bytes_delivered() const {
        size_t delivered = 0;
        auto count = [&](evhttp_connection *conn, size_t written) {
            bufferevent *bev = evhttp_connection_get_bufferevent(conn);
            size_t pending = evbuffer_get_length(bufferevent_get_output(bev));
            delivered += written > pending ? written - pending : 0;
        };
        for (const Stream *s : streams_)
            count(s->conn, s->written);
        if (bulk_conn_ != nullptr)
            count(bulk_conn_, bulk_written_);
        return delivered;
    }

    int streams_closed_by_peer() const { return closed_by_peer_.load(); }

    // A canned answer for every request to a label: a body, or SSE pieces sent one by one.
    struct Scripted {
        int status = 200;
        std::string body;
        std::vector<std::string> pieces;  // a stream when not empty
        bool break_off = false;           // the stream drops its connection after two pieces
    };
    void script(const std::string &label, Scripted answer) {
        std::lock_guard<std::mutex> lock(mu_);
        scripted_[label] = std::move(answer);
    }

  private:
    evhttp_connection *bulk_conn_ = nullptr;  // the last big stream's connection
    size_t bulk_written_ = 0;
    // A chunked answer sent piece by piece on a timer.
    struct Stream {
        FakeUpstream *owner;
        evhttp_request *req;
        evhttp_connection *conn;
        std::vector<std::string> pieces;
        size_t next = 0;
        size_t written = 0;
        int interval_ms = 0;
        bool break_off = false;  // drop the connection after two pieces
        event *timer = nullptr;
        ~Stream() {
            if (timer != nullptr)
                event_free(timer);
        }
    };

    static void on_request(evhttp_request *req, void *arg) {
        static_cast<FakeUpstream *>(arg)->handle(req);
    }

    static void on_stream_timer(evutil_socket_t, short, void *arg) {
        auto *s = static_cast<Stream *>(arg);
        FakeUpstream *self = s->owner;
        if (s->break_off && s->next == 2) {
            evhttp_connection *conn = s->conn;
            evhttp_connection_set_closecb(conn, nullptr, nullptr);
            self->forget(s);
            evhttp_connection_free(conn);  // the request goes with it
            return;
        }
        if (s->next < s->pieces.size()) {
            evbuffer *b = evbuffer_new();
            evbuffer_add(b, s->pieces[s->next].data(), s->pieces[s->next].size());
            evhttp_send_reply_chunk(s->req, b);
            evbuffer_free(b);
            s->written += s->pieces[s->next].size();
            s->next++;
            timeval tv = {s->interval_ms / 1000, (s->interval_ms % 1000) * 1000};
            evtimer_add(s->timer, &tv);
            return;
        }
        evhttp_connection_set_closecb(s->conn, nullptr, nullptr);
        if (s->written > (1u << 20)) {
            // A big stream is all queued long before it is sent: keep counting what leaves.
            self->bulk_conn_ = s->conn;
            self->bulk_written_ = s->written;
            evhttp_connection_set_closecb(s->conn, &FakeUpstream::on_bulk_close, self);
        }
        evhttp_send_reply_end(s->req);
        self->forget(s);
    }

    static void on_bulk_close(evhttp_connection *, void *arg) {
        static_cast<FakeUpstream *>(arg)->bulk_conn_ = nullptr;
    }

    static void on_stream_close(evhttp_connection *, void *arg) {
        auto *s = static_cast<Stream *>(arg);
        FakeUpstream *self = s->owner;
        self->closed_by_peer_++;
        if (evhttp_request_get_connection(s->req) == nullptr)
            evhttp_request_free(s->req);
        self->forget(s);
    }

    void forget(Stream *s) {
        streams_.erase(s);
        delete s;
    }

    void stream(evhttp_request *req, const char *type, std::vector<std::string> pieces,
                int interval_ms = 0, bool break_off = false) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
        evhttp_send_reply_start(req, 200, "OK");
        auto *s = new Stream{this, req, evhttp_request_get_connection(req), std::move(pieces)};
        s->interval_ms = interval_ms;
        s->break_off = break_off;
        s->timer = evtimer_new(base_, &FakeUpstream::on_stream_timer, s);
        streams_.insert(s);
        evhttp_connection_set_closecb(s->conn, &FakeUpstream::on_stream_close, s);
        timeval zero = {0, 0};
        evtimer_add(s->timer, &zero);
    }

    static void send(evhttp_request *req, int status, const std::string &body,
                     const char *type = "application/json",
                     std::vector<std::pair<std::string, std::string>> headers = {}) {
        evkeyvalq *out = evhttp_request_get_output_headers(req);
        evhttp_add_header(out, "Content-Type", type);
        for (auto &h : headers)
            evhttp_add_header(out, h.first.c_str(), h.second.c_str());
        evbuffer *b = evbuffer_new();
        evbuffer_add(b, body.data(), body.size());
        evhttp_send_reply(req, status, nullptr, b);
        evbuffer_free(b);
    }

    static std::string sse(const json &j) { return "data: " + j.dump() + "\n\n"; }
    static std::string sse(const char *event, const json &j) {
        return std::string("event: ") + event + "\ndata: " + j.dump() + "\n\n";
    }

    void handle(evhttp_request *req) {
        Recorded r;
        r.method = std::to_string(evhttp_request_get_command(req));
        switch (evhttp_request_get_command(req)) {
            case EVHTTP_REQ_GET:
                r.method = "GET";
                break;
            case EVHTTP_REQ_POST:
                r.method = "POST";
                break;
            case EVHTTP_REQ_HEAD:
                r.method = "HEAD";
                break;
            case EVHTTP_REQ_PUT:
                r.method = "PUT";
                break;
            case EVHTTP_REQ_DELETE:
                r.method = "DELETE";
                break;
            case EVHTTP_REQ_PATCH:
                r.method = "PATCH";
                break;
            default:
                break;
        }
        const evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
        std::string path = evhttp_uri_get_path(uri);
        if (const char *q = evhttp_uri_get_query(uri))
            r.query = q;
        if (path.rfind("/s/", 0) == 0) {
            size_t slash = path.find('/', 3);
            r.label = path.substr(3, slash == std::string::npos ? std::string::npos : slash - 3);
            path = slash == std::string::npos ? "/" : path.substr(slash);
        }
        r.path = path;
        evkeyvalq *in = evhttp_request_get_input_headers(req);
        for (evkeyval *h = in->tqh_first; h != nullptr; h = h->next.tqe_next)
            r.headers[lower(h->key)] = h->value;
        evbuffer *body = evhttp_request_get_input_buffer(req);
        r.body.resize(evbuffer_get_length(body));
        evbuffer_copyout(body, r.body.data(), r.body.size());
        char *peer = nullptr;
        ev_uint16_t peer_port = 0;
        evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &peer_port);
        r.peer_port = peer_port;
        int seen;
        {
            std::lock_guard<std::mutex> lock(mu_);
            recorded_.push_back(r);
            seen = ++per_label_[r.label];
        }
        answer(req, r, seen);
    }

    void answer(evhttp_request *req, const Recorded &r, int seen) {
        const std::string &label = r.label;
        std::optional<Scripted> scripted;
        {
            std::lock_guard<std::mutex> lock(mu_);
            auto it = scripted_.find(label);
            if (it != scripted_.end())
                scripted = it->second;
        }
        if (scripted) {
            if (scripted->pieces.empty())
                send(req, scripted->status, scripted->body);
            else
                stream(req, "text/event-stream", scripted->pieces, 0, scripted->break_off);
            return;
        }
        if (label == "hang") {
            hanging_.push_back(req);
            return;
        }
        if (r.path.rfind("/echo", 0) == 0) {
            json h = json::object();
            for (auto &kv : r.headers)
                h[kv.first] = kv.second;
            send(req, 200,
                 json{{"method", r.method},
                      {"path", r.path},
                      {"query", r.query},
                      {"headers", h},
                      {"body", r.body}}
                     .dump(),
                 "application/json", {{"X-Upstream", "yes"}, {"Connection", "keep-alive"}});
            return;
        }
        if (r.path == "/stream") {
            std::vector<std::string> pieces;
            for (int i = 1; i <= 3; i++)
                pieces.push_back("data: " + std::to_string(i) + "\n\n");
            stream(req, "text/event-stream", pieces, 150);
            return;
        }
        if (label == "e429" || label == "e503" || (label == "flaky" && seen <= 2)) {
            int status = label == "e429" ? 429 : 503;
            send(req, status,
                 json{{"error",
                       {{"message", "slow down"},
                        {"type", "requests"},
                        {"code", "rate_limit_exceeded"}}}}
                     .dump(),
                 "application/json", {{"Retry-After", "0"}});
            return;
        }
        if (label == "e400") {
            send(req, 400,
                 json{{"error", {{"message", "bad thing"}, {"type", "invalid_request_error"}}}}
                     .dump());
            return;
        }

        json body = json::parse(r.body.empty() ? "null" : r.body, nullptr, false);
        bool stream_asked = body.is_object() && body.value("stream", false);
        bool gemini_stream = r.path.find(":streamGenerateContent") != std::string::npos;

        // Each provider's own auth check; a wrong key is echoed back, as some providers do.
        if (r.path == "/v1/messages") {
            std::string key = r.header("x-api-key");
            if (key != kUpstreamKey || label == "e401" || r.header("anthropic-version").empty()) {
                send(req, 401,
                     json{{"type", "error"},
                          {"error",
                           {{"type", "authentication_error"},
                            {"message", "invalid x-api-key " + key}}}}
                         .dump());
                return;
            }
        } else if (r.path.rfind("/v1beta/", 0) == 0) {
            if (r.header("x-goog-api-key") != kUpstreamKey || label == "e401") {
                send(req, 400,
                     json{{"error",
                           {{"code", 400},
                            {"message", "API key not valid."},
                            {"status", "INVALID_ARGUMENT"},
                            {"details", {{{"reason", "API_KEY_INVALID"}}}}}}}
                         .dump());
                return;
            }
        } else {
            std::string auth = r.header("authorization");
            if (auth != std::string("Bearer ") + kUpstreamKey || label == "e401") {
                send(req, 401,
                     json{{"error",
                           {{"message", "Incorrect API key provided: " +
                                            auth.substr(std::min<size_t>(7, auth.size()))},
                            {"type", "invalid_request_error"},
                            {"code", "invalid_api_key"}}}}
                         .dump());
                return;
            }
        }

        bool break_off = label == "midfail";
        int interval = label == "slow" ? 100 : 0;
        int repeat = label == "slow" ? 100 : label == "bulk" ? 20000 : 1;
        const std::string word = label == "bulk" ? std::string(1000, 'w') : "hello";

        if (r.path == "/v1/chat/completions") {
            std::string model = body.value("model", "");
            if (stream_asked) {
                auto chunk = [&](json delta, json finish) {
                    return sse(
                        json{{"id", "chatcmpl-up"},
                             {"object", "chat.completion.chunk"},
                             {"created", 1},
                             {"model", model},
                             {"choices",
                              {{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}}}});
                };
                std::vector<std::string> pieces = {
                    chunk({{"role", "assistant"}, {"content", ""}}, nullptr)};
                for (int i = 0; i < repeat; i++) {
                    pieces.push_back(chunk({{"content", word}}, nullptr));
                    pieces.push_back(chunk({{"content", " world"}}, nullptr));
                }
                pieces.push_back(chunk(json::object(), "stop"));
                if (body.contains("stream_options") &&
                    body["stream_options"].value("include_usage", false)) {
                    pieces.push_back(sse(json{
                        {"id", "chatcmpl-up"},
                        {"object", "chat.completion.chunk"},
                        {"created", 1},
                        {"model", model},
                        {"choices", json::array()},
                        {"usage",
                         {{"prompt_tokens", 3}, {"completion_tokens", 2}, {"total_tokens", 5}}}}));
                }
                pieces.push_back("data: [DONE]\n\n");
                stream(req, "text/event-stream", pieces, interval, break_off);
                return;
            }
            send(req, 200,
                 json{{"id", "chatcmpl-up"},
                      {"object", "chat.completion"},
                      {"created", 1},
                      {"model", model},
                      {"choices",
                       {{{"index", 0},
                         {"message", {{"role", "assistant"}, {"content", "hello world"}}},
                         {"finish_reason", "stop"}}}},
                      {"usage",
                       {{"prompt_tokens", 3}, {"completion_tokens", 2}, {"total_tokens", 5}}}}
                     .dump());
            return;
        }
        if (r.path == "/v1/messages") {
            std::string model = body.value("model", "");
            if (stream_asked) {
                std::vector<std::string> pieces = {
                    sse("message_start",
                        {{"type", "message_start"},
                         {"message",
                          {{"id", "msg_up"},
                           {"type", "message"},
                           {"role", "assistant"},
                           {"model", model},
                           {"content", json::array()},
                           {"usage", {{"input_tokens", 3}, {"output_tokens", 0}}}}}}),
                    sse("content_block_start",
                        {{"type", "content_block_start"},
                         {"index", 0},
                         {"content_block", {{"type", "text"}, {"text", ""}}}}),
                    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
                };
                for (int i = 0; i < repeat; i++) {
                    pieces.push_back(sse("content_block_delta",
                                         {{"type", "content_block_delta"},
                                          {"index", 0},
                                          {"delta", {{"type", "text_delta"}, {"text", "hello"}}}}));
                    pieces.push_back(
                        sse("content_block_delta",
                            {{"type", "content_block_delta"},
                             {"index", 0},
                             {"delta", {{"type", "text_delta"}, {"text", " world"}}}}));
                }
                pieces.push_back(
                    sse("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}}));
                pieces.push_back(sse("message_delta", {{"type", "message_delta"},
                                                       {"delta", {{"stop_reason", "end_turn"}}},
                                                       {"usage", {{"output_tokens", 2}}}}));
                pieces.push_back(sse("message_stop", {{"type", "message_stop"}}));
                stream(req, "text/event-stream", pieces, interval, break_off);
                return;
            }
            send(req, 200,
                 json{{"id", "msg_up"},
                      {"type", "message"},
                      {"role", "assistant"},
                      {"model", model},
                      {"content", {{{"type", "text"}, {"text", "hello world"}}}},
                      {"stop_reason", "end_turn"},
                      {"usage", {{"input_tokens", 3}, {"output_tokens", 2}}}}
                     .dump());
            return;
        }
        if (r.path.rfind("/v1beta/models/", 0) == 0 &&
            r.path.find(":generateContent") != std::string::npos) {
            send(req, 200,
                 json{{"candidates",
                       {{{"content", {{"role", "model"}, {"parts", {{{"text", "hello world"}}}}}},
                         {"finishReason", "STOP"},
                         {"index", 0}}}},
                      {"usageMetadata",
                       {{"promptTokenCount", 3},
                        {"candidatesTokenCount", 2},
                        {"totalTokenCount", 5}}},
                      {"modelVersion", "gemini-up"},
                      {"responseId", "resp-up"}}
                     .dump());
            return;
        }
        if (gemini_stream) {
            auto event = [](const char *text, bool last) {
                json j = {{"candidates",
                           {{{"content", {{"role", "model"}, {"parts", {{{"text", text}}}}}},
                             {"index", 0}}}},
                          {"modelVersion", "gemini-up"},
                          {"responseId", "resp-up"}};
                if (last) {
                    j["candidates"][0]["finishReason"] = "STOP";
                    j["usageMetadata"] = {{"promptTokenCount", 3},
                                          {"candidatesTokenCount", 2},
                                          {"totalTokenCount", 5}};
                }
                return "data: " + j.dump() + "\r\n\r\n";
            };
            std::vector<std::string> pieces;
            for (int i = 0; i < repeat; i++)
                pieces.push_back(event("hello", false));
            pieces.push_back(event(" world", true));
            stream(req, "text/event-stream", pieces, interval, break_off);
            return;
        }
        if (r.path == "/v1/embeddings") {
            std::string format = body.value("encoding_format", "float");
            if (format == "base64" && label == "rejectb64") {
                send(req, 400,
                     json{{"error",
                           {{"message", "Invalid value for 'encoding_format': 'base64'"},
                            {"type", "invalid_request_error"},
                            {"param", "encoding_format"}}}}
                         .dump());
                return;
            }
            bool base64 = format == "base64" && label != "floats";
            json data = json::array();
            size_t n = body["input"].is_array() ? body["input"].size() : 1;
            for (size_t i = 0; i < n; i++) {
                std::vector<float> v = {static_cast<float>(i) + 0.5f, 1.0f, -2.25f};
                json e = base64 ? json(pgi::base64::encode_floats(v)) : json(v);
                data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", e}});
            }
            send(req, 200,
                 json{{"object", "list"},
                      {"data", data},
                      {"model", body.value("model", "")},
                      {"usage", {{"prompt_tokens", 4}, {"total_tokens", 4}}}}
                     .dump());
            return;
        }
        if (r.path.find(":batchEmbedContents") != std::string::npos) {
            json out = json::array();
            for (size_t i = 0; i < body["requests"].size(); i++)
                out.push_back({{"values", {static_cast<float>(i) + 0.5f, 1.0f, -2.25f}}});
            send(req, 200, json{{"embeddings", out}}.dump());
            return;
        }
        if (r.path == "/v1/ranking") {
            if (label == "vllm") {
                send(req, 404, "{\"detail\":\"Not Found\"}");
                return;
            }
            send(req, 200,
                 json{{"rankings",
                       {{{"index", 1}, {"logit", 2.0}}, {{"index", 0}, {"logit", -1.0}}}}}
                     .dump());
            return;
        }
        if (r.path == "/v1/rerank") {
            send(req, 200,
                 json{{"id", "rr-up"},
                      {"results",
                       {{{"index", 1}, {"relevance_score", 0.9}},
                        {{"index", 0}, {"relevance_score", 0.1}}}},
                      {"usage", {{"total_tokens", 7}}}}
                     .dump());
            return;
        }
        send(req, 404, "{\"error\":{\"message\":\"no route " + r.path + "\"}}");
    }

    event_base *base_;
    evhttp *http_;
    int port_ = 0;
    std::mutex mu_;
    std::vector<Recorded> recorded_;
    std::map<std::string, int> per_label_;
    std::map<std::string, Scripted> scripted_;
    std::set<Stream *> streams_;
    std::vector<evhttp_request *> hanging_;
    std::atomic<int> closed_by_peer_{0};
};

// ------------------------------------------------------------------------------------------------
// A Governor that records what the gateway tells it and can refuse a service.

struct Finished {
    std::string key;
    std::string service;
    int status;
    pgi::translate::Usage usage;
    bool rate_limited;
    std::string route;  // the route the caller named
    std::string error;  // the gateway's error code
};

class RecordingGovernor : public Governor {
  public:
    Admission admit(const AccessKey *, const std::string &service, std::string_view user,
                    int64_t cost, const std::string &) override {
        {
            std::lock_guard<std::mutex> lock(mu);
            users.emplace_back(user);
            costs.push_back(cost);
        }
        Admission a;
        a.headers.emplace_back("x-ratelimit-remaining-requests", "99");
        if (service == refuse) {
            a.allowed = false;
            a.status = 429;
            a.message = "Rate limit reached for requests";
            a.headers.emplace_back("retry-after", "7");
        }
        return a;
    }
    void finished(const pgi::gateway::Finished &r) override {
        std::lock_guard<std::mutex> lock(mu);
        done.push_back({r.key != nullptr ? r.key->name : "",
                        r.service != nullptr ? r.service->name : "", r.status, r.usage,
                        r.rate_limited, std::string(r.route), std::string(r.error)});
    }
    std::string metrics_text() override { return "pg_inference_test 1\n"; }
    void rerank_route_learned(const std::string &service,
                              pgi::translate::RerankRoute route) override {
        std::lock_guard<std::mutex> lock(mu);
        learned.emplace_back(service, route);
    }
    void warning(const std::string &message) override {
        std::lock_guard<std::mutex> lock(mu);
        warnings.push_back(message);
    }
    std::vector<Finished> all() {
        std::lock_guard<std::mutex> lock(mu);
        return done;
    }
    size_t warnings_with(const std::string &part) {
        std::lock_guard<std::mutex> lock(mu);
        size_t n = 0;
        for (const std::string &w : warnings)
            n += w.find(part) != std::string::npos ? 1 : 0;
        return n;
    }

    std::string refuse;
    std::mutex mu;
    std::vector<Finished> done;
    std::vector<std::pair<std::string, pgi::translate::RerankRoute>> learned;
    std::vector<std::string> warnings;
    std::vector<std::string> users;  // the end user of each admitted request, in order
    std::vector<int64_t> costs;      // the worst-case cost each admission was asked to reserve
};

// ------------------------------------------------------------------------------------------------
// The client side.

struct Reply {
    long status = 0;
    std::map<std::string, std::string> headers;
    std::string body;
    double first_byte_ms = -1;
    double total_ms = 0;
    std::string error;

    json js() const { return json::parse(body, nullptr, false); }
    std::string header(const std::string &name) const {
        auto it = headers.find(name);
        return it == headers.end() ? std::string() : it->second;
    }
};

struct CallOptions {
    std::string method = "GET";
    std::string body;
    std::vector<std::string> headers;
    bool key = true;  // send the gateway key as a Bearer token
    bool https = false;
    bool path_as_is = false;
};

size_t collect_body(char *data, size_t size, size_t n, void *arg) {
    auto *state = static_cast<std::pair<Reply *, Clock::time_point> *>(arg);
    if (state->first->first_byte_ms < 0 && size * n > 0) {
        state->first->first_byte_ms =
            std::chrono::duration<double, std::milli>(Clock::now() - state->second).count();
    }
    state->first->body.append(data, size * n);
    return size * n;
}

size_t collect_header(char *data, size_t size, size_t n, void *arg) {
    auto *reply = static_cast<Reply *>(arg);
    std::string line(data, size * n);
    size_t colon = line.find(':');
    if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' '))
            value.erase(0, 1);
        while (!value.empty() && (value.back() == '\r' || value.back() == '\n'))
            value.pop_back();
        reply->headers[lower(line.substr(0, colon))] = value;
    }
    return size * n;
}

Reply call(int port, const std::string &path, CallOptions o = {}) {
    Reply reply;
    CURL *easy = curl_easy_init();
    std::string url =
        std::string(o.https ? "https" : "http") + "://127.0.0.1:" + std::to_string(port) + path;
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
    if (o.path_as_is)
        curl_easy_setopt(easy, CURLOPT_PATH_AS_IS, 1L);
    curl_slist *headers = nullptr;
    if (o.key)
        headers = curl_slist_append(headers,
                                    (std::string("Authorization: Bearer ") + kGatewayKey).c_str());
    for (auto &h : o.headers)
        headers = curl_slist_append(headers, h.c_str());
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    if (o.method == "HEAD") {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (o.method != "GET" || !o.body.empty()) {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, o.body.c_str());
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(o.body.size()));
        if (o.method != "POST")
            curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, o.method.c_str());
    }
    auto start = Clock::now();
    std::pair<Reply *, Clock::time_point> state{&reply, start};
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &state);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, collect_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &reply);
    CURLcode rc = curl_easy_perform(easy);
    reply.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (rc != CURLE_OK)
        reply.error = curl_easy_strerror(rc);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    return reply;
}

Reply post(int port, const std::string &path, const json &body,
           std::vector<std::string> headers = {}) {
    CallOptions o;
    o.method = "POST";
    o.body = body.dump();
    o.headers = std::move(headers);
    o.headers.push_back("Content-Type: application/json");
    return call(port, path, o);
}

// The data: payloads of an SSE body.
std::vector<std::string> sse_data(const std::string &body) {
    std::vector<std::string> out;
    size_t at = 0;
    while ((at = body.find("data: ", at)) != std::string::npos) {
        size_t end = body.find("\n\n", at);
        out.push_back(body.substr(at + 6, end - at - 6));
        at = end;
    }
    return out;
}

// The content deltas of an OpenAI SSE body, joined.
[[maybe_unused]] std::string sse_text(const std::string &body) {
    std::string text;
    for (const std::string &d : sse_data(body)) {
        json j = json::parse(d, nullptr, false);
        if (!j.is_object() || !j.contains("choices"))
            continue;
        for (auto &c : j["choices"]) {
            if (c.contains("delta") && c["delta"].contains("content") &&
                c["delta"]["content"].is_string())
                text += c["delta"]["content"].get<std::string>();
        }
    }
    return text;
}

bool eventually(const std::function<bool()> &condition, std::chrono::milliseconds limit = 3000ms) {
    auto until = Clock::now() + limit;
    while (Clock::now() < until) {
        if (condition())
            return true;
        std::this_thread::sleep_for(10ms);
    }
    return condition();
}

// ------------------------------------------------------------------------------------------------
// The fixture: upstream and gateway on one loop, a catalog pointing at the upstream.

class GatewayTest : public ::testing::Test {
  protected:
    void SetUp() override {
        signal(SIGPIPE, SIG_IGN);
        upstream = std::make_unique<FakeUpstream>(loop.base());
        config.listen_addresses = {"127.0.0.1"};
        config.port = 0;
        config.max_retries = 2;
        config.max_body_size = 64 * 1024;
        config.request_timeout_ms = 5000;
    }

    void start() {
        server = std::make_unique<Server>(loop.base(), config, governor);
        server->set_snapshot(std::make_shared<Snapshot>(catalog()));
        if (catalog_check)
            server->set_catalog_check(catalog_check);
        server->listen();
        port = server->port();
        loop.start();
    }

    // Given to Server::set_catalog_check by start() when set.
    std::function<void()> catalog_check;

    void TearDown() override {
        loop.stop();
        server.reset();
        upstream.reset();
    }

    void add_service(Snapshot &s, const std::string &name, const std::string &model,
                     const std::string &label, pgi::Protocol protocol = pgi::Protocol::kOpenAiV1) {
        pgi::ServiceEndpoint e;
        e.name = name;
        e.model = model;
        e.base_url = upstream->url(label);
        e.protocol = protocol;
        e.api_key = kUpstreamKey;
        s.services[name] = e;
    }

    void add_key(Snapshot &s, const std::string &name, const std::string &plain,
                 std::optional<std::vector<std::string>> services = std::nullopt) {
        AccessKey k;
        k.name = name;
        k.key_hash = pgi::crypto::sha256(plain);
        k.services = std::move(services);
        s.keys[k.key_hash] = k;
    }

    Snapshot catalog() {
        Snapshot s;
        add_service(s, "chat", "gpt-up", "ok");
        add_service(s, "claude", "claude-up", "ok", pgi::Protocol::kAnthropicV1);
        add_service(s, "gemini", "gemini-up", "ok", pgi::Protocol::kGeminiV1Beta);
        add_service(s, "emb", "emb-up", "ok");
        add_service(s, "emb-floats", "emb-up", "floats");
        add_service(s, "emb-nob64", "emb-up", "rejectb64");
        add_service(s, "gemb", "gemb-up", "ok", pgi::Protocol::kGeminiV1Beta);
        add_service(s, "nim", "rank-up", "ok");
        add_service(s, "vllm", "rank-up", "vllm");
        add_service(s, "vllm-known", "rank-up", "vllm");
        s.rerank_routes["vllm-known"] = "rerank";
        add_service(s, "chat429", "gpt-up", "e429");
        add_service(s, "flaky", "gpt-up", "flaky");
        add_service(s, "badkey", "gpt-up", "e401");
        add_service(s, "gbadkey", "gemini-up", "e401", pgi::Protocol::kGeminiV1Beta);
        add_service(s, "midfail", "gpt-up", "midfail");
        add_service(s, "amidfail", "claude-up", "midfail", pgi::Protocol::kAnthropicV1);
        add_service(s, "slow", "gpt-up", "slow");
        add_service(s, "hang", "gpt-up", "hang");
        add_service(s, "bulk", "gpt-up", "bulk");
        add_service(s, "down", "gpt-up", "ok");
        s.services["down"].base_url = "http://127.0.0.1:1";
        add_key(s, "full", kGatewayKey);
        add_key(s, "limited", "gw-limited", std::vector<std::string>{"chat"});
        add_key(s, "revoked", "gw-revoked");
        s.keys[pgi::crypto::sha256("gw-revoked")].revoked = true;
        add_key(s, "expired", "gw-expired");
        s.keys[pgi::crypto::sha256("gw-expired")].expires_at_ms = 1000;
        add_key(s, "nopass", "gw-nopass");
        s.keys[pgi::crypto::sha256("gw-nopass")].passthrough = false;
        add_key(s, "metered", "gw-metered");
        s.keys[pgi::crypto::sha256("gw-metered")].limits.tokens_per_hour = 1000;
        return s;
    }

    json chat_body(const std::string &model, bool stream = false) {
        json b = {{"model", model}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
        if (stream)
            b["stream"] = true;
        return b;
    }

    // Raw sockets, for what libcurl will not do: leave mid-request, pipeline, send garbage.
    // -1 when the gateway does not accept the connection.
    int connect_raw() {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(port));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0) {
            close(fd);
            return -1;
        }
        return fd;
    }

    // Sends data until all of it is sent, the gateway stops reading, or it closes; returns how
    // much was sent. MSG_NOSIGNAL: a closed connection is a short count, not a SIGPIPE.
    static size_t send_all(int fd, const std::string &data) {
        size_t sent = 0;
        while (sent < data.size()) {
            ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            sent += static_cast<size_t>(n);
        }
        return sent;
    }

    // The head of an authorised chat request; the caller sends the body after it.
    static std::string chat_head(size_t body_size) {
        return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               std::string(kGatewayKey) + "\r\nContent-Type: application/json\r\n" +
               "Content-Length: " + std::to_string(body_size) + "\r\n\r\n";
    }

    // Reads until done() accepts what came so far, the gateway closes, or 5 s pass.
    static std::string read_until(int fd, const std::function<bool(const std::string &)> &done) {
        std::string got;
        auto until = Clock::now() + 5s;
        while (!done(got) && Clock::now() < until) {
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 100) <= 0)
                continue;
            char buf[8192];
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0)
                break;
            got.append(buf, n);
        }
        return got;
    }

    size_t in_flight() {
        return loop.run([&] { return server->in_flight(); });
    }

    // The client on fd, with its one call in flight, goes away: the gateway must end the call,
    // record it as 499 and go on serving.
    void expect_abandoned(int fd) {
        EXPECT_EQ(in_flight(), 1u);
        close(fd);
        EXPECT_TRUE(eventually([&] { return in_flight() == 0; }));
        auto done = governor.all();
        ASSERT_EQ(done.size(), 1u);
        EXPECT_EQ(done[0].status, 499);
        EXPECT_EQ(post(port, "/v1/chat/completions", chat_body("chat")).status, 200);
    }

    LoopThread loop;
    std::unique_ptr<FakeUpstream> upstream;
    RecordingGovernor governor;
    Config config;
    std::unique_ptr<Server> server;
    int port = 0;
};

}  // namespace
