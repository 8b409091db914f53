#include "modules.h"

#include <algorithm>
#include <utility>

#include "anthropic.h"
#include "openai_chat.h"
#include "translate_stream.h"

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
};

// ---- Gemini, through the OpenAI chat translation ----
// Until Gemini has a module of its own, its upstream side is the older OpenAI-to-Gemini
// translation (translate_chat, ChatStream) wrapped around the OpenAI chat module: the form goes
// out as an OpenAI chat request, which translate_chat turns into generateContent, and the answer
// comes back as a chat.completion (or chunks) that the OpenAI chat module reads into the form.
// It carries what OpenAI's chat API carries (so top_k is refused); the gemini module replaces
// this whole section.

translate::UpstreamRequest gemini_write_request(const ServiceEndpoint &service,
                                                const chat::Request &request,
                                                const translate::ChatDefaults &defaults) {
    translate::UpstreamRequest openai = openai_chat::write_request(service, request, defaults);
    return translate::chat_request(service, nlohmann::json::parse(openai.body), defaults).request;
}

chat::Response gemini_read_response(const ServiceEndpoint &service, std::string_view body) {
    return openai_chat::read_response(service, translate::chat_response(service, body).dump());
}

class GeminiBridgeReader final : public EventReader {
  public:
    explicit GeminiBridgeReader(const ServiceEndpoint &service)
        : chunks_(service, true), reader_(service) {}
    void feed(std::string_view bytes, std::vector<chat::Event> &out) override {
        text_.clear();
        chunks_.feed(bytes, text_);
        reader_.feed(text_, out);
    }
    void finish(std::vector<chat::Event> &out) override {
        text_.clear();
        chunks_.finish(text_);
        reader_.feed(text_, out);
        reader_.finish(out);
    }

  private:
    translate::ChatStream chunks_;  // Gemini SSE to chat.completion.chunk SSE
    openai_chat::StreamReader reader_;
    std::string text_;
};

std::unique_ptr<EventReader> gemini_reader(const ServiceEndpoint &service) {
    return std::make_unique<GeminiBridgeReader>(service);
}

const Module kGeminiBridge = {
    Protocol::kGeminiV1Beta,
    "gemini",
    openai_chat::read_request,
    openai_chat::write_response,
    openai_writer,
    openai_chat::error_body,
    gemini_write_request,
    gemini_read_response,
    gemini_reader,
};

std::size_t utf8_chars(std::string_view text) {
    std::size_t n = 0;
    for (char c : text)
        n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
    return n;
}

}  // namespace

const Module &module_for(Protocol protocol) {
    switch (protocol) {
        case Protocol::kOpenAiV1:
            return kOpenAiChat;
        case Protocol::kAnthropicV1:
            return kAnthropic;
        case Protocol::kGeminiV1Beta:
            return kGeminiBridge;
    }
    return kOpenAiChat;
}

const Module &anthropic_module() {
    return kAnthropic;
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
                usage_.total_tokens = usage_.prompt_tokens + usage_.completion_tokens;
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
    if (ended_ && usage_.present)
        return usage_;
    translate::Usage u = usage_;
    long long estimate = static_cast<long long>((chars_ + 3) / 4);
    if (estimate > u.completion_tokens) {
        u.completion_tokens = estimate;
        u.total_tokens = u.prompt_tokens + u.completion_tokens;
        u.present = true;
    }
    return u;
}

}  // namespace pgi::protocols
