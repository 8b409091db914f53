#include "modules.h"

#include <algorithm>
#include <utility>

#include "anthropic.h"
#include "gemini.h"
#include "openai_chat.h"
#include "openai_completions.h"
#include "openai_responses.h"
#include "saturating.h"
#include "utf8.h"

namespace pgi::protocols {

namespace {

// A module's own StreamReader or StreamWriter behind the common interface.
template <class Reader>
class ReaderOf final : public EventReader {
  public:
    explicit ReaderOf(const ServiceEndpoint &service) : reader_(service) {}
    void feed(std::string_view bytes, std::vector<chat::Event> &out) override {
        reader_.feed(bytes, out);
    }
    void finish(std::vector<chat::Event> &out) override { reader_.finish(out); }

  private:
    Reader reader_;
};

template <class Writer>
class WriterOf final : public EventWriter {
  public:
    template <class... Args>
    explicit WriterOf(Args &&...args) : writer_(std::forward<Args>(args)...) {}
    void write(const chat::Event &event, std::string &out) override { writer_.write(event, out); }

  private:
    Writer writer_;
};

template <class Reader>
std::unique_ptr<EventReader> reader_of(const ServiceEndpoint &service) {
    return std::make_unique<ReaderOf<Reader>>(service);
}

// ---- OpenAI chat ----

translate::Usage openai_answer_usage(std::string_view body) {
    return translate::usage_from_answer_body(Protocol::kOpenAiV1, body);
}

std::unique_ptr<EventWriter> openai_writer(const chat::Request &request) {
    return std::make_unique<WriterOf<openai_chat::StreamWriter>>(request.stream_usage);
}

const Module kOpenAiChat = {
    Protocol::kOpenAiV1,
    "openai_chat",
    openai_chat::read_request,
    openai_chat::write_response,
    openai_writer,
    openai_chat::error_body,
    openai_chat::write_request,
    openai_chat::read_response,
    reader_of<openai_chat::StreamReader>,
    openai_chat::pass_request,
    nullptr,
    openai_answer_usage,
    true,
};

// ---- Anthropic ----

std::unique_ptr<EventWriter> anthropic_writer(const chat::Request &) {
    return std::make_unique<WriterOf<anthropic::StreamWriter>>();
}

const Module kAnthropic = {
    Protocol::kAnthropicV1,
    "anthropic",
    anthropic::read_request,
    anthropic::write_response,
    anthropic_writer,
    anthropic::error_body,
    anthropic::write_request,
    anthropic::read_response,
    reader_of<anthropic::StreamReader>,
    anthropic::pass_request,
    nullptr,
    [](std::string_view body) {
        return translate::usage_from_answer_body(Protocol::kAnthropicV1, body);
    },
    false,
};

// ---- Gemini ----

// Gemini's body does not say whether the caller wants a stream (the route does): a body read
// through the common interface is a whole-answer request, and the Gemini routes say otherwise.
chat::Request gemini_read_request(const nlohmann::json &body) {
    return gemini::read_request(body, false);
}

std::unique_ptr<EventWriter> gemini_writer(const chat::Request &) {
    return std::make_unique<WriterOf<gemini::StreamWriter>>();
}

const Module kGemini = {
    Protocol::kGeminiV1Beta,
    "gemini",
    gemini_read_request,
    gemini::write_response,
    gemini_writer,
    gemini::error_body,
    gemini::write_request,
    gemini::read_response,
    reader_of<gemini::StreamReader>,
    gemini::pass_request,
    nullptr,
    [](std::string_view body) {
        return translate::usage_from_answer_body(Protocol::kGeminiV1Beta, body);
    },
    false,
};

// ---- OpenAI Responses (a caller dialect; an OPENAI_V1 upstream gets a chat completion unless
// the request needs the upstream's own /v1/responses) ----

std::unique_ptr<EventWriter> responses_writer(const chat::Request &) {
    return std::make_unique<WriterOf<openai_responses::StreamWriter>>();
}

const Module kResponses = {
    Protocol::kOpenAiV1,
    "openai_responses",
    openai_responses::read_request,
    openai_responses::write_response,
    responses_writer,
    openai_responses::error_body,
    nullptr,  // never a service's protocol: module_for() does not return it
    openai_responses::read_response,
    reader_of<openai_responses::StreamReader>,
    openai_responses::pass_request,
    openai_responses::needs_upstream_state,
    openai_responses::answer_usage,
    false,
};

// ---- OpenAI legacy completions (a caller dialect; an OPENAI_V1 service serves it itself) ----

std::unique_ptr<EventWriter> completions_writer(const chat::Request &request) {
    return std::make_unique<WriterOf<openai_completions::StreamWriter>>(request.stream_usage);
}

const Module kCompletions = {
    Protocol::kOpenAiV1,
    "openai_completions",
    openai_completions::read_request,
    openai_completions::write_response,
    completions_writer,
    openai_chat::error_body,
    nullptr,  // never a service's protocol: module_for() does not return it
    nullptr,  // a passed answer is read only for its usage
    nullptr,  // a passed stream is relayed (chunk_relay)
    openai_completions::pass_request,
    nullptr,
    openai_answer_usage,
    true,
};

}  // namespace

const Module &module_for(Protocol protocol) {
    switch (protocol) {
        case Protocol::kOpenAiV1:
            return kOpenAiChat;
        case Protocol::kAnthropicV1:
            return kAnthropic;
        case Protocol::kGeminiV1Beta:
            return kGemini;
    }
    return kOpenAiChat;
}

const Module &anthropic_module() {
    return kAnthropic;
}

const Module &responses_module() {
    return kResponses;
}

const Module &completions_module() {
    return kCompletions;
}

void StreamTally::see(const chat::Event &event) {
    switch (event.kind) {
        case chat::Event::Kind::kStart:
        case chat::Event::Kind::kUsage:
            if (event.usage.present) {
                // Totals so far: a later report never lowers what an earlier one counted.
                usage_.present = true;
                usage_.prompt_tokens = std::max(usage_.prompt_tokens, event.usage.prompt_tokens);
                usage_.completion_tokens =
                    std::max(usage_.completion_tokens, event.usage.completion_tokens);
                usage_.total_tokens = add_counts(usage_.prompt_tokens, usage_.completion_tokens);
                usage_.cached_tokens =
                    cached_part(std::max(usage_.cached_tokens, event.usage.cached_tokens),
                                usage_.prompt_tokens);
            }
            break;
        case chat::Event::Kind::kTextDelta:
        case chat::Event::Kind::kToolInputDelta:
            chars_ += utf8_chars(event.text);
            break;
        case chat::Event::Kind::kEnd:
            ended_ = true;
            break;
        case chat::Event::Kind::kError:
            failed_ = true;
            break;
        default:
            break;
    }
}

translate::Usage StreamTally::charged() const {
    return translate::charged_usage(usage_, ended_, chars_);
}

}  // namespace pgi::protocols
