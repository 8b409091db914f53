// OpenAI's Responses API as a wire protocol module: POST /v1/responses requests, `response`
// objects, the named-event stream (response.created ... response.completed) and OpenAI error
// objects, read and written around the internal chat form (chat_form.h).
//
// The gateway is stateless: a request carries its whole conversation in `input`. The caller side
// turns a request into the form for a service of any protocol (an OpenAI-protocol service gets
// a chat completion, which every OpenAI-compatible server serves). A request that refers to
// state kept upstream (previous_response_id, conversation) can only go to an upstream that
// serves /v1/responses itself: such a request to an OPENAI_V1 service is passed through to its
// /v1/responses with only "model" set (pass_request), and the upstream side reads its answer
// and stream for the usage. Anywhere else it is refused with 22023 (HTTP 400).
//
// What the form cannot carry: built-in tools (web_search, file_search, code_interpreter, mcp,
// ...), file inputs and items of built-in tools are refused with 0A000; reasoning items of
// earlier turns are dropped (they are the model's own notes); store, metadata, include,
// reasoning and truncation are not forwarded.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "chat_form.h"
#include "protocol.h"
#include "sse.h"
#include "translate.h"

namespace pgi::protocols::openai_responses {

// ---- caller side ----

// A Responses request as the internal form: `instructions` and system or developer items are
// the system text; function_call items are the assistant's tool calls and function_call_output
// items their results. Bad input is 22023 naming the member; what the form cannot carry is
// 0A000. "model" is the gateway's to resolve and only checked to be a string.
chat::Request read_request(const nlohmann::json &body);

// A whole answer as a `response` object: a message item with the text, then one function_call
// item per tool call. An answer cut by the token limit or a content filter is "incomplete", with
// incomplete_details saying which.
nlohmann::json write_response(const chat::Response &response);

// A streamed answer as the Responses events, each `event: <type>` with "type" and a
// "sequence_number" counted from 0 in its data: response.created and response.in_progress,
// per item output_item.added, its deltas and its .done events, then response.completed (or
// response.incomplete) carrying the whole response with usage. An error ends the stream with an
// `error` event. There is no [DONE]. The writer keeps the answer so far, as response.completed
// repeats it.
class StreamWriter {
  public:
    void write(const chat::Event &event, std::string &out);

  private:
    struct Item {
        bool text = true;
        std::string id;       // msg_... or fc_...
        std::string call_id;  // function calls
        std::string name;
        std::string data;  // the text, or the arguments' JSON text
    };
    void emit(std::string &out, const char *type, nlohmann::json data);
    void delta(std::string &out, const Item &item, long at, std::string_view text);
    // The same for an event given as the JSON text of its members (the other events).
    void emit_members(std::string &out, const char *type, const std::string &members);
    static std::string quoted(std::string_view text);
    static std::string part_members(const Item &item, long at);
    static std::string item_text(const Item &item, bool done);
    std::string response(const char *status) const;
    void start(const chat::Event *event, std::string &out);

    bool started_ = false;
    bool done_ = false;
    long long sequence_ = 0;
    std::string id_;
    std::string model_;
    long long created_ = 0;
    std::vector<Item> items_;
    std::vector<long> item_of_block_;  // form block index -> items_ position, -1 for none
    chat::StopReason stop_reason_ = chat::StopReason::kEndTurn;
    translate::Usage usage_;
};

// The OpenAI error object for a status.
std::string error_body(int status, std::string_view message);

// ---- upstream side: a request passed through to an upstream's own /v1/responses ----

// Whether the request needs state kept upstream (previous_response_id or conversation) and so
// goes to an OPENAI_V1 service's /v1/responses as it is.
bool needs_upstream_state(const nlohmann::json &body);

// POST {base_url}/v1/responses with the caller's bytes (`raw`, when given) and only "model" set
// to the service's. "stream" must be a boolean when present (22023).
chat::Passed pass_request(const ServiceEndpoint &service, nlohmann::json &body,
                          std::string_view raw, bool stream_route);

// A `response` object as the form: message items' output_text parts, function_call items.
// Anything else is left out. A body that is not a response is a PI400 error.
chat::Response read_response(const ServiceEndpoint &service, std::string_view body);

// The usage of a `response` body (input_tokens, output_tokens), for a passed-through answer.
translate::Usage answer_usage(std::string_view body);

// A Responses event stream as form events, whatever the bytes' split: items become blocks in
// output order, text and argument deltas their deltas, response.completed or .incomplete the
// stop reason, usage and end; response.failed, an `error` event or a stream cut short kError.
class StreamReader {
  public:
    explicit StreamReader(const ServiceEndpoint &service);
    void feed(std::string_view bytes, std::vector<chat::Event> &out);
    void finish(std::vector<chat::Event> &out);

  private:
    // Reads the events of `bytes` (or, finishing, the body's unterminated last one); an event
    // past the parser's cap fails the stream.
    void read(std::string_view bytes, bool finishing, std::vector<chat::Event> &out);
    void event(const SseEventView &event, std::vector<chat::Event> &out);
    void ensure_started(const nlohmann::json &response, std::vector<chat::Event> &out);
    void close_open(std::vector<chat::Event> &out);
    void fail(int status, std::string message, std::vector<chat::Event> &out);

    ServiceEndpoint service_;
    SseParser parser_;
    bool started_ = false;
    bool done_ = false;
    bool open_ = false;   // a block is open
    bool calls_ = false;  // a function_call item went by: the answer stops for its tools
    std::size_t next_block_ = 0;
};

}  // namespace pgi::protocols::openai_responses
