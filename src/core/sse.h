// Incremental parser for text/event-stream (the WHATWG server-sent events format). Upstream
// streams arrive in whatever pieces the network delivers, so the parser keeps its state across
// feed() calls and accepts a split at any byte, including between the \r and \n of a line end.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "error.h"

namespace pgi {

struct SseEvent {
    std::string event;  // the `event:` field, empty when the event had none
    std::string data;   // the `data:` lines joined with \n
};

// An event as the parser hands it over: views valid only during the call. The common event (one
// data line, whole in the piece being fed) is seen in place, without being copied.
struct SseEventView {
    std::string_view event;
    std::string_view data;
};

class SseSink {
  public:
    virtual void on_event(const SseEventView &event) = 0;

  protected:
    ~SseSink() = default;
};

class SseParser {
  public:
    // A stream whose pending line or event grows past max_event_bytes is refused with a
    // pgi::Error (PI400): an upstream that never ends its event must not exhaust memory. The
    // events completed before the oversized one have been handed over by then.
    static constexpr std::size_t kDefaultMaxEventBytes = 16u << 20;
    explicit SseParser(std::size_t max_event_bytes = kDefaultMaxEventBytes)
        : max_event_bytes_(max_event_bytes) {}

    // Hands the events completed by these bytes to `sink`, in order.
    void feed(std::string_view bytes, SseSink &sink);
    // The same, appended to `out` as copies.
    void feed(std::string_view bytes, std::vector<SseEvent> &out);
    std::vector<SseEvent> feed(std::string_view bytes) {
        std::vector<SseEvent> out;
        feed(bytes, out);
        return out;
    }

    // The stream ended. Unlike the browser algorithm, an event whose closing blank line never
    // came is still delivered: some upstreams end the body right after their last data line.
    void finish(SseSink &sink);
    void finish(std::vector<SseEvent> &out);
    std::vector<SseEvent> finish() {
        std::vector<SseEvent> out;
        finish(out);
        return out;
    }

  private:
    // `in_place`: text lies in the bytes of the current feed() (not in partial_), so a data value
    // may be kept as a view until the feed returns.
    void line(std::string_view text, bool in_place, SseSink &sink);
    void keep_data();  // copies a data view into data_ before the bytes it points into go
    void check_size(std::size_t extra) const;

    std::size_t max_event_bytes_;
    std::string partial_;         // an unfinished line carried over from the previous feed
    std::string event_;           // fields of the event being assembled
    std::string data_;            // (capacity kept from event to event)
    std::string_view data_view_;  // the event's only data line, in place; used when in_view_
    bool in_view_ = false;
    bool has_data_ = false;  // a data field was seen (data may legitimately be empty)
    bool skip_lf_ = false;   // the previous feed ended on \r: a leading \n belongs to it
    bool at_start_ = true;   // a UTF-8 byte order mark is only skipped at the very start
};

// How a stream reader reads its upstream's events: those completed by `bytes` (with `finishing`,
// also the last one the body left unterminated) go to `on_event` until `done` turns true. An
// event past the parser's cap ends the reading; its message is returned for the reader to fail
// the stream in its own protocol's words.
template <typename OnEvent>
std::optional<std::string> read_events(SseParser &parser, std::string_view bytes, bool finishing,
                                       const bool &done, OnEvent &&on_event) {
    struct Sink final : SseSink {
        const bool &done;
        OnEvent &handle;
        Sink(const bool &d, OnEvent &h) : done(d), handle(h) {}
        void on_event(const SseEventView &e) override {
            if (!done)
                handle(e);
        }
    };
    Sink sink(done, on_event);
    try {
        if (finishing)
            parser.finish(sink);
        else
            parser.feed(bytes, sink);
    } catch (const Error &e) {
        return std::string(e.what());
    }
    return std::nullopt;
}

}  // namespace pgi
