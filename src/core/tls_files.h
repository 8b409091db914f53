// Files a service's TLS uses: a CA bundle its certificate is verified against (instead of the
// system's), and a client certificate with its key for endpoints that ask for one. Paths on the
// server; the server process reads them at every new connection (README: "Upstream TLS").
#pragma once

#include <string>

namespace pgi::tls {

struct Files {
    std::string ca_file;           // PEM CA certificates; empty: the system's store
    std::string client_cert_file;  // PEM certificate sent when the endpoint asks for one
    std::string client_key_file;   // its unencrypted PEM private key
};

// Checks that the files are usable before a registration stores them: each path absolute and
// readable, the CA file holds at least one certificate, the client certificate and key parse,
// are given together and belong to each other. Throws pgi::Error (22023, naming the setting and
// what is wrong); the messages show paths, never file contents.
void check(const Files &files);

// The hint for a failed TLS handshake with an endpoint that uses these files.
std::string failure_hint(const Files &files);

}  // namespace pgi::tls
