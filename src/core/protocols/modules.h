// The wire protocol modules behind one interface, so that the gateway picks a caller's dialect and
// a service's protocol by value rather than with a switch in every place. A call from dialect A to
// a service of protocol B is module_for(A)'s caller side and module_for(B)'s upstream side around
// the internal chat form (chat_form.h). Adding a protocol adds its module and one line in
// modules.cpp.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "chat_form.h"
#include "protocol.h"
#include "translate.h"

namespace pgi::protocols {

// A streamed answer read from an upstream, as form events (each module's StreamReader).
class EventReader {
  public:
    virtual ~EventReader() = default;
    virtual void feed(std::string_view bytes, std::vector<chat::Event> &out) = 0;
    virtual void finish(std::vector<chat::Event> &out) = 0;
};

// Form events written as a dialect's stream (each module's StreamWriter).
class EventWriter {
  public:
    virtual ~EventWriter() = default;
    virtual void write(const chat::Event &event, std::string &out) = 0;
};

struct Module {
    Protocol protocol;
    const char *name;  // the module's name, for messages

    // ---- caller side ----
    chat::Request (*read_request)(const nlohmann::json &body);
    nlohmann::json (*write_response)(const chat::Response &response);
    // The writer for a stream of this request (the request says whether usage is wanted).
    std::unique_ptr<EventWriter> (*stream_writer)(const chat::Request &request);
    std::string (*error_body)(int status, std::string_view message);

    // ---- upstream side ----
    translate::UpstreamRequest (*write_request)(const ServiceEndpoint &service,
                                                const chat::Request &request,
                                                const chat::Defaults &defaults);
    chat::Response (*read_response)(const ServiceEndpoint &service, std::string_view body);
    std::unique_ptr<EventReader> (*stream_reader)(const ServiceEndpoint &service);

    // ---- the same protocol on both sides ----
    // The caller's request for a service of this protocol: its bytes (`raw` when the caller has
    // them, else `body` serialised) with only what names the service changed, so that fields
    // only this provider knows reach it. `stream_route` is the route's say on streaming, for the
    // protocols whose body does not tell (Gemini); the others read their body's own.
    chat::Passed (*pass_request)(const ServiceEndpoint &service, nlohmann::json &body,
                                 std::string_view raw, bool stream_route);
    // Whether a request of this dialect for a service of `protocol` passes through rather than
    // being translated; null for always. (A Responses request passes only when it needs state
    // the upstream keeps.)
    bool (*passes)(const nlohmann::json &body);
    // The usage a passed-through whole answer reports.
    translate::Usage (*answer_usage)(std::string_view body);
    // A passed-through stream is OpenAI's chunk stream, relayed chunk by chunk
    // (openai_chat::StreamRelay); otherwise stream_reader reads it for the usage.
    bool chunk_relay;
};

// The module of a protocol. Every Protocol has one.
const Module &module_for(Protocol protocol);

// The dialects the gateway speaks to callers besides its native OpenAI chat endpoint.
const Module &anthropic_module();
const Module &responses_module();
const Module &completions_module();

// What a stream cost, from the events that went by: the usage the upstream reported (kStart's
// prompt tokens, kUsage's cumulative totals) and the characters of text and tool input streamed.
class StreamTally {
  public:
    void see(const chat::Event &event);

    // The usage reported so far.
    const translate::Usage &usage() const { return usage_; }
    // What a stream is charged: the reported usage when it ended normally with usage, else
    // (cut short, or never reported) the usage seen with at least one completion token per 4
    // characters streamed, so that a caller who leaves early still pays for what was generated.
    translate::Usage charged() const;
    bool ended() const { return ended_; }    // kEnd went by
    bool failed() const { return failed_; }  // kError went by

  private:
    translate::Usage usage_;
    std::size_t chars_ = 0;
    bool ended_ = false;
    bool failed_ = false;
};

}  // namespace pgi::protocols
