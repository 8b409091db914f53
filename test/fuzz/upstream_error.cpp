// An upstream's error body (the input) read by parse_upstream_error, and the error the user sees
// built by upstream_failure: the service's key never reaches the message or the detail, and
// OpenAI error JSON built from it is valid.
#include "upstream_error.h"

#include <nlohmann/json.hpp>

#include "error.h"
#include "fuzz_common.h"
#include "translate.h"
#include "validation.h"

using namespace pgi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    ServiceEndpoint service = fuzz::endpoint(in.PickValueInArray(
        {Protocol::kOpenAiV1, Protocol::kAnthropicV1, Protocol::kGeminiV1Beta}));
    // A key as registration accepts it (short ones included), or the usual one.
    if (in.ConsumeBool()) {
        std::string key = in.ConsumeRandomLengthString(24);
        try {
            validate::api_key(key);
            service.api_key = std::move(key);
        } catch (const Error &) {
        }
    }
    const long status = in.ConsumeIntegralInRange<long>(100, 599);
    const std::string body = in.ConsumeRemainingBytesAsString();

    const UpstreamError parsed = parse_upstream_error(body);
    const Error e = translate::upstream_failure(service, status, body);
    const std::string message = e.what();
    // Only the upstream's words are scrubbed: the head, ours, names the service as it is.
    const std::string head =
        "service \"" + service.name + "\" returned HTTP " + std::to_string(status);
    FUZZ_CHECK(message.rfind(head, 0) == 0);
    FUZZ_CHECK(e.sqlstate().size() == 5);
    // No trace of the key is left, but where it cannot be told apart: a key that is part of
    // "[redacted]" or holds a bracket can meet the replacement text, and one inside the
    // service's name is kept with the name.
    const std::string &key = service.api_key;
    if (std::string("redacted").find(key) == std::string::npos &&
        key.find_first_of("[]") == std::string::npos &&
        service.name.find(key) == std::string::npos) {
        // After the head and its ": ", which a key ":" would match.
        FUZZ_CHECK(message.find(key, head.size() + 2) == std::string::npos);
        // The detail's own words ("upstream error type: ..., code: ...") may hold a short key
        // or meet the upstream's text at a ',' or ':'.
        if (key.find_first_of(",:") == std::string::npos &&
            std::string("upstream error type reason code").find(key) == std::string::npos)
            FUZZ_CHECK(e.detail().find(key) == std::string::npos);
    }
    // A message from a parsed JSON body is text a JSON error object can carry.
    // (nlohmann's accept() stops at a NUL byte and ignores what follows: such bodies are not
    // JSON here.)
    if (body.find('\0') == std::string::npos && nlohmann::json::accept(body)) {
        FUZZ_CHECK(fuzz::valid_json(
            translate::openai_error_json(parsed.message, parsed.type, parsed.code)));
    }
    return 0;
}
