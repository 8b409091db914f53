// Which upstream addresses a restricted service may reach (inference.blocked_networks): a list of
// networks in CIDR notation, matched against the address curl actually connects to after DNS, and
// against a base URL's host when a service is registered.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct sockaddr;

namespace pgi::net {

// The setting's default: link-local IPv4 (where cloud metadata services live), link-local IPv6,
// and AWS's IPv6 metadata address.
inline constexpr const char *kDefaultBlockedNetworks =
    "169.254.0.0/16, fe80::/10, fd00:ec2::254/128";

// The hint for a call or probe refused because of the setting.
inline constexpr const char *kBlockedCallHint =
    "The service was registered by a role that inference.blocked_networks restricts: a "
    "superuser may register it, or remove its network from inference.blocked_networks.";

class AddressFilter {
  public:
    // Parses "CIDR, CIDR, ..." (blanks around elements are ignored; an empty list blocks nothing).
    // An element is an IPv4 or IPv6 address with an optional /prefix (a bare address is one
    // host); bits past the prefix are ignored. Throws pgi::Error (22023) naming the bad element.
    static AddressFilter parse(const std::string &list);

    bool empty() const { return networks_.empty(); }

    // Whether the address is in one of the networks. An IPv4-mapped IPv6 address
    // (::ffff:169.254.169.254) is also judged as the IPv4 address it carries, and an IPv4 address
    // also as its mapped form, so neither spelling slips past the other family's networks.
    bool contains(const sockaddr *address) const;
    // The same for an address in text ("169.254.169.254", "fe80::1"); false for anything else.
    bool contains(const std::string &address) const;

  private:
    struct Network {
        int family = 0;  // AF_INET or AF_INET6
        std::array<std::uint8_t, 16> bytes{};
        int prefix = 0;
    };
    bool matches(int family, const std::uint8_t *bytes) const;

    std::vector<Network> networks_;
};

// The printable address of an AF_INET or AF_INET6 socket address; "" for any other family.
std::string address_text(const sockaddr *address);

// The host of a base URL in the form validate::base_url returns ("https://[::1]:8443/x" gives
// "::1"), without brackets.
std::string base_url_host(const std::string &base_url);

// The first of host's addresses that the filter holds: the host itself when it is an address
// literal, else each address a DNS lookup gives. nullopt when none is (or the name does not
// resolve: the check on every connection still applies).
std::optional<std::string> first_blocked_address(const AddressFilter &filter,
                                                 const std::string &host);

// Refuses (42501, with a hint naming the setting) a base URL whose host is, or resolves to, an
// address in the filter. For registrations by roles that inference.blocked_networks restricts.
void check_base_url_allowed(const AddressFilter &filter, const std::string &base_url);

}  // namespace pgi::net
