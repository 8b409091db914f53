// Google Gemini's generateContent shapes around the chat form: on the caller side a
// generateContent request in, a GenerateContentResponse (whole, or streamed as alt=sse events)
// and Google errors out; on the upstream side the same the other way round.
//
// Gemini names no call ids: a function call is answered by its function's name. Calls read from
// Gemini get ids of their own ("call_<n>", numbered from 0 in the order they appear, unless
// Gemini gave one), and a functionResponse answers the latest earlier call of the same name.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "chat_form.h"
#include "protocol.h"
#include "sse.h"
#include "translate.h"

namespace pgi::protocols::gemini {

// ---- caller side ----

// A generateContent request body as the chat form. `stream` is whether the caller used the
// :streamGenerateContent route: Gemini's body does not say. Fields may be spelled in lowerCamel
// or snake_case, as Google's JSON parser accepts both. Thought parts are skipped; Gemini-only
// fields (safetySettings, cachedContent, thinkingConfig, penalties...) are dropped.
// Bad shapes are 22023; what the form cannot carry is 0A000: candidateCount above 1, parts that
// are not text, images, function calls or function responses (executableCode, a PDF in
// inlineData...), tools other than functionDeclarations, allowedFunctionNames naming several
// but not all of the tools, and responseMimeType other than text/plain or application/json.
chat::Request read_request(const nlohmann::json &body, bool stream = false);

// A GenerateContentResponse with one candidate (index 0). usageMetadata is left out when the
// upstream reported no usage.
nlohmann::json write_response(const chat::Response &response);

// The events of a streamed answer as alt=sse events, each a whole GenerateContentResponse
// framed `data: <json>\r\n\r\n` as Google frames them. Text deltas go out as they come; a tool
// call goes out whole, as one functionCall part, once its input is complete; the last event has
// finishReason and usageMetadata. kError writes `data: {"error":{code,message,status}}` and
// ends the stream; events after the end write nothing.
class StreamWriter {
  public:
    void write(const chat::Event &event, std::string &out);

  private:
    void chunk(std::string &out, const nlohmann::json &parts, const char *finish_reason);

    std::string id_;
    std::string model_;
    translate::Usage usage_;
    chat::StopReason stop_ = chat::StopReason::kEndTurn;
    // The tool call being assembled: its block and its input's JSON text so far.
    bool in_tool_ = false;
    chat::Block tool_;
    std::string tool_input_;
    bool done_ = false;
};

// Google's error shape {"error":{"code","message","status"}}, status named for the HTTP code.
std::string error_body(int status, std::string_view message);

// The canonical status name Google uses for an HTTP status (400 INVALID_ARGUMENT, ...).
const char *status_name(int status);

// ---- upstream side ----

// POST {base_url}/v1beta/models/{model}:generateContent, or :streamGenerateContent?alt=sse
// for a stream, with the service's key. Tool results go back as functionResponse parts in a
// user turn (a result that is not a JSON object is wrapped as {"content": text}, an error as
// {"error": ...}); tools go as functionDeclarations with their JSON Schema as
// parametersJsonSchema, and a JSON-Schema answer format as responseJsonSchema, so that full JSON
// Schema reaches Gemini rather than its OpenAPI subset. Consecutive turns of one role merge, as
// Gemini wants roles alternating. The end user's id has no counterpart and is dropped.
translate::UpstreamRequest write_request(const ServiceEndpoint &service, const chat::Request &req,
                                         const chat::Defaults &defaults);

// A GenerateContentResponse as the chat form: the first candidate, thought parts skipped. A
// prompt Gemini blocked (no candidate, promptFeedback.blockReason) is an empty answer stopped
// for content_filter. A malformed body is PI400.
chat::Response read_response(const ServiceEndpoint &service, std::string_view body);

// A streamGenerateContent?alt=sse body as events, whatever the pieces it arrives in: kStart on
// the first chunk, text blocks, each functionCall as kBlockStart + one kToolInputDelta with its
// whole args JSON + kBlockStop; at finish() the open block's kBlockStop, kStop (from the last
// finishReason), kUsage (the last usageMetadata) and kEnd. An error chunk, a malformed chunk or
// a stream with no chunk at all is kError, which ends the stream.
class StreamReader {
  public:
    explicit StreamReader(const ServiceEndpoint &service) : service_(service) {}

    void feed(std::string_view bytes, std::vector<chat::Event> &out);
    void finish(std::vector<chat::Event> &out);

    // Tokens reported so far, for a ledger that must charge a stream that broke off.
    const translate::Usage &usage() const { return usage_; }

  private:
    // Reads the events of `bytes` (or, finishing, the body's unterminated last one); an event
    // past the parser's cap fails the stream.
    void read(std::string_view bytes, bool finishing, std::vector<chat::Event> &out);
    void event(std::string_view data, std::vector<chat::Event> &out);
    void fail(std::vector<chat::Event> &out, int status, std::string message);
    void close_block(std::vector<chat::Event> &out);

    ServiceEndpoint service_;
    SseParser parser_;
    bool started_ = false;
    bool done_ = false;
    bool text_open_ = false;  // the last block is a text block still open
    std::size_t blocks_ = 0;  // blocks started so far: the next one's index
    int calls_ = 0;
    chat::StopReason stop_ = chat::StopReason::kEndTurn;
    translate::Usage usage_;
};

// ---- the same protocol on both sides ----

// A Gemini caller's request for a Gemini service: its bytes (`raw`, when given) as they are,
// since Gemini names the model in the route, posted to the service model's generateContent, or
// streamGenerateContent?alt=sse when stream_route says so (Gemini's body does not), so that
// fields only Gemini knows (safetySettings, cachedContent, thinkingConfig) reach it unchanged.
chat::Passed pass_request(const ServiceEndpoint &service, nlohmann::json &body,
                          std::string_view raw, bool stream_route);

}  // namespace pgi::protocols::gemini
