// Incremental parser for text/event-stream (the WHATWG server-sent events format). Upstream
// streams arrive in whatever pieces the network delivers, so the parser keeps its state across
// feed() calls and accepts a split at any byte, including between the \r and \n of a line end.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace pgi {

struct SseEvent {
    std::string event;  // the `event:` field, empty when the event had none
    std::string data;   // the `data:` lines joined with \n
};

class SseParser {
  public:
    // A stream whose pending line or event grows past max_event_bytes is refused with a
    // pgi::Error (PI400): an upstream that never ends its event must not exhaust memory.
    static constexpr std::size_t kDefaultMaxEventBytes = 16u << 20;
    explicit SseParser(std::size_t max_event_bytes = kDefaultMaxEventBytes)
        : max_event_bytes_(max_event_bytes) {}

    // Appends the events completed by these bytes to `out`, in order.
    void feed(std::string_view bytes, std::vector<SseEvent> &out);
    std::vector<SseEvent> feed(std::string_view bytes) {
        std::vector<SseEvent> out;
        feed(bytes, out);
        return out;
    }

    // The stream ended. Unlike the browser algorithm, an event whose closing blank line never
    // came is still delivered: some upstreams end the body right after their last data line.
    void finish(std::vector<SseEvent> &out);
    std::vector<SseEvent> finish() {
        std::vector<SseEvent> out;
        finish(out);
        return out;
    }

  private:
    void line(std::string_view text, std::vector<SseEvent> &out);
    void check_size(std::size_t extra) const;

    std::size_t max_event_bytes_;
    std::string partial_;  // an unfinished line carried over from the previous feed
    std::string event_;    // fields of the event being assembled
    std::string data_;
    bool has_data_ = false;  // a data field was seen (data may legitimately be empty)
    bool skip_lf_ = false;   // the previous feed ended on \r: a leading \n belongs to it
    bool at_start_ = true;   // a UTF-8 byte order mark is only skipped at the very start
};

}  // namespace pgi
