#include "sse.h"

#include <cstring>

#include "error.h"

namespace pgi {

namespace {

struct VectorSink final : SseSink {
    std::vector<SseEvent> &out;
    explicit VectorSink(std::vector<SseEvent> &o) : out(o) {}
    void on_event(const SseEventView &e) override {
        out.push_back(SseEvent{std::string(e.event), std::string(e.data)});
    }
};

}  // namespace

void SseParser::check_size(std::size_t size) const {
    if (size > max_event_bytes_) {
        throw Error(sqlstate::kUpstreamBadResponse,
                    "upstream stream event exceeds " + std::to_string(max_event_bytes_) + " bytes");
    }
}

void SseParser::feed(std::string_view bytes, std::vector<SseEvent> &out) {
    VectorSink sink(out);
    feed(bytes, sink);
}

void SseParser::finish(std::vector<SseEvent> &out) {
    VectorSink sink(out);
    finish(sink);
}

void SseParser::feed(std::string_view bytes, SseSink &sink) {
    // A data view points into `bytes`: it is copied before this call returns, however it returns.
    struct KeepOnExit {
        SseParser &parser;
        ~KeepOnExit() { parser.keep_data(); }
    } keep_on_exit{*this};
    const char *base = bytes.data();
    const std::size_t n = bytes.size();
    std::size_t pos = 0;
    if (skip_lf_ && n > 0) {
        skip_lf_ = false;
        if (base[0] == '\n')
            pos = 1;
    }
    // Lines end at \n, \r\n or \r. Both searches are memchr (vectorised): a byte-by-byte loop
    // looking for either was a tenth of the gateway's instructions on a stream. The next \n is
    // remembered, so a run of lone \r before it is not searched again for each of them.
    std::size_t next_lf = 0;
    bool lf_known = false;
    while (pos < n) {
        if (!lf_known || next_lf < pos) {
            const void *lf = std::memchr(base + pos, '\n', n - pos);
            next_lf =
                lf != nullptr ? static_cast<std::size_t>(static_cast<const char *>(lf) - base) : n;
            lf_known = true;
        }
        std::size_t eol = next_lf;
        if (const void *cr = std::memchr(base + pos, '\r', eol - pos))
            eol = static_cast<std::size_t>(static_cast<const char *>(cr) - base);
        if (eol == n) {
            check_size(partial_.size() + n - pos);
            partial_.append(base + pos, n - pos);
            return;
        }
        std::string_view segment(base + pos, eol - pos);
        if (partial_.empty()) {
            // The common case: the whole line is in this piece, so it is parsed in place.
            line(segment, true, sink);
        } else {
            check_size(partial_.size() + segment.size());
            partial_.append(segment);
            line(partial_, false, sink);
            partial_.clear();
        }
        if (base[eol] == '\r') {
            if (eol + 1 < n) {
                if (base[eol + 1] == '\n')
                    ++eol;
            } else {
                skip_lf_ = true;  // the matching \n, if any, is in the next piece
            }
        }
        pos = eol + 1;
    }
}

void SseParser::finish(SseSink &sink) {
    if (!partial_.empty()) {
        line(partial_, false, sink);
        partial_.clear();
    }
    line({}, false, sink);  // a final blank line dispatches whatever is pending
    skip_lf_ = false;
}

void SseParser::keep_data() {
    if (in_view_) {
        data_.assign(data_view_);
        in_view_ = false;
    }
}

void SseParser::line(std::string_view text, bool in_place, SseSink &sink) {
    if (at_start_) {
        at_start_ = false;
        constexpr std::string_view kBom = "\xEF\xBB\xBF";
        if (text.substr(0, kBom.size()) == kBom)
            text.remove_prefix(kBom.size());
    }
    if (text.empty()) {
        // The event ends. One with no data field is not delivered; either way its fields are
        // cleared once the sink is done with them, so its name does not leak into the next.
        bool deliver = has_data_;
        std::string_view data = in_view_ ? data_view_ : std::string_view(data_);
        in_view_ = false;
        has_data_ = false;
        struct Reset {
            SseParser &parser;
            ~Reset() {
                parser.event_.clear();
                parser.data_.clear();
            }
        } reset{*this};
        if (deliver)
            sink.on_event(SseEventView{event_, data});
        return;
    }
    if (text[0] == ':')
        return;  // comment (keep-alive)
    std::string_view field = text;
    std::string_view value;
    std::size_t colon = text.find(':');
    if (colon != std::string_view::npos) {
        field = text.substr(0, colon);
        value = text.substr(colon + 1);
        if (!value.empty() && value[0] == ' ')
            value.remove_prefix(1);
    }
    if (field == "data") {
        if (!has_data_ && in_place) {
            check_size(value.size() + 1);
            data_view_ = value;
            in_view_ = true;
        } else {
            keep_data();
            check_size(data_.size() + value.size() + 1);
            if (has_data_)
                data_.push_back('\n');
            data_.append(value);
        }
        has_data_ = true;
    } else if (field == "event") {
        event_.assign(value);
    }
    // id and retry only matter to a client that reconnects; a proxied upstream never does.
}

}  // namespace pgi
