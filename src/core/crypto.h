// The cryptography pg_inference needs: random tokens, SHA-256 for access-key
// hashes, AES-256-GCM for stored API keys, and the per-cluster key file. OpenSSL 3 EVP only.
// Errors are pgi::Error; no function here logs or puts key material in a message.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace pgi::crypto {

inline constexpr std::size_t kKeySize = 32;    // AES-256
inline constexpr std::size_t kNonceSize = 12;  // the GCM standard nonce
inline constexpr std::size_t kTagSize = 16;
inline constexpr unsigned char kBlobVersion = 0x01;
// version byte + nonce + tag: the size of the blob for an empty plaintext.
inline constexpr std::size_t kBlobOverhead = 1 + kNonceSize + kTagSize;

// n bytes from OpenSSL's CSPRNG; XX000 if it cannot deliver.
std::string random_bytes(std::size_t n);

// The raw 32-byte digest.
std::string sha256(const std::string &data);

// Lowercase hex. from_hex accepts either case and gives nullopt for odd lengths or non-hex.
// The value of one hexadecimal digit (either case), -1 for any other character.
int hex_digit(char c);

std::string to_hex(const std::string &bytes);
std::optional<std::string> from_hex(const std::string &hex);

// Comparison whose time depends only on the lengths, never on where the contents differ: for
// secrets and hashes presented by clients.
bool constant_time_equal(const std::string &a, const std::string &b);

// Overwrites every byte the string owns (its whole capacity, so a short key kept inline or the
// tail of a longer one left by a shrink is wiped too) with OPENSSL_cleanse, which the compiler
// may not remove, and leaves it empty. For decrypted keys and header lines that carry them.
void wipe(std::string &secret) noexcept;
void wipe(std::vector<std::string> &secrets) noexcept;

// AES-256-GCM. The blob is version (0x01) || 12-byte random nonce || ciphertext || 16-byte tag.
// The version byte and aad are authenticated: pass the service name as aad so a stored key
// cannot be moved to another service's row. Plaintext up to 1 MiB.
std::string encrypt(const std::string &key32, const std::string &plaintext, const std::string &aad);

// Inverse of encrypt. Any failure (wrong key, wrong aad, tampering, truncation, unknown version,
// a key that is not 32 bytes) is XX000 "could not decrypt the stored API key" with a hint about
// the cluster key; the detail says which check failed, without revealing any key material.
std::string decrypt(const std::string &key32, const std::string &blob, const std::string &aad);

// Contents of a cluster key file: exactly 32 raw bytes, or 64 hex characters followed by optional
// whitespace. Anything else is F0000 "invalid cluster key file: expected 64 hexadecimal
// characters".
std::string parse_key_file(const std::string &contents);

// 64 lowercase hex characters and a newline: readable, and what `openssl rand -hex 32` writes.
std::string format_key_file(const std::string &key32);

// Reads the cluster key from path, refusing a file that grants any group or other permission.
// When the file does not exist and create_if_missing is set, creates it (mode 0600) with a new
// random key. Concurrent callers all end up with the same key: the new file is written and
// fsynced under a temporary name, then published with link(), which fails if another process
// published first, in which case that process's file is read. File errors are F0000.
std::string load_or_create_key_file(const std::string &path, bool create_if_missing);

}  // namespace pgi::crypto
