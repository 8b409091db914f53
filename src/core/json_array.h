// A JSON array of objects written by appending, for batches handed to SQL in one parameter:
// the pipelines' rows and the request log's. The caller writes numbers, keys and other values
// that are already JSON as they are (raw) and text through the escaper, so no DOM is built: for
// the request log this runs for every request the gateway serves, and for a pipeline a DOM per
// row cost more than the statements it feeds.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "translate_util.h"

namespace pgi {

class JsonArray {
  public:
    // A new element: a bare value (raw JSON), or an object whose members follow.
    JsonArray &value(std::string_view json) {
        next();
        out_ += json;
        return *this;
    }
    JsonArray &object() {
        next();
        out_ += '{';
        open_ = true;
        first_member_ = true;
        return *this;
    }
    JsonArray &raw(const char *name, std::string_view json) {
        member(name);
        out_ += json;
        return *this;
    }
    JsonArray &text(const char *name, std::string_view text) {
        member(name);
        translate::detail::append_json_string(out_, text);
        return *this;
    }
    // A text member, null when empty.
    JsonArray &text_or_null(const char *name, std::string_view text) {
        return text.empty() ? raw(name, "null") : this->text(name, text);
    }
    void reserve(std::size_t bytes) { out_.reserve(bytes); }
    bool empty() const { return count_ == 0; }
    // Closes the array and hands its text over without a copy (a batch can be megabytes); the
    // array is spent after this.
    std::string take() {
        close();
        out_ += ']';
        return std::move(out_);
    }

  private:
    void next() {
        close();
        out_ += count_++ == 0 ? "" : ",";
    }
    void close() {
        if (open_)
            out_ += '}';
        open_ = false;
    }
    void member(const char *name) {
        out_ += first_member_ ? "\"" : ",\"";
        first_member_ = false;
        out_ += name;
        out_ += "\":";
    }
    std::string out_ = "[";
    std::size_t count_ = 0;
    bool open_ = false;
    bool first_member_ = true;
};

}  // namespace pgi
