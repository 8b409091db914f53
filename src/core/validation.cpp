#include "validation.h"

#include <arpa/inet.h>
#include <string_view>

#include "error.h"
#include "utf8.h"

namespace pgi::validate {

namespace {

[[noreturn]] void fail(std::string message, std::string hint) {
    throw Error(sqlstate::kInvalidParameterValue, std::move(message), std::move(hint));
}

std::string quoted(const std::string &value, std::size_t max_chars = 64) {
    return "\"" + display_value(value, max_chars) + "\"";
}

// The UTF-8 sequence starting at s[i]: its length with its code point in cp, or 0 when the bytes
// there are not valid UTF-8 (overlong forms and surrogates included). Values come from PostgreSQL
// text, which is UTF-8 in practice; a database in another encoding just sees its non-ASCII bytes
// treated as opaque.
std::size_t decode_utf8(std::string_view s, std::size_t i, char32_t &cp) {
    const Utf8Step step = utf8_step(s.substr(i));
    cp = step.cp;
    return step.valid ? step.bytes : 0;
}

// C0, DEL and C1 (U+0080..U+009F, which includes NEL, a line break to some log readers).
bool is_control(char32_t cp) {
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F);
}

// Unicode White_Space that is not a control character: invisible in a message, and a sign of a
// copy-paste accident in an identifier.
bool is_space(char32_t cp) {
    return cp == 0x20 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

std::string too_long(const std::string &subject, std::size_t chars, std::size_t max) {
    return subject + " is too long (" + std::to_string(chars) + " characters; the maximum is " +
           std::to_string(max) + ")";
}

char ascii_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (char &c : out)
        c = ascii_lower(c);
    return out;
}

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
bool is_alpha(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_hex(char c) {
    return is_digit(c) || (ascii_lower(c) >= 'a' && ascii_lower(c) <= 'f');
}

// "." and "..", also spelled with %2e: servers and proxies decode those before resolving the
// path, so they traverse just the same.
bool is_dot_segment(std::string_view seg) {
    std::size_t dots = 0;
    for (std::size_t i = 0; i < seg.size();) {
        if (seg[i] == '.') {
            ++dots;
            ++i;
        } else if (seg.size() - i >= 3 && seg[i] == '%' && seg[i + 1] == '2' &&
                   ascii_lower(seg[i + 2]) == 'e') {
            ++dots;
            i += 3;
        } else {
            return false;
        }
    }
    return dots == 1 || dots == 2;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    for (;;) {
        const std::size_t end = s.find(sep, start);
        if (end == std::string_view::npos) {
            parts.push_back(s.substr(start));
            return parts;
        }
        parts.push_back(s.substr(start, end - start));
        start = end + 1;
    }
}

// The URL as it may appear in a message: credentials before '@' and everything from '?' or '#'
// on are replaced by "...", since users do put keys there ("https://key@host", "?key=...").
// Over-redacting an '@' that sits in a path is harmless; leaking a key is not.
std::string redacted_url(std::string_view url) {
    const std::size_t scheme_end = url.find("://");
    const std::size_t start = scheme_end == std::string_view::npos ? 0 : scheme_end + 3;
    const std::size_t tail = url.find_first_of("?#");
    std::string shown(url.substr(0, tail));
    const std::size_t at = shown.rfind('@');
    if (at != std::string::npos && at >= start)
        shown = shown.substr(0, start) + "..." + shown.substr(at);
    if (tail != std::string_view::npos) {
        shown += url[tail];
        shown += "...";
    }
    return shown;
}

const char *const kServiceNameHint =
    "Use 1 to 63 lowercase letters, digits, \"-\" and \".\"; \"-\" may not start or end a segment.";
const char *const kModelHint =
    "Use the model id exactly as the provider lists it, e.g. "
    "\"meta/llama-3.1-8b-instruct\".";
const char *const kUrlExampleHint =
    "Use an http:// or https:// URL, e.g. \"https://api.openai.com\" or \"http://10.0.0.5:8000\".";
const char *const kHostHint =
    "Use a host name, an IPv4 address or an IPv6 address in brackets, e.g. \"http://[::1]:8000\".";

}  // namespace

std::string display_value(const std::string &value, std::size_t max_chars) {
    static const char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(value.size() < max_chars ? value.size() + 2 : max_chars + 8);
    std::size_t chars = 0;
    for (std::size_t i = 0; i < value.size(); ++chars) {
        if (chars == max_chars) {
            out += "...";
            break;
        }
        char32_t cp = 0;
        const std::size_t len = decode_utf8(value, i, cp);
        if (len == 0) {
            const auto byte = static_cast<unsigned char>(value[i]);
            out += "\\x";
            out += kHex[byte >> 4];
            out += kHex[byte & 0xF];
            ++i;
            continue;
        }
        if (cp == '\n') {
            out += "\\n";
        } else if (cp == '\r') {
            out += "\\r";
        } else if (cp == '\t') {
            out += "\\t";
        } else if (cp < 0x20 || cp == 0x7F) {
            out += "\\x";
            out += kHex[cp >> 4];
            out += kHex[cp & 0xF];
        } else if (is_control(cp) || cp == 0x2028 || cp == 0x2029) {
            // C1 controls and the Unicode line separators end a line in some log viewers.
            out += "\\u";
            for (int shift = 12; shift >= 0; shift -= 4)
                out += kHex[(cp >> shift) & 0xF];
        } else {
            out.append(value, i, len);
        }
        i += len;
    }
    return out;
}

void service_name(const std::string &name, const char *what) {
    const std::string kind = std::string(what) + " name";
    if (name.empty())
        fail(kind + " must not be empty", kServiceNameHint);
    if (name.size() > kMaxServiceName)
        fail(too_long(kind + " " + quoted(name), utf8_chars(name), kMaxServiceName),
             kServiceNameHint);
    for (std::size_t i = 0; i < name.size(); ++i) {
        const char c = name[i];
        if ((c >= 'a' && c <= 'z') || is_digit(c) || c == '-' || c == '.')
            continue;
        // Name the whole character, not the first byte of a multi-byte one.
        char32_t cp = 0;
        const std::size_t len = decode_utf8(name, i, cp);
        fail("invalid character " + quoted(name.substr(i, len == 0 ? 1 : len)) + " in " + kind +
                 " " + quoted(name),
             kServiceNameHint);
    }
    for (std::string_view seg : split(name, '.')) {
        if (seg.empty())
            fail("invalid " + kind + " " + quoted(name) +
                     ": segments between \".\" may not be empty",
                 kServiceNameHint);
        if (seg.front() == '-' || seg.back() == '-')
            fail("invalid " + kind + " " + quoted(name) +
                     ": a segment may not start or end with \"-\"",
                 kServiceNameHint);
    }
}

void model(const std::string &model) {
    if (model.empty())
        fail("model must not be empty", kModelHint);
    const std::size_t chars = utf8_chars(model);
    if (chars > kMaxModel)
        fail(too_long("model " + quoted(model), chars, kMaxModel), kModelHint);
    for (std::size_t i = 0; i < model.size();) {
        char32_t cp = 0;
        const std::size_t len = decode_utf8(model, i, cp);
        if (len != 0 && (is_control(cp) || is_space(cp)))
            fail("invalid model " + quoted(model) +
                     ": model names may not contain whitespace or control characters",
                 "Remove the spaces, line breaks and other control characters.");
        i += len == 0 ? 1 : len;
    }
    if (model.find_first_of("?#") != std::string::npos)
        fail("invalid model " + quoted(model) + ": model names may not contain \"?\" or \"#\"",
             "Pass the model id alone; pg_inference builds each request URL itself.");
    for (std::string_view seg : split(model, '/')) {
        if (seg.empty())
            fail("invalid model " + quoted(model) +
                     ": model names may not have an empty \"/\" segment",
                 "Remove the leading, trailing or doubled \"/\".");
        if (is_dot_segment(seg))
            fail("invalid model " + quoted(model) +
                     ": model names may not contain \".\" or \"..\" segments",
                 kModelHint);
    }
}

std::string base_url(const std::string &url) {
    if (url.empty())
        fail("base URL must not be empty", kUrlExampleHint);
    // Not quoted at all: a URL this long may hold anything, and the length is the whole story.
    if (url.size() > kMaxBaseUrl)
        fail(too_long("base URL", url.size(), kMaxBaseUrl),
             "Pass the server's address and path prefix only.");
    const std::string redacted = redacted_url(url);
    const std::string shown = quoted(redacted, 200);
    // When credentials were redacted, a piece of the authority quoted on its own could be part of
    // them ("https://user:pa/ss@host" has port "pa"), so such pieces are not shown either.
    const bool hides_credentials = redacted.find("...@") != std::string::npos;
    const auto quoted_part = [&](std::string_view part) {
        return hides_credentials ? std::string("\"...\"") : quoted(std::string(part));
    };

    // First, before any parsing: CR/LF would split the request line, and curl, proxies and
    // servers disagree on what other bytes mean.
    for (char ch : url) {
        const auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c == 0x7F)
            fail("invalid base URL " + shown +
                     ": URLs may not contain whitespace or control characters",
                 "Remove the spaces and line breaks from the URL.");
        if (c >= 0x80)
            fail("invalid base URL " + shown + ": non-ASCII characters must be percent-encoded",
                 "Use the host's ASCII (punycode) form and percent-encode the path.");
    }

    const std::size_t scheme_end = url.find("://");
    bool scheme_ok = scheme_end != std::string::npos && scheme_end > 0 && is_alpha(url[0]);
    for (std::size_t i = 0; scheme_ok && i < scheme_end; ++i) {
        const char c = url[i];
        scheme_ok = is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.';
    }
    if (!scheme_ok)
        fail("base URL " + shown + " has no http:// or https:// scheme", kUrlExampleHint);
    const std::string scheme = ascii_lower(std::string_view(url).substr(0, scheme_end));
    if (scheme != "http" && scheme != "https")
        fail("unsupported scheme " + quoted(url.substr(0, scheme_end)) + " in base URL " + shown,
             "Use http:// or https://.");

    const std::string_view rest = std::string_view(url).substr(scheme_end + 3);
    if (rest.find_first_of("?#") != std::string_view::npos)
        fail("invalid base URL " + shown + ": it must not contain a query string or fragment",
             "Remove everything from \"?\" or \"#\" on: keys go in api_key, and pg_inference "
             "builds each request's query itself.");
    const std::size_t authority_end = rest.find('/');
    const std::string_view authority = rest.substr(0, authority_end);
    std::string_view path =
        authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
    if (authority.find('@') != std::string_view::npos)
        fail("base URL " + shown + " must not contain credentials",
             "Remove the user name and password from the URL and pass the key as api_key.");
    if (authority.empty())
        fail("base URL " + shown + " has no host", kUrlExampleHint);

    std::string host;
    std::string_view port_text;
    bool has_port = false;
    if (authority.front() == '[') {
        const std::size_t close = authority.find(']');
        // Without ']' everything after '[' is shown as the address that failed to parse.
        const std::string inner(authority.substr(
            1, close == std::string_view::npos ? std::string_view::npos : close - 1));
        in6_addr addr6{};
        if (close == std::string_view::npos || inet_pton(AF_INET6, inner.c_str(), &addr6) != 1)
            fail("invalid IPv6 address " + quoted_part(inner) + " in base URL " + shown, kHostHint);
        host = "[" + ascii_lower(inner) + "]";
        const std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':')
                fail("invalid base URL " + shown + ": unexpected text after the IPv6 address",
                     kHostHint);
            has_port = true;
            port_text = after.substr(1);
        }
    } else {
        const std::size_t colon = authority.find(':');
        if (colon != std::string_view::npos &&
            authority.find(':', colon + 1) != std::string_view::npos)
            fail("invalid base URL " + shown + ": an IPv6 address must be enclosed in brackets",
                 kHostHint);
        const std::string_view name = authority.substr(0, colon);
        if (colon != std::string_view::npos) {
            has_port = true;
            port_text = authority.substr(colon + 1);
        }
        if (name.empty())
            fail("base URL " + shown + " has no host", kUrlExampleHint);
        // '_' is not DNS but Docker and Compose service names use it, and curl resolves them.
        bool ok = name.size() <= 253;
        bool numeric = true;
        for (char c : name) {
            ok = ok && (is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_');
            numeric = numeric && (is_digit(c) || c == '.');
        }
        for (std::string_view label : split(name, '.'))
            ok = ok && !label.empty() && label.size() <= 63 && label.front() != '-' &&
                 label.back() != '-';
        if (!ok)
            fail("invalid host " + quoted_part(name) + " in base URL " + shown, kHostHint);
        // All digits and dots would otherwise reach the resolver as a name or an odd IPv4 form.
        in_addr addr4{};
        const std::string name_str(name);
        if (numeric && inet_pton(AF_INET, name_str.c_str(), &addr4) != 1)
            fail("invalid IPv4 address " + quoted_part(name_str) + " in base URL " + shown,
                 kHostHint);
        host = ascii_lower(name);
    }

    std::string port;
    if (has_port) {
        bool ok = !port_text.empty() && port_text.size() <= 5;
        unsigned value = 0;
        for (char c : port_text) {
            ok = ok && is_digit(c);
            value = value * 10 + static_cast<unsigned>(c - '0');
        }
        if (!ok || value == 0 || value > 65535)
            fail("invalid port " + quoted_part(port_text) + " in base URL " + shown,
                 "Use a port number from 1 to 65535.");
        port = ":" + std::to_string(value);
    }

    while (!path.empty() && path.back() == '/')
        path.remove_suffix(1);
    if (!path.empty()) {
        // path[0] is the '/' that ended the authority; what follows are the segments.
        for (std::string_view seg : split(path.substr(1), '/')) {
            if (seg.empty())
                fail("invalid base URL " + shown + ": the path has an empty segment (\"//\")",
                     "Remove the doubled \"/\".");
            if (is_dot_segment(seg))
                fail("invalid base URL " + shown +
                         ": the path may not contain \".\" or \"..\" segments",
                     "Write the path prefix without \".\" and \"..\" segments.");
            for (std::size_t i = 0; i < seg.size(); ++i) {
                const char c = seg[i];
                if (c == '%') {
                    if (seg.size() - i < 3 || !is_hex(seg[i + 1]) || !is_hex(seg[i + 2]))
                        fail("invalid base URL " + shown +
                                 ": \"%\" must start a percent-encoded byte such as \"%20\"",
                             "Write a literal \"%\" as \"%25\".");
                    continue;
                }
                // RFC 3986 pchar: what a path segment may hold without percent-encoding.
                if (is_alpha(c) || is_digit(c) ||
                    std::string_view("-._~!$&'()*+,;=:@").find(c) != std::string_view::npos)
                    continue;
                fail("invalid character " + quoted(std::string(1, c)) + " in base URL " + shown,
                     "Percent-encode it.");
            }
        }
        const std::size_t last = path.rfind('/');
        const std::string_view tail = path.substr(last + 1);
        const std::string tail_lower = ascii_lower(tail);
        if (tail_lower == "v1" || tail_lower == "v1beta") {
            const std::string suffix = "\"/" + std::string(tail) + "\"";
            fail("base URL " + shown + " must not end in " + suffix,
                 "Remove " + suffix +
                     ": pg_inference appends the API version path for each protocol.");
        }
    }

    return scheme + "://" + host + port + std::string(path);
}

namespace {

bool valid_env_name(std::string_view name) {
    if (name.empty() || is_digit(name.front()))
        return false;
    for (char c : name)
        if (!is_alpha(c) && !is_digit(c) && c != '_')
            return false;
    return true;
}

constexpr std::string_view kEnvPrefix = "env:";

}  // namespace

void api_key(const std::string &key) {
    // No message here quotes the key: it would end up in the server log and the client's screen.
    if (key.empty())
        fail("api_key must not be empty", "Pass NULL for an endpoint that needs no key.");
    if (key.size() > kMaxApiKey)
        fail(too_long("api_key", key.size(), kMaxApiKey), "Pass the key alone.");
    if (key.compare(0, kEnvPrefix.size(), kEnvPrefix) == 0) {
        // Only a variable name, which is safe to show and what the user needs to see.
        if (!valid_env_name(std::string_view(key).substr(kEnvPrefix.size())))
            fail("invalid environment variable name in api_key " + quoted(key),
                 "Use env:NAME, where NAME is letters, digits and \"_\" and does not start with a "
                 "digit.");
        return;
    }
    if (ascii_lower(std::string_view(key).substr(0, 7)) == "bearer ")
        fail("api_key must be the key alone, without the \"Bearer \" prefix",
             "Remove \"Bearer \"; the protocol decides which header carries the key.");
    for (char ch : key) {
        const auto c = static_cast<unsigned char>(ch);
        // A CR or LF here would let the value add its own header lines upstream.
        if (c <= 0x20 || c == 0x7F)
            fail("api_key must not contain whitespace or control characters",
                 "Pass the key exactly as issued, without spaces or line breaks.");
        if (c >= 0x80)
            fail("api_key must contain only ASCII characters", "Pass the key exactly as issued.");
    }
}

std::optional<std::string> env_key_name(const std::string &api_key) {
    if (api_key.compare(0, kEnvPrefix.size(), kEnvPrefix) != 0)
        return std::nullopt;
    std::string name = api_key.substr(kEnvPrefix.size());
    if (!valid_env_name(name))
        return std::nullopt;
    return name;
}

void labels(const std::vector<std::optional<std::string>> &values, const char *what) {
    const std::string subject(what);
    for (const auto &value : values) {
        if (!value)
            fail(subject + " must not contain NULL elements",
                 "Remove the NULL elements from the array.");
        const std::size_t chars = utf8_chars(*value);
        if (chars > kMaxLabel)
            fail(too_long("element " + quoted(*value) + " of " + subject, chars, kMaxLabel),
                 "Use labels of at most 256 characters.");
        for (std::size_t i = 0; i < value->size();) {
            char32_t cp = 0;
            const std::size_t len = decode_utf8(*value, i, cp);
            if (len != 0 && is_control(cp))
                fail("invalid element " + quoted(*value) + " in " + subject +
                         ": elements may not contain control characters",
                     "Remove the line breaks and other control characters.");
            i += len == 0 ? 1 : len;
        }
    }
}

}  // namespace pgi::validate
