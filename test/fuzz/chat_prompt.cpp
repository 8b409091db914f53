// inference.chat(service, prompt, options): the options object (the input, as JSON) becomes an
// OpenAI request, which every protocol's chat_request must then accept.
#include <nlohmann/json.hpp>

#include "error.h"
#include "fuzz_common.h"
#include "translate_chat.h"

using nlohmann::json;
using namespace pgi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    const std::string prompt = in.ConsumeRandomLengthString(64);
    const json options = json::parse(in.ConsumeRemainingBytesAsString(), nullptr, false);
    if (options.is_discarded())
        return 0;
    json request;
    try {
        request = translate::chat_request_from_prompt(prompt, options);
    } catch (const Error &) {
        return 0;
    }
    FUZZ_CHECK(request.is_object());
    const json messages = request.value("messages", json());
    FUZZ_CHECK(messages.is_array() && !messages.empty());
    FUZZ_CHECK(messages.back().value("content", json()) == prompt);
    // What the prompt function builds goes through every protocol's translation, which may
    // refuse it only with a pgi::Error.
    for (Protocol p : {Protocol::kOpenAiV1, Protocol::kAnthropicV1, Protocol::kGeminiV1Beta}) {
        try {
            translate::ChatCall call =
                translate::chat_request(fuzz::endpoint(p), request, translate::ChatDefaults());
            FUZZ_CHECK(json::parse(call.request.body, nullptr, false).is_object());
        } catch (const Error &) {
        }
    }
    return 0;
}
