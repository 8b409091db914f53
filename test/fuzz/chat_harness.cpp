#include "chat_harness.h"

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../unit/caller_stream.h"
#include "chat_call.h"
#include "chat_prompt.h"
#include "error.h"
#include "fuzz_common.h"
#include "modules.h"

namespace pgi::fuzz {

using nlohmann::json;

namespace {

const protocols::Module &openai_caller() {
    return protocols::module_for(Protocol::kOpenAiV1);
}

using pgi::test_support::CallerStream;

}  // namespace

void chat_request_target(Protocol protocol, const uint8_t *data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const bool pass_raw = in.ConsumeBool();  // the gateway hands its raw body, SQL does not
    chat::Defaults defaults;
    defaults.default_max_tokens = in.ConsumeIntegralInRange<long>(1, 1 << 20);
    const std::string text = in.ConsumeRemainingBytesAsString();
    const json request = json::parse(text, nullptr, false);
    if (request.is_discarded())
        return;  // the gateway answers 400 before any translation
    const ServiceEndpoint service = endpoint(protocol);
    chat_call::Call call;
    try {
        json body = request;
        call = chat_call::plan(openai_caller(), service, body, defaults,
                               pass_raw ? std::string_view(text) : std::string_view());
    } catch (const Error &) {
        return;  // a refusal the caller is told about
    }
    FUZZ_CHECK(call.request.method == "POST");
    FUZZ_CHECK(call.request.url.compare(0, service.base_url.size(), service.base_url) == 0);
    json body = json::parse(call.request.body, nullptr, false);
    FUZZ_CHECK(body.is_object());
    FUZZ_CHECK(call.stream == (request.is_object() && request.value("stream", json()) == true));
    switch (protocol) {
        case Protocol::kOpenAiV1: {
            // The service decides the model, whatever the caller wrote, and nothing else of the
            // caller's request changes (but the usage we need from a stream).
            FUZZ_CHECK(body.value("model", json()) == service.model);
            if (call.stream) {
                FUZZ_CHECK(body["stream_options"].value("include_usage", json()) == true);
            }
            for (const auto &[key, value] : request.items()) {
                if (key != "model" && key != "stream_options")
                    FUZZ_CHECK(body.contains(key) && body[key] == value);
            }
            break;
        }
        case Protocol::kAnthropicV1: {
            FUZZ_CHECK(body.value("model", json()) == service.model);
            const json max_tokens = body.value("max_tokens", json());
            FUZZ_CHECK(max_tokens.is_number_integer() && max_tokens.get<long long>() > 0);
            FUZZ_CHECK(body.value("messages", json()).is_array());
            break;
        }
        case Protocol::kGeminiV1Beta:
            FUZZ_CHECK(call.request.url.find(service.model) != std::string::npos);
            FUZZ_CHECK(body.value("contents", json()).is_array());
            break;
    }
}

void chat_response_target(Protocol protocol, const uint8_t *data, std::size_t size) {
    const std::string_view body(reinterpret_cast<const char *>(data), size);
    const ServiceEndpoint service = endpoint(protocol);
    json response;
    try {
        json req = {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
        response = chat_call::answer_document(chat_call::plan(openai_caller(), service, req, {}),
                                              service, body);
    } catch (const Error &) {
        return;  // a malformed answer, reported as PI400
    }
    // What the caller receives must serialise (valid UTF-8 throughout).
    FUZZ_CHECK(valid_json(response.dump()));
    if (protocol != Protocol::kOpenAiV1) {
        FUZZ_CHECK(response.value("object", json()) == "chat.completion");
        FUZZ_CHECK(response.value("id", json()).is_string());
        FUZZ_CHECK(response.value("model", json()).is_string());
        const json choices = response.value("choices", json());
        FUZZ_CHECK(choices.is_array() && !choices.empty());
        for (const json &c : choices) {
            FUZZ_CHECK(c.is_object());
            FUZZ_CHECK(c.value("finish_reason", json()).is_string());
            const json message = c.value("message", json());
            FUZZ_CHECK(message.value("role", json()) == "assistant");
        }
        const json usage = response.value("usage", json());
        FUZZ_CHECK(usage.is_null() || usage.is_object());
    }
    try {
        (void)translate::chat_text(service, response);
    } catch (const Error &) {
    }
}

namespace {

// The payloads of a stream's events (its data lines joined), each event terminated and made
// of data lines only; translated protocols write only JSON objects and [DONE].
std::vector<StreamEvent> stream_events(std::string_view out, bool strict) {
    std::vector<StreamEvent> events;
    while (!out.empty()) {
        std::size_t end = out.find("\n\n");
        FUZZ_CHECK(end != std::string_view::npos);  // every event is terminated
        std::string_view event = out.substr(0, end);
        out.remove_prefix(end + 2);
        std::string payload;
        while (!event.empty()) {
            std::size_t nl = event.find('\n');
            std::string_view line = event.substr(0, nl);
            FUZZ_CHECK(line.substr(0, 6) == "data: ");
            if (!payload.empty())
                payload += '\n';
            payload.append(line.substr(6));
            event.remove_prefix(nl == std::string_view::npos ? event.size() : nl + 1);
        }
        if (strict)
            FUZZ_CHECK(payload == "[DONE]" || json::parse(payload, nullptr, false).is_object());
        events.push_back({std::string(), std::move(payload)});
    }
    return events;
}

// What may differ between two runs of the same stream: a generated id, the clock.
void scrub(json &j) {
    if (j.is_object()) {
        j.erase("id");
        j.erase("created");
    }
}

// The call of an OpenAI caller's streaming request, planned once per service and usage option:
// planning it for each of the three runs of every input took a tenth of a target's time.
const chat_call::Call &streaming_call(Protocol protocol, bool wants_usage) {
    static std::map<std::pair<Protocol, bool>, chat_call::Call> calls;
    auto it = calls.find({protocol, wants_usage});
    if (it == calls.end()) {
        chat_call::Call call = CallerStream::openai_call(endpoint(protocol), wants_usage);
        it = calls.emplace(std::make_pair(protocol, wants_usage), std::move(call)).first;
    }
    return it->second;
}

}  // namespace

void chat_stream_target(Protocol protocol, const uint8_t *data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const bool wants_usage = in.ConsumeBool();
    const std::vector<std::size_t> cuts = cut_lengths(in);
    const std::string body = in.ConsumeRemainingBytesAsString();
    const ServiceEndpoint service = endpoint(protocol);
    const chat_call::Call &call = streaming_call(protocol, wants_usage);

    CallerStream whole(call, service);
    std::string out_whole = whole.feed(body);
    out_whole += whole.finish();

    CallerStream pieces(call, service);
    std::string out_pieces;
    for (std::string_view piece : split(body, cuts))
        pieces.feed(piece, out_pieces);
    pieces.finish(out_pieces);

    // Translated protocols write only JSON chunks and [DONE]; an OpenAI upstream's own chunks
    // are forwarded unjudged.
    const bool strict = protocol != Protocol::kOpenAiV1;
    // The output never depends on how the input was split.
    FUZZ_CHECK(
        same_events(stream_events(out_whole, strict), stream_events(out_pieces, false), scrub));
    FUZZ_CHECK(whole.failed() == pieces.failed());
    FUZZ_CHECK(whole.usage().present == pieces.usage().present);
    FUZZ_CHECK(whole.usage().prompt_tokens == pieces.usage().prompt_tokens);
    FUZZ_CHECK(whole.usage().completion_tokens == pieces.usage().completion_tokens);
    FUZZ_CHECK(whole.usage().total_tokens == pieces.usage().total_tokens);

    // A finished stream says so, ends in [DONE] unless it failed, and takes nothing more.
    FUZZ_CHECK(whole.done());
    if (!whole.failed()) {
        const std::string_view done = "data: [DONE]\n\n";
        FUZZ_CHECK(out_whole.size() >= done.size() &&
                   out_whole.compare(out_whole.size() - done.size(), done.size(), done) == 0);
    }
    FUZZ_CHECK(whole.feed("data: {\"type\":\"message_stop\"}\n\n").empty());
    FUZZ_CHECK(whole.finish().empty());

    // A transfer that breaks mid-way ends in an error chunk.
    CallerStream broken(call, service);
    std::string out_broken = broken.feed(body.substr(0, body.size() / 2));
    const bool was_done = broken.done();
    broken.fail("transfer interrupted", out_broken);
    FUZZ_CHECK(broken.done());
    if (!was_done)
        FUZZ_CHECK(broken.failed());
}

}  // namespace pgi::fuzz
