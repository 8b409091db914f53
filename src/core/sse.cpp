#include "sse.h"

#include "error.h"

namespace pgi {

void SseParser::check_size(std::size_t size) const {
    if (size > max_event_bytes_) {
        throw Error(sqlstate::kUpstreamBadResponse,
                    "upstream stream event exceeds " + std::to_string(max_event_bytes_) + " bytes");
    }
}

void SseParser::feed(std::string_view bytes, std::vector<SseEvent> &out) {
    std::size_t pos = 0;
    if (skip_lf_ && !bytes.empty()) {
        skip_lf_ = false;
        if (bytes[0] == '\n')
            pos = 1;
    }
    while (pos < bytes.size()) {
        // A plain loop: find_first_of calls memchr on its two-byte set for every byte it looks
        // at, which was an eighth of the gateway's work on a stream.
        std::size_t eol = pos;
        while (eol < bytes.size() && bytes[eol] != '\n' && bytes[eol] != '\r')
            ++eol;
        if (eol == bytes.size()) {
            check_size(partial_.size() + bytes.size() - pos);
            partial_.append(bytes.substr(pos));
            return;
        }
        std::string_view segment = bytes.substr(pos, eol - pos);
        if (partial_.empty()) {
            // The common case: the whole line is in this piece, so it is parsed in place.
            line(segment, out);
        } else {
            check_size(partial_.size() + segment.size());
            partial_.append(segment);
            line(partial_, out);
            partial_.clear();
        }
        if (bytes[eol] == '\r') {
            if (eol + 1 < bytes.size()) {
                if (bytes[eol + 1] == '\n')
                    ++eol;
            } else {
                skip_lf_ = true;  // the matching \n, if any, is in the next piece
            }
        }
        pos = eol + 1;
    }
}

void SseParser::finish(std::vector<SseEvent> &out) {
    if (!partial_.empty()) {
        line(partial_, out);
        partial_.clear();
    }
    line({}, out);  // a final blank line dispatches whatever is pending
    skip_lf_ = false;
}

void SseParser::line(std::string_view text, std::vector<SseEvent> &out) {
    if (at_start_) {
        at_start_ = false;
        constexpr std::string_view kBom = "\xEF\xBB\xBF";
        if (text.substr(0, kBom.size()) == kBom)
            text.remove_prefix(kBom.size());
    }
    if (text.empty()) {
        // An event with no data field is not delivered; its name does not leak into the next.
        if (has_data_)
            out.push_back(SseEvent{std::move(event_), std::move(data_)});
        event_.clear();
        data_.clear();
        has_data_ = false;
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
        check_size(data_.size() + value.size() + 1);
        if (has_data_)
            data_.push_back('\n');
        data_.append(value);
        has_data_ = true;
    } else if (field == "event") {
        event_.assign(value);
    }
    // id and retry only matter to a client that reconnects; a proxied upstream never does.
}

}  // namespace pgi
