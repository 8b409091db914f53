// What the gateway reads from a caller's request line and headers (gateway_request.h): routes,
// percent-decoding, pass-through sub-paths, the access key, the content type and status mapping.
#include "gateway_request.h"

#include <cstring>

#include "fuzz_common.h"

using namespace pgi;
using namespace pgi::gateway;

namespace {

std::string percent_encode(const std::string &bytes) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : bytes) {
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 0xF];
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    const std::string path = in.ConsumeRandomLengthString(256);
    const Route r = route(path);
    if (r.endpoint == Endpoint::kPassthrough) {
        FUZZ_CHECK(!r.rest.empty() && r.rest.front() == '/');
        if (!r.bad_path) {
            // A pass-through that is let through names its service and stays below it.
            FUZZ_CHECK(safe_subpath(r.rest));
            FUZZ_CHECK(!r.service.empty() && r.service != "." && r.service != "..");
            FUZZ_CHECK(r.service.find_first_of("/\\") == std::string::npos);
            FUZZ_CHECK(r.rest.find("/../") == std::string::npos);
        }
    }
    FUZZ_CHECK((r.endpoint == Endpoint::kUnknown) == (r.allowed == 0));
    if (r.allowed != 0)
        FUZZ_CHECK(!allow_header(r.allowed).empty());

    // Decoding undoes encoding, for every byte but NUL, which is refused.
    const std::string raw = in.ConsumeRandomLengthString(64);
    const std::optional<std::string> back = percent_decode(percent_encode(raw));
    if (raw.find('\0') == std::string::npos)
        FUZZ_CHECK(back && *back == raw);
    else
        FUZZ_CHECK(!back);
    if (const std::optional<std::string> plain = percent_decode(raw))
        FUZZ_CHECK(plain->size() <= raw.size() && plain->find('\0') == std::string::npos);

    // Header values arrive as C strings.
    const std::string authorization = in.ConsumeRandomLengthString(64);
    const std::string x_api_key = in.ConsumeRandomLengthString(64);
    const bool has_auth = in.ConsumeBool(), has_x = in.ConsumeBool();
    const std::string_view key =
        access_key(has_auth ? authorization.c_str() : nullptr, has_x ? x_api_key.c_str() : nullptr);
    if (!key.empty()) {
        // A view into one of the two headers, without surrounding blanks.
        const char *a = authorization.c_str(), *x = x_api_key.c_str();
        const bool in_auth =
            has_auth && key.data() >= a && key.data() + key.size() <= a + std::strlen(a);
        const bool in_x = has_x && key.data() >= x && key.data() + key.size() <= x + std::strlen(x);
        FUZZ_CHECK(in_auth || in_x);
        FUZZ_CHECK(key.front() != ' ' && key.back() != ' ');
    }

    const std::string content_type = in.ConsumeRandomLengthString(64);
    const std::string body = in.ConsumeRemainingBytesAsString();
    (void)json_body_type(in.ConsumeBool() ? nullptr : content_type.c_str(), body);

    const long status = static_cast<long>(size) * 7 - 300 + (data != nullptr && size ? data[0] : 0);
    const int to_caller = caller_status(status);
    FUZZ_CHECK(to_caller >= 400 && to_caller <= 599);
    FUZZ_CHECK(error_type(to_caller) != nullptr);
    return 0;
}
