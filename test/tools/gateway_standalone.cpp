// The gateway engine outside PostgreSQL, for development and benchmarks:
//
//   gateway_standalone --port P --snapshot FILE [--listen ADDR[,ADDR...]] [--workers N]
//                      [--tls-cert FILE --tls-key FILE] [--no-key] [--max-retries N]
//                      [--request-timeout-ms MS] [--client-timeout-s S] [--header-timeout-s S]
//                      [--max-body-size BYTES]
//
// FILE is a snapshot in gateway_snapshot.h's format (access keys in plain text are hashed when
// loaded). --workers N forks N listener processes sharing the port (SO_REUSEPORT), as
// inference.gateway_workers does. SIGHUP reloads the snapshot; SIGTERM or SIGINT stops.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <event2/event.h>
#include <fstream>
#include <iostream>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "error.h"
#include "gateway.h"
#include "gateway_snapshot.h"

namespace {

struct Options {
    pgi::gateway::Config config;
    std::string snapshot_file;
    int workers = 1;
};

[[noreturn]] void usage(const std::string &message) {
    if (!message.empty())
        std::cerr << "gateway_standalone: " << message << "\n";
    std::cerr << "usage: gateway_standalone --port P --snapshot FILE [--listen ADDR[,ADDR...]] "
                 "[--workers N] [--tls-cert FILE --tls-key FILE] [--no-key] [--max-retries N] "
                 "[--request-timeout-ms MS] [--client-timeout-s S] [--header-timeout-s S] "
                 "[--max-body-size BYTES]\n";
    std::exit(2);
}

long number(const std::string &flag, const char *text) {
    char *end = nullptr;
    errno = 0;
    long value = std::strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 0)
        usage(flag + " needs a non-negative integer");
    return value;
}

Options parse(int argc, char **argv) {
    Options o;
    o.config.listen_addresses = {"127.0.0.1"};
    for (int i = 1; i < argc; i++) {
        std::string flag = argv[i];
        if (flag == "--no-key") {
            o.config.require_key = false;
            continue;
        }
        if (flag == "--help" || flag == "-h")
            usage("");
        if (i + 1 >= argc)
            usage(flag + " needs a value");
        const char *value = argv[++i];
        if (flag == "--port") {
            o.config.port = static_cast<int>(number(flag, value));
        } else if (flag == "--snapshot") {
            o.snapshot_file = value;
        } else if (flag == "--listen") {
            o.config.listen_addresses.clear();
            std::stringstream list(value);
            for (std::string a; std::getline(list, a, ',');)
                if (!a.empty())
                    o.config.listen_addresses.push_back(a);
        } else if (flag == "--workers") {
            o.workers = static_cast<int>(number(flag, value));
        } else if (flag == "--tls-cert") {
            o.config.tls_cert_file = value;
        } else if (flag == "--tls-key") {
            o.config.tls_key_file = value;
        } else if (flag == "--max-retries") {
            o.config.max_retries = static_cast<int>(number(flag, value));
        } else if (flag == "--request-timeout-ms") {
            o.config.request_timeout_ms = number(flag, value);
        } else if (flag == "--client-timeout-s") {
            o.config.client_timeout_s = static_cast<int>(number(flag, value));
        } else if (flag == "--header-timeout-s") {
            o.config.header_timeout_s = static_cast<int>(number(flag, value));
        } else if (flag == "--max-body-size") {
            o.config.max_body_size = static_cast<size_t>(number(flag, value));
        } else {
            usage("unknown option " + flag);
        }
    }
    if (o.snapshot_file.empty())
        usage("--snapshot is required");
    if (o.config.tls_cert_file.empty() != o.config.tls_key_file.empty())
        usage("--tls-cert and --tls-key go together");
    if (o.workers < 1)
        usage("--workers must be at least 1");
    return o;
}

std::shared_ptr<const pgi::gateway::Snapshot> load(const std::string &file) {
    std::ifstream in(file);
    if (!in)
        throw std::runtime_error("cannot read " + file + ": " + std::strerror(errno));
    nlohmann::json document = nlohmann::json::parse(in);
    return std::make_shared<pgi::gateway::Snapshot>(pgi::gateway::snapshot_from_json(document));
}

struct Loop {
    event_base *base;
    pgi::gateway::Server *server;
    const std::string *snapshot_file;
};

void on_stop(evutil_socket_t, short, void *arg) {
    event_base_loopexit(static_cast<Loop *>(arg)->base, nullptr);
}

void on_reload(evutil_socket_t, short, void *arg) {
    auto *loop = static_cast<Loop *>(arg);
    try {
        loop->server->set_snapshot(load(*loop->snapshot_file));
        std::cerr << "gateway_standalone[" << getpid() << "]: snapshot reloaded\n";
    } catch (const std::exception &e) {
        std::cerr << "gateway_standalone[" << getpid() << "]: reload failed, keeping the old "
                  << "snapshot: " << e.what() << "\n";
    }
}

int serve(const Options &o, bool announce) {
    event_base *base = pgi::gateway::new_event_base();
    if (base == nullptr) {
        std::cerr << "gateway_standalone: cannot create an event base\n";
        return 1;
    }
    int rc = 0;
    {
        pgi::gateway::Governor governor;
        pgi::gateway::Server server(base, o.config, governor);
        try {
            server.set_snapshot(load(o.snapshot_file));
            server.listen();
        } catch (const pgi::Error &e) {
            std::cerr << "gateway_standalone: " << e.what();
            if (!e.detail().empty())
                std::cerr << " (" << e.detail() << ")";
            std::cerr << "\n";
            return 1;
        } catch (const std::exception &e) {
            std::cerr << "gateway_standalone: " << e.what() << "\n";
            return 1;
        }
        if (announce) {
            std::cout << "listening on port " << server.port() << std::endl;
        }
        Loop loop{base, &server, &o.snapshot_file};
        event *term = evsignal_new(base, SIGTERM, on_stop, &loop);
        event *intr = evsignal_new(base, SIGINT, on_stop, &loop);
        event *hup = evsignal_new(base, SIGHUP, on_reload, &loop);
        event_add(term, nullptr);
        event_add(intr, nullptr);
        event_add(hup, nullptr);
        if (event_base_dispatch(base) < 0)
            rc = 1;
        event_free(term);
        event_free(intr);
        event_free(hup);
    }
    event_base_free(base);
    return rc;
}

std::vector<pid_t> children;

void forward(int sig) {
    for (pid_t pid : children)
        kill(pid, sig);
}

}  // namespace

int main(int argc, char **argv) {
    Options o = parse(argc, argv);
    // A caller that hangs up mid-answer must not kill the process.
    signal(SIGPIPE, SIG_IGN);
    if (o.workers == 1)
        return serve(o, true);

    // With port 0 the workers could not share a port: bind it in the first one, then reuse it.
    if (o.config.port == 0)
        usage("--workers needs an explicit --port");
    for (int i = 0; i < o.workers; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            std::perror("fork");
            forward(SIGTERM);
            return 1;
        }
        if (pid == 0)
            return serve(o, false);
        children.push_back(pid);
    }
    std::cout << "listening on port " << o.config.port << " with " << o.workers << " workers"
              << std::endl;
    signal(SIGTERM, forward);
    signal(SIGINT, forward);
    signal(SIGHUP, forward);
    int rc = 0;
    for (size_t alive = children.size(); alive > 0;) {
        int status = 0;
        pid_t pid = wait(&status);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        alive--;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            rc = 1;
    }
    return rc;
}
