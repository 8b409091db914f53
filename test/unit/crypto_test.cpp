#include "crypto.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <set>
#include <stdlib.h>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "error.h"
#include "error_capture.h"

namespace {

namespace c = pgi::crypto;

std::string hex(const std::string &bytes) {
    return c::to_hex(bytes);
}

TEST(Crypto, RandomBytes) {
    EXPECT_EQ(c::random_bytes(0), "");
    EXPECT_EQ(c::random_bytes(1).size(), 1u);
    EXPECT_EQ(c::random_bytes(32).size(), 32u);
    EXPECT_EQ(c::random_bytes(3 << 20).size(), 3u << 20);
    EXPECT_NE(c::random_bytes(32), c::random_bytes(32));
}

TEST(Crypto, Sha256KnownAnswers) {
    EXPECT_EQ(hex(c::sha256("")),
              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(hex(c::sha256("abc")),
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(hex(c::sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(c::sha256(std::string("\0", 1)).size(), 32u);
}

TEST(Crypto, Hex) {
    EXPECT_EQ(c::to_hex(""), "");
    EXPECT_EQ(c::to_hex(std::string("\x00\x01\xab\xff", 4)), "0001abff");
    EXPECT_EQ(c::from_hex("0001abff"),
              std::optional<std::string>(std::string("\x00\x01\xab\xff", 4)));
    EXPECT_EQ(c::from_hex("0001ABFF"),
              std::optional<std::string>(std::string("\x00\x01\xab\xff", 4)));
    EXPECT_EQ(c::from_hex(""), std::optional<std::string>(""));
    EXPECT_EQ(c::from_hex("abc"), std::nullopt);
    EXPECT_EQ(c::from_hex("zz"), std::nullopt);
    EXPECT_EQ(c::from_hex("0g"), std::nullopt);
    EXPECT_EQ(c::from_hex(" 0"), std::nullopt);
    const std::string all = [] {
        std::string s;
        for (int i = 0; i < 256; ++i)
            s += static_cast<char>(i);
        return s;
    }();
    EXPECT_EQ(c::from_hex(c::to_hex(all)), std::optional<std::string>(all));
}

TEST(Crypto, ConstantTimeEqual) {
    EXPECT_TRUE(c::constant_time_equal("", ""));
    EXPECT_TRUE(c::constant_time_equal("abc", "abc"));
    EXPECT_FALSE(c::constant_time_equal("abc", "abd"));
    EXPECT_FALSE(c::constant_time_equal("abc", "xbc"));
    EXPECT_FALSE(c::constant_time_equal("abc", "abcd"));
    EXPECT_FALSE(c::constant_time_equal("", "a"));
    EXPECT_TRUE(c::constant_time_equal(std::string("a\0b", 3), std::string("a\0b", 3)));
    EXPECT_FALSE(c::constant_time_equal(std::string("a\0b", 3), std::string("a\0c", 3)));
}

// Every byte the string owns is zeroed in place: a long key on the heap, a short one kept inline,
// and the tail left behind when a longer value was shortened.
TEST(Crypto, WipeZeroesTheWholeBufferInPlace) {
    for (std::size_t length : {std::size_t{5}, std::size_t{15}, std::size_t{200}}) {
        std::string secret(length, 'k');
        secret.resize(length / 2);  // the tail keeps its 'k's past size()
        const char *buffer = secret.data();
        const std::size_t capacity = secret.capacity();
        c::wipe(secret);
        EXPECT_TRUE(secret.empty());
        ASSERT_EQ(secret.data(), buffer) << "wipe must not reallocate";
        for (std::size_t i = 0; i < capacity; ++i)
            ASSERT_EQ(buffer[i], '\0') << "byte " << i << " of a " << length << "-byte secret";
    }
    std::vector<std::string> lines{"Authorization: Bearer sk-1", std::string(300, 'x')};
    c::wipe(lines);
    EXPECT_TRUE(lines[0].empty());
    EXPECT_TRUE(lines[1].empty());
}

const std::string kDecryptMessage = "could not decrypt the stored API key";
const std::string kDecryptHint =
    "The cluster key changed: restore the original key file or set inference.secret_key_file, "
    "then update the service's api_key.";
const std::string kAuthDetail =
    "The value failed authentication: it was encrypted under another cluster key or for another "
    "service, or it was modified.";

void expect_decrypt_failure(const Failure &f, const std::string &detail) {
    EXPECT_EQ(f.sqlstate, "XX000");
    EXPECT_EQ(f.message, kDecryptMessage);
    EXPECT_EQ(f.hint, kDecryptHint);
    EXPECT_EQ(f.detail, detail);
}

class Aead : public ::testing::Test {
  protected:
    const std::string key_ = c::random_bytes(32);
    const std::string plaintext_ = "sk-proj-0123456789abcdef";
    const std::string aad_ = "openai-prod";
};

TEST_F(Aead, RoundTrip) {
    const std::string blob = c::encrypt(key_, plaintext_, aad_);
    EXPECT_EQ(blob.size(), 1 + 12 + plaintext_.size() + 16);
    EXPECT_EQ(static_cast<unsigned char>(blob[0]), 0x01);
    EXPECT_EQ(blob.find(plaintext_), std::string::npos);
    EXPECT_EQ(c::decrypt(key_, blob, aad_), plaintext_);
}

TEST_F(Aead, RoundTripEdgeSizes) {
    for (const std::string &text :
         {std::string(), std::string(1, 'x'), std::string(15, 'y'), std::string(16, 'z'),
          std::string(4096, 'k'), std::string("\0\xff\0", 3)}) {
        const std::string blob = c::encrypt(key_, text, aad_);
        EXPECT_EQ(blob.size(), c::kBlobOverhead + text.size());
        EXPECT_EQ(c::decrypt(key_, blob, aad_), text);
    }
    EXPECT_EQ(c::decrypt(key_, c::encrypt(key_, plaintext_, ""), ""), plaintext_);
}

TEST_F(Aead, EachEncryptionUsesAFreshNonce) {
    const std::string a = c::encrypt(key_, plaintext_, aad_);
    const std::string b = c::encrypt(key_, plaintext_, aad_);
    EXPECT_NE(a.substr(1, 12), b.substr(1, 12));
    EXPECT_NE(a, b);
}

TEST_F(Aead, DetectsTamperingInEveryRegion) {
    const std::string blob = c::encrypt(key_, plaintext_, aad_);
    const std::size_t ciphertext_end = 1 + 12 + plaintext_.size();
    for (std::size_t i = 0; i < blob.size(); ++i) {
        for (unsigned char flip : {0x01, 0x80}) {
            std::string tampered = blob;
            tampered[i] = static_cast<char>(tampered[i] ^ flip);
            const Failure f = failure_of([&] { c::decrypt(key_, tampered, aad_); });
            if (i == 0) {
                // The version byte is checked before authentication, and it is authenticated too.
                expect_decrypt_failure(
                    f, "The stored value has unknown format version " +
                           std::to_string(static_cast<unsigned char>(tampered[0])) + ".");
            } else {
                SCOPED_TRACE(i < 13 ? "nonce" : i < ciphertext_end ? "ciphertext" : "tag");
                expect_decrypt_failure(f, kAuthDetail);
            }
        }
    }
}

TEST_F(Aead, RefusesTruncatedAndExtendedBlobs) {
    const std::string blob = c::encrypt(key_, plaintext_, aad_);
    expect_decrypt_failure(failure_of([&] { c::decrypt(key_, blob.substr(0, 28), aad_); }),
                           "The stored value is too short to be an encrypted key.");
    expect_decrypt_failure(failure_of([&] { c::decrypt(key_, "", aad_); }),
                           "The stored value is too short to be an encrypted key.");
    expect_decrypt_failure(
        failure_of([&] { c::decrypt(key_, blob.substr(0, blob.size() - 1), aad_); }), kAuthDetail);
    expect_decrypt_failure(failure_of([&] { c::decrypt(key_, blob + "x", aad_); }), kAuthDetail);
}

TEST_F(Aead, BindsTheServiceName) {
    const std::string blob = c::encrypt(key_, plaintext_, aad_);
    expect_decrypt_failure(failure_of([&] { c::decrypt(key_, blob, "openai-dev"); }), kAuthDetail);
    expect_decrypt_failure(failure_of([&] { c::decrypt(key_, blob, ""); }), kAuthDetail);
    expect_decrypt_failure(failure_of([&] { c::decrypt(key_, blob, aad_ + "x"); }), kAuthDetail);
}

TEST_F(Aead, RefusesAnotherKey) {
    const std::string blob = c::encrypt(key_, plaintext_, aad_);
    expect_decrypt_failure(failure_of([&] { c::decrypt(c::random_bytes(32), blob, aad_); }),
                           kAuthDetail);
    expect_decrypt_failure(failure_of([&] { c::decrypt(key_.substr(0, 31), blob, aad_); }),
                           "The cluster key is not 32 bytes long.");
    expect_decrypt_failure(failure_of([&] { c::decrypt(key_ + "x", blob, aad_); }),
                           "The cluster key is not 32 bytes long.");
}

TEST_F(Aead, EncryptRefusesAKeyOfTheWrongSize) {
    const Failure f = failure_of([&] { c::encrypt(key_.substr(1), plaintext_, aad_); });
    EXPECT_EQ(f.sqlstate, "XX000");
    EXPECT_EQ(f.message, "could not encrypt the API key");
}

TEST_F(Aead, ErrorsNeverContainThePlaintext) {
    const std::string blob = c::encrypt(key_, plaintext_, aad_);
    const Failure f = failure_of([&] { c::decrypt(key_, blob, "other"); });
    for (const std::string &text : {f.message, f.hint, f.detail})
        EXPECT_EQ(text.find("sk-proj"), std::string::npos);
}

const std::string kHexKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

std::string hex_key_bytes() {
    return *c::from_hex(kHexKey);
}

TEST(KeyFile, ParsesHexAndRaw) {
    EXPECT_EQ(c::parse_key_file(kHexKey), hex_key_bytes());
    EXPECT_EQ(c::parse_key_file(kHexKey + "\n"), hex_key_bytes());
    EXPECT_EQ(c::parse_key_file(kHexKey + "\r\n"), hex_key_bytes());
    EXPECT_EQ(c::parse_key_file(kHexKey + " \t\n\n"), hex_key_bytes());
    std::string upper = kHexKey;
    for (char &ch : upper)
        ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    EXPECT_EQ(c::parse_key_file(upper), hex_key_bytes());
    const std::string raw = c::random_bytes(32);
    EXPECT_EQ(c::parse_key_file(raw), raw);
    // 32 raw bytes that happen to end in newlines are still 32 raw bytes.
    const std::string raw_newlines = std::string(30, 'k') + "\n\n";
    EXPECT_EQ(c::parse_key_file(raw_newlines), raw_newlines);
}

TEST(KeyFile, RefusesAnythingElse) {
    for (const std::string &contents :
         {std::string(), kHexKey.substr(1), kHexKey + "0", " " + kHexKey, kHexKey + "\nx",
          "g" + kHexKey.substr(1), std::string(31, 'k'), std::string(33, 'k'),
          kHexKey.substr(0, 32) + " " + kHexKey.substr(32)}) {
        const Failure f = failure_of([&] { c::parse_key_file(contents); });
        EXPECT_EQ(f.sqlstate, "F0000");
        EXPECT_EQ(f.message, "invalid cluster key file: expected 64 hexadecimal characters");
        EXPECT_EQ(f.hint,
                  "The file must hold the key as 64 hexadecimal characters (as \"openssl rand -hex "
                  "32\" writes) or as 32 raw bytes.");
    }
}

TEST(KeyFile, FormatsAsLowercaseHexLine) {
    EXPECT_EQ(c::format_key_file(hex_key_bytes()), kHexKey + "\n");
    const std::string key = c::random_bytes(32);
    EXPECT_EQ(c::parse_key_file(c::format_key_file(key)), key);
    EXPECT_EQ(failure_of([] { c::format_key_file("short"); }).sqlstate, "XX000");
}

class KeyFileOnDisk : public ::testing::Test {
  protected:
    void SetUp() override {
        char pattern[] = "/tmp/pgi-crypto-test-XXXXXX";
        ASSERT_NE(mkdtemp(pattern), nullptr);
        dir_ = pattern;
        path_ = dir_ + "/pg_inference.key";
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    static mode_t mode_of(const std::string &path) {
        struct stat st {};
        EXPECT_EQ(stat(path.c_str(), &st), 0);
        return st.st_mode & 07777;
    }
    static std::string read(const std::string &path) {
        std::ifstream in(path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), {});
    }
    static void write(const std::string &path, const std::string &contents, mode_t mode) {
        // Replaced rather than rewritten: a previous mode may not let the owner write.
        std::filesystem::remove(path);
        std::ofstream(path, std::ios::binary) << contents;
        ASSERT_EQ(chmod(path.c_str(), mode), 0);
    }
    std::vector<std::string> entries() const {
        std::vector<std::string> names;
        for (const auto &entry : std::filesystem::directory_iterator(dir_))
            names.push_back(entry.path().filename().string());
        return names;
    }

    std::string dir_;
    std::string path_;
};

TEST_F(KeyFileOnDisk, MissingWithoutCreateIsAnError) {
    const Failure f = failure_of([&] { c::load_or_create_key_file(path_, false); });
    EXPECT_EQ(f.sqlstate, "F0000");
    EXPECT_EQ(f.message, "cluster key file \"" + path_ + "\" does not exist");
    EXPECT_EQ(f.hint,
              "Restore the cluster key file that sealed the stored API keys, or set "
              "inference.secret_key_file to its location.");
    EXPECT_TRUE(entries().empty());
}

TEST_F(KeyFileOnDisk, CreatesWithMode0600AndReadsBack) {
    const std::string key = c::load_or_create_key_file(path_, true);
    EXPECT_EQ(key.size(), 32u);
    EXPECT_EQ(mode_of(path_), 0600u);
    EXPECT_EQ(read(path_), c::format_key_file(key));
    // Only the key file: the temporary name used to publish it is gone.
    EXPECT_EQ(entries(), std::vector<std::string>{"pg_inference.key"});
    EXPECT_EQ(c::load_or_create_key_file(path_, true), key);
    EXPECT_EQ(c::load_or_create_key_file(path_, false), key);
}

TEST_F(KeyFileOnDisk, ModeIsExactly0600WhateverTheUmask) {
    const mode_t old = umask(0377);
    const std::string key = c::load_or_create_key_file(path_, true);
    umask(old);
    EXPECT_EQ(mode_of(path_), 0600u);
    EXPECT_EQ(c::load_or_create_key_file(path_, false), key);
}

TEST_F(KeyFileOnDisk, ReadsAnAdministratorsFile) {
    write(path_, kHexKey + "\n", 0600);
    EXPECT_EQ(c::load_or_create_key_file(path_, false), hex_key_bytes());
    write(path_, kHexKey, 0400);
    EXPECT_EQ(c::load_or_create_key_file(path_, true), hex_key_bytes());
    const std::string raw = c::random_bytes(32);
    write(path_, raw, 0600);
    EXPECT_EQ(c::load_or_create_key_file(path_, false), raw);
}

TEST_F(KeyFileOnDisk, FollowsSymlinks) {
    write(dir_ + "/real.key", kHexKey + "\n", 0600);
    ASSERT_EQ(symlink((dir_ + "/real.key").c_str(), path_.c_str()), 0);
    EXPECT_EQ(c::load_or_create_key_file(path_, false), hex_key_bytes());
}

TEST_F(KeyFileOnDisk, RefusesGroupOrWorldAccess) {
    for (mode_t mode : {0640, 0604, 0660, 0644, 0610, 0601, 0700 | 0040}) {
        write(path_, kHexKey + "\n", mode);
        const Failure f = failure_of([&] { c::load_or_create_key_file(path_, true); });
        char octal[8];
        std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
        EXPECT_EQ(f.sqlstate, "F0000");
        EXPECT_EQ(f.message, "cluster key file \"" + path_ + "\" has group or world access");
        EXPECT_EQ(f.hint, "Run chmod 600 on it.");
        EXPECT_EQ(f.detail, std::string("Its mode is ") + octal +
                                "; the key must be readable by the server's user alone.");
        // A refused file is left alone, not replaced by a new key.
        EXPECT_EQ(read(path_), kHexKey + "\n");
    }
}

TEST_F(KeyFileOnDisk, RefusesAMalformedFile) {
    write(path_, "not a key\n", 0600);
    const Failure f = failure_of([&] { c::load_or_create_key_file(path_, true); });
    EXPECT_EQ(f.sqlstate, "F0000");
    EXPECT_EQ(f.message,
              "invalid cluster key file \"" + path_ + "\": expected 64 hexadecimal characters");
    EXPECT_EQ(read(path_), "not a key\n");
    write(path_, std::string(100000, 'a'), 0600);
    EXPECT_EQ(failure_of([&] { c::load_or_create_key_file(path_, true); }).message,
              "invalid cluster key file \"" + path_ + "\": expected 64 hexadecimal characters");
}

TEST_F(KeyFileOnDisk, RefusesADirectory) {
    ASSERT_EQ(mkdir(path_.c_str(), 0700), 0);
    const Failure f = failure_of([&] { c::load_or_create_key_file(path_, true); });
    EXPECT_EQ(f.sqlstate, "F0000");
    EXPECT_EQ(f.message, "cluster key file \"" + path_ + "\" is not a regular file");
}

TEST_F(KeyFileOnDisk, ReportsAMissingDirectory) {
    const std::string path = dir_ + "/missing/pg_inference.key";
    EXPECT_EQ(failure_of([&] { c::load_or_create_key_file(path, false); }).message,
              "cluster key file \"" + path + "\" does not exist");
    const Failure f = failure_of([&] { c::load_or_create_key_file(path, true); });
    EXPECT_EQ(f.sqlstate, "F0000");
    EXPECT_EQ(f.message.rfind("could not create cluster key file \"" + path + ".tmp.", 0), 0u)
        << f.message;
    EXPECT_NE(f.message.find("No such file or directory"), std::string::npos) << f.message;
}

TEST_F(KeyFileOnDisk, ReportsAnUnreadableFile) {
    if (geteuid() == 0)
        GTEST_SKIP() << "root reads files whatever their mode";
    write(path_, kHexKey, 0000);
    const Failure f = failure_of([&] { c::load_or_create_key_file(path_, true); });
    EXPECT_EQ(f.sqlstate, "F0000");
    EXPECT_EQ(f.message, "could not open cluster key file \"" + path_ + "\": Permission denied");
}

TEST_F(KeyFileOnDisk, RacingCreatorsAgreeOnOneKey) {
    constexpr int kRounds = 20;
    constexpr int kThreads = 8;
    for (int round = 0; round < kRounds; ++round) {
        const std::string path = dir_ + "/race-" + std::to_string(round) + ".key";
        std::vector<std::string> keys(kThreads);
        std::vector<std::string> errors(kThreads);
        std::atomic<int> ready{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t) {
            threads.emplace_back([&, t] {
                // Start together so the creations really overlap.
                ready.fetch_add(1);
                while (ready.load() < kThreads)
                    std::this_thread::yield();
                try {
                    keys[t] = c::load_or_create_key_file(path, true);
                } catch (const pgi::Error &e) {
                    errors[t] = e.what();
                }
            });
        }
        for (auto &thread : threads)
            thread.join();
        for (int t = 0; t < kThreads; ++t) {
            EXPECT_EQ(errors[t], "") << "round " << round;
            EXPECT_EQ(keys[t], keys[0]) << "round " << round;
        }
        EXPECT_EQ(keys[0].size(), 32u);
        EXPECT_EQ(c::load_or_create_key_file(path, false), keys[0]);
        EXPECT_EQ(mode_of(path), 0600u);
    }
    // No temporary file survives any round.
    EXPECT_EQ(entries().size(), static_cast<std::size_t>(kRounds));
}

TEST_F(KeyFileOnDisk, RacingProcessesAgreeOnOneKey) {
    constexpr int kChildren = 6;
    int pipes[kChildren][2];
    std::vector<pid_t> pids;
    for (int i = 0; i < kChildren; ++i) {
        ASSERT_EQ(pipe(pipes[i]), 0);
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            close(pipes[i][0]);
            std::string out;
            try {
                out = c::to_hex(c::load_or_create_key_file(path_, true));
            } catch (const pgi::Error &e) {
                out = std::string("error: ") + e.what();
            }
            const ssize_t n = ::write(pipes[i][1], out.data(), out.size());
            _exit(n == static_cast<ssize_t>(out.size()) ? 0 : 1);
        }
        close(pipes[i][1]);
        pids.push_back(pid);
    }
    std::set<std::string> results;
    for (int i = 0; i < kChildren; ++i) {
        std::string out;
        char buf[256];
        ssize_t n;
        while ((n = ::read(pipes[i][0], buf, sizeof buf)) > 0)
            out.append(buf, n);
        close(pipes[i][0]);
        int status = 0;
        ASSERT_EQ(waitpid(pids[i], &status, 0), pids[i]);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        results.insert(out);
    }
    ASSERT_EQ(results.size(), 1u) << *results.begin();
    EXPECT_EQ(*results.begin(), c::to_hex(c::load_or_create_key_file(path_, false)));
    EXPECT_EQ(entries(), std::vector<std::string>{"pg_inference.key"});
}

}  // namespace
