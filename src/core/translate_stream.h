// A streamed chat answer, translated as it arrives: upstream SSE bytes in (in whatever pieces the
// network delivers), OpenAI chat.completion.chunk SSE bytes out, ending in `data: [DONE]`.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "protocol.h"
#include "sse.h"
#include "translate.h"

namespace pgi::translate {

// One per stream. Output never depends on how the input was split.
//
// OPENAI_V1: events are forwarded as they are (only the SSE framing is rewritten), except the
// usage chunk (choices [] or null, with usage), which is dropped unless the caller asked for it
// and has vLLM's choices:null turned into [] when forwarded.
// ANTHROPIC_V1 and GEMINI_V1_BETA: each event becomes chunks with one id, created and model for
// the whole stream (the upstream's message id or responseId, and the model it reports).
//
// An error event from upstream (Anthropic `event: error`, a chunk with an "error" member) is
// sent on as `data: {"error":{...}}` and ends the stream without [DONE]: that is how OpenAI
// itself fails a stream, and the openai SDKs raise an APIError on it. Input after the end
// (after [DONE], message_stop or an error) is ignored.
class ChatStream {
  public:
    ChatStream(const ServiceEndpoint &service, bool caller_wants_usage);

    // Appends the bytes to send to the caller for this piece of upstream body (often none).
    void feed(std::string_view upstream_bytes, std::string &out);
    std::string feed(std::string_view upstream_bytes) {
        std::string out;
        feed(upstream_bytes, out);
        return out;
    }

    // The upstream body ended normally: flushes a last unterminated event, then the usage chunk
    // (Anthropic and Gemini, when asked for) and [DONE] unless the stream already ended.
    void finish(std::string &out);
    std::string finish() {
        std::string out;
        finish(out);
        return out;
    }

    // The transfer broke (timeout, reset): ends the stream with an error chunk carrying message,
    // so the caller does not mistake a truncated answer for a complete one.
    void fail(std::string_view message, std::string &out);

    // Tokens reported so far; final once the stream is done. Streaming counts for the ledger too.
    const Usage &usage() const { return usage_; }
    // Characters of text (content, text, tool call arguments) the upstream streamed so far.
    std::size_t streamed_chars() const { return streamed_chars_; }
    // What a stream that did not end with the upstream's final usage is charged (the caller
    // left, the transfer broke, or the upstream never reported usage): the usage reported so
    // far, with at least one completion token per 4 characters of streamed text. The estimate
    // stands in for the usage the upstream would have reported; a complete report wins as is.
    Usage charged_usage() const;
    // An error was sent to the caller (from upstream, a malformed event, or fail()).
    bool failed() const { return failed_; }
    // Nothing more will be written: [DONE] or an error was sent.
    bool done() const { return done_; }

  private:
    struct Choice {
        bool started = false;  // the role chunk was sent
        bool finished = false;
        int tool_calls = 0;  // OpenAI numbers tool calls per choice
    };

    struct Sink;
    void event(const SseEventView &event, std::string &out);
    void openai_event(const SseEventView &event, std::string &out);
    void anthropic_event(const SseEventView &event, std::string &out);
    void gemini_event(const SseEventView &event, std::string &out);

    void start(std::string id, std::string_view model);
    Choice &choice(std::size_t index);
    void open_choice(std::string &out, std::size_t index);
    void role_chunk(std::string &out, std::size_t index);
    void content_chunk(std::string &out, std::size_t index, std::string_view text);
    void finish_chunk(std::string &out, std::size_t index, const char *finish_reason);
    void end(std::string &out);
    void error(std::string &out, std::string_view message, std::string_view type);

    ServiceEndpoint service_;  // name, model, protocol, and the key to redact error texts with
    bool caller_wants_usage_;
    SseParser parser_;
    Usage usage_;
    std::size_t streamed_chars_ = 0;
    bool failed_ = false;
    bool done_ = false;
    // `{"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":[`, the
    // part every translated chunk shares, built once.
    std::string prefix_;
    std::vector<Choice> choices_;
    std::vector<int> block_tool_index_;  // Anthropic content block index -> tool call index
    int next_call_id_ = 0;               // Gemini call ids, unique across the stream
};

}  // namespace pgi::translate
