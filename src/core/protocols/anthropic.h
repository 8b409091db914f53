// Anthropic Messages as one wire protocol module: POST /v1/messages requests, `message` answers,
// named-event streams and Anthropic error bodies, read and written around the internal chat form
// (chat_form.h). The caller side serves clients of the Anthropic dialect (the Anthropic SDKs,
// Claude Code) whatever service answers them; the upstream side calls ANTHROPIC_V1 services.
//
// What the form cannot carry: thinking and redacted_thinking blocks of earlier assistant turns
// are dropped (they are the model's own notes, meaningless to another provider); documents,
// search results, server tools and container uploads are refused with 0A000. Fields only
// Anthropic knows (cache_control, thinking, service_tier) are dropped; disable_parallel_tool_use
// is the form's parallel_tool_calls.
// JSON output: a JSON Schema answer format maps to output_config.format (Anthropic's constrained
// decoding, on the models that have it); "any JSON object" has no Anthropic counterpart, as every
// object of a structured-output schema must list its properties, and is refused with 0A000.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "chat_form.h"
#include "protocol.h"
#include "sse.h"
#include "translate.h"

namespace pgi::protocols::anthropic {

// ---- caller side ----

// An Anthropic Messages request as the internal form. max_tokens is required, as Anthropic
// requires it; "model" is the gateway's to resolve and is only checked to be a string here.
// Consecutive turns of one role stay apart, as the caller sent them. A bad shape is a 22023
// error naming the member and what it must be; a known feature the form cannot carry is 0A000.
chat::Request read_request(const nlohmann::json &body);

// A whole answer as an Anthropic `message` object.
nlohmann::json write_response(const chat::Response &response);

// A streamed answer as Anthropic's named events. The stop reason and usage are held until kEnd,
// as message_delta carries both; an error ends the stream with `event: error`, and anything
// after the end is ignored.
class StreamWriter {
  public:
    void write(const chat::Event &event, std::string &out);

  private:
    void start(const chat::Event *event, std::string &out);
    bool started_ = false;
    bool done_ = false;
    chat::StopReason stop_reason_ = chat::StopReason::kEndTurn;
    std::string stop_sequence_;
    translate::Usage usage_;
};

// The Anthropic error type for an HTTP status (invalid_request_error, overloaded_error, ...).
const char *error_type(int status);

// {"type":"error","error":{"type":<error_type(status)>,"message":<message>}}.
std::string error_body(int status, std::string_view message);

// ---- upstream side ----

// POST {base_url}/v1/messages with the service's auth and version headers, for the service's
// model. Consecutive turns made only of tool results are merged into one user turn; the rest go
// as they are (Anthropic joins consecutive turns of one role itself). A seed is dropped (Anthropic
// has none and it only asks for best effort); a JSON object answer format is refused with 0A000.
translate::UpstreamRequest write_request(const ServiceEndpoint &service,
                                         const chat::Request &request,
                                         const chat::Defaults &defaults);

// An Anthropic `message` body as the form. Blocks other than text and tool_use (thinking, server
// tool results) are left out. A body that is not a message is a PI400 error.
chat::Response read_response(const ServiceEndpoint &service, std::string_view body);

// An Anthropic event stream as form events, in the form's order whatever the bytes' split.
// ping is ignored; thinking blocks are left out and the other blocks renumbered from 0; an
// `error` event, a malformed event or a stream cut before its answer ended becomes kError.
class StreamReader {
  public:
    explicit StreamReader(const ServiceEndpoint &service);

    void feed(std::string_view bytes, std::vector<chat::Event> &out);
    // The upstream body ended: delivers a last unterminated event, then kEnd when the answer was
    // complete (message_stop, or at least message_delta's stop reason), else kError.
    void finish(std::vector<chat::Event> &out);

    // Tokens reported so far: input from message_start, output from message_delta (cumulative).
    const translate::Usage &usage() const { return usage_; }
    // kEnd or kError was emitted.
    bool done() const { return done_; }

  private:
    // Reads the events of `bytes` (or, finishing, the body's unterminated last one); an event
    // past the parser's cap fails the stream.
    void read(std::string_view bytes, bool finishing, std::vector<chat::Event> &out);
    void event(const SseEventView &event, std::vector<chat::Event> &out);
    void ensure_started(std::vector<chat::Event> &out);
    // kBlockStop for every block still open, in order: the form closes blocks before kStop.
    void close_blocks(std::vector<chat::Event> &out);
    void fail(int status, std::string type, std::string message, std::vector<chat::Event> &out);

    ServiceEndpoint service_;
    SseParser parser_;
    translate::Usage usage_;
    bool started_ = false;
    bool stopped_ = false;  // message_delta gave a stop reason
    bool done_ = false;
    // Upstream block index -> the form's index, or -1 for a block left out (or not open).
    std::vector<long> blocks_;
    std::size_t next_index_ = 0;
};

// ---- the same protocol on both sides ----

// An Anthropic caller's request for an Anthropic service: its bytes (`raw`, when given) with only
// "model" set to the service's, so that fields only Anthropic knows (thinking, cache_control, the
// betas' fields) reach it unchanged. Only "stream" is read, to know how to read the answer; a
// stream that is not a boolean is 22023. stream_route is not read: the body says.
chat::Passed pass_request(const ServiceEndpoint &service, nlohmann::json &body,
                          std::string_view raw, bool stream_route);

}  // namespace pgi::protocols::anthropic
