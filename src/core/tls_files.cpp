#include "tls_files.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "error.h"

namespace pgi::tls {

namespace {

struct FileCloser {
    void operator()(std::FILE *f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;
struct X509Free {
    void operator()(X509 *x) const { X509_free(x); }
};
using Cert = std::unique_ptr<X509, X509Free>;
struct KeyFree {
    void operator()(EVP_PKEY *k) const { EVP_PKEY_free(k); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

pgi::Error bad(const char *setting, const std::string &path, const std::string &what,
               const std::string &hint) {
    return pgi::Error(sqlstate::kInvalidParameterValue,
                      std::string(setting) + " \"" + path + "\" " + what, hint);
}

File open_file(const char *setting, const std::string &path) {
    if (path.empty() || path[0] != '/')
        throw bad(setting, path, "is not an absolute path",
                  "Give the full path of a PEM file the server's operating system user can read.");
    std::FILE *f = std::fopen(path.c_str(), "r");
    if (f == nullptr)
        throw bad(setting, path, std::string("cannot be read: ") + std::strerror(errno),
                  "Give the full path of a PEM file the server's operating system user can read.");
    return File(f);
}

// PEM readers never prompt: a key with a passphrase is refused, not waited on.
int no_passphrase(char *, int, int, void *) {
    return -1;
}

Cert read_cert(std::FILE *f) {
    return Cert(PEM_read_X509(f, nullptr, no_passphrase, nullptr));
}

}  // namespace

void check(const Files &files) {
    if (!files.ca_file.empty()) {
        File f = open_file("ca_file", files.ca_file);
        Cert first = read_cert(f.get());
        ERR_clear_error();
        if (!first)
            throw bad("ca_file", files.ca_file, "holds no PEM certificate",
                      "Give a file of one or more \"-----BEGIN CERTIFICATE-----\" blocks: the CA "
                      "that signed the endpoint's certificate.");
    }
    const bool has_cert = !files.client_cert_file.empty();
    const bool has_key = !files.client_key_file.empty();
    if (has_cert != has_key)
        throw pgi::Error(sqlstate::kInvalidParameterValue,
                         "client_cert_file and client_key_file go together",
                         "Give both the client certificate and its private key, or neither.");
    if (!has_cert)
        return;
    File cf = open_file("client_cert_file", files.client_cert_file);
    Cert cert = read_cert(cf.get());
    ERR_clear_error();
    if (!cert)
        throw bad("client_cert_file", files.client_cert_file, "holds no PEM certificate",
                  "Give the client certificate as a \"-----BEGIN CERTIFICATE-----\" block.");
    File kf = open_file("client_key_file", files.client_key_file);
    Key key(PEM_read_PrivateKey(kf.get(), nullptr, no_passphrase, nullptr));
    ERR_clear_error();
    if (!key)
        throw bad("client_key_file", files.client_key_file, "holds no unencrypted PEM private key",
                  "Give the client certificate's private key in PEM, without a passphrase.");
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
        ERR_clear_error();
        throw bad("client_key_file", files.client_key_file,
                  "is not the key of client_cert_file \"" + files.client_cert_file + "\"",
                  "Give the private key that belongs to the client certificate.");
    }
}

std::string failure_hint(const Files &files) {
    std::string hint;
    if (files.ca_file.empty())
        hint =
            "A private-CA or self-signed endpoint needs ca_file => the CA's PEM file (a "
            "superuser sets it), or allow_insecure => true.";
    else
        hint = "Check that ca_file \"" + files.ca_file +
               "\" holds the CA that signed the endpoint's certificate.";
    if (files.client_cert_file.empty())
        hint +=
            " An endpoint that asks for a client certificate needs client_cert_file and "
            "client_key_file.";
    else
        hint +=
            " Check that the endpoint accepts client_cert_file \"" + files.client_cert_file + "\".";
    return hint;
}

}  // namespace pgi::tls
