// OpenAI chat completions as a wire protocol module: POST /v1/chat/completions requests,
// chat.completion answers, chat.completion.chunk streams and OpenAI error objects, read into and
// written from the internal chat form (chat_form.h). The caller side reads what a caller sends
// to the gateway's /v1/chat/completions and writes what it gets back; the upstream side writes
// the call to an OPENAI_V1 service and reads its answer.
//
// The caller side is only used when the call crosses protocols: an OpenAI caller of an OpenAI
// service gets the pass-through path, which keeps every field. So what the form cannot carry (n
// greater than 1, audio or file content parts, custom tools) is refused with 0A000 here.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "chat_form.h"
#include "protocol.h"
#include "sse.h"
#include "translate.h"

namespace pgi::protocols::openai_chat {

// ---- caller side ----

// The caller's chat request. The request's "model" is not read (the gateway picks the service
// by it). Bad input is a 22023 error saying what to fix, in the words the SQL functions and the
// gateway have always used; what the form cannot carry is 0A000. Fields with no place in the
// form (logprobs, logit_bias, service_tier, ...) are dropped.
chat::Request read_request(const nlohmann::json &body);

// A chat.completion with one choice. An empty Response::id gets a fresh chatcmpl- id.
nlohmann::json write_response(const chat::Response &response);

// chat.completion.chunk SSE: `data: {...}\n\n` per chunk, `data: [DONE]\n\n` at kEnd; a kError
// becomes `data: {"error":{...}}` with no [DONE] after it, which is how OpenAI fails a stream.
// id, created and model are those of kStart for every chunk. Events after kEnd or kError are
// ignored.
class StreamWriter {
  public:
    // stream_usage: the caller asked for the usage chunk (Request::stream_usage).
    explicit StreamWriter(bool stream_usage) : stream_usage_(stream_usage) {}

    void write(const chat::Event &event, std::string &out);

  private:
    void start(std::string id, const std::string &model);
    void delta_chunk(std::string &out, std::string_view delta, const char *finish_reason);

    bool stream_usage_;
    bool done_ = false;
    // `{"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":[`, the
    // part every chunk shares, built at kStart.
    std::string prefix_;
    // Form block index -> OpenAI tool call index (numbered from 0 per choice), tool blocks only.
    std::map<std::size_t, int> tool_index_;
    int tool_calls_ = 0;
    translate::Usage usage_;
};

// {"error":{"message","type","param":null,"code":null}} with the type the gateway gives the
// status in its own error replies.
std::string error_body(int status, std::string_view message);

// ---- upstream side ----

// POST {base_url}/v1/chat/completions with the service's credentials and model. A stream asks
// for the usage chunk whatever the caller wanted: the ledger needs it. top_k has no counterpart
// in OpenAI's API and is refused with 0A000.
translate::UpstreamRequest write_request(const ServiceEndpoint &service,
                                         const chat::Request &request,
                                         const chat::Defaults &defaults);

// The first choice of a chat.completion. A body that is not one (or whose tool call arguments
// are not a JSON object) is a PI400 error.
chat::Response read_response(const ServiceEndpoint &service, std::string_view body);

// chat.completion.chunk SSE to events, in the form's order whatever the split of the bytes.
// Text is handed on as it arrives. The first tool call streams as it arrives too; OpenAI may
// interleave the deltas of several calls, so a call that starts while another's block is open is
// kept until the choice finishes and then handed on whole, as is text arriving meanwhile. Usage
// (kept from the last chunk that had any) is handed on at the end, before kEnd.
class StreamReader {
  public:
    explicit StreamReader(const ServiceEndpoint &service);

    void feed(std::string_view bytes, std::vector<chat::Event> &out);
    // The body ended: a last unterminated event is read, and a stream that did not end with
    // [DONE] or an error is ended as if it had.
    void finish(std::vector<chat::Event> &out);

  private:
    // Reads the events of `bytes` (or, finishing, the body's unterminated last one); an event
    // past the parser's cap fails the stream.
    void read(std::string_view bytes, bool finishing, std::vector<chat::Event> &out);
    // One tool call of the choice, by OpenAI's index.
    struct Call {
        long long openai_index = 0;
        std::string id;
        std::string name;
        std::string signature;  // Gemini's thought signature (extra_content), if any
        std::string arguments;  // pieces kept while the call waits for its block
        bool live = false;      // it is the open block: pieces go out as they come
        bool emitted = false;   // its block went out
    };
    // Content waiting for its block: a text piece or a tool call.
    struct Pending {
        bool text = false;
        std::string piece;  // text
        std::size_t call = 0;
    };

    void event(const SseEventView &e, std::vector<chat::Event> &out);
    // Most chunks of an answer carry only a piece of text: such a chunk is read in place
    // (translate's scanner finds its members) instead of being parsed into a document, the
    // larger part of a translated stream's CPU. False when the chunk is anything else (the
    // first one, a tool call, a finish, usage, an error, another choice): it is then parsed.
    // Like the relay, it does not validate the rest of the chunk; the text itself is decoded
    // by the JSON parser.
    bool plain_text_chunk(std::string_view data, std::vector<chat::Event> &out);
    void chunk(const nlohmann::json &j, std::vector<chat::Event> &out);
    void ensure_started(const nlohmann::json &j, std::vector<chat::Event> &out);
    void text(std::string_view piece, std::vector<chat::Event> &out);
    void tool_delta(const nlohmann::json &delta, std::size_t position,
                    std::vector<chat::Event> &out);
    void close_open(std::vector<chat::Event> &out);
    void flush(std::vector<chat::Event> &out);
    void stop(chat::StopReason reason, std::string sequence, std::vector<chat::Event> &out);
    void end(std::vector<chat::Event> &out);
    void fail(int status, std::string type, std::string message, std::vector<chat::Event> &out);
    std::string call_id(Call &call);

    ServiceEndpoint service_;
    SseParser parser_;
    bool started_ = false;
    bool stopped_ = false;  // kStop went out
    bool done_ = false;     // kEnd or kError went out
    std::size_t next_block_ = 0;
    enum class Open { kNone, kText, kTool } open_ = Open::kNone;
    std::size_t open_index_ = 0;  // the open block's form index
    std::size_t open_call_ = 0;   // calls_ position of the open tool block
    std::vector<Call> calls_;
    std::vector<Pending> pending_;
    translate::Usage usage_;
    int generated_ids_ = 0;
};

// OpenAI's finish_reason for a stop reason (stop, length, tool_calls, content_filter).
const char *finish_reason(chat::StopReason reason);

// ---- the same protocol on both sides ----

// The body of a request passed through to an OpenAI-protocol upstream: the caller's bytes (`raw`
// when given, else `body` serialised) with "model" set to the service's and, when
// ask_stream_usage (a chat or completions stream), stream_options.include_usage set: the ledger
// needs the usage chunk. body may be edited.
std::string passed_body(const ServiceEndpoint &service, nlohmann::json &body, std::string_view raw,
                        bool ask_stream_usage);

// An OpenAI caller's request for an OpenAI service, checked by the same rules as the caller side
// but otherwise as written: its bytes (`raw`, when given) with "model" set to the service's, and
// for a stream stream_options.include_usage set (the ledger needs the usage chunk; StreamRelay
// hides it from a caller who did not ask). Nothing the form cannot carry is refused: the
// upstream judges it. stream_route is not read: the body says.
chat::Passed pass_request(const ServiceEndpoint &service, nlohmann::json &body,
                          std::string_view raw, bool stream_route);

// An OpenAI service's stream on its way to an OpenAI caller, relayed event by event as the
// upstream wrote it (only the SSE framing is rewritten), whatever pieces its bytes arrive in. The
// usage chunk (choices [] or null, with usage) is the ledger's: it is dropped unless the caller
// asked for it, and vLLM's choices:null becomes [] when it is forwarded. An error event or chunk
// goes on as `data: {"error":{...}}` and ends the stream without [DONE], as OpenAI fails a stream;
// input after the end is ignored. Chunks that mention neither usage nor error are not parsed.
class StreamRelay {
  public:
    StreamRelay(const ServiceEndpoint &service, bool caller_wants_usage);

    // Appends what the caller gets for this piece of upstream body (often nothing).
    void feed(std::string_view upstream_bytes, std::string &out);
    // The body ended normally: a last unterminated event, then [DONE] unless the stream ended.
    void finish(std::string &out);
    // The transfer broke: an error chunk carrying message, so the caller does not take a cut
    // answer for a whole one.
    void fail(std::string_view message, std::string &out);

    // Tokens reported so far; final once the stream is done.
    const translate::Usage &usage() const { return usage_; }
    // What a stream that did not end with the upstream's usage is charged: the usage so far,
    // with at least one completion token per 4 characters of streamed text.
    translate::Usage charged_usage() const;
    bool failed() const { return failed_; }
    bool done() const { return done_; }

  private:
    // Reads the events of `bytes` (or, finishing, the body's unterminated last one); an event
    // past the parser's cap fails the stream.
    void read(std::string_view bytes, bool finishing, std::string &out);
    void event(const SseEventView &event, std::string &out);
    void error(std::string &out, std::string_view message, std::string_view type);

    ServiceEndpoint service_;  // its name and key, for error texts
    bool caller_wants_usage_;
    SseParser parser_;
    translate::Usage usage_;
    std::size_t streamed_chars_ = 0;
    bool failed_ = false;
    bool done_ = false;
};

}  // namespace pgi::protocols::openai_chat
