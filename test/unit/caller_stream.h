// A caller's stream from a service (an OpenAI caller's unless told), as the gateway's chat route
// runs it (chat_call::stream), behind a small interface the stream tests and the stream fuzz
// targets share: bytes in, the caller's bytes out, the charge and the ending.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "chat_call.h"
#include "modules.h"

namespace pgi::test_support {

class CallerStream {
  public:
    CallerStream(const ServiceEndpoint &service, bool wants_usage) {
        nlohmann::json req = {
            {"messages", nlohmann::json::array({{{"role", "user"}, {"content", "hi"}}})},
            {"stream", true},
            {"stream_options", {{"include_usage", wants_usage}}}};
        call_ = chat_call::plan(protocols::module_for(Protocol::kOpenAiV1), service, req, {});
        stream_ = chat_call::stream(call_, service);
    }
    // A caller of another dialect, whose streaming request is `request` (for Gemini, the route
    // says it streams).
    CallerStream(const protocols::Module &caller, const ServiceEndpoint &service,
                 nlohmann::json request) {
        call_ = chat_call::plan(caller, service, request, {}, {}, true);
        stream_ = chat_call::stream(call_, service);
    }
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
