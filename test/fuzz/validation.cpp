// Validation of a service's fields (validation.h): the first byte picks the function, the rest
// is the value. Accepted values must have the promised form; the URL's normal form is a fixed
// point; display_value never lets a raw control character or invalid UTF-8 through.
#include "validation.h"

#include <string>

#include "error.h"
#include "fuzz_common.h"

using namespace pgi;

namespace {

// Whether text is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF)
// and free of C0, DEL and C1 controls and the line separators U+2028 and U+2029.
bool clean_utf8(const std::string &s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t len = c < 0x80             ? 1
                          : (c & 0xE0) == 0xC0 ? 2
                          : (c & 0xF0) == 0xE0 ? 3
                          : (c & 0xF8) == 0xF0 ? 4
                                               : 0;
        if (len == 0 || i + len > s.size())
            return false;
        char32_t cp = len == 1 ? c : c & (0x7F >> len);
        for (std::size_t k = 1; k < len; ++k) {
            const auto d = static_cast<unsigned char>(s[i + k]);
            if ((d & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (d & 0x3F);
        }
        static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        // Controls and the Unicode line separators: display_value escapes them all, as some
        // log viewers end a line at U+2028 and U+2029.
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029)
            return false;
        i += len;
    }
    return true;
}

template <class F>
bool accepted(F &&f) {
    try {
        f();
        return true;
    } catch (const Error &e) {
        FUZZ_CHECK(e.sqlstate() == "22023");
        FUZZ_CHECK(clean_utf8(e.what()));  // messages quote values made safe
        return false;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    const int which = in.ConsumeIntegralInRange(0, 6);
    switch (which) {
        case 0: {
            const std::string name = in.ConsumeRemainingBytesAsString();
            if (accepted([&] { validate::service_name(name); })) {
                FUZZ_CHECK(!name.empty() && name.size() <= validate::kMaxServiceName);
                FUZZ_CHECK(name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.") ==
                           std::string::npos);
                FUZZ_CHECK(name.front() != '.' && name.back() != '.' && name.front() != '-' &&
                           name.back() != '-');
                FUZZ_CHECK(name.find("..") == std::string::npos);
                FUZZ_CHECK(name.find(".-") == std::string::npos);
                FUZZ_CHECK(name.find("-.") == std::string::npos);
            }
            break;
        }
        case 1: {
            const std::string model = in.ConsumeRemainingBytesAsString();
            if (accepted([&] { validate::model(model); })) {
                FUZZ_CHECK(!model.empty() && model.size() <= 4 * validate::kMaxModel);
                // Bytes that are not UTF-8 pass as opaque (a database in another encoding);
                // ASCII controls never do.
                for (char c : model)
                    FUZZ_CHECK(static_cast<unsigned char>(c) > 0x20 && c != 0x7F);
                FUZZ_CHECK(model.find_first_of("?# ") == std::string::npos);
                FUZZ_CHECK(("/" + model + "/").find("//") == std::string::npos);
                FUZZ_CHECK(("/" + model + "/").find("/../") == std::string::npos);
                FUZZ_CHECK(("/" + model + "/").find("/./") == std::string::npos);
            }
            break;
        }
        case 2: {
            const std::string url = in.ConsumeRemainingBytesAsString();
            std::string normal;
            if (accepted([&] { normal = validate::base_url(url); })) {
                FUZZ_CHECK(normal.rfind("http://", 0) == 0 || normal.rfind("https://", 0) == 0);
                FUZZ_CHECK(normal.back() != '/');
                FUZZ_CHECK(normal.find_first_of("?# \t\r\n") == std::string::npos);
                // No credentials: no '@' before the path ('@' is a legal path character).
                const std::size_t path = normal.find('/', normal.find("//") + 2);
                FUZZ_CHECK(normal.substr(0, path).find('@') == std::string::npos);
                FUZZ_CHECK(clean_utf8(normal));
                std::string again;
                FUZZ_CHECK(accepted([&] { again = validate::base_url(normal); }));
                FUZZ_CHECK(again == normal);  // the normal form is a fixed point
            }
            break;
        }
        case 3: {
            const std::string key = in.ConsumeRemainingBytesAsString();
            const bool ok = accepted([&] { validate::api_key(key); });
            const std::optional<std::string> env = validate::env_key_name(key);
            if (ok) {
                FUZZ_CHECK(!key.empty() && key.size() <= validate::kMaxApiKey);
                if (env) {
                    FUZZ_CHECK("env:" + *env == key);
                } else {
                    for (char c : key)
                        FUZZ_CHECK(c > 0x20 && c < 0x7F);
                }
            }
            break;
        }
        case 4: {
            std::vector<std::optional<std::string>> values;
            while (in.remaining_bytes() > 0 && values.size() < 16) {
                if (in.ConsumeBool())
                    values.emplace_back(std::nullopt);
                else
                    values.emplace_back(in.ConsumeRandomLengthString(300));
            }
            if (accepted([&] { validate::labels(values, "functions"); })) {
                for (const auto &v : values) {
                    FUZZ_CHECK(v.has_value());
                    for (char c : *v)
                        FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7F);
                }
            }
            break;
        }
        default: {
            const std::size_t max_chars = in.ConsumeIntegralInRange<std::size_t>(0, 80);
            const std::string value = in.ConsumeRemainingBytesAsString();
            const std::string shown = validate::display_value(value, max_chars);
            FUZZ_CHECK(clean_utf8(shown));
            // Each character shows as at most 10 bytes ("\\uNNNN" or its own 4), plus "...".
            FUZZ_CHECK(shown.size() <= 10 * max_chars + 3);
            if (value.size() <= max_chars && clean_utf8(value) &&
                value.find('\\') == std::string::npos)
                FUZZ_CHECK(shown == value);
            break;
        }
    }
    return 0;
}
