#include "address_filter.h"

#include <arpa/inet.h>
#include <cstring>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "error.h"
#include "setting_list.h"

namespace pgi::net {

namespace {

constexpr std::uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

[[noreturn]] void bad_element(const std::string &element, const std::string &why) {
    throw Error(sqlstate::kInvalidParameterValue,
                "invalid network \"" + element + "\" in inference.blocked_networks: " + why,
                "List networks in CIDR notation separated by commas, such as "
                "\"169.254.0.0/16, fe80::/10\".");
}

// Parses an address literal into family and bytes (4 or 16 of them).
bool parse_address(const std::string &text, int &family, std::uint8_t *bytes) {
    if (inet_pton(AF_INET, text.c_str(), bytes) == 1) {
        family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, text.c_str(), bytes) == 1) {
        family = AF_INET6;
        return true;
    }
    return false;
}

bool prefix_matches(const std::uint8_t *a, const std::uint8_t *b, int prefix) {
    const int whole = prefix / 8;
    if (std::memcmp(a, b, static_cast<std::size_t>(whole)) != 0)
        return false;
    const int rest = prefix % 8;
    if (rest == 0)
        return true;
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

}  // namespace

AddressFilter AddressFilter::parse(const std::string &list) {
    AddressFilter filter;
    for (const std::string &element : split_setting_list(list)) {
        // "a, , b" and a trailing comma are typing slips; an empty setting is a choice.
        if (element.empty())
            bad_element(element, "empty element");
        Network n;
        std::string address = element;
        const std::size_t slash = element.find('/');
        int max_prefix = 0;
        if (slash != std::string::npos)
            address = element.substr(0, slash);
        if (!parse_address(address, n.family, n.bytes.data()))
            bad_element(element, "\"" + address + "\" is not an IPv4 or IPv6 address");
        max_prefix = n.family == AF_INET ? 32 : 128;
        n.prefix = max_prefix;
        if (slash != std::string::npos) {
            const std::string digits = element.substr(slash + 1);
            if (digits.empty() || digits.size() > 3 ||
                digits.find_first_not_of("0123456789") != std::string::npos ||
                std::stoi(digits) > max_prefix)
                bad_element(element,
                            "the prefix length must be 0 to " + std::to_string(max_prefix));
            n.prefix = std::stoi(digits);
        }
        filter.networks_.push_back(n);
    }
    return filter;
}

bool AddressFilter::matches(int family, const std::uint8_t *bytes) const {
    for (const Network &n : networks_)
        if (n.family == family && prefix_matches(n.bytes.data(), bytes, n.prefix))
            return true;
    return false;
}

bool AddressFilter::contains(const sockaddr *address) const {
    if (address == nullptr || networks_.empty())
        return false;
    if (address->sa_family == AF_INET) {
        const auto *in = reinterpret_cast<const sockaddr_in *>(address);
        std::uint8_t v4[4];
        std::memcpy(v4, &in->sin_addr, 4);
        std::uint8_t mapped[16];
        std::memcpy(mapped, kMappedPrefix, 12);
        std::memcpy(mapped + 12, v4, 4);
        return matches(AF_INET, v4) || matches(AF_INET6, mapped);
    }
    if (address->sa_family == AF_INET6) {
        const auto *in6 = reinterpret_cast<const sockaddr_in6 *>(address);
        std::uint8_t v6[16];
        std::memcpy(v6, &in6->sin6_addr, 16);
        if (matches(AF_INET6, v6))
            return true;
        return std::memcmp(v6, kMappedPrefix, 12) == 0 && matches(AF_INET, v6 + 12);
    }
    return false;
}

bool AddressFilter::contains(const std::string &address) const {
    sockaddr_in in{};
    sockaddr_in6 in6{};
    if (inet_pton(AF_INET, address.c_str(), &in.sin_addr) == 1) {
        in.sin_family = AF_INET;
        return contains(reinterpret_cast<const sockaddr *>(&in));
    }
    if (inet_pton(AF_INET6, address.c_str(), &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        return contains(reinterpret_cast<const sockaddr *>(&in6));
    }
    return false;
}

std::string address_text(const sockaddr *address) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (address == nullptr)
        return {};
    if (address->sa_family == AF_INET &&
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in *>(address)->sin_addr, buf,
                  sizeof buf) != nullptr)
        return buf;
    if (address->sa_family == AF_INET6 &&
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 *>(address)->sin6_addr, buf,
                  sizeof buf) != nullptr)
        return buf;
    return {};
}

std::string base_url_host(const std::string &base_url) {
    std::size_t start = base_url.find("://");
    start = start == std::string::npos ? 0 : start + 3;
    if (start < base_url.size() && base_url[start] == '[') {
        const std::size_t close = base_url.find(']', start);
        if (close == std::string::npos)
            return base_url.substr(start + 1);
        return base_url.substr(start + 1, close - start - 1);
    }
    const std::size_t end = base_url.find_first_of(":/", start);
    return base_url.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

std::optional<std::string> first_blocked_address(const AddressFilter &filter,
                                                 const std::string &host) {
    if (filter.empty() || host.empty())
        return std::nullopt;
    int family = 0;
    std::uint8_t bytes[16];
    if (parse_address(host, family, bytes))
        return filter.contains(host) ? std::optional<std::string>(host) : std::nullopt;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *found = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0)
        return std::nullopt;
    std::optional<std::string> blocked;
    for (const addrinfo *a = found; a != nullptr && !blocked; a = a->ai_next)
        if (filter.contains(a->ai_addr))
            blocked = address_text(a->ai_addr);
    freeaddrinfo(found);
    return blocked;
}

void check_base_url_allowed(const AddressFilter &filter, const std::string &base_url) {
    const std::string host = base_url_host(base_url);
    const std::optional<std::string> blocked = first_blocked_address(filter, host);
    if (!blocked)
        return;
    const char *hint =
        "Only a superuser may register an upstream whose address is in "
        "inference.blocked_networks: ask one to register the service, or to change the setting.";
    if (*blocked == host)
        throw Error(sqlstate::kInsufficientPrivilege,
                    "upstream address " + host + " is in inference.blocked_networks", hint);
    throw Error(sqlstate::kInsufficientPrivilege,
                "base URL host \"" + host + "\" resolves to " + *blocked +
                    ", which is in inference.blocked_networks",
                hint);
}

}  // namespace pgi::net
