// A chat call from a caller of one dialect to a service of any protocol, for the SQL functions
// and the gateway alike: the one place that decides between passing the caller's request through
// (the service speaks the caller's own protocol) and translating it through the chat form with
// the two protocol modules (protocols/modules.h). docs/dialects.md describes both paths.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "modules.h"
#include "protocol.h"
#include "translate.h"

namespace pgi::chat_call {

struct Call {
    const protocols::Module *caller = nullptr;
    // The service's module when the call is translated; null when it is passed through.
    const protocols::Module *target = nullptr;
    translate::UpstreamRequest request;
    bool stream = false;
    bool stream_usage = false;  // the caller asked for a stream's usage (OpenAI chat)

    bool passed() const { return target == nullptr; }
};

// The upstream call for the caller's request. `raw` is the request's own text when the caller
// has it (the gateway): a pass-through then sends those bytes with only the model changed.
// `stream_route` is the route's say on streaming, for dialects whose body does not tell
// (Gemini). Bad input is 22023 and what the service's protocol cannot carry is 0A000, in the
// words of the modules; body may be edited.
Call plan(const protocols::Module &caller, const ServiceEndpoint &service, nlohmann::json &body,
          const chat::Defaults &defaults, std::string_view raw = {}, bool stream_route = false);

// A whole answer: what the caller gets for the upstream's 2xx body, and the usage it reports.
// A passed-through answer is the upstream's own bytes. A malformed body is PI400.
struct Answer {
    std::string body;
    translate::Usage usage;
};
Answer answer(const Call &call, const ServiceEndpoint &service, std::string upstream_body);

// The same answer as a document, for the SQL functions, and (when usage is given) the usage it
// reports. A passed-through OpenAI body must be a chat.completion (an object with a "choices"
// array); anything else is PI400.
nlohmann::json answer_document(const Call &call, const ServiceEndpoint &service,
                               std::string_view upstream_body, translate::Usage *usage = nullptr);

// A streamed answer on its way to the caller, whatever pieces the upstream's bytes arrive in.
class Stream {
  public:
    virtual ~Stream() = default;

    // Appends what the caller gets for this piece of the upstream's body. When verbatim(), the
    // caller gets the upstream's bytes as they are and nothing is appended: they are only read
    // for the usage.
    virtual void feed(std::string_view bytes, std::string &out) = 0;
    // The upstream's body ended normally: whatever ends the stream for the caller.
    virtual void finish(std::string &out) = 0;
    // The transfer broke: an error event in the caller's dialect, so that a cut answer is not
    // taken for a whole one. Nothing when the stream already ended.
    virtual void fail(std::string_view message, std::string &out) = 0;

    virtual bool verbatim() const = 0;
    // What the stream is charged: the usage the upstream reported when it ended with it, else
    // what was reported with at least one completion token per 4 characters streamed, so that a
    // caller who leaves early pays for what was generated.
    virtual translate::Usage charged() const = 0;
    virtual bool failed() const = 0;  // an error went to the caller
    virtual bool done() const = 0;    // nothing more will be written
};

std::unique_ptr<Stream> stream(const Call &call, const ServiceEndpoint &service);

// Only the usage of a stream in `protocol`'s shape, for routes whose bytes go to the caller as
// they are whatever they hold (the pass-through routes): a Stream whose output is always empty.
std::unique_ptr<Stream> usage_watch(Protocol protocol, const ServiceEndpoint &service);

}  // namespace pgi::chat_call
