// The checks a service's TLS files pass before they are stored, and the hint a failed handshake
// gets.
#include "tls_files.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <gtest/gtest.h>
#include <string>

#include "error.h"
#include "test_certificates.h"

namespace {

using pgi::tls::Files;

class TlsFilesTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/pgi-tls-files.XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir = tmpl;
        pgi::test_support::write_certificate(path("a.pem"), path("a.key"));
        pgi::test_support::write_certificate(path("b.pem"), path("b.key"));
        std::ofstream(path("garbage.pem")) << "-----BEGIN CERTIFICATE-----\nnot base64 at all\n";
    }
    void TearDown() override {
        for (const char *f : {"a.pem", "a.key", "b.pem", "b.key", "garbage.pem"})
            std::remove(path(f).c_str());
        rmdir(dir.c_str());
    }
    std::string path(const std::string &file) const { return dir + "/" + file; }
    // The message of the error check() throws, "" when it passes.
    static std::string refusal(const Files &files) {
        try {
            pgi::tls::check(files);
            return "";
        } catch (const pgi::Error &e) {
            EXPECT_EQ(e.sqlstate(), "22023");
            EXPECT_FALSE(e.hint().empty());
            return e.what();
        }
    }

    std::string dir;
};

TEST_F(TlsFilesTest, UsableFilesPass) {
    EXPECT_EQ(refusal({}), "");
    EXPECT_EQ(refusal({path("a.pem"), "", ""}), "");
    EXPECT_EQ(refusal({path("a.pem"), path("b.pem"), path("b.key")}), "");
    EXPECT_EQ(refusal({"", path("a.pem"), path("a.key")}), "");
}

TEST_F(TlsFilesTest, EachFaultIsNamed) {
    EXPECT_EQ(refusal({"a.pem", "", ""}), "ca_file \"a.pem\" is not an absolute path");
    EXPECT_EQ(refusal({path("none.pem"), "", ""}),
              "ca_file \"" + path("none.pem") + "\" cannot be read: No such file or directory");
    EXPECT_EQ(refusal({dir, "", ""}), "ca_file \"" + dir + "\" holds no PEM certificate");
    EXPECT_EQ(refusal({path("garbage.pem"), "", ""}),
              "ca_file \"" + path("garbage.pem") + "\" holds no PEM certificate");
    EXPECT_EQ(refusal({path("a.key"), "", ""}),
              "ca_file \"" + path("a.key") + "\" holds no PEM certificate");
    EXPECT_EQ(refusal({"", path("a.pem"), ""}), "client_cert_file and client_key_file go together");
    EXPECT_EQ(refusal({"", "", path("a.key")}), "client_cert_file and client_key_file go together");
    EXPECT_EQ(refusal({"", path("a.key"), path("a.key")}),
              "client_cert_file \"" + path("a.key") + "\" holds no PEM certificate");
    EXPECT_EQ(refusal({"", path("a.pem"), path("a.pem")}),
              "client_key_file \"" + path("a.pem") + "\" holds no unencrypted PEM private key");
    EXPECT_EQ(refusal({"", path("a.pem"), path("b.key")}),
              "client_key_file \"" + path("b.key") + "\" is not the key of client_cert_file \"" +
                  path("a.pem") + "\"");
    // The CA file is checked first, whatever else is wrong.
    EXPECT_EQ(refusal({path("none.pem"), path("a.pem"), ""}).rfind("ca_file", 0), 0u);
}

TEST_F(TlsFilesTest, ErrorsNeverShowAFilesContents) {
    std::string message = refusal({path("garbage.pem"), "", ""});
    EXPECT_EQ(message.find("not base64"), std::string::npos);
    message = refusal({"", path("a.pem"), path("a.pem")});
    EXPECT_EQ(message.find("BEGIN"), std::string::npos);
}

TEST(TlsFailureHint, NamesWhatTheServiceUses) {
    std::string none = pgi::tls::failure_hint({});
    EXPECT_NE(none.find("ca_file =>"), std::string::npos) << none;
    EXPECT_NE(none.find("allow_insecure => true"), std::string::npos) << none;
    EXPECT_NE(none.find("client_cert_file and client_key_file"), std::string::npos) << none;
    std::string both = pgi::tls::failure_hint({"/etc/ca.pem", "/etc/client.pem", "/etc/c.key"});
    EXPECT_NE(both.find("ca_file \"/etc/ca.pem\""), std::string::npos) << both;
    EXPECT_NE(both.find("client_cert_file \"/etc/client.pem\""), std::string::npos) << both;
    EXPECT_EQ(both.find("allow_insecure"), std::string::npos) << both;
}

}  // namespace
