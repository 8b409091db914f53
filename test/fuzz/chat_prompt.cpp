// inference.chat(service, prompt, options): the options object (the input, as JSON) becomes an
// OpenAI request, which every protocol's chat call must then accept.
#include "chat_prompt.h"

#include <nlohmann/json.hpp>

#include "chat_call.h"
#include "error.h"
#include "fuzz_common.h"

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
            json body = request;
            chat_call::Call call = chat_call::plan(protocols::module_for(Protocol::kOpenAiV1),
                                                   fuzz::endpoint(p), body, chat::Defaults());
            FUZZ_CHECK(json::parse(call.request.body, nullptr, false).is_object());
        } catch (const Error &) {
        }
    }
    return 0;
}
