#include "address_filter.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <string>

#include "error.h"
#include "error_capture.h"

namespace {

using pgi::net::AddressFilter;

AddressFilter defaults() {
    return AddressFilter::parse(pgi::net::kDefaultBlockedNetworks);
}

TEST(AddressFilter, DefaultsBlockMetadataAndLinkLocal) {
    const AddressFilter f = defaults();
    EXPECT_TRUE(f.contains("169.254.169.254"));
    EXPECT_TRUE(f.contains("169.254.0.1"));
    EXPECT_TRUE(f.contains("fe80::1"));
    EXPECT_TRUE(f.contains("febf:ffff::1"));
    EXPECT_TRUE(f.contains("fd00:ec2::254"));
    EXPECT_FALSE(f.contains("fd00:ec2::253"));
    EXPECT_FALSE(f.contains("fec0::1"));
    EXPECT_FALSE(f.contains("169.253.255.255"));
    EXPECT_FALSE(f.contains("169.255.0.0"));
    EXPECT_FALSE(f.contains("127.0.0.1"));
    EXPECT_FALSE(f.contains("::1"));
    EXPECT_FALSE(f.contains("10.0.0.1"));
}

TEST(AddressFilter, MappedAddressesAreJudgedAsTheirIpv4Address) {
    const AddressFilter f = defaults();
    EXPECT_TRUE(f.contains("::ffff:169.254.169.254"));
    EXPECT_TRUE(f.contains("::ffff:a9fe:a9fe"));
    EXPECT_FALSE(f.contains("::ffff:127.0.0.1"));
    // An IPv4 address is caught by a network written in mapped form, too.
    const AddressFilter mapped = AddressFilter::parse("::ffff:10.0.0.0/104");
    EXPECT_TRUE(mapped.contains("10.1.2.3"));
    EXPECT_TRUE(mapped.contains("::ffff:10.1.2.3"));
    EXPECT_FALSE(mapped.contains("11.0.0.1"));
}

TEST(AddressFilter, SocketAddresses) {
    const AddressFilter f = AddressFilter::parse("127.0.0.0/8, ::1");
    sockaddr_in in{};
    in.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.53", &in.sin_addr);
    EXPECT_TRUE(f.contains(reinterpret_cast<const sockaddr *>(&in)));
    EXPECT_EQ(pgi::net::address_text(reinterpret_cast<const sockaddr *>(&in)), "127.0.0.53");
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    EXPECT_TRUE(f.contains(reinterpret_cast<const sockaddr *>(&in6)));
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
    EXPECT_TRUE(f.contains(reinterpret_cast<const sockaddr *>(&in6)));
    EXPECT_EQ(pgi::net::address_text(reinterpret_cast<const sockaddr *>(&in6)), "::ffff:127.0.0.1");
    inet_pton(AF_INET6, "::2", &in6.sin6_addr);
    EXPECT_FALSE(f.contains(reinterpret_cast<const sockaddr *>(&in6)));
    EXPECT_FALSE(f.contains(static_cast<const sockaddr *>(nullptr)));
}

TEST(AddressFilter, PrefixesAtBitBoundaries) {
    const AddressFilter f = AddressFilter::parse("10.0.0.0/9, 0.0.0.0/0");
    EXPECT_TRUE(f.contains("1.2.3.4"));  // /0 is everything of its family
    EXPECT_FALSE(f.contains("::2"));
    const AddressFilter nine = AddressFilter::parse("10.128.0.0/9");
    EXPECT_TRUE(nine.contains("10.200.0.1"));
    EXPECT_FALSE(nine.contains("10.127.255.255"));
    // Host bits past the prefix are ignored.
    const AddressFilter host_bits = AddressFilter::parse("169.254.169.254/16");
    EXPECT_TRUE(host_bits.contains("169.254.1.1"));
}

TEST(AddressFilter, EmptyListBlocksNothing) {
    EXPECT_TRUE(AddressFilter::parse("").empty());
    EXPECT_TRUE(AddressFilter::parse("  ").empty());
    EXPECT_FALSE(AddressFilter::parse("").contains("169.254.169.254"));
}

TEST(AddressFilter, BadElementsAreNamed) {
    const std::string hint =
        "List networks in CIDR notation separated by commas, such as \"169.254.0.0/16, "
        "fe80::/10\".";
    Failure f = failure_of([] { AddressFilter::parse("169.254.0.0/16, example.com"); });
    EXPECT_EQ(f.sqlstate, "22023");
    EXPECT_EQ(f.message,
              "invalid network \"example.com\" in inference.blocked_networks: \"example.com\" is "
              "not an IPv4 or IPv6 address");
    EXPECT_EQ(f.hint, hint);
    f = failure_of([] { AddressFilter::parse("10.0.0.0/33"); });
    EXPECT_EQ(f.message,
              "invalid network \"10.0.0.0/33\" in inference.blocked_networks: the prefix length "
              "must be 0 to 32");
    f = failure_of([] { AddressFilter::parse("fe80::/x"); });
    EXPECT_EQ(f.message,
              "invalid network \"fe80::/x\" in inference.blocked_networks: the prefix length "
              "must be 0 to 128");
    f = failure_of([] { AddressFilter::parse("10.0.0.0/8,,fe80::/10"); });
    EXPECT_EQ(f.message, "invalid network \"\" in inference.blocked_networks: empty element");
    f = failure_of([] { AddressFilter::parse("10.0.0.0/"); });
    EXPECT_EQ(f.sqlstate, "22023");
}

TEST(AddressFilter, BaseUrlHost) {
    using pgi::net::base_url_host;
    EXPECT_EQ(base_url_host("https://api.openai.com"), "api.openai.com");
    EXPECT_EQ(base_url_host("http://169.254.169.254:80/latest"), "169.254.169.254");
    EXPECT_EQ(base_url_host("https://[fe80::1]:8443/x"), "fe80::1");
    EXPECT_EQ(base_url_host("http://[::1]"), "::1");
    EXPECT_EQ(base_url_host("http://localhost/v"), "localhost");
}

TEST(AddressFilter, BaseUrlChecks) {
    const AddressFilter f = defaults();
    EXPECT_NO_THROW(pgi::net::check_base_url_allowed(f, "http://127.0.0.1:8080"));
    Failure e = failure_of([&] { pgi::net::check_base_url_allowed(f, "http://169.254.169.254"); });
    EXPECT_EQ(e.sqlstate, "42501");
    EXPECT_EQ(e.message, "upstream address 169.254.169.254 is in inference.blocked_networks");
    EXPECT_NE(e.hint.find("inference.blocked_networks"), std::string::npos);
    e = failure_of([&] { pgi::net::check_base_url_allowed(f, "https://[fe80::1]:443"); });
    EXPECT_EQ(e.message, "upstream address fe80::1 is in inference.blocked_networks");

    // A name is judged by what it resolves to ("localhost" needs no network).
    const AddressFilter loopback = AddressFilter::parse("127.0.0.0/8");
    e = failure_of([&] { pgi::net::check_base_url_allowed(loopback, "http://localhost:1"); });
    EXPECT_EQ(e.sqlstate, "42501");
    EXPECT_EQ(e.message,
              "base URL host \"localhost\" resolves to 127.0.0.1, which is in "
              "inference.blocked_networks");
    // A name that does not resolve is left to the check on every connection.
    EXPECT_EQ(pgi::net::first_blocked_address(loopback, "no-such-host.invalid"), std::nullopt);
}

}  // namespace
