// The floor of the gateway's mandated stack, for the side-by-side benchmark.
//
// The design fixes the listener's parts: libevent's evhttp for the client side and libcurl's
// multi socket interface on the same event_base for the upstream side. This program is the least
// a proxy built from exactly those parts can do: it forwards each request's body to one upstream
// URL and the answer back, with kept-alive connections and reused easy handles, and nothing else
// (no keys, limits, usage, translation, JSON, or headers beyond Content-Type). Its CPU per request
// is what evhttp + curl multi cost by themselves, so the benchmark can show how much of the
// gateway's cost is those libraries and how much is pg_inference's own work.
//
//   stack_floor --port P --upstream http://127.0.0.1:M [--workers N]
//
// A request whose body has "stream":true gets the upstream's answer as it comes, in chunks;
// any other gets it whole, in one reply.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace {

struct Transfer {
    evhttp_request *req = nullptr;
    CURL *easy = nullptr;
    std::string request_body;
    std::string response_body;
    std::string url;
    bool stream = false;   // the request asked for SSE: answer with a chunked reply
    bool started = false;  // the chunked reply has begun
};

struct Proxy {
    event_base *base = nullptr;
    CURLM *multi = nullptr;
    event *timer = nullptr;
    std::string upstream;
    std::vector<CURL *> idle_easy;
    curl_slist *headers = nullptr;
    std::unordered_map<int, event *> sockets;
};

size_t on_data(char *data, size_t size, size_t n, void *p) {
    auto *t = static_cast<Transfer *>(p);
    if (!t->stream) {
        t->response_body.append(data, size * n);
        return size * n;
    }
    // A stream goes out as it comes: one HTTP chunk per piece libcurl hands over.
    if (!t->started) {
        evkeyvalq *out = evhttp_request_get_output_headers(t->req);
        evhttp_add_header(out, "Content-Type", "text/event-stream");
        evhttp_send_reply_start(t->req, 200, "OK");
        t->started = true;
    }
    evbuffer *chunk = evbuffer_new();
    evbuffer_add(chunk, data, size * n);
    evhttp_send_reply_chunk(t->req, chunk);
    evbuffer_free(chunk);
    return size * n;
}

void read_done(Proxy *proxy) {
    int queued = 0;
    while (CURLMsg *msg = curl_multi_info_read(proxy->multi, &queued)) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        Transfer *t = nullptr;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char **>(&t));
        long status = 502;
        if (msg->data.result == CURLE_OK)
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(proxy->multi, t->easy);
        proxy->idle_easy.push_back(t->easy);
        if (t->started) {
            evhttp_send_reply_end(t->req);
        } else {
            evkeyvalq *out = evhttp_request_get_output_headers(t->req);
            evhttp_add_header(out, "Content-Type", "application/json");
            evbuffer *body = evbuffer_new();
            evbuffer_add(body, t->response_body.data(), t->response_body.size());
            evhttp_send_reply(t->req, static_cast<int>(status), "OK", body);
            evbuffer_free(body);
        }
        delete t;
    }
}

void on_socket(int fd, short events, void *p) {
    auto *proxy = static_cast<Proxy *>(p);
    int flags = 0;
    if (events & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (events & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    int running = 0;
    curl_multi_socket_action(proxy->multi, fd, flags, &running);
    read_done(proxy);
}

void on_timer(int, short, void *p) {
    auto *proxy = static_cast<Proxy *>(p);
    int running = 0;
    curl_multi_socket_action(proxy->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    read_done(proxy);
}

int socket_cb(CURL *, curl_socket_t fd, int what, void *p, void *) {
    auto *proxy = static_cast<Proxy *>(p);
    auto found = proxy->sockets.find(fd);
    if (what == CURL_POLL_REMOVE) {
        // A kept-alive connection stays registered between transfers (as the gateway's do):
        // two epoll_ctl calls fewer per request. The mock never closes one, so no event ever
        // arrives for a connection libcurl is not using.
        return 0;
    }
    short kind = EV_PERSIST;
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;
    if (found != proxy->sockets.end()) {
        if (event_get_events(found->second) == kind)
            return 0;
        event_del(found->second);
        event_assign(found->second, proxy->base, fd, kind, on_socket, proxy);
        event_add(found->second, nullptr);
    } else {
        event *ev = event_new(proxy->base, fd, kind, on_socket, proxy);
        event_add(ev, nullptr);
        proxy->sockets[fd] = ev;
    }
    return 0;
}

int timer_cb(CURLM *, long ms, void *p) {
    auto *proxy = static_cast<Proxy *>(p);
    if (ms < 0) {
        evtimer_del(proxy->timer);
        return 0;
    }
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    evtimer_add(proxy->timer, &tv);
    return 0;
}

void on_request(evhttp_request *req, void *p) {
    auto *proxy = static_cast<Proxy *>(p);
    auto *t = new Transfer;
    t->req = req;
    evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t length = evbuffer_get_length(in);
    t->request_body.resize(length);
    evbuffer_copyout(in, t->request_body.data(), length);
    t->url = proxy->upstream + evhttp_request_get_uri(req);
    t->stream = t->request_body.find("\"stream\":true") != std::string::npos;
    if (proxy->idle_easy.empty()) {
        t->easy = curl_easy_init();
    } else {
        t->easy = proxy->idle_easy.back();
        proxy->idle_easy.pop_back();
    }
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, t->url.c_str());
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, proxy->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->request_body.data());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(length));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_multi_add_handle(proxy->multi, e);
}

int serve(int port, const std::string &upstream) {
    Proxy proxy;
    event_config *config = event_config_new();
    event_config_set_flag(config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    proxy.base = event_base_new_with_config(config);
    event_config_free(config);
    proxy.multi = curl_multi_init();
    proxy.timer = evtimer_new(proxy.base, on_timer, &proxy);
    proxy.upstream = upstream;
    proxy.headers = curl_slist_append(nullptr, "Content-Type: application/json");
    proxy.headers = curl_slist_append(proxy.headers, "Authorization: Bearer sk-bench");
    curl_multi_setopt(proxy.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(proxy.multi, CURLMOPT_SOCKETDATA, &proxy);
    curl_multi_setopt(proxy.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(proxy.multi, CURLMOPT_TIMERDATA, &proxy);
    curl_multi_setopt(proxy.multi, CURLMOPT_MAXCONNECTS, 1024L);
    evhttp *http = evhttp_new(proxy.base);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_POST | EVHTTP_REQ_GET);
    evhttp_set_gencb(http, on_request, &proxy);
    // SO_REUSEPORT, as the gateway's listeners: every worker has its own socket on the port.
    {
        evutil_socket_t fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        // Accepted connections inherit it: answers leave at once instead of after a delayed ACK.
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(static_cast<uint16_t>(port));
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 ||
            listen(fd, 1024) != 0) {
            perror("stack_floor: bind");
            return 1;
        }
        if (evhttp_accept_socket(http, fd) != 0) {
            std::fprintf(stderr, "stack_floor: evhttp_accept_socket failed\n");
            return 1;
        }
    }
    // TERM (from the parent) and INT end the loop, so the process exits normally (profilers such
    // as callgrind write their output then).
    auto stop = [](evutil_socket_t, short, void *base) {
        event_base_loopbreak(static_cast<event_base *>(base));
    };
    event *term = evsignal_new(proxy.base, SIGTERM, stop, proxy.base);
    event *intr = evsignal_new(proxy.base, SIGINT, stop, proxy.base);
    event_add(term, nullptr);
    event_add(intr, nullptr);
    event_base_dispatch(proxy.base);
    event_free(term);
    event_free(intr);
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    int port = 0, workers = 1;
    std::string upstream;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--port") == 0)
            port = std::atoi(argv[i + 1]);
        else if (std::strcmp(argv[i], "--upstream") == 0)
            upstream = argv[i + 1];
        else if (std::strcmp(argv[i], "--workers") == 0)
            workers = std::atoi(argv[i + 1]);
    }
    if (port <= 0 || upstream.empty() || workers < 1) {
        std::fprintf(stderr, "usage: stack_floor --port P --upstream URL [--workers N]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    // Workers are forked children (as nginx's and the gateway's are); TERM to the parent ends all.
    std::vector<pid_t> children;
    for (int i = 0; i < workers; i++) {
        pid_t pid = fork();
        if (pid == 0)
            return serve(port, upstream);
        children.push_back(pid);
    }
    signal(SIGTERM, [](int) {});
    pause();
    for (pid_t pid : children)
        kill(pid, SIGTERM);
    for (pid_t pid : children)
        waitpid(pid, nullptr, 0);
    return 0;
}
