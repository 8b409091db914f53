// A fast OpenAI-shaped upstream for the gateway benchmarks (test/bench/gateway_compare.sh).
//
//   fast_mock --port P [--latency-ms MS] [--dimensions N] [--stream-tokens N]
//             [--chunk-interval-ms MS]
//
// The Node mock (test/mock) models every provider's behaviour and faults; this one models only
// what the benchmark sends, as cheaply as possible, so that it can serve far more requests than
// any proxy in front of it and the proxy is what gets measured. One thread, epoll, keep-alive
// HTTP/1.1, bodies built from pieces made at startup.
//
//   POST /v1/chat/completions   chat.completion, or with "stream": true an SSE stream (chunked)
//                               of --stream-tokens content chunks, a finish chunk, a usage chunk
//                               when stream_options.include_usage is true, and data: [DONE]
//   POST /v1/messages           an Anthropic message, or with "stream": true Anthropic's named
//                               events (message_start, --stream-tokens text deltas,
//                               message_delta with the usage, message_stop)
//   POST /v1/embeddings         one --dimensions vector per input (floats, or base64 when
//                               encoding_format is "base64"), with usage
//   GET  /v1/models, /health    a small JSON answer
//
// Latency: every answer starts --latency-ms after its request arrived (a timerfd, so 20 ms is 20
// ms and not "the next epoll tick"); a path prefix /d/<ms>/ overrides it per request, so one mock
// serves a 0 ms and a 20 ms service. Stream chunks after the first follow --chunk-interval-ms
// apart (0: all at once). SIGTERM or SIGINT stops it.
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <queue>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <vector>

namespace {

struct Options {
    int port = 0;
    long latency_ms = 0;
    int dimensions = 1536;
    int stream_tokens = 16;
    long chunk_interval_ms = 0;
};

volatile std::sig_atomic_t stopping = 0;

void on_signal(int) {
    stopping = 1;
}

int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool iequals_prefix(std::string_view text, std::string_view prefix) {
    if (text.size() < prefix.size())
        return false;
    for (size_t i = 0; i < prefix.size(); i++) {
        char a = text[i], b = prefix[i];
        if (a >= 'A' && a <= 'Z')
            a = static_cast<char>(a - 'A' + 'a');
        if (a != b)
            return false;
    }
    return true;
}

size_t skip_space(std::string_view s, size_t i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

// The position just past `"key":` in a JSON body, or npos. The benchmark's bodies are small and
// flat enough that the first match is the member (a value that contains the quoted key would
// fool it; none does).
size_t member_value(std::string_view body, std::string_view quoted_key) {
    for (size_t at = body.find(quoted_key); at != std::string_view::npos;
         at = body.find(quoted_key, at + 1)) {
        size_t i = skip_space(body, at + quoted_key.size());
        if (i < body.size() && body[i] == ':')
            return skip_space(body, i + 1);
    }
    return std::string_view::npos;
}

bool member_is_true(std::string_view body, std::string_view quoted_key) {
    size_t i = member_value(body, quoted_key);
    return i != std::string_view::npos && body.substr(i, 4) == "true";
}

// A string member's raw (still escaped) text.
std::string_view string_member(std::string_view body, std::string_view quoted_key) {
    size_t i = member_value(body, quoted_key);
    if (i == std::string_view::npos || i >= body.size() || body[i] != '"')
        return {};
    size_t end = i + 1;
    while (end < body.size() && body[end] != '"')
        end += body[end] == '\\' ? 2 : 1;
    return end < body.size() ? body.substr(i + 1, end - i - 1) : std::string_view();
}

// How many embeddings an "input" asks for: a string or a token array is one, an array of
// strings (or of token arrays) one per element.
int input_count(std::string_view body) {
    size_t i = member_value(body, "\"input\"");
    if (i == std::string_view::npos || i >= body.size() || body[i] != '[')
        return 1;
    size_t first = skip_space(body, i + 1);
    if (first >= body.size() || body[first] == ']' || (body[first] != '"' && body[first] != '['))
        return 1;
    int count = 1, depth = 0;
    for (size_t j = i; j < body.size(); j++) {
        char c = body[j];
        if (c == '"') {
            for (j++; j < body.size() && body[j] != '"'; j++)
                if (body[j] == '\\')
                    j++;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (--depth == 0)
                break;
        } else if (c == ',' && depth == 1) {
            count++;
        }
    }
    return count;
}

std::string base64(const unsigned char *data, size_t size) {
    static const char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((size + 2) / 3 * 4);
    for (size_t i = 0; i < size; i += 3) {
        uint32_t v = static_cast<uint32_t>(data[i]) << 16;
        if (i + 1 < size)
            v |= static_cast<uint32_t>(data[i + 1]) << 8;
        if (i + 2 < size)
            v |= data[i + 2];
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += i + 1 < size ? kAlphabet[(v >> 6) & 63] : '=';
        out += i + 2 < size ? kAlphabet[v & 63] : '=';
    }
    return out;
}

// Everything answers are made of, built once.
struct Bodies {
    std::string embedding_floats;  // "[...]" of --dimensions numbers
    std::string embedding_base64;  // "\"...\"" of the same vector as little-endian float32
    std::vector<std::string> tokens;

    explicit Bodies(const Options &o) {
        std::vector<float> vector(static_cast<size_t>(o.dimensions));
        uint32_t seed = 12345;
        for (float &v : vector) {
            seed = seed * 1664525u + 1013904223u;
            v = static_cast<float>(static_cast<int32_t>(seed >> 8) % 200000 - 100000) / 1.0e6f;
        }
        embedding_floats = "[";
        char number[32];
        for (size_t i = 0; i < vector.size(); i++) {
            std::snprintf(number, sizeof(number), "%s%.9f", i == 0 ? "" : ",", vector[i]);
            embedding_floats += number;
        }
        embedding_floats += "]";
        embedding_base64 = "\"" +
                           base64(reinterpret_cast<const unsigned char *>(vector.data()),
                                  vector.size() * sizeof(float)) +
                           "\"";
        for (int i = 0; i < o.stream_tokens; i++)
            tokens.push_back(i == 0 ? "Hello" : " token" + std::to_string(i));
    }
};

enum class Kind {
    kNone,
    kChat,
    kStream,
    kMessages,
    kMessagesStream,
    kEmbeddings,
    kModels,
    kHealth,
    kNotFound,
    kBadRequest
};

// A request read in full and waiting for its answer.
struct Pending {
    Kind kind = Kind::kNone;
    std::string model;
    bool include_usage = false;
    bool base64 = false;
    int inputs = 1;
    int next_chunk = 0;  // streams: the next SSE event to send
};

struct Connection {
    int fd = -1;
    uint64_t generation = 0;
    std::string in;
    std::string out;
    size_t out_sent = 0;
    bool close_after = false;
    bool writable_armed = false;
    Pending pending;  // kind != kNone while an answer is due (no further request is read)
};

struct Due {
    int64_t at_ns;
    int fd;
    uint64_t generation;
    bool operator>(const Due &other) const { return at_ns > other.at_ns; }
};

class Mock {
  public:
    Mock(const Options &o, int listen_fd) : options_(o), bodies_(o), listen_fd_(listen_fd) {
        epoll_ = epoll_create1(EPOLL_CLOEXEC);
        timer_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (epoll_ < 0 || timer_ < 0) {
            std::perror("fast_mock: epoll/timerfd");
            std::exit(1);
        }
        add(listen_fd_, EPOLLIN);
        add(timer_, EPOLLIN);
    }

    int run() {
        std::vector<epoll_event> events(256);
        while (!stopping) {
            int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 200);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                std::perror("fast_mock: epoll_wait");
                return 1;
            }
            for (int i = 0; i < n; i++) {
                int fd = events[i].data.fd;
                if (fd == listen_fd_) {
                    accept_all();
                } else if (fd == timer_) {
                    uint64_t expirations;
                    while (read(timer_, &expirations, sizeof(expirations)) > 0) {
                    }
                    run_due();
                } else {
                    on_event(fd, events[i].events);
                }
            }
        }
        return 0;
    }

  private:
    void add(int fd, uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = fd;
        epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
    }

    Connection *connection(int fd) {
        if (fd < 0 || static_cast<size_t>(fd) >= connections_.size())
            return nullptr;
        return connections_[static_cast<size_t>(fd)].get();
    }

    void accept_all() {
        for (;;) {
            int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                return;
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            if (static_cast<size_t>(fd) >= connections_.size())
                connections_.resize(static_cast<size_t>(fd) + 64);
            auto c = std::make_unique<Connection>();
            c->fd = fd;
            c->generation = ++generation_;
            connections_[static_cast<size_t>(fd)] = std::move(c);
            add(fd, EPOLLIN | EPOLLRDHUP);
        }
    }

    void close_connection(Connection &c) {
        int fd = c.fd;
        epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
        close(fd);
        connections_[static_cast<size_t>(fd)].reset();
    }

    void on_event(int fd, uint32_t events) {
        Connection *c = connection(fd);
        if (c == nullptr)
            return;
        if (events & EPOLLOUT) {
            if (!flush(*c))
                return;
        }
        if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            char buffer[65536];
            for (;;) {
                ssize_t got = read(fd, buffer, sizeof(buffer));
                if (got > 0) {
                    c->in.append(buffer, static_cast<size_t>(got));
                    if (static_cast<size_t>(got) < sizeof(buffer))
                        break;
                    continue;
                }
                if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    break;
                if (got < 0 && errno == EINTR)
                    continue;
                close_connection(*c);
                return;
            }
            serve(*c);
        }
    }

    // Answers every complete request in the input, in order, until one has to wait.
    void serve(Connection &c) {
        while (c.pending.kind == Kind::kNone && !c.close_after) {
            int64_t delay_ms = -1;
            if (!parse(c, delay_ms))
                break;
            if (delay_ms > 0) {
                schedule(c, now_ns() + delay_ms * 1000000);
                break;
            }
            respond(c);
        }
        flush(c);
    }

    // Takes one complete request off c.in into c.pending. False when more bytes are needed.
    bool parse(Connection &c, int64_t &delay_ms) {
        size_t head_end = c.in.find("\r\n\r\n");
        if (head_end == std::string::npos)
            return false;
        std::string_view head(c.in.data(), head_end);
        size_t line_end = head.find("\r\n");
        std::string_view line = head.substr(0, line_end);
        size_t sp1 = line.find(' ');
        size_t sp2 = line.rfind(' ');
        if (sp1 == std::string_view::npos || sp2 <= sp1) {
            c.pending.kind = Kind::kBadRequest;
            c.close_after = true;
            c.in.clear();
            return true;
        }
        std::string_view method = line.substr(0, sp1);
        std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        bool http10 = line.substr(sp2 + 1) == "HTTP/1.0";
        size_t content_length = 0;
        bool chunked = false, close = http10;
        size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
        while (pos < head.size()) {
            size_t end = head.find("\r\n", pos);
            if (end == std::string_view::npos)
                end = head.size();
            std::string_view h = head.substr(pos, end - pos);
            if (iequals_prefix(h, "content-length:")) {
                content_length = std::strtoul(std::string(h.substr(15)).c_str(), nullptr, 10);
            } else if (iequals_prefix(h, "transfer-encoding:")) {
                chunked = h.find("chunked") != std::string_view::npos;
            } else if (iequals_prefix(h, "connection:")) {
                std::string_view v = h.substr(11);
                if (v.find("close") != std::string_view::npos)
                    close = true;
                else if (v.find("keep-alive") != std::string_view::npos)
                    close = false;
            }
            pos = end + 2;
        }
        size_t body_start = head_end + 4;
        std::string body;
        size_t consumed;
        if (chunked) {
            size_t p = body_start;
            for (;;) {
                size_t eol = c.in.find("\r\n", p);
                if (eol == std::string::npos)
                    return false;
                size_t size = std::strtoul(c.in.c_str() + p, nullptr, 16);
                if (size == 0) {
                    size_t trailer_end = c.in.find("\r\n\r\n", eol);
                    if (trailer_end == std::string::npos) {
                        if (c.in.size() < eol + 4)
                            return false;
                        trailer_end = eol;
                    }
                    consumed = trailer_end + 4;
                    break;
                }
                if (c.in.size() < eol + 2 + size + 2)
                    return false;
                body.append(c.in, eol + 2, size);
                p = eol + 2 + size + 2;
            }
        } else {
            if (c.in.size() < body_start + content_length)
                return false;
            body.assign(c.in, body_start, content_length);
            consumed = body_start + content_length;
        }

        size_t query = target.find('?');
        std::string_view path = target.substr(0, query);
        delay_ms = options_.latency_ms;
        if (path.substr(0, 3) == "/d/") {
            size_t slash = path.find('/', 3);
            delay_ms = std::strtol(std::string(path.substr(3, slash - 3)).c_str(), nullptr, 10);
            path = slash == std::string_view::npos ? std::string_view("/") : path.substr(slash);
        }
        Pending p;
        if (path == "/v1/chat/completions" && method == "POST") {
            p.kind = member_is_true(body, "\"stream\"") ? Kind::kStream : Kind::kChat;
            p.include_usage = member_is_true(body, "\"include_usage\"");
            p.model = std::string(string_member(body, "\"model\""));
        } else if (path == "/v1/messages" && method == "POST") {
            p.kind = member_is_true(body, "\"stream\"") ? Kind::kMessagesStream : Kind::kMessages;
            p.model = std::string(string_member(body, "\"model\""));
        } else if (path == "/v1/embeddings" && method == "POST") {
            p.kind = Kind::kEmbeddings;
            p.model = std::string(string_member(body, "\"model\""));
            std::string_view format = string_member(body, "\"encoding_format\"");
            p.base64 = format == "base64";
            p.inputs = input_count(body);
        } else if (path == "/v1/models" || path.substr(0, 11) == "/v1/models/") {
            p.kind = Kind::kModels;
            delay_ms = 0;
        } else if (path == "/health") {
            p.kind = Kind::kHealth;
            delay_ms = 0;
        } else {
            p.kind = Kind::kNotFound;
            delay_ms = 0;
        }
        if (p.model.empty())
            p.model = "gpt-4o-mini";
        c.pending = std::move(p);
        c.close_after = close;
        c.in.erase(0, consumed);
        return true;
    }

    void schedule(Connection &c, int64_t at_ns) {
        bool earliest = due_.empty() || at_ns < due_.top().at_ns;
        due_.push(Due{at_ns, c.fd, c.generation});
        if (earliest)
            arm(at_ns);
    }

    void arm(int64_t at_ns) {
        itimerspec spec{};
        spec.it_value.tv_sec = at_ns / 1000000000;
        spec.it_value.tv_nsec = at_ns % 1000000000;
        timerfd_settime(timer_, TFD_TIMER_ABSTIME, &spec, nullptr);
    }

    void run_due() {
        int64_t now = now_ns();
        while (!due_.empty() && due_.top().at_ns <= now) {
            Due d = due_.top();
            due_.pop();
            Connection *c = connection(d.fd);
            if (c == nullptr || c->generation != d.generation || c->pending.kind == Kind::kNone)
                continue;
            respond(*c);
            if (flush(*c))
                serve(*c);
        }
        if (!due_.empty())
            arm(due_.top().at_ns);
    }

    void status_line(std::string &out, const char *status, const char *type, size_t length,
                     bool close) {
        out += "HTTP/1.1 ";
        out += status;
        out += "\r\nContent-Type: ";
        out += type;
        out += "\r\nContent-Length: ";
        out += std::to_string(length);
        out += close ? "\r\nConnection: close\r\n\r\n" : "\r\n\r\n";
    }

    void json_answer(Connection &c, const char *status, const std::string &body) {
        status_line(c.out, status, "application/json", body.size(), c.close_after);
        c.out += body;
    }

    void sse_chunk(std::string &out, std::string_view event) {
        char size[24];
        std::snprintf(size, sizeof(size), "%zx\r\n", event.size());
        out += size;
        out += event;
        out += "\r\n";
    }

    // One SSE event of a stream, by number: the content tokens, then the finish chunk, the
    // usage chunk if asked for and [DONE]. False when the stream is over.
    bool stream_event(const Pending &p, int n, std::string &event) {
        const int tokens = static_cast<int>(bodies_.tokens.size());
        std::string head =
            "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\","
            "\"created\":1735689600,\"model\":\"" +
            p.model + "\",\"choices\":";
        if (n < tokens) {
            event = head + "[{\"index\":0,\"delta\":{" + (n == 0 ? "\"role\":\"assistant\"," : "") +
                    "\"content\":\"" + bodies_.tokens[static_cast<size_t>(n)] +
                    "\"},\"finish_reason\":null}]}\n\n";
            return true;
        }
        if (n == tokens) {
            event = head + "[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
            return true;
        }
        if (n == tokens + 1 && p.include_usage) {
            event = head + "[],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":" +
                    std::to_string(tokens) + ",\"total_tokens\":" + std::to_string(24 + tokens) +
                    "}}\n\n";
            return true;
        }
        if (n == tokens + 1 || (n == tokens + 2 && p.include_usage)) {
            event = "data: [DONE]\n\n";
            return true;
        }
        return false;
    }

    // One Anthropic event of a stream, by number, as stream_event's.
    bool messages_event(const Pending &p, int n, std::string &event) {
        const int tokens = static_cast<int>(bodies_.tokens.size());
        if (n == 0) {
            event =
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"
                "\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"" +
                p.model +
                "\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{"
                "\"input_tokens\":24,\"output_tokens\":1}}}\n\n"
                "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
            return true;
        }
        if (n <= tokens) {
            event =
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"" +
                bodies_.tokens[static_cast<size_t>(n - 1)] + "\"}}\n\n";
            return true;
        }
        if (n == tokens + 1) {
            event =
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                "\"index\":0}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\","
                "\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{"
                "\"output_tokens\":" +
                std::to_string(tokens) +
                "}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
            return true;
        }
        return false;
    }

    void respond(Connection &c) {
        Pending &p = c.pending;
        switch (p.kind) {
            case Kind::kChat: {
                std::string body =
                    "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":"
                    "1735689600,\"model\":\"" +
                    p.model +
                    "\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                    "\"content\":\"Hello from the benchmark mock.\"},\"logprobs\":null,"
                    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":24,"
                    "\"completion_tokens\":7,\"total_tokens\":31}}";
                json_answer(c, "200 OK", body);
                break;
            }
            case Kind::kMessages: {
                std::string body =
                    "{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\","
                    "\"model\":\"" +
                    p.model +
                    "\",\"content\":[{\"type\":\"text\",\"text\":\"Hello from the benchmark "
                    "mock.\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{"
                    "\"input_tokens\":24,\"output_tokens\":7}}";
                json_answer(c, "200 OK", body);
                break;
            }
            case Kind::kStream:
            case Kind::kMessagesStream: {
                if (p.next_chunk == 0) {
                    c.out +=
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n";
                    c.out += c.close_after ? "Connection: close\r\n\r\n" : "\r\n";
                }
                std::string event;
                auto next = [&](int n) {
                    return p.kind == Kind::kStream ? stream_event(p, n, event)
                                                   : messages_event(p, n, event);
                };
                while (next(p.next_chunk)) {
                    p.next_chunk++;
                    sse_chunk(c.out, event);
                    if (options_.chunk_interval_ms > 0 && next(p.next_chunk)) {
                        schedule(c, now_ns() + options_.chunk_interval_ms * 1000000);
                        return;  // the rest follows on the timer
                    }
                }
                c.out += "0\r\n\r\n";
                break;
            }
            case Kind::kEmbeddings: {
                const std::string &vector =
                    p.base64 ? bodies_.embedding_base64 : bodies_.embedding_floats;
                std::string body = "{\"object\":\"list\",\"data\":[";
                body.reserve(static_cast<size_t>(p.inputs) * (vector.size() + 64) + 128);
                for (int i = 0; i < p.inputs; i++) {
                    body += i == 0 ? "" : ",";
                    body += "{\"object\":\"embedding\",\"index\":" + std::to_string(i) +
                            ",\"embedding\":";
                    body += vector;
                    body += "}";
                }
                int tokens = 8 * p.inputs;
                body += "],\"model\":\"" + p.model +
                        "\",\"usage\":{\"prompt_tokens\":" + std::to_string(tokens) +
                        ",\"total_tokens\":" + std::to_string(tokens) + "}}";
                json_answer(c, "200 OK", body);
                break;
            }
            case Kind::kModels:
                json_answer(c, "200 OK",
                            "{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4o-mini\",\"object\":"
                            "\"model\",\"created\":1735689600,\"owned_by\":\"bench\"}]}");
                break;
            case Kind::kHealth:
                json_answer(c, "200 OK", "{\"status\":\"ok\"}");
                break;
            case Kind::kNotFound:
                json_answer(c, "404 Not Found",
                            "{\"error\":{\"message\":\"not found\",\"type\":"
                            "\"invalid_request_error\",\"param\":null,\"code\":null}}");
                break;
            case Kind::kBadRequest:
                json_answer(c, "400 Bad Request",
                            "{\"error\":{\"message\":\"bad request\",\"type\":"
                            "\"invalid_request_error\",\"param\":null,\"code\":null}}");
                break;
            case Kind::kNone:
                return;
        }
        c.pending = Pending();
    }

    // Writes what is queued. False when the connection is gone.
    bool flush(Connection &c) {
        while (c.out_sent < c.out.size()) {
            ssize_t sent =
                send(c.fd, c.out.data() + c.out_sent, c.out.size() - c.out_sent, MSG_NOSIGNAL);
            if (sent > 0) {
                c.out_sent += static_cast<size_t>(sent);
                continue;
            }
            if (sent < 0 && errno == EINTR)
                continue;
            if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (!c.writable_armed) {
                    epoll_event ev{};
                    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLOUT;
                    ev.data.fd = c.fd;
                    epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
                    c.writable_armed = true;
                }
                return true;
            }
            close_connection(c);
            return false;
        }
        c.out.clear();
        c.out_sent = 0;
        if (c.writable_armed) {
            epoll_event ev{};
            ev.events = EPOLLIN | EPOLLRDHUP;
            ev.data.fd = c.fd;
            epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
            c.writable_armed = false;
        }
        if (c.close_after && c.pending.kind == Kind::kNone) {
            close_connection(c);
            return false;
        }
        return true;
    }

    Options options_;
    Bodies bodies_;
    int listen_fd_;
    int epoll_ = -1;
    int timer_ = -1;
    uint64_t generation_ = 0;
    std::vector<std::unique_ptr<Connection>> connections_;
    std::priority_queue<Due, std::vector<Due>, std::greater<Due>> due_;
};

[[noreturn]] void usage(const char *message) {
    std::fprintf(stderr,
                 "fast_mock: %s\nusage: fast_mock --port P [--latency-ms MS] [--dimensions N] "
                 "[--stream-tokens N] [--chunk-interval-ms MS]\n",
                 message);
    std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string flag = argv[i];
        if (i + 1 >= argc)
            usage("every option needs a value");
        long value = std::strtol(argv[++i], nullptr, 10);
        if (value < 0)
            usage("values are non-negative integers");
        if (flag == "--port")
            o.port = static_cast<int>(value);
        else if (flag == "--latency-ms")
            o.latency_ms = value;
        else if (flag == "--dimensions")
            o.dimensions = static_cast<int>(value);
        else if (flag == "--stream-tokens")
            o.stream_tokens = static_cast<int>(value);
        else if (flag == "--chunk-interval-ms")
            o.chunk_interval_ms = value;
        else
            usage("unknown option");
    }
    if (o.port <= 0 || o.port > 65535)
        usage("--port is required");

    std::signal(SIGPIPE, SIG_IGN);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(o.port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0 || listen(fd, 4096) != 0) {
        std::perror("fast_mock: bind");
        return 1;
    }
    std::printf("fast_mock listening on 127.0.0.1:%d\n", o.port);
    std::fflush(stdout);
    Mock mock(o, fd);
    return mock.run();
}
