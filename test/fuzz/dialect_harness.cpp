#include "dialect_harness.h"

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../unit/caller_stream.h"
#include "chat_call.h"
#include "count_tokens.h"
#include "error.h"
#include "fuzz_common.h"
#include "gemini_embeddings.h"
#include "sse.h"

namespace pgi::fuzz {

using nlohmann::json;

namespace {

const Protocol kProtocols[] = {Protocol::kOpenAiV1, Protocol::kAnthropicV1,
                               Protocol::kGeminiV1Beta};

bool is_gemini(const protocols::Module &m) {
    return &m == &protocols::module_for(Protocol::kGeminiV1Beta);
}

// A small request of the caller's dialect that the stream and answer targets plan with.
json simple_request(const protocols::Module &caller, bool stream) {
    if (is_gemini(caller))
        return {{"contents", json::array({{{"role", "user"}, {"parts", {{{"text", "hi"}}}}}})}};
    if (&caller == &protocols::anthropic_module()) {
        return {{"model", "m"},
                {"max_tokens", 64},
                {"messages", json::array({{{"role", "user"}, {"content", "hi"}}})},
                {"stream", stream}};
    }
    if (&caller == &protocols::completions_module())
        return {{"model", "m"}, {"prompt", "hi"}, {"stream", stream}};
    return {{"model", "m"}, {"input", "hi"}, {"stream", stream}};
}

// The events of a caller's stream with what may differ between two runs of the same stream
// (generated ids, the clock) taken out, at any depth.
void scrub(json &j) {
    if (j.is_object()) {
        for (const char *key : {"id", "item_id", "created", "created_at", "responseId"})
            j.erase(key);
        for (auto &[key, value] : j.items())
            scrub(value);
    } else if (j.is_array()) {
        for (json &v : j)
            scrub(v);
    }
}

// The call of the simple streaming request to a service of each protocol, planned once: planning
// it for each of the three runs of every input took a tenth of a target's time.
const chat_call::Call &streaming_call(const protocols::Module &caller, int protocol) {
    static std::map<std::pair<const protocols::Module *, int>, chat_call::Call> calls;
    auto it = calls.find({&caller, protocol});
    if (it == calls.end()) {
        chat_call::Call call = test_support::CallerStream::dialect_call(
            caller, endpoint(kProtocols[protocol]), simple_request(caller, true));
        it = calls.emplace(std::make_pair(&caller, protocol), std::move(call)).first;
    }
    return it->second;
}

// The events of a caller's stream, each of them terminated.
std::vector<StreamEvent> events_of(std::string_view out) {
    SseParser parser;
    std::vector<SseEvent> parsed = parser.feed(out);
    FUZZ_CHECK(parser.finish().empty());
    std::vector<StreamEvent> events;
    events.reserve(parsed.size());
    for (SseEvent &e : parsed)
        events.push_back({std::move(e.event), std::move(e.data)});
    return events;
}

}  // namespace

void dialect_request_target(const protocols::Module &caller, const uint8_t *data,
                            std::size_t size) {
    FuzzedDataProvider in(data, size);
    const ServiceEndpoint service = endpoint(kProtocols[in.ConsumeIntegralInRange<int>(0, 2)]);
    const bool pass_raw = in.ConsumeBool();
    const bool stream_route = in.ConsumeBool();
    const std::string text = in.ConsumeRemainingBytesAsString();
    const json request = json::parse(text, nullptr, false);
    if (request.is_discarded())
        return;  // the gateway answers 400 before any module reads it
    try {
        json body = request;
        chat_call::Call call = chat_call::plan(
            caller, service, body, {}, pass_raw ? std::string_view(text) : std::string_view(),
            is_gemini(caller) && stream_route);
        FUZZ_CHECK(call.request.method == "POST");
        FUZZ_CHECK(call.request.url.compare(0, service.base_url.size(), service.base_url) == 0);
        FUZZ_CHECK(json::parse(call.request.body, nullptr, false).is_object());
    } catch (const Error &) {
    }
    if (&caller == &protocols::anthropic_module() || is_gemini(caller)) {
        try {
            json body = request;
            count_tokens::Plan p = count_tokens::plan(caller, service, body);
            FUZZ_CHECK(p.estimate >= 0);
            if (p.request)
                FUZZ_CHECK(json::parse(p.request->body, nullptr, false).is_object());
        } catch (const Error &) {
        }
    }
    if (is_gemini(caller) && service.protocol != Protocol::kAnthropicV1) {
        try {
            json body = request;
            gemini_embeddings::Call call = gemini_embeddings::read(body, stream_route);
            FUZZ_CHECK(!call.texts.empty());
            FUZZ_CHECK(
                json::parse(gemini_embeddings::request(service, call, body).body, nullptr, false)
                    .is_object());
        } catch (const Error &) {
        }
    }
}

void dialect_response_target(const protocols::Module &caller, const uint8_t *data,
                             std::size_t size) {
    FuzzedDataProvider in(data, size);
    const ServiceEndpoint service = endpoint(kProtocols[in.ConsumeIntegralInRange<int>(0, 2)]);
    const std::string body = in.ConsumeRemainingBytesAsString();
    json req = simple_request(caller, false);
    chat_call::Call call;
    try {
        call = chat_call::plan(caller, service, req, {});
    } catch (const Error &) {
        FUZZ_CHECK(false);  // the simple request always plans
    }
    try {
        chat_call::Answer a = chat_call::answer(call, service, body);
        if (!call.passed()) {
            // A translated answer is the caller module's own JSON, valid UTF-8 throughout.
            FUZZ_CHECK(valid_json(a.body));
        }
        FUZZ_CHECK(a.usage.prompt_tokens >= 0 || a.usage.present);
    } catch (const Error &) {
    }
}

void dialect_stream_target(const protocols::Module &caller, const uint8_t *data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const int protocol = in.ConsumeIntegralInRange<int>(0, 2);
    const ServiceEndpoint service = endpoint(kProtocols[protocol]);
    const std::vector<std::size_t> cuts = cut_lengths(in);
    const std::string body = in.ConsumeRemainingBytesAsString();
    using test_support::CallerStream;
    const chat_call::Call &call = streaming_call(caller, protocol);

    CallerStream whole(call, service);
    std::string out_whole = whole.feed(body);
    out_whole += whole.finish();

    CallerStream pieces(call, service);
    std::string out_pieces;
    for (std::string_view piece : split(body, cuts))
        pieces.feed(piece, out_pieces);
    pieces.finish(out_pieces);

    // The output never depends on how the input was split, nor does the charge.
    FUZZ_CHECK(same_events(events_of(out_whole), events_of(out_pieces), scrub));
    FUZZ_CHECK(whole.failed() == pieces.failed());
    FUZZ_CHECK(whole.usage().prompt_tokens == pieces.usage().prompt_tokens);
    FUZZ_CHECK(whole.usage().completion_tokens == pieces.usage().completion_tokens);
    FUZZ_CHECK(whole.done());
    // Nothing is written after the end.
    FUZZ_CHECK(whole.feed("data: {\"type\":\"message_stop\"}\n\n").empty());
    FUZZ_CHECK(whole.finish().empty());

    CallerStream broken(call, service);
    std::string out_broken = broken.feed(body.substr(0, body.size() / 2));
    const bool was_done = broken.done();
    broken.fail("transfer interrupted", out_broken);
    FUZZ_CHECK(broken.done());
    if (!was_done)
        FUZZ_CHECK(broken.failed());
}

}  // namespace pgi::fuzz
