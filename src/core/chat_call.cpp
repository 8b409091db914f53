#include "chat_call.h"

#include <exception>
#include <vector>

#include "openai_chat.h"
#include "translate_util.h"

namespace pgi::chat_call {

namespace {

chat::Event error_event(std::string_view message) {
    chat::Event e;
    e.kind = chat::Event::Kind::kError;
    e.error.status = 502;
    e.error.message = std::string(message);
    return e;
}

// Form events from the service's reader, tallied, and (unless verbatim) written in the caller's
// dialect.
class EventStream final : public Stream {
  public:
    EventStream(const Call &call, const ServiceEndpoint &service, const protocols::Module &source,
                bool verbatim)
        : caller_(call.caller), verbatim_(verbatim), reader_(source.stream_reader(service)) {
        if (!verbatim_) {
            chat::Request request;
            request.stream = true;
            request.stream_usage = call.stream_usage;
            writer_ = caller_->stream_writer(request);
        }
    }

    void feed(std::string_view bytes, std::string &out) override { pump(bytes, false, out); }
    void finish(std::string &out) override { pump({}, true, out); }

    void fail(std::string_view message, std::string &out) override {
        if (done())
            return;
        chat::Event e = error_event(message);
        tally_.see(e);
        if (caller_ == nullptr)
            return;
        if (writer_ == nullptr) {
            // The upstream's own bytes went to the caller so far: a writer of its dialect that
            // has written nothing writes just the error.
            chat::Request request;
            caller_->stream_writer(request)->write(e, out);
        } else {
            writer_->write(e, out);
        }
    }

    bool verbatim() const override { return verbatim_; }
    translate::Usage charged() const override { return tally_.charged(); }
    bool failed() const override { return tally_.failed(); }
    bool done() const override { return tally_.ended() || tally_.failed(); }

  private:
    void pump(std::string_view bytes, bool end, std::string &out) {
        if (reader_broken_ || done())
            return;
        events_.clear();
        try {
            if (end)
                reader_->finish(events_);
            else
                reader_->feed(bytes, events_);
        } catch (const std::exception &e) {
            if (verbatim_) {
                // Only the usage was being read: the bytes still go through, and the stream is
                // charged by what was counted before.
                reader_broken_ = true;
                return;
            }
            events_.push_back(error_event(e.what()));
        }
        for (const chat::Event &e : events_) {
            tally_.see(e);
            if (writer_ != nullptr)
                writer_->write(e, out);
            if (done())
                break;
        }
    }

    const protocols::Module *caller_;  // null for a usage watch
    bool verbatim_;
    std::unique_ptr<protocols::EventReader> reader_;
    std::unique_ptr<protocols::EventWriter> writer_;
    protocols::StreamTally tally_;
    std::vector<chat::Event> events_;
    bool reader_broken_ = false;
};

// An OpenAI stream to an OpenAI caller: relayed chunk by chunk, with the usage chunk's rules.
class RelayStream final : public Stream {
  public:
    RelayStream(const Call &call, const ServiceEndpoint &service)
        : relay_(service, call.stream_usage) {}

    void feed(std::string_view bytes, std::string &out) override { relay_.feed(bytes, out); }
    void finish(std::string &out) override { relay_.finish(out); }
    void fail(std::string_view message, std::string &out) override { relay_.fail(message, out); }
    bool verbatim() const override { return false; }
    translate::Usage charged() const override { return relay_.charged_usage(); }
    bool failed() const override { return relay_.failed(); }
    bool done() const override { return relay_.done(); }

  private:
    protocols::openai_chat::StreamRelay relay_;
};

}  // namespace

Call plan(const protocols::Module &caller, const ServiceEndpoint &service, nlohmann::json &body,
          const chat::Defaults &defaults, std::string_view raw, bool stream_route) {
    Call call;
    call.caller = &caller;
    const protocols::Module &target = protocols::module_for(service.protocol);
    if (target.protocol == caller.protocol && (caller.passes == nullptr || caller.passes(body))) {
        chat::Passed passed = caller.pass_request(service, body, raw, stream_route);
        call.request = std::move(passed.request);
        call.stream = passed.stream;
        call.stream_usage = passed.stream_usage;
        return call;
    }
    chat::Request request = caller.read_request(body);
    if (stream_route)
        request.stream = true;
    call.target = &target;
    call.stream = request.stream;
    call.stream_usage = request.stream_usage;
    call.request = target.write_request(service, request, defaults);
    return call;
}

Answer answer(const Call &call, const ServiceEndpoint &service, std::string upstream_body) {
    Answer a;
    if (call.passed()) {
        a.usage = call.caller->answer_usage(upstream_body);
        a.body = std::move(upstream_body);
        return a;
    }
    chat::Response response = call.target->read_response(service, upstream_body);
    a.usage = response.usage;
    a.body = call.caller->write_response(response).dump();
    return a;
}

nlohmann::json answer_document(const Call &call, const ServiceEndpoint &service,
                               std::string_view upstream_body, translate::Usage *usage) {
    if (!call.passed()) {
        chat::Response response = call.target->read_response(service, upstream_body);
        if (usage != nullptr)
            *usage = response.usage;
        return call.caller->write_response(response);
    }
    nlohmann::json j = translate::detail::parse_upstream_body(service, upstream_body, "chat");
    if (usage != nullptr)
        *usage = call.caller->answer_usage(upstream_body);
    if (service.protocol == Protocol::kOpenAiV1) {
        const nlohmann::json *choices = translate::detail::member(j, "choices");
        if (choices == nullptr || !choices->is_array())
            translate::detail::bad_response(service, "chat", "the body has no \"choices\" array");
    }
    return j;
}

std::unique_ptr<Stream> stream(const Call &call, const ServiceEndpoint &service) {
    if (!call.passed())
        return std::make_unique<EventStream>(call, service, *call.target, false);
    if (call.caller->chunk_relay)
        return std::make_unique<RelayStream>(call, service);
    // The caller's own protocol is the service's: its reader finds the usage.
    return std::make_unique<EventStream>(call, service, *call.caller, true);
}

std::unique_ptr<Stream> usage_watch(Protocol protocol, const ServiceEndpoint &service) {
    Call call;  // no caller: nothing is written
    // OpenAI's relay finds the usage without parsing every chunk; its output is not used.
    if (protocol == Protocol::kOpenAiV1)
        return std::make_unique<RelayStream>(call, service);
    return std::make_unique<EventStream>(call, service, protocols::module_for(protocol), true);
}

}  // namespace pgi::chat_call
