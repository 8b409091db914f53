// A bounded closed-loop HTTP/1.1 load generator for the gateway benchmarks
// (test/bench/gateway_compare.sh).
//
//   load_client --url http://127.0.0.1:PORT/path --body-file FILE [--header "Name: value"]...
//               [--concurrency C] [--requests N] [--seconds S] [--warmup-requests N]
//               [--warmup-seconds S] [--expect-sse] [--sse-end TEXT]
//               [--watch NAME=PID[,PID...]]... [--rss-every-ms MS] [--label TEXT]
//
// C keep-alive connections each send the request, read the whole answer and send the next one,
// as wrk does; unlike wrk it records for every request the time to the first body byte (the first
// SSE event of a stream) besides the total time, checks that streams end with data: [DONE] (or
// the --sse-end text of another dialect, within the last 16 bytes), and
// stops at a fixed request count or time bound, whichever comes first (warm-up likewise, and its
// requests are not counted). For each --watch group it reads /proc at the start and the end of
// the measured window: CPU seconds used (utime + stime of the listed processes, so CPU% of one
// core) and resident memory (VmRSS summed), and every --rss-every-ms a sample of that memory.
// One line of JSON goes to stdout; errors and a sample bad answer go to stderr.
//
// One thread and epoll: the client must cost far less than what it measures, and it shares a
// core with the mock upstream.
#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sstream>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace {

int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void die(const std::string &message) {
    std::fprintf(stderr, "load_client: %s\n", message.c_str());
    std::exit(2);
}

struct Watch {
    std::string name;
    std::vector<int> pids;
    double cpu_start = 0, cpu_end = 0;  // seconds
    long rss_start_kb = 0, rss_end_kb = 0;
    std::vector<std::pair<double, long>> rss_series;  // (seconds into the window, kB)
};

double cpu_seconds(const std::vector<int> &pids) {
    static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    double total = 0;
    for (int pid : pids) {
        std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        // Fields after the command name, which may hold spaces: state is field 3, utime 14.
        size_t close = text.rfind(')');
        if (close == std::string::npos)
            continue;
        std::istringstream fields(text.substr(close + 2));
        std::string field;
        unsigned long long utime = 0, stime = 0;
        for (int i = 3; i <= 15 && (fields >> field); i++) {
            if (i == 14)
                utime = std::strtoull(field.c_str(), nullptr, 10);
            if (i == 15)
                stime = std::strtoull(field.c_str(), nullptr, 10);
        }
        total += static_cast<double>(utime + stime) / ticks;
    }
    return total;
}

long rss_kb(const std::vector<int> &pids) {
    long total = 0;
    for (int pid : pids) {
        std::ifstream in("/proc/" + std::to_string(pid) + "/status");
        std::string line;
        while (std::getline(in, line)) {
            if (line.compare(0, 6, "VmRSS:") == 0) {
                total += std::strtol(line.c_str() + 6, nullptr, 10);
                break;
            }
        }
    }
    return total;
}

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;
    std::string path = "/";
    std::string body;
    std::vector<std::string> headers;
    int concurrency = 1;
    long requests = 1000000;
    double seconds = 5;
    long warmup_requests = 200;
    double warmup_seconds = 1;
    bool expect_sse = false;
    std::string sse_end = "[DONE]";  // what the last bytes of a whole stream hold
    long rss_every_ms = 0;
    std::string label;
    std::vector<Watch> watches;
};

// The response parser's state for one connection.
enum class Phase { kHead, kBody, kChunkSize, kChunkData, kChunkEnd, kTrailer };

struct Conn {
    int fd = -1;
    bool connected = false;
    size_t sent = 0;  // bytes of the request written
    std::string in;
    Phase phase = Phase::kHead;
    int status = 0;
    long long remaining = 0;  // body or chunk bytes still to read
    bool chunked = false;
    bool close_after = false;
    bool first_body_seen = false;
    char tail[16] = {};  // the last body bytes, for the [DONE] check
    size_t tail_size = 0;
    std::string error_sample;
    int64_t started_ns = 0, first_byte_ns = 0;
    bool busy = false;
};

class Client {
  public:
    explicit Client(Options o) : o_(std::move(o)) {
        request_ = "POST " + o_.path + " HTTP/1.1\r\nHost: " + o_.host + ":" +
                   std::to_string(o_.port) +
                   "\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(o_.body.size()) + "\r\n";
        for (const std::string &h : o_.headers)
            request_ += h + "\r\n";
        request_ += "\r\n" + o_.body;
        std::memset(&addr_, 0, sizeof(addr_));
        addr_.sin_family = AF_INET;
        addr_.sin_port = htons(static_cast<uint16_t>(o_.port));
        if (inet_pton(AF_INET, o_.host.c_str(), &addr_.sin_addr) != 1)
            die("--url needs a literal IPv4 host");
        epoll_ = epoll_create1(EPOLL_CLOEXEC);
        conns_.resize(static_cast<size_t>(o_.concurrency));
    }

    void run() {
        const int64_t t_begin = now_ns();
        const int64_t warm_deadline = t_begin + static_cast<int64_t>(o_.warmup_seconds * 1e9);
        // Nothing may run for ever: a proxy that stops answering ends the run at this bound.
        const int64_t hard_deadline = warm_deadline + static_cast<int64_t>((o_.seconds + 15) * 1e9);
        for (size_t i = 0; i < conns_.size(); i++)
            open(i);
        std::vector<epoll_event> events(static_cast<size_t>(o_.concurrency) + 8);
        int64_t next_rss = 0;
        for (;;) {
            int64_t now = now_ns();
            if (phase_ == 0 && (completed_warmup_ >= o_.warmup_requests || now >= warm_deadline))
                begin_measuring(now);
            if (phase_ == 1 && (measured_ >= o_.requests ||
                                now >= t_start_ + static_cast<int64_t>(o_.seconds * 1e9)))
                end_measuring(now);
            if (phase_ == 2 && in_flight() == 0)
                break;
            if (now >= hard_deadline) {
                if (phase_ < 2)
                    end_measuring(now);
                abandoned_ = in_flight();
                break;
            }
            if (phase_ == 1 && o_.rss_every_ms > 0 && now >= next_rss) {
                for (Watch &w : o_.watches)
                    w.rss_series.emplace_back(static_cast<double>(now - t_start_) / 1e9,
                                              rss_kb(w.pids));
                next_rss = now + o_.rss_every_ms * 1000000;
            }
            int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 10);
            if (n < 0 && errno != EINTR)
                die(std::string("epoll_wait: ") + std::strerror(errno));
            for (int i = 0; i < n; i++)
                on_event(static_cast<size_t>(events[i].data.u64), events[i].events);
        }
        for (Conn &c : conns_)
            if (c.fd >= 0)
                ::close(c.fd);
    }

    void report() {
        double window_s = static_cast<double>(t_end_ - t_start_) / 1e9;
        std::printf(
            "{\"label\":\"%s\",\"concurrency\":%d,\"requests\":%ld,\"errors\":%ld,"
            "\"incomplete_streams\":%ld,\"abandoned\":%zu,\"seconds\":%.3f,"
            "\"rps\":%.1f,\"latency_us\":%s,\"ttfb_us\":%s,\"client_cpu_s\":%.3f",
            o_.label.c_str(), o_.concurrency, measured_, errors_, incomplete_, abandoned_, window_s,
            window_s > 0 ? static_cast<double>(measured_) / window_s : 0.0,
            percentiles(latencies_).c_str(), percentiles(ttfbs_).c_str(),
            client_cpu_end_ - client_cpu_start_);
        std::printf(",\"watch\":{");
        for (size_t i = 0; i < o_.watches.size(); i++) {
            const Watch &w = o_.watches[i];
            double cpu = w.cpu_end - w.cpu_start;
            std::printf(
                "%s\"%s\":{\"cpu_s\":%.3f,\"cpu_percent\":%.1f,\"rss_kb_start\":%ld,"
                "\"rss_kb_end\":%ld",
                i == 0 ? "" : ",", w.name.c_str(), cpu, window_s > 0 ? 100.0 * cpu / window_s : 0.0,
                w.rss_start_kb, w.rss_end_kb);
            if (!w.rss_series.empty()) {
                std::printf(",\"rss_series\":[");
                for (size_t j = 0; j < w.rss_series.size(); j++)
                    std::printf("%s[%.2f,%ld]", j == 0 ? "" : ",", w.rss_series[j].first,
                                w.rss_series[j].second);
                std::printf("]");
            }
            std::printf("}");
        }
        std::printf("}}\n");
        if (errors_ > 0 || incomplete_ > 0) {
            std::fprintf(stderr, "load_client[%s]: %ld errors, %ld incomplete streams%s%s\n",
                         o_.label.c_str(), errors_, incomplete_,
                         error_sample_.empty() ? "" : "; one answer: ",
                         error_sample_.substr(0, 400).c_str());
        }
    }

  private:
    static std::string percentiles(std::vector<float> &v) {
        if (v.empty())
            return "null";
        std::sort(v.begin(), v.end());
        auto at = [&](double q) {
            size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
            return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
        };
        double sum = 0;
        for (float x : v)
            sum += x;
        char out[256];
        std::snprintf(out, sizeof(out),
                      "{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,"
                      "\"mean\":%.1f,\"n\":%zu}",
                      at(0.5), at(0.9), at(0.99), at(0.999), v.back(),
                      sum / static_cast<double>(v.size()), v.size());
        return out;
    }

    size_t in_flight() const {
        size_t n = 0;
        for (const Conn &c : conns_)
            n += c.busy ? 1 : 0;
        return n;
    }

    void begin_measuring(int64_t now) {
        phase_ = 1;
        t_start_ = now;
        client_cpu_start_ = self_cpu();
        for (Watch &w : o_.watches) {
            w.cpu_start = cpu_seconds(w.pids);
            w.rss_start_kb = rss_kb(w.pids);
        }
        latencies_.reserve(static_cast<size_t>(std::min<long>(o_.requests, 4000000)));
        ttfbs_.reserve(latencies_.capacity());
    }

    void end_measuring(int64_t now) {
        if (phase_ == 0)
            begin_measuring(now);
        phase_ = 2;
        t_end_ = now;
        client_cpu_end_ = self_cpu();
        for (Watch &w : o_.watches) {
            w.cpu_end = cpu_seconds(w.pids);
            w.rss_end_kb = rss_kb(w.pids);
        }
    }

    static double self_cpu() {
        rusage ru{};
        getrusage(RUSAGE_SELF, &ru);
        return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
               static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    }

    void open(size_t i) {
        Conn &c = conns_[i];
        c = Conn();
        c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int rc = connect(c.fd, reinterpret_cast<sockaddr *>(&addr_), sizeof(addr_));
        if (rc != 0 && errno != EINPROGRESS)
            die(std::string("connect: ") + std::strerror(errno));
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT;
        ev.data.u64 = i;
        epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &ev);
        // Even a connect that completed at once is finished by the EPOLLOUT it reports, which
        // also switches the connection to EPOLLIN alone.
        c.connected = false;
        start_request(c);
    }

    void start_request(Conn &c) {
        if (phase_ == 2)
            return;
        c.busy = true;
        c.sent = 0;
        c.phase = Phase::kHead;
        c.status = 0;
        c.remaining = 0;
        c.chunked = false;
        c.close_after = false;
        c.first_body_seen = false;
        c.tail_size = 0;
        c.started_ns = now_ns();
        c.first_byte_ns = 0;
        if (c.connected)
            write_request(c);
    }

    bool write_request(Conn &c) {
        while (c.sent < request_.size()) {
            ssize_t n =
                send(c.fd, request_.data() + c.sent, request_.size() - c.sent, MSG_NOSIGNAL);
            if (n > 0) {
                c.sent += static_cast<size_t>(n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && errno == EAGAIN) {
                return true;
            } else {
                return false;
            }
        }
        return true;
    }

    void fail(size_t i, const std::string &why) {
        Conn &c = conns_[i];
        if (c.busy && phase_ == 1)
            errors_++;
        if (error_sample_.empty())
            error_sample_ = why;
        ::close(c.fd);
        c.fd = -1;
        c.busy = false;
        if (phase_ != 2)
            open(i);
    }

    void on_event(size_t i, uint32_t events) {
        Conn &c = conns_[i];
        if (c.fd < 0)
            return;
        if (!c.connected && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err != 0) {
                fail(i, std::string("connect: ") + std::strerror(err));
                return;
            }
            c.connected = true;
            // The request is a few hundred bytes: it fits the socket buffer, so EPOLLOUT is not
            // needed again.
            epoll_event ev{};
            ev.events = EPOLLIN;
            ev.data.u64 = i;
            epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
            if (c.busy && !write_request(c)) {
                fail(i, "send failed");
                return;
            }
        }
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
            char buffer[65536];
            for (;;) {
                ssize_t n = recv(c.fd, buffer, sizeof(buffer), 0);
                if (n > 0) {
                    c.in.append(buffer, static_cast<size_t>(n));
                    if (static_cast<size_t>(n) < sizeof(buffer))
                        break;
                    continue;
                }
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0 && errno == EAGAIN)
                    break;
                fail(i, c.busy ? "connection closed mid-answer" : "connection closed");
                return;
            }
            if (!parse(i))
                return;
        }
    }

    void body_bytes(Conn &c, const char *data, size_t size) {
        if (size == 0)
            return;
        if (!c.first_body_seen) {
            c.first_body_seen = true;
            c.first_byte_ns = now_ns();
        }
        if (size >= sizeof(c.tail)) {
            std::memcpy(c.tail, data + size - sizeof(c.tail), sizeof(c.tail));
            c.tail_size = sizeof(c.tail);
        } else {
            size_t keep = std::min(c.tail_size, sizeof(c.tail) - size);
            std::memmove(c.tail, c.tail + c.tail_size - keep, keep);
            std::memcpy(c.tail + keep, data, size);
            c.tail_size = keep + size;
        }
        if (c.status != 200 && c.error_sample.size() < 400)
            c.error_sample.append(data, std::min<size_t>(size, 400));
    }

    // Consumes what the buffer holds. False when the connection was replaced.
    bool parse(size_t i) {
        Conn &c = conns_[i];
        size_t pos = 0;
        for (;;) {
            if (c.phase == Phase::kHead) {
                size_t end = c.in.find("\r\n\r\n", pos);
                if (end == std::string::npos)
                    break;
                std::string_view head(c.in.data() + pos, end - pos);
                if (head.size() < 12 || head.compare(0, 5, "HTTP/") != 0) {
                    fail(i, "not an HTTP answer");
                    return false;
                }
                c.status = std::atoi(head.data() + 9);
                c.remaining = 0;
                size_t line = head.find("\r\n");
                while (line != std::string_view::npos) {
                    size_t next = head.find("\r\n", line + 2);
                    std::string_view h = head.substr(line + 2, next == std::string_view::npos
                                                                   ? std::string_view::npos
                                                                   : next - line - 2);
                    std::string lower(h.substr(0, h.find(':')));
                    for (char &ch : lower)
                        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                    std::string_view value = h.substr(std::min(h.size(), lower.size() + 1));
                    if (lower == "content-length")
                        c.remaining = std::atoll(std::string(value).c_str());
                    else if (lower == "transfer-encoding")
                        c.chunked = value.find("chunked") != std::string_view::npos;
                    else if (lower == "connection")
                        c.close_after = value.find("close") != std::string_view::npos;
                    line = next;
                }
                pos = end + 4;
                c.phase = c.chunked ? Phase::kChunkSize : Phase::kBody;
                if (!c.chunked && c.remaining == 0) {
                    if (!complete(i))
                        return false;
                    continue;
                }
            } else if (c.phase == Phase::kBody || c.phase == Phase::kChunkData) {
                size_t available = c.in.size() - pos;
                size_t take = static_cast<size_t>(
                    std::min<long long>(c.remaining, static_cast<long long>(available)));
                body_bytes(c, c.in.data() + pos, take);
                pos += take;
                c.remaining -= static_cast<long long>(take);
                if (c.remaining > 0)
                    break;
                if (c.phase == Phase::kChunkData) {
                    c.phase = Phase::kChunkEnd;
                } else if (!complete(i)) {
                    return false;
                }
            } else if (c.phase == Phase::kChunkEnd) {
                if (c.in.size() - pos < 2)
                    break;
                pos += 2;
                c.phase = Phase::kChunkSize;
            } else if (c.phase == Phase::kChunkSize) {
                size_t end = c.in.find("\r\n", pos);
                if (end == std::string::npos)
                    break;
                c.remaining = std::strtoll(c.in.c_str() + pos, nullptr, 16);
                pos = end + 2;
                c.phase = c.remaining == 0 ? Phase::kTrailer : Phase::kChunkData;
            } else if (c.phase == Phase::kTrailer) {
                size_t end = c.in.find("\r\n", pos);
                if (end == std::string::npos)
                    break;
                bool last = end == pos;
                pos = end + 2;
                if (last && !complete(i))
                    return false;
            }
        }
        c.in.erase(0, pos);
        return true;
    }

    // One answer read in full. False when the connection was replaced.
    bool complete(size_t i) {
        Conn &c = conns_[i];
        int64_t now = now_ns();
        // Throughput counts the answers completed inside the window; latency only requests sent
        // inside it (those still running at its end are waited for).
        bool measuring = phase_ >= 1 && c.started_ns >= t_start_;
        bool ok = c.status == 200;
        if (ok && o_.expect_sse) {
            std::string_view tail(c.tail, c.tail_size);
            if (tail.find(o_.sse_end) == std::string_view::npos) {
                ok = false;
                if (measuring)
                    incomplete_++;
                if (error_sample_.empty())
                    error_sample_ = "a stream that does not end with " + o_.sse_end;
            }
        }
        if (phase_ == 1 && ok)
            measured_++;
        if (phase_ == 0) {
            completed_warmup_++;
        } else if (measuring) {
            if (!ok && c.status != 200) {
                errors_++;
                if (error_sample_.empty())
                    error_sample_ = "HTTP " + std::to_string(c.status) + ": " + c.error_sample;
            }
            if (ok) {
                latencies_.push_back(static_cast<float>(now - c.started_ns) / 1000.0f);
                int64_t first = c.first_byte_ns != 0 ? c.first_byte_ns : now;
                ttfbs_.push_back(static_cast<float>(first - c.started_ns) / 1000.0f);
            }
        }
        c.busy = false;
        c.phase = Phase::kHead;
        c.error_sample.clear();
        if (c.close_after) {
            ::close(c.fd);
            c.fd = -1;
            if (phase_ != 2)
                open(i);
            return false;
        }
        start_request(c);
        if (!c.busy)
            return false;  // draining: nothing more to read on this connection
        if (!write_request(c)) {
            fail(i, "send failed");
            return false;
        }
        return true;
    }

    Options o_;
    std::string request_;
    sockaddr_in addr_;
    int epoll_ = -1;
    std::vector<Conn> conns_;
    int phase_ = 0;  // 0 warm-up, 1 measuring, 2 draining
    int64_t t_start_ = 0, t_end_ = 0;
    long completed_warmup_ = 0, measured_ = 0, errors_ = 0, incomplete_ = 0;
    size_t abandoned_ = 0;
    double client_cpu_start_ = 0, client_cpu_end_ = 0;
    std::vector<float> latencies_, ttfbs_;
    std::string error_sample_;
};

[[noreturn]] void usage(const std::string &message) {
    die(message +
        "\nusage: load_client --url http://127.0.0.1:PORT/path --body-file FILE "
        "[--header 'Name: value']... [--concurrency C] [--requests N] [--seconds S] "
        "[--warmup-requests N] [--warmup-seconds S] [--expect-sse] [--sse-end TEXT] "
        "[--watch NAME=PID[,PID...]]... [--rss-every-ms MS] [--label TEXT]");
}

Options parse_options(int argc, char **argv) {
    Options o;
    std::string url;
    for (int i = 1; i < argc; i++) {
        std::string flag = argv[i];
        if (flag == "--expect-sse") {
            o.expect_sse = true;
            continue;
        }
        if (i + 1 >= argc)
            usage(flag + " needs a value");
        std::string value = argv[++i];
        if (flag == "--url") {
            url = value;
        } else if (flag == "--sse-end") {
            if (value.empty() || value.size() > 16)
                usage("--sse-end takes 1 to 16 bytes");
            o.sse_end = value;
        } else if (flag == "--body-file") {
            std::ifstream in(value);
            if (!in)
                usage("cannot read " + value);
            o.body.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        } else if (flag == "--header") {
            o.headers.push_back(value);
        } else if (flag == "--concurrency") {
            o.concurrency = std::atoi(value.c_str());
        } else if (flag == "--requests") {
            o.requests = std::atol(value.c_str());
        } else if (flag == "--seconds") {
            o.seconds = std::atof(value.c_str());
        } else if (flag == "--warmup-requests") {
            o.warmup_requests = std::atol(value.c_str());
        } else if (flag == "--warmup-seconds") {
            o.warmup_seconds = std::atof(value.c_str());
        } else if (flag == "--rss-every-ms") {
            o.rss_every_ms = std::atol(value.c_str());
        } else if (flag == "--label") {
            o.label = value;
        } else if (flag == "--watch") {
            size_t eq = value.find('=');
            if (eq == std::string::npos)
                usage("--watch takes NAME=PID[,PID...]");
            Watch w;
            w.name = value.substr(0, eq);
            std::stringstream list(value.substr(eq + 1));
            for (std::string pid; std::getline(list, pid, ',');)
                if (!pid.empty())
                    w.pids.push_back(std::atoi(pid.c_str()));
            o.watches.push_back(std::move(w));
        } else {
            usage("unknown option " + flag);
        }
    }
    constexpr std::string_view kScheme = "http://";
    if (url.compare(0, kScheme.size(), kScheme) != 0)
        usage("--url must start with http://");
    std::string rest = url.substr(kScheme.size());
    size_t slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
    o.path = slash == std::string::npos ? "/" : rest.substr(slash);
    size_t colon = authority.rfind(':');
    if (colon == std::string::npos)
        usage("--url needs a port");
    o.host = authority.substr(0, colon);
    o.port = std::atoi(authority.c_str() + colon + 1);
    if (o.concurrency < 1 || o.concurrency > 10000)
        usage("--concurrency must be 1 to 10000");
    if (o.requests < 1 || o.seconds <= 0)
        usage("--requests and --seconds must be positive");
    return o;
}

}  // namespace

int main(int argc, char **argv) {
    Client client(parse_options(argc, argv));
    client.run();
    client.report();
    return 0;
}
