#include "crypto.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <system_error>
#include <unistd.h>

#include "error.h"
#include "validation.h"

namespace pgi::crypto {

namespace {

// API keys are a few hundred bytes; the cap keeps every length within OpenSSL's int parameters.
constexpr std::size_t kMaxPlaintext = 1 << 20;

const unsigned char *bytes(const std::string &s) {
    return reinterpret_cast<const unsigned char *>(s.data());
}
unsigned char *bytes(std::string &s) {
    return reinterpret_cast<unsigned char *>(s.data());
}

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

CipherCtx new_cipher_ctx() {
    CipherCtx ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
    if (!ctx)
        throw Error(sqlstate::kInternalError, "out of memory creating a cipher context");
    return ctx;
}

}  // namespace

std::string random_bytes(std::size_t n) {
    std::string out(n, '\0');
    for (std::size_t done = 0; done < n;) {
        const int chunk = static_cast<int>(std::min<std::size_t>(n - done, 1 << 20));
        if (RAND_bytes(bytes(out) + done, chunk) != 1)
            throw Error(sqlstate::kInternalError, "could not generate random bytes",
                        "Check that the operating system's random number source is available.");
        done += static_cast<std::size_t>(chunk);
    }
    return out;
}

std::string sha256(const std::string &data) {
    // The algorithm is fetched and the context allocated once per thread: EVP_Digest does both
    // on every call, which cost the gateway (a digest per request, of the caller's key) five
    // times the hashing itself.
    struct Digest {
        EVP_MD *md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        ~Digest() {
            EVP_MD_CTX_free(ctx);
            EVP_MD_free(md);
        }
    };
    thread_local Digest d;
    std::string digest(32, '\0');
    unsigned int len = 0;
    if (d.md == nullptr || d.ctx == nullptr || EVP_DigestInit_ex2(d.ctx, d.md, nullptr) != 1 ||
        EVP_DigestUpdate(d.ctx, data.data(), data.size()) != 1 ||
        EVP_DigestFinal_ex(d.ctx, bytes(digest), &len) != 1 || len != digest.size())
        throw Error(sqlstate::kInternalError, "could not compute a SHA-256 digest");
    return digest;
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

std::string to_hex(const std::string &bytes_in) {
    static const char kHex[] = "0123456789abcdef";
    std::string out(bytes_in.size() * 2, '\0');
    for (std::size_t i = 0; i < bytes_in.size(); ++i) {
        const auto b = static_cast<unsigned char>(bytes_in[i]);
        out[2 * i] = kHex[b >> 4];
        out[2 * i + 1] = kHex[b & 0xF];
    }
    return out;
}

std::optional<std::string> from_hex(const std::string &hex) {
    if (hex.size() % 2 != 0)
        return std::nullopt;
    std::string out(hex.size() / 2, '\0');
    for (std::size_t i = 0; i < out.size(); ++i) {
        const int hi = hex_digit(hex[2 * i]);
        const int lo = hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return std::nullopt;
        out[i] = static_cast<char>((hi << 4) | lo);
    }
    return out;
}

void wipe(std::string &secret) noexcept {
    // resize within the capacity never reallocates, and makes every owned byte part of the
    // string, so writing them through data() is defined.
    secret.resize(secret.capacity());
    OPENSSL_cleanse(secret.data(), secret.size());
    secret.clear();
}

void wipe(std::vector<std::string> &secrets) noexcept {
    for (std::string &s : secrets)
        wipe(s);
}

bool constant_time_equal(const std::string &a, const std::string &b) {
    if (a.size() != b.size())
        return false;
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string encrypt(const std::string &key32, const std::string &plaintext,
                    const std::string &aad) {
    if (key32.size() != kKeySize)
        throw Error(sqlstate::kInternalError, "could not encrypt the API key",
                    "The cluster key must be 32 bytes long.");
    if (plaintext.size() > kMaxPlaintext || aad.size() > kMaxPlaintext)
        throw Error(sqlstate::kInternalError, "could not encrypt the API key",
                    "Values to encrypt are limited to 1 MiB.");

    const std::string nonce = random_bytes(kNonceSize);
    std::string blob(kBlobOverhead + plaintext.size(), '\0');
    blob[0] = static_cast<char>(kBlobVersion);
    std::memcpy(bytes(blob) + 1, nonce.data(), kNonceSize);
    unsigned char *const ciphertext = bytes(blob) + 1 + kNonceSize;
    unsigned char *const tag = ciphertext + plaintext.size();

    CipherCtx ctx = new_cipher_ctx();
    int len = 0;
    int final_len = 0;
    const bool ok =
        EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kNonceSize),
                            nullptr) == 1 &&
        EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, bytes(key32), bytes(nonce)) == 1 &&
        // The version byte is authenticated too, so a later format cannot be confused with this
        // one by rewriting the first byte.
        EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes(blob), 1) == 1 &&
        (aad.empty() || EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes(aad),
                                          static_cast<int>(aad.size())) == 1) &&
        (plaintext.empty() || EVP_EncryptUpdate(ctx.get(), ciphertext, &len, bytes(plaintext),
                                                static_cast<int>(plaintext.size())) == 1) &&
        EVP_EncryptFinal_ex(ctx.get(), ciphertext + (plaintext.empty() ? 0 : len), &final_len) ==
            1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagSize), tag) == 1;
    if (!ok)
        throw Error(sqlstate::kInternalError, "could not encrypt the API key");
    return blob;
}

std::string decrypt(const std::string &key32, const std::string &blob, const std::string &aad) {
    const auto failure = [](const std::string &detail) {
        return Error(sqlstate::kInternalError, "could not decrypt the stored API key",
                     "The cluster key changed: restore the original key file or set "
                     "inference.secret_key_file, then update the service's api_key.",
                     detail);
    };
    if (key32.size() != kKeySize)
        throw failure("The cluster key is not 32 bytes long.");
    if (blob.size() < kBlobOverhead)
        throw failure("The stored value is too short to be an encrypted key.");
    if (static_cast<unsigned char>(blob[0]) != kBlobVersion)
        throw failure("The stored value has unknown format version " +
                      std::to_string(static_cast<unsigned char>(blob[0])) + ".");
    const std::size_t ciphertext_size = blob.size() - kBlobOverhead;
    if (ciphertext_size > kMaxPlaintext || aad.size() > kMaxPlaintext)
        throw failure("The stored value is too long to be an encrypted key.");

    const unsigned char *const nonce = bytes(blob) + 1;
    const unsigned char *const ciphertext = nonce + kNonceSize;
    // EVP_CTRL_GCM_SET_TAG takes a non-const pointer, so the tag is copied out of the blob.
    unsigned char tag[kTagSize];
    std::memcpy(tag, ciphertext + ciphertext_size, kTagSize);
    const unsigned char version = kBlobVersion;

    std::string plaintext(ciphertext_size, '\0');
    CipherCtx ctx = new_cipher_ctx();
    int len = 0;
    int final_len = 0;
    const bool ok =
        EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kNonceSize),
                            nullptr) == 1 &&
        EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, bytes(key32), nonce) == 1 &&
        EVP_DecryptUpdate(ctx.get(), nullptr, &len, &version, 1) == 1 &&
        (aad.empty() || EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes(aad),
                                          static_cast<int>(aad.size())) == 1) &&
        (ciphertext_size == 0 || EVP_DecryptUpdate(ctx.get(), bytes(plaintext), &len, ciphertext,
                                                   static_cast<int>(ciphertext_size)) == 1) &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagSize), tag) ==
            1 &&
        EVP_DecryptFinal_ex(ctx.get(), bytes(plaintext) + (ciphertext_size == 0 ? 0 : len),
                            &final_len) == 1;
    if (!ok) {
        // Unauthenticated output must not linger in memory that may be reused.
        OPENSSL_cleanse(plaintext.data(), plaintext.size());
        throw failure(
            "The value failed authentication: it was encrypted under another cluster key or for "
            "another service, or it was modified.");
    }
    return plaintext;
}

namespace {

const char *const kKeyFileExpectation = "expected 64 hexadecimal characters";
const char *const kKeyFileFormatHint =
    "The file must hold the key as 64 hexadecimal characters (as \"openssl rand -hex 32\" "
    "writes) or as 32 raw bytes.";
// A real key file is 65 bytes; reading more than this only serves to report a wrong file.
constexpr std::size_t kMaxKeyFileRead = 4096;

std::optional<std::string> try_parse_key_file(const std::string &contents) {
    if (contents.size() == kKeySize)
        return contents;
    std::size_t end = contents.size();
    while (end > 0 && (contents[end - 1] == ' ' || contents[end - 1] == '\t' ||
                       contents[end - 1] == '\n' || contents[end - 1] == '\r'))
        --end;
    if (end != 2 * kKeySize)
        return std::nullopt;
    return from_hex(contents.substr(0, end));
}

std::string quoted_path(const std::string &path) {
    return "\"" + validate::display_value(path, 1024) + "\"";
}

[[noreturn]] void system_failure(const std::string &what, const std::string &path, int err) {
    throw Error(sqlstate::kConfigFileError,
                what + " " + quoted_path(path) + ": " + std::generic_category().message(err));
}

// Closes on scope exit so an exception cannot leak the descriptor into a long-lived backend.
class Fd {
  public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0)
            ::close(fd_);
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
    int get() const { return fd_; }
    // Closing can report a failed delayed write, so the creating path checks it.
    int close() {
        const int rc = ::close(fd_);
        fd_ = -1;
        return rc;
    }

  private:
    int fd_;
};

// nullopt when the file does not exist.
std::optional<std::string> read_key_file(const std::string &path) {
    // Symlinks are followed on purpose: Kubernetes and Docker secrets are mounted as symlinks.
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        if (errno == ENOENT)
            return std::nullopt;
        system_failure("could not open cluster key file", path, errno);
    }
    // fstat on the open descriptor, so the checked file is the file that is read.
    struct stat st {};
    if (fstat(fd.get(), &st) != 0)
        system_failure("could not stat cluster key file", path, errno);
    if (!S_ISREG(st.st_mode))
        throw Error(sqlstate::kConfigFileError,
                    "cluster key file " + quoted_path(path) + " is not a regular file");
    if ((st.st_mode & 077) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw Error(sqlstate::kConfigFileError,
                    "cluster key file " + quoted_path(path) + " has group or world access",
                    "Run chmod 600 on it.",
                    std::string("Its mode is ") + mode +
                        "; the key must be readable by the server's user alone.");
    }
    std::string contents(kMaxKeyFileRead + 1, '\0');
    std::size_t size = 0;
    while (size < contents.size()) {
        const ssize_t n = ::read(fd.get(), contents.data() + size, contents.size() - size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            system_failure("could not read cluster key file", path, errno);
        if (n == 0)
            break;
        size += static_cast<std::size_t>(n);
    }
    contents.resize(size);
    std::optional<std::string> key = try_parse_key_file(contents);
    wipe(contents);
    if (!key)
        throw Error(sqlstate::kConfigFileError,
                    "invalid cluster key file " + quoted_path(path) + ": " + kKeyFileExpectation,
                    kKeyFileFormatHint);
    return key;
}

// Makes the new directory entry durable: without it a crash could lose the key file after
// secrets were already encrypted under it.
void fsync_parent_dir(const std::string &path) {
    const std::size_t slash = path.rfind('/');
    const std::string dir =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
    Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0)
        system_failure("could not open directory", dir, errno);
    // Some systems cannot fsync a directory; PostgreSQL's fsync_fname tolerates the same errors.
    if (fsync(fd.get()) != 0 && errno != EINVAL && errno != EBADF)
        system_failure("could not fsync directory", dir, errno);
}

// Writes key to a private temporary file and links it into place. false when path already
// exists, i.e. another process won the race. link() is used rather than opening path itself with
// O_EXCL so that no reader can ever see the file empty or half written.
bool publish_key_file(const std::string &path, const std::string &key) {
    const std::string tmp =
        path + ".tmp." + std::to_string(getpid()) + "." + to_hex(random_bytes(4));
    Fd fd(::open(tmp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
    if (fd.get() < 0)
        system_failure("could not create cluster key file", tmp, errno);
    // Removes the temporary name on every path out, success included: path keeps the inode.
    struct Unlinker {
        const std::string &name;
        ~Unlinker() { ::unlink(name.c_str()); }
    } unlinker{tmp};

    // The mode given to open() is reduced by the umask; fchmod makes it exactly 0600.
    if (fchmod(fd.get(), 0600) != 0)
        system_failure("could not set permissions of cluster key file", tmp, errno);
    std::string text = format_key_file(key);
    std::size_t written = 0;
    while (written < text.size()) {
        const ssize_t n = ::write(fd.get(), text.data() + written, text.size() - written);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            const int err = errno;
            OPENSSL_cleanse(text.data(), text.size());
            system_failure("could not write cluster key file", tmp, err);
        }
        written += static_cast<std::size_t>(n);
    }
    OPENSSL_cleanse(text.data(), text.size());
    if (fsync(fd.get()) != 0)
        system_failure("could not fsync cluster key file", tmp, errno);
    if (fd.close() != 0)
        system_failure("could not close cluster key file", tmp, errno);
    if (::link(tmp.c_str(), path.c_str()) != 0) {
        if (errno == EEXIST)
            return false;
        system_failure("could not create cluster key file", path, errno);
    }
    fsync_parent_dir(path);
    return true;
}

}  // namespace

std::string parse_key_file(const std::string &contents) {
    std::optional<std::string> key = try_parse_key_file(contents);
    if (!key)
        throw Error(sqlstate::kConfigFileError,
                    std::string("invalid cluster key file: ") + kKeyFileExpectation,
                    kKeyFileFormatHint);
    return *key;
}

std::string format_key_file(const std::string &key32) {
    if (key32.size() != kKeySize)
        throw Error(sqlstate::kInternalError, "the cluster key must be 32 bytes long");
    return to_hex(key32) + "\n";
}

std::string load_or_create_key_file(const std::string &path, bool create_if_missing) {
    if (std::optional<std::string> key = read_key_file(path))
        return *key;
    if (!create_if_missing)
        throw Error(sqlstate::kConfigFileError,
                    "cluster key file " + quoted_path(path) + " does not exist",
                    "Restore the cluster key file that sealed the stored API keys, or set "
                    "inference.secret_key_file to its location.");
    const std::string key = random_bytes(kKeySize);
    if (publish_key_file(path, key))
        return key;
    // Another process created the file first; its key is the cluster's key.
    if (std::optional<std::string> theirs = read_key_file(path))
        return *theirs;
    throw Error(sqlstate::kConfigFileError,
                "cluster key file " + quoted_path(path) + " was removed while being created");
}

}  // namespace pgi::crypto
