// A caller's stream from a service (an OpenAI caller's unless told), as the gateway's chat route
// runs it (chat_call::stream), behind a small interface the stream tests and the stream fuzz
// targets share: bytes in, the caller's bytes out, the charge and the ending.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>

#include "chat_call.h"
#include "modules.h"

namespace pgi::test_support {

class CallerStream {
  public:
    // The call an OpenAI caller's streaming request plans to.
    static chat_call::Call openai_call(const ServiceEndpoint &service, bool wants_usage) {
        nlohmann::json req = {
            {"messages", nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}})},
            {"stream", true},
            {"stream_options", {{"include_usage", wants_usage}}}};
        return chat_call::plan(protocols::module_for(Protocol::kOpenAiV1), service, req, {});
    }
    // The call of a caller of another dialect whose streaming request is `request` (for Gemini,
    // the route says it streams).
    static chat_call::Call dialect_call(const protocols::Module &caller,
                                        const ServiceEndpoint &service, nlohmann::json request) {
        return chat_call::plan(caller, service, request, {}, {}, true);
    }

    CallerStream(const ServiceEndpoint &service, bool wants_usage)
        : CallerStream(openai_call(service, wants_usage), service) {}
    CallerStream(const protocols::Module &caller, const ServiceEndpoint &service,
                 nlohmann::json request)
        : CallerStream(dialect_call(caller, service, std::move(request)), service) {}
    // A stream of a call planned already (the fuzz targets plan each request once).
    CallerStream(chat_call::Call call, const ServiceEndpoint &service) : call_(std::move(call)) {
        stream_ = chat_call::stream(call_, service);
    }
    // The stream may refer to call_: a CallerStream stays where it was made.
    CallerStream(const CallerStream &) = delete;
    CallerStream &operator=(const CallerStream &) = delete;

    void feed(std::string_view bytes, std::string &out) { stream_->feed(bytes, out); }
    std::string feed(std::string_view bytes) {
        std::string out;
        feed(bytes, out);
        return out;
    }
    void finish(std::string &out) { stream_->finish(out); }
    std::string finish() {
        std::string out;
        finish(out);
        return out;
    }
    void fail(std::string_view message, std::string &out) { stream_->fail(message, out); }
    translate::Usage usage() const { return stream_->charged(); }
    bool failed() const { return stream_->failed(); }
    bool done() const { return stream_->done(); }

  private:
    chat_call::Call call_;
    std::unique_ptr<chat_call::Stream> stream_;
};

}  // namespace pgi::test_support
