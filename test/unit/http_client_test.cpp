// The HTTP client against a scripted HTTP/1.1 server on 127.0.0.1. The server uses a thread per
// connection (test code only; the client itself is single-threaded) so tests can count how many
// requests the client has in flight at once.
#include "http_client.h"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cctype>
#include <chrono>
#include <functional>
#include <gtest/gtest.h>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "address_filter.h"
#include "error.h"
#include "probe.h"
#include "protocol.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using pgi::http::Client;
using pgi::http::Request;
using pgi::http::Response;
using pgi::http::RetryPolicy;

long ms_since(Clock::time_point start) {
    return static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
}

struct SeenRequest {
    std::string method;
    std::string path;
    std::vector<std::string> headers;  // lowercased "name: value"
    std::string body;

    std::string header(const std::string &name) const {
        for (const auto &h : headers)
            if (h.rfind(name + ":", 0) == 0)
                return h.substr(name.size() + 2);
        return {};
    }
};

struct Reply {
    int status = 200;
    std::vector<std::string> headers;
    std::string body;
    int delay_ms = 0;
    bool hang = false;   // never answer; wait for the client to go away
    bool close = false;  // no Content-Length: the body ends when the connection closes
};

using Handler = std::function<Reply(const SeenRequest &)>;

class LoopbackServer {
  public:
    explicit LoopbackServer(Handler handler) : handler_(std::move(handler)) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = 0;
        if (::bind(listen_fd_, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
            ::listen(listen_fd_, 128) != 0)
            throw std::runtime_error("cannot listen on 127.0.0.1");
        socklen_t len = sizeof addr;
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr *>(&addr), &len);
        port_ = ntohs(addr.sin_port);
        acceptor_ = std::thread([this] { accept_loop(); });
    }

    ~LoopbackServer() {
        stop_ = true;
        acceptor_.join();
        // Only the acceptor adds workers, and it has stopped.
        for (auto &t : workers_)
            t.join();
        ::close(listen_fd_);
    }

    std::string url(const std::string &path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    int connections() const { return connections_; }
    int requests() const { return requests_; }
    int max_in_flight() const { return max_in_flight_; }

  private:
    void accept_loop() {
        while (!stop_) {
            pollfd p{listen_fd_, POLLIN, 0};
            if (::poll(&p, 1, 10) <= 0)
                continue;
            int fd = ::accept(listen_fd_, nullptr, nullptr);
            if (fd < 0)
                continue;
            connections_++;
            workers_.emplace_back([this, fd] {
                serve(fd);
                ::close(fd);
            });
        }
    }

    // Waits in short slices so the destructor can stop a connection that is waiting for input.
    bool read_more(int fd, std::string &buf) {
        while (!stop_) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 10) <= 0)
                continue;
            char tmp[65536];
            ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
            if (n <= 0)
                return false;
            buf.append(tmp, static_cast<size_t>(n));
            return true;
        }
        return false;
    }

    static bool send_all(int fd, const std::string &data) {
        size_t off = 0;
        while (off < data.size()) {
            ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
            if (n <= 0)
                return false;
            off += static_cast<size_t>(n);
        }
        return true;
    }

    void serve(int fd) {
        std::string buf;
        for (;;) {
            size_t end;
            while ((end = buf.find("\r\n\r\n")) == std::string::npos)
                if (!read_more(fd, buf))
                    return;
            SeenRequest req;
            std::string head = buf.substr(0, end);
            buf.erase(0, end + 4);
            size_t line_end = head.find("\r\n");
            std::string request_line = head.substr(0, line_end);
            size_t sp1 = request_line.find(' ');
            size_t sp2 = request_line.find(' ', sp1 + 1);
            req.method = request_line.substr(0, sp1);
            req.path = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
            size_t content_length = 0;
            while (line_end != std::string::npos) {
                size_t next = head.find("\r\n", line_end + 2);
                std::string line =
                    head.substr(line_end + 2, next == std::string::npos ? std::string::npos
                                                                        : next - line_end - 2);
                size_t colon = line.find(':');
                for (size_t i = 0; i < colon && i < line.size(); i++)
                    line[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(line[i])));
                req.headers.push_back(line);
                if (line.rfind("content-length:", 0) == 0)
                    content_length = std::stoul(line.substr(15));
                line_end = next;
            }
            while (buf.size() < content_length)
                if (!read_more(fd, buf))
                    return;
            req.body = buf.substr(0, content_length);
            buf.erase(0, content_length);

            requests_++;
            int now = ++in_flight_;
            int seen = max_in_flight_;
            while (now > seen && !max_in_flight_.compare_exchange_weak(seen, now)) {
            }
            Reply reply = handler_(req);
            if (reply.hang) {
                while (read_more(fd, buf)) {
                }
                in_flight_--;
                return;
            }
            for (int waited = 0; waited < reply.delay_ms && !stop_; waited += 5)
                std::this_thread::sleep_for(5ms);
            std::string out = "HTTP/1.1 " + std::to_string(reply.status) + " Scripted\r\n";
            for (const auto &h : reply.headers)
                out += h + "\r\n";
            if (reply.close)
                out += "Connection: close\r\n";
            else
                out += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n";
            out += "\r\n" + reply.body;
            // Before sending: once the client has the answer it may start its next request.
            in_flight_--;
            if (!send_all(fd, out) || reply.close)
                return;
        }
    }

    Handler handler_;
    int listen_fd_ = -1;
    int port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread acceptor_;
    std::vector<std::thread> workers_;
    std::atomic<int> connections_{0};
    std::atomic<int> requests_{0};
    std::atomic<int> in_flight_{0};
    std::atomic<int> max_in_flight_{0};
};

// The scripted behaviours, chosen by the first path segment.
class Routes {
  public:
    Reply handle(const SeenRequest &r) {
        std::vector<std::string> seg;
        for (size_t pos = 1; pos <= r.path.size();) {
            size_t next = r.path.find('/', pos);
            if (next == std::string::npos)
                next = r.path.size();
            seg.push_back(r.path.substr(pos, next - pos));
            pos = next + 1;
        }
        const int hit = count_hit(r.path);
        Reply reply;
        const std::string &what = seg.empty() ? r.path : seg[0];
        if (what == "ok") {
            reply.body = "ok " + r.path;
        } else if (what == "echo") {
            reply.body = r.method + "\n" + r.body;
            reply.headers.push_back("X-Saw-Expect: " +
                                    std::string(r.header("expect").empty() ? "no" : "yes"));
        } else if (what == "headers") {
            reply.headers = {"X-Custom-Header:   Value  ", "Content-Type: text/plain"};
        } else if (what == "slow") {
            reply.delay_ms = std::stoi(seg.at(1));
            reply.body = r.path;
        } else if (what == "flaky") {
            if (hit <= std::stoi(seg.at(1))) {
                reply.status = 503;
                reply.body = R"({"error":{"message":"busy"}})";
            }
        } else if (what == "retry-after") {
            if (hit == 1) {
                reply.status = 429;
                reply.headers.push_back("Retry-After: " + seg.at(1));
            }
        } else if (what == "retry-after-date") {
            if (hit == 1) {
                reply.status = 503;
                reply.headers.push_back("Retry-After: Wed, 21 Oct 2015 07:28:00 GMT");
            }
        } else if (what == "status") {
            reply.status = std::stoi(seg.at(1));
        } else if (what == "hang") {
            reply.hang = true;
        } else if (what == "big" || what == "bigstream") {
            reply.body.assign(std::stoul(seg.at(1)), 'x');
            reply.close = what == "bigstream";
        } else {
            reply.status = 404;
        }
        return reply;
    }

    int hits(const std::string &path) {
        std::lock_guard<std::mutex> lock(mu_);
        return hits_[path];
    }

  private:
    int count_hit(const std::string &path) {
        std::lock_guard<std::mutex> lock(mu_);
        return ++hits_[path];
    }

    std::mutex mu_;
    std::map<std::string, int> hits_;
};

class HttpClientTest : public ::testing::Test {
  protected:
    Request get(const std::string &path) {
        Request r;
        r.url = server.url(path);
        r.timeout_ms = 5000;
        return r;
    }

    // Declared before the server, so the server's threads stop before the routes go away.
    Routes routes;
    LoopbackServer server{[this](const SeenRequest &r) { return routes.handle(r); }};
    Client client;
    pgi::http::WaitHook no_wait;
};

TEST_F(HttpClientTest, SimpleGetReturnsStatusBodyAndHeaders) {
    Response r = client.perform_one(get("/headers"), no_wait);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.curl_code, 0);
    EXPECT_EQ(r.attempts, 1);
    EXPECT_TRUE(r.transport_error.empty());
    EXPECT_EQ(r.header("x-custom-header"), "Value");
    EXPECT_EQ(r.header("content-type"), "text/plain");
    EXPECT_EQ(r.header("absent"), "");
    for (const auto &h : r.headers)
        for (char c : h.first)
            EXPECT_FALSE(std::isupper(static_cast<unsigned char>(c)));
}

TEST_F(HttpClientTest, PostSendsBodyWithoutExpectContinue) {
    Request r = get("/echo");
    r.method = "POST";
    r.headers = {"Content-Type: application/json"};
    // Above curl's 1 MB threshold for "Expect: 100-continue".
    r.body = std::string(1536 * 1024, 'b');
    Response resp = client.perform_one(r, no_wait);
    EXPECT_EQ(resp.status, 200);
    EXPECT_EQ(resp.body, "POST\n" + r.body);
    EXPECT_EQ(resp.header("x-saw-expect"), "no");
}

TEST_F(HttpClientTest, EmptyPostAndCustomMethods) {
    Request r = get("/echo");
    r.method = "POST";
    EXPECT_EQ(client.perform_one(r, no_wait).body, "POST\n");
    r.method = "DELETE";
    EXPECT_EQ(client.perform_one(r, no_wait).body, "DELETE\n");
    r.method = "PUT";
    r.body = "payload";
    EXPECT_EQ(client.perform_one(r, no_wait).body, "PUT\npayload");
}

TEST_F(HttpClientTest, BatchResultsKeepRequestOrder) {
    std::vector<Request> requests;
    // Later requests finish first.
    for (int i = 0; i < 10; i++)
        requests.push_back(get("/slow/" + std::to_string((10 - i) * 15) + "/" + std::to_string(i)));
    std::vector<Response> responses = client.perform(requests, 10, no_wait);
    ASSERT_EQ(responses.size(), requests.size());
    for (int i = 0; i < 10; i++) {
        EXPECT_EQ(responses[i].status, 200);
        EXPECT_EQ(responses[i].body,
                  "/slow/" + std::to_string((10 - i) * 15) + "/" + std::to_string(i));
    }
}

TEST_F(HttpClientTest, EmptyBatchReturnsNothing) {
    EXPECT_TRUE(client.perform({}, 4, no_wait).empty());
}

TEST_F(HttpClientTest, MaxConcurrencyIsRespected) {
    std::vector<Request> requests;
    for (int i = 0; i < 12; i++)
        requests.push_back(get("/slow/60/" + std::to_string(i)));
    std::vector<Response> responses = client.perform(requests, 3, no_wait);
    for (const auto &r : responses)
        EXPECT_EQ(r.status, 200);
    EXPECT_LE(server.max_in_flight(), 3);
    EXPECT_GE(server.max_in_flight(), 2);
}

TEST_F(HttpClientTest, BatchRunsConcurrently) {
    std::vector<Request> requests;
    for (int i = 0; i < 8; i++)
        requests.push_back(get("/slow/150/" + std::to_string(i)));
    auto start = Clock::now();
    std::vector<Response> responses = client.perform(requests, 8, no_wait);
    EXPECT_LT(ms_since(start), 8 * 150 / 2);
    EXPECT_GE(server.max_in_flight(), 4);
}

TEST_F(HttpClientTest, ConnectionsAreReusedAcrossCalls) {
    for (int i = 0; i < 20; i++) {
        Response r = client.perform_one(get("/ok/" + std::to_string(i)), no_wait);
        ASSERT_EQ(r.status, 200);
        EXPECT_EQ(client.connections_opened(), 1);
    }
    EXPECT_EQ(server.connections(), 1);
}

TEST_F(HttpClientTest, RetriesServiceUnavailableUntilSuccess) {
    RetryPolicy retry;
    retry.max_retries = 3;
    retry.base_backoff_ms = 10;
    Response r = client.perform_one(get("/flaky/2"), no_wait, retry);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.attempts, 3);
    EXPECT_EQ(routes.hits("/flaky/2"), 3);
}

TEST_F(HttpClientTest, GivesUpAfterMaxRetriesWithLastResponse) {
    RetryPolicy retry;
    retry.max_retries = 2;
    retry.base_backoff_ms = 5;
    Response r = client.perform_one(get("/flaky/10"), no_wait, retry);
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.attempts, 3);
    EXPECT_EQ(r.body, R"({"error":{"message":"busy"}})");
}

TEST_F(HttpClientTest, DoesNotRetryOtherClientErrors) {
    RetryPolicy retry;
    retry.max_retries = 3;
    retry.base_backoff_ms = 5;
    for (int status : {400, 401, 403, 404, 409, 422}) {
        std::string path = "/status/" + std::to_string(status);
        Response r = client.perform_one(get(path), no_wait, retry);
        EXPECT_EQ(r.status, status);
        EXPECT_EQ(r.attempts, 1);
        EXPECT_EQ(routes.hits(path), 1);
    }
}

TEST_F(HttpClientTest, RetriesEveryTransientStatus) {
    RetryPolicy retry;
    retry.max_retries = 1;
    retry.base_backoff_ms = 1;
    for (int status : {408, 429, 500, 502, 503, 504, 529}) {
        std::string path = "/status/" + std::to_string(status);
        Response r = client.perform_one(get(path), no_wait, retry);
        EXPECT_EQ(r.attempts, 2) << status;
        EXPECT_EQ(routes.hits(path), 2) << status;
    }
}

TEST_F(HttpClientTest, RetryAfterSecondsIsHonouredWhileCallingTheHook) {
    RetryPolicy retry;
    retry.max_retries = 2;
    retry.base_backoff_ms = 1;
    int hook_calls = 0;
    auto start = Clock::now();
    Response r = client.perform_one(
        get("/retry-after/1"), [&] { hook_calls++; }, retry);
    long elapsed = ms_since(start);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.attempts, 2);
    EXPECT_GE(elapsed, 900);
    EXPECT_LT(elapsed, 2500);
    // The sleep is sliced so cancellation stays prompt.
    EXPECT_GE(hook_calls, 30);
}

TEST_F(HttpClientTest, RetryAfterDateInThePastRetriesAtOnce) {
    RetryPolicy retry;
    retry.max_retries = 1;
    retry.base_backoff_ms = 5000;
    auto start = Clock::now();
    Response r = client.perform_one(get("/retry-after-date"), no_wait, retry);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.attempts, 2);
    EXPECT_LT(ms_since(start), 1000);
}

TEST_F(HttpClientTest, RetryAfterBeyondDeadlineReturnsAtOnce) {
    RetryPolicy retry;
    retry.max_retries = 3;
    retry.deadline = Clock::now() + 300ms;
    auto start = Clock::now();
    Response r = client.perform_one(get("/retry-after/1"), no_wait, retry);
    EXPECT_EQ(r.status, 429);
    EXPECT_EQ(r.attempts, 1);
    EXPECT_LT(ms_since(start), 300);
}

TEST_F(HttpClientTest, DeadlineStopsBackoffRetries) {
    RetryPolicy retry;
    retry.max_retries = 100;
    retry.base_backoff_ms = 100;
    retry.max_backoff_ms = 100;
    retry.deadline = Clock::now() + 250ms;
    auto start = Clock::now();
    Response r = client.perform_one(get("/flaky/1000"), no_wait, retry);
    EXPECT_EQ(r.status, 503);
    // The deadline plus one quick answer; the slack is for a loaded test machine.
    EXPECT_LE(ms_since(start), 350);
    EXPECT_GE(r.attempts, 2);
    EXPECT_LT(r.attempts, 100);
}

TEST_F(HttpClientTest, RetriedRequestsDoNotHoldUpTheBatch) {
    RetryPolicy retry;
    retry.max_retries = 2;
    retry.base_backoff_ms = 1;
    std::vector<Request> requests = {get("/flaky/2"), get("/slow/50/a"), get("/ok/b"),
                                     get("/status/401"), get("/slow/20/c")};
    std::vector<Response> responses = client.perform(requests, 2, no_wait, retry);
    ASSERT_EQ(responses.size(), 5u);
    EXPECT_EQ(responses[0].status, 200);
    EXPECT_EQ(responses[0].attempts, 3);
    EXPECT_EQ(responses[1].body, "/slow/50/a");
    EXPECT_EQ(responses[2].body, "ok /ok/b");
    EXPECT_EQ(responses[3].status, 401);
    EXPECT_EQ(responses[3].attempts, 1);
    EXPECT_EQ(responses[4].body, "/slow/20/c");
    EXPECT_LE(server.max_in_flight(), 2);
}

TEST_F(HttpClientTest, OverallTimeoutIsNotRetried) {
    Request r = get("/hang");
    r.timeout_ms = 150;
    RetryPolicy retry;
    retry.max_retries = 2;
    retry.base_backoff_ms = 1;
    Response resp = client.perform_one(r, no_wait, retry);
    EXPECT_EQ(resp.curl_code, CURLE_OPERATION_TIMEDOUT);
    EXPECT_EQ(resp.status, 0);
    EXPECT_EQ(resp.attempts, 1);
    EXPECT_FALSE(resp.transport_error.empty());
}

TEST_F(HttpClientTest, ThrowingHookAbortsHangingTransferAndClientStaysUsable) {
    auto start = Clock::now();
    pgi::http::WaitHook hook = [&] {
        if (Clock::now() - start > 100ms)
            throw pgi::Interrupted();
    };
    EXPECT_THROW(client.perform_one(get("/hang"), hook), pgi::Interrupted);
    EXPECT_LT(ms_since(start), 300);

    Response r = client.perform_one(get("/ok/after"), no_wait);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "ok /ok/after");
}

TEST_F(HttpClientTest, ThrowingHookAbortsWholeBatchAndRetrySleeps) {
    std::vector<Request> requests = {get("/hang"), get("/hang"), get("/flaky/1000"), get("/ok/x")};
    RetryPolicy retry;
    retry.max_retries = 5;
    retry.base_backoff_ms = 10000;
    retry.max_backoff_ms = 10000;
    auto start = Clock::now();
    pgi::http::WaitHook hook = [&] {
        if (Clock::now() - start > 100ms)
            throw pgi::Interrupted();
    };
    EXPECT_THROW(client.perform(requests, 4, hook, retry), pgi::Interrupted);
    EXPECT_LT(ms_since(start), 300);

    std::vector<Response> again = client.perform({get("/ok/1"), get("/ok/2")}, 2, no_wait);
    EXPECT_EQ(again[0].body, "ok /ok/1");
    EXPECT_EQ(again[1].body, "ok /ok/2");
}

TEST_F(HttpClientTest, HookIsCalledOftenDuringATransfer) {
    std::vector<Clock::time_point> calls;
    Response r = client.perform_one(get("/slow/200"), [&] { calls.push_back(Clock::now()); });
    EXPECT_EQ(r.status, 200);
    ASSERT_GE(calls.size(), 5u);
    auto longest = 0ms;
    for (size_t i = 1; i < calls.size(); i++)
        longest = std::max(longest, std::chrono::duration_cast<std::chrono::milliseconds>(
                                        calls[i] - calls[i - 1]));
    // 20 ms slices; the slack is for a loaded test machine.
    EXPECT_LT(longest.count(), 60);
}

TEST_F(HttpClientTest, OversizedBodyIsAbortedWithContentLength) {
    Request r = get("/big/2000000");
    r.max_response_size = 1u << 20;
    RetryPolicy retry;
    retry.max_retries = 2;
    Response resp = client.perform_one(r, no_wait, retry);
    EXPECT_TRUE(resp.too_large);
    EXPECT_NE(resp.curl_code, 0);
    EXPECT_EQ(resp.attempts, 1);
    EXPECT_LE(resp.body.size(), r.max_response_size);
    EXPECT_EQ(resp.transport_error, "response larger than 1048576 bytes");
}

TEST_F(HttpClientTest, OversizedBodyIsAbortedWithoutContentLength) {
    Request r = get("/bigstream/2000000");
    r.max_response_size = 1u << 20;
    Response resp = client.perform_one(r, no_wait);
    EXPECT_TRUE(resp.too_large);
    EXPECT_EQ(resp.curl_code, CURLE_WRITE_ERROR);
    EXPECT_LE(resp.body.size(), r.max_response_size);
}

TEST_F(HttpClientTest, BodyAtTheCapIsAccepted) {
    Request r = get("/bigstream/1000");
    r.max_response_size = 1000;
    Response resp = client.perform_one(r, no_wait);
    EXPECT_FALSE(resp.too_large);
    EXPECT_EQ(resp.curl_code, 0);
    EXPECT_EQ(resp.body.size(), 1000u);
}

// A port that was just free: connecting to it is refused.
int closed_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
}

TEST(HttpClient, ConnectionRefusedIsATransportErrorAndIsRetried) {
    Client client;
    Request r;
    r.url = "http://127.0.0.1:" + std::to_string(closed_port()) + "/x";
    RetryPolicy retry;
    retry.max_retries = 2;
    retry.base_backoff_ms = 1;
    Response resp = client.perform_one(r, nullptr, retry);
    EXPECT_EQ(resp.curl_code, CURLE_COULDNT_CONNECT);
    EXPECT_EQ(resp.status, 0);
    EXPECT_FALSE(resp.transport_error.empty());
    EXPECT_FALSE(resp.tls_error);
    EXPECT_EQ(resp.attempts, 3);
}

// The loopback server's address, as inference.blocked_networks would list it.
std::shared_ptr<const pgi::net::AddressFilter> loopback_blocked() {
    return std::make_shared<const pgi::net::AddressFilter>(
        pgi::net::AddressFilter::parse("169.254.0.0/16, 127.0.0.0/8"));
}

TEST_F(HttpClientTest, BlockedNetworksRefuseANewConnectionWithoutRetrying) {
    Request r = get("/ok/blocked");
    r.blocked_networks = loopback_blocked();
    RetryPolicy retry;
    retry.max_retries = 2;
    retry.base_backoff_ms = 1;
    Response resp = client.perform_one(r, no_wait, retry);
    EXPECT_TRUE(resp.blocked);
    EXPECT_EQ(resp.status, 0);
    EXPECT_EQ(resp.attempts, 1);
    EXPECT_FALSE(is_retryable(resp));
    EXPECT_EQ(resp.transport_error, "upstream address 127.0.0.1 is in inference.blocked_networks");
    EXPECT_EQ(server.connections(), 0);
    EXPECT_EQ(routes.hits("/ok/blocked"), 0);
}

TEST_F(HttpClientTest, BlockedNetworksRefuseAKeptAliveConnection) {
    // The first call leaves a connection in the cache; the restricted call must not use it.
    ASSERT_EQ(client.perform_one(get("/ok/first"), no_wait).status, 200);
    Request r = get("/ok/second");
    r.blocked_networks = loopback_blocked();
    Response resp = client.perform_one(r, no_wait);
    EXPECT_TRUE(resp.blocked);
    EXPECT_EQ(resp.transport_error, "upstream address 127.0.0.1 is in inference.blocked_networks");
    EXPECT_EQ(routes.hits("/ok/second"), 0);
    // Unrestricted calls, and restricted ones whose address is not listed, still go through.
    EXPECT_EQ(client.perform_one(get("/ok/third"), no_wait).status, 200);
    Request other = get("/ok/fourth");
    other.blocked_networks = std::make_shared<const pgi::net::AddressFilter>(
        pgi::net::AddressFilter::parse("169.254.0.0/16"));
    EXPECT_EQ(client.perform_one(other, no_wait).status, 200);
}

TEST(HttpClient, OnlyHttpAndHttpsAreAllowed) {
    Client client;
    Request r;
    r.url = "file:///etc/passwd";
    Response resp = client.perform_one(r, nullptr);
    EXPECT_EQ(resp.curl_code, CURLE_UNSUPPORTED_PROTOCOL);
    EXPECT_TRUE(resp.body.empty());
}

TEST(HttpClient, RetryableClassification) {
    auto with_code = [](int code) {
        Response r;
        r.curl_code = code;
        return r;
    };
    auto with_status = [](long status) {
        Response r;
        r.status = status;
        return r;
    };
    for (int code : {CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_SEND_ERROR,
                     CURLE_RECV_ERROR, CURLE_GOT_NOTHING})
        EXPECT_TRUE(pgi::http::is_retryable(with_code(code))) << code;
    for (int code : {CURLE_OPERATION_TIMEDOUT, CURLE_PEER_FAILED_VERIFICATION,
                     CURLE_SSL_CONNECT_ERROR, CURLE_WRITE_ERROR, CURLE_UNSUPPORTED_PROTOCOL})
        EXPECT_FALSE(pgi::http::is_retryable(with_code(code))) << code;
    Response tls = with_code(CURLE_RECV_ERROR);
    tls.tls_error = true;
    EXPECT_FALSE(pgi::http::is_retryable(tls));
    Response big = with_code(CURLE_RECV_ERROR);
    big.too_large = true;
    EXPECT_FALSE(pgi::http::is_retryable(big));
    for (long s : {408, 429, 500, 502, 503, 504, 529})
        EXPECT_TRUE(pgi::http::is_retryable(with_status(s))) << s;
    for (long s : {200, 201, 301, 400, 401, 403, 404, 409, 413, 422, 501, 505})
        EXPECT_FALSE(pgi::http::is_retryable(with_status(s))) << s;
}

// The gateway will drive apply_request/finish_transfer from its own loop and stream bodies.
TEST_F(HttpClientTest, TransferStreamsBodyThroughSink) {
    CURL *easy = curl_easy_init();
    ASSERT_NE(easy, nullptr);
    Request r = get("/big/300000");
    std::string streamed;
    long status_at_first_chunk = -1;
    {
        pgi::http::Transfer t;
        t.on_body = [&](const char *data, size_t n) {
            if (status_at_first_chunk < 0)
                status_at_first_chunk = t.response.status;
            streamed.append(data, n);
            return true;
        };
        pgi::http::apply_request(easy, r, t);
        EXPECT_EQ(pgi::http::transfer_of(easy), &t);
        pgi::http::finish_transfer(easy, curl_easy_perform(easy), t);
        EXPECT_EQ(t.response.status, 200);
        EXPECT_EQ(t.response.curl_code, 0);
        EXPECT_TRUE(t.response.body.empty());
        curl_easy_reset(easy);
    }
    EXPECT_EQ(streamed, std::string(300000, 'x'));
    EXPECT_EQ(status_at_first_chunk, 200);

    pgi::http::Transfer aborted;
    aborted.on_body = [](const char *, size_t) { return false; };
    pgi::http::apply_request(easy, r, aborted);
    pgi::http::finish_transfer(easy, curl_easy_perform(easy), aborted);
    EXPECT_EQ(aborted.response.curl_code, CURLE_WRITE_ERROR);
    EXPECT_FALSE(aborted.response.too_large);
    curl_easy_cleanup(easy);
}

// perform_feed: requests join while others are in flight, and a hung one holds back no other.
TEST_F(HttpClientTest, FeedStartsRequestsAddedWhileOthersRun) {
    using pgi::http::FedRequest;
    std::vector<std::pair<size_t, long>> done;  // id, ms since start
    const auto start = Clock::now();
    int polls = 0;
    bool added = false;
    client.perform_feed(
        [&](std::vector<FedRequest> &out) {
            polls++;
            if (polls == 1) {
                out.push_back({1, get("/hang")});
                out.back().request.timeout_ms = 1500;
                out.push_back({2, get("/slow/50/a")});
            }
            // Added once the first fast one is done, while the hung one is still in flight.
            if (!added && done.size() == 1) {
                added = true;
                out.push_back({3, get("/ok/b")});
            }
            return !added;
        },
        8, no_wait, {},
        [&](size_t id, const Response &r) {
            done.emplace_back(id, ms_since(start));
            if (id != 1) {
                EXPECT_EQ(r.status, 200);
            }
        });
    ASSERT_EQ(done.size(), 3u);
    EXPECT_EQ(done[0].first, 2u);
    EXPECT_EQ(done[1].first, 3u);
    // The request fed late finished long before the hung one timed out.
    EXPECT_LT(done[1].second, 700);
    EXPECT_EQ(done[2].first, 1u);
    EXPECT_GE(done[2].second, 1400);
    EXPECT_GT(polls, 3);
}

TEST_F(HttpClientTest, FeedIsPolledWhileNothingIsInFlightAndStopsWhenTold) {
    using pgi::http::FedRequest;
    int polls = 0;
    int done = 0;
    const auto start = Clock::now();
    client.perform_feed(
        [&](std::vector<FedRequest> &out) {
            polls++;
            if (polls == 5)
                out.push_back({7, get("/ok/late")});
            return ms_since(start) < 200;
        },
        2, no_wait, {},
        [&](size_t id, const Response &r) {
            EXPECT_EQ(id, 7u);
            EXPECT_EQ(r.status, 200);
            done++;
        });
    EXPECT_EQ(done, 1);
    EXPECT_GE(ms_since(start), 200);
    // At least every 20 ms (plus scheduling slack) over 200 ms.
    EXPECT_GE(polls, 6);
}

TEST_F(HttpClientTest, FeedWaitsForInFlightRequestsAfterStop) {
    using pgi::http::FedRequest;
    int polls = 0;
    std::vector<size_t> done;
    client.perform_feed(
        [&](std::vector<FedRequest> &out) {
            polls++;
            for (int i = 0; i < 6; i++)
                out.push_back({static_cast<size_t>(i), get("/slow/80/" + std::to_string(i))});
            return false;  // these are the last, but they still run to the end
        },
        2, no_wait, {},
        [&](size_t id, const Response &r) {
            EXPECT_EQ(r.status, 200);
            done.push_back(id);
        });
    EXPECT_EQ(polls, 1);
    EXPECT_EQ(done.size(), 6u);
    EXPECT_LE(server.max_in_flight(), 2);
}

TEST_F(HttpClientTest, FeedKeepsRetriesAndStaysUsableAfterAThrow) {
    using pgi::http::FedRequest;
    RetryPolicy retry;
    retry.max_retries = 3;
    retry.base_backoff_ms = 10;
    int attempts = 0;
    bool handed = false;
    client.perform_feed(
        [&](std::vector<FedRequest> &out) {
            if (!handed)
                out.push_back({0, get("/flaky/2/feed")});
            handed = true;
            return false;
        },
        1, no_wait, retry,
        [&](size_t, const Response &r) {
            EXPECT_EQ(r.status, 200);
            attempts = r.attempts;
        });
    EXPECT_EQ(attempts, 3);

    // A feeder that throws while a request hangs: the client cleans up and carries on.
    const auto start = Clock::now();
    bool hung = false;
    EXPECT_THROW(client.perform_feed(
                     [&](std::vector<FedRequest> &out) {
                         if (ms_since(start) > 150)
                             throw std::runtime_error("stop");
                         if (!hung)
                             out.push_back({0, get("/hang")});
                         hung = true;
                         return true;
                     },
                     4, no_wait, {}, nullptr),
                 std::runtime_error);
    EXPECT_LT(ms_since(start), 1000);
    EXPECT_EQ(client.perform_one(get("/ok/after"), no_wait).status, 200);
}

// probe_all over real HTTP lives here because it needs the loopback server above.
class ProbeOverHttpTest : public ::testing::Test {
  protected:
    Reply handle(const SeenRequest &r) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            hits_[r.path]++;
            seen_keys_.push_back(r.header("authorization") + r.header("x-goog-api-key") +
                                 r.header("x-api-key"));
        }
        Reply reply;
        if (r.path == "/openai/v1/models/gpt-4o") {
            reply.body = R"({"id":"gpt-4o","object":"model"})";
        } else if (r.path.rfind("/vllm/v1/models/", 0) == 0) {
            reply.status = 404;
            reply.body = R"({"detail":"Not Found"})";
        } else if (r.path == "/vllm/v1/models") {
            reply.body = R"({"object":"list","data":[{"id":"meta/llama-3.1-8b-instruct"},)"
                         R"({"id":"served"}]})";
        } else if (r.path.rfind("/locked/v1/models/", 0) == 0) {
            reply.status = 404;
        } else if (r.path == "/locked/v1/models") {
            reply.status = 401;
            reply.body = R"({"error":"Unauthorized"})";
        } else if (r.path == "/gemini/v1beta/models/gemini-2.0-flash") {
            if (r.header("x-goog-api-key") != "good") {
                reply.status = 400;
                reply.body =
                    R"({"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT",)"
                    R"("details":[{"reason":"API_KEY_INVALID"}]}})";
            }
        } else if (r.path == "/anthropic/v1/models/claude") {
            if (r.header("x-api-key") != "good" || r.header("anthropic-version").empty()) {
                reply.status = 401;
                reply.body = R"({"type":"error","error":{"type":"authentication_error"}})";
            }
        } else if (r.path == "/hang/v1/models/m") {
            reply.hang = true;
        } else if (r.path == "/busy/v1/models/m") {
            reply.status = 503;
        } else {
            reply.status = 404;
        }
        return reply;
    }

    pgi::ServiceEndpoint service(const std::string &prefix, const std::string &model,
                                 pgi::Protocol protocol, const std::string &key = "") {
        pgi::ServiceEndpoint s;
        s.name = "svc";
        s.model = model;
        s.base_url = server.url(prefix);
        s.protocol = protocol;
        s.api_key = key;
        return s;
    }

    int hits(const std::string &path) {
        std::lock_guard<std::mutex> lock(mu_);
        return hits_[path];
    }

    std::mutex mu_;
    std::map<std::string, int> hits_;
    std::vector<std::string> seen_keys_;
    LoopbackServer server{[this](const SeenRequest &r) { return handle(r); }};
    Client client;
};

TEST_F(ProbeOverHttpTest, ProbesAllServicesWithListFallback) {
    using pgi::Protocol;
    std::vector<pgi::ServiceEndpoint> services = {
        service("/openai", "gpt-4o", Protocol::kOpenAiV1, "sk-secret"),
        service("/vllm", "meta/llama-3.1-8b-instruct", Protocol::kOpenAiV1),
        service("/vllm", "served", Protocol::kOpenAiV1),
        service("/vllm", "absent", Protocol::kOpenAiV1),
        service("/locked", "m", Protocol::kOpenAiV1, "sk-wrong"),
        service("/gemini", "gemini-2.0-flash", Protocol::kGeminiV1Beta, "good"),
        service("/gemini", "gemini-2.0-flash", Protocol::kGeminiV1Beta, "bad"),
        service("/anthropic", "claude", Protocol::kAnthropicV1, "good"),
        service("/anthropic", "claude", Protocol::kAnthropicV1, "bad"),
        service("/busy", "m", Protocol::kOpenAiV1),
    };
    pgi::probe::Settings settings;
    settings.max_concurrency = 4;
    std::vector<pgi::probe::Result> results =
        pgi::probe::probe_all(client, services, settings, nullptr);
    ASSERT_EQ(results.size(), services.size());

    EXPECT_TRUE(results[0].ok);
    EXPECT_EQ(results[0].url, server.url("/openai/v1/models/gpt-4o"));
    EXPECT_TRUE(results[1].ok) << results[1].message;
    EXPECT_TRUE(results[2].ok) << results[2].message;
    // Three services on one vLLM server: one list request.
    EXPECT_EQ(hits("/vllm/v1/models"), 1);

    EXPECT_FALSE(results[3].ok);
    EXPECT_EQ(results[3].sqlstate, "PI404");
    EXPECT_EQ(results[3].message,
              "endpoint not found — check the base URL and model name (status 404 from " +
                  server.url("/vllm/v1/models/absent") + ")");

    EXPECT_EQ(results[4].sqlstate, "PI401");
    EXPECT_EQ(results[4].message, "API key is missing or invalid (status 401 from " +
                                      server.url("/locked/v1/models") + ")");

    EXPECT_TRUE(results[5].ok) << results[5].message;
    EXPECT_EQ(results[6].sqlstate, "PI401");
    EXPECT_EQ(results[6].http_status, 400);
    EXPECT_EQ(results[6].message, "API key is missing or invalid (status 400 from " +
                                      server.url("/gemini/v1beta/models/gemini-2.0-flash") + ")");

    EXPECT_TRUE(results[7].ok) << results[7].message;
    EXPECT_EQ(results[8].sqlstate, "PI401");
    EXPECT_EQ(results[8].message,
              "API key is missing/invalid or account credits are exhausted (status 401 from " +
                  server.url("/anthropic/v1/models/claude") + ")");

    // Probes are not retried.
    EXPECT_EQ(results[9].sqlstate, "PI500");
    EXPECT_EQ(hits("/busy/v1/models/m"), 1);

    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_NE(std::find(seen_keys_.begin(), seen_keys_.end(), "Bearer sk-secret"),
              seen_keys_.end());
    for (const auto &r : results)
        EXPECT_EQ(r.message.find("sk-"), std::string::npos);
}

TEST_F(ProbeOverHttpTest, ProbeOneReportsSuccess) {
    pgi::probe::Result ok = pgi::probe::probe_one(
        client, service("/openai", "gpt-4o", pgi::Protocol::kOpenAiV1), {}, nullptr);
    EXPECT_TRUE(ok.ok);
    EXPECT_EQ(ok.http_status, 200);
    EXPECT_TRUE(ok.message.empty());
    EXPECT_TRUE(ok.sqlstate.empty());
}

TEST_F(ProbeOverHttpTest, HangingEndpointTimesOutAsUnreachable) {
    pgi::probe::Settings settings;
    settings.timeout_ms = 200;
    auto start = Clock::now();
    pgi::probe::Result r = pgi::probe::probe_one(
        client, service("/hang", "m", pgi::Protocol::kOpenAiV1), settings, nullptr);
    EXPECT_LT(ms_since(start), 1000);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.sqlstate, "08001");
    EXPECT_EQ(r.message.rfind("endpoint unreachable: ", 0), 0u) << r.message;
    EXPECT_TRUE(r.hint.empty());
}

// Each result is handed on as its probe ends: a hung upstream holds back neither a direct answer
// nor one that needed the model-list request, and every service is reported exactly once.
TEST_F(ProbeOverHttpTest, ResultsArriveAsEachProbeEnds) {
    using pgi::Protocol;
    std::vector<pgi::ServiceEndpoint> services = {
        service("/hang", "m", Protocol::kOpenAiV1),
        service("/openai", "gpt-4o", Protocol::kOpenAiV1, "sk-secret"),
        service("/busy", "m", Protocol::kOpenAiV1),
    };
    pgi::probe::Settings settings;
    settings.timeout_ms = 800;
    const auto start = Clock::now();
    std::vector<std::pair<size_t, long>> heard;  // index, ms since start
    std::vector<pgi::probe::Result> results = pgi::probe::probe_all(
        client, services, settings, nullptr,
        [&](size_t i, const pgi::probe::Result &) { heard.emplace_back(i, ms_since(start)); });
    ASSERT_EQ(heard.size(), 3u);
    std::map<size_t, long> at(heard.begin(), heard.end());
    ASSERT_EQ(at.size(), 3u);
    EXPECT_LT(at[1], 400);
    EXPECT_LT(at[2], 400);
    EXPECT_GE(at[0], 700);
    EXPECT_TRUE(results[1].ok);
    EXPECT_EQ(results[2].sqlstate, "PI500") << results[2].message;
    EXPECT_FALSE(results[0].ok);
}

}  // namespace
