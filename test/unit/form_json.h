// The internal chat form as JSON and event streams as lines, so that the protocol modules'
// tests compare whole values and a failure prints what differs.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "chat_form.h"

namespace pgi::test_support {

namespace chat = pgi::chat;
using nlohmann::json;

inline json block_json(const chat::Block &b) {
    return {{"kind", static_cast<int>(b.kind)},
            {"text", b.text},
            {"image_url", b.image_url},
            {"tool_id", b.tool_id},
            {"tool_name", b.tool_name},
            {"input", b.input},
            {"is_error", b.is_error}};
}

inline json blocks_json(const std::vector<chat::Block> &blocks) {
    json out = json::array();
    for (const chat::Block &b : blocks)
        out.push_back(block_json(b));
    return out;
}

template <typename T>
inline json optional_json(const std::optional<T> &v) {
    return v ? json(*v) : json();
}

inline json request_json(const chat::Request &r) {
    json messages = json::array();
    for (const chat::Message &m : r.messages)
        messages.push_back(
            {{"role", static_cast<int>(m.role)}, {"content", blocks_json(m.content)}});
    json tools = json::array();
    for (const chat::Tool &t : r.tools)
        tools.push_back(
            {{"name", t.name}, {"description", t.description}, {"parameters", t.parameters}});
    json choice;
    if (r.tool_choice)
        choice = {{"mode", static_cast<int>(r.tool_choice->mode)}, {"name", r.tool_choice->name}};
    return {{"system", r.system},
            {"messages", messages},
            {"tools", tools},
            {"tool_choice", choice},
            {"max_tokens", optional_json(r.max_tokens)},
            {"temperature", optional_json(r.temperature)},
            {"top_p", optional_json(r.top_p)},
            {"top_k", optional_json(r.top_k)},
            {"stop", r.stop},
            {"seed", optional_json(r.seed)},
            {"format",
             {{"kind", static_cast<int>(r.format.kind)},
              {"name", r.format.name},
              {"schema", r.format.schema},
              {"strict", r.format.strict}}},
            {"user", r.user},
            {"stream", r.stream},
            {"stream_usage", r.stream_usage}};
}

inline json usage_json(const pgi::translate::Usage &u) {
    return {u.prompt_tokens, u.completion_tokens, u.total_tokens, u.present};
}

inline json response_json(const chat::Response &r) {
    return {{"id", r.id},
            {"model", r.model},
            {"content", blocks_json(r.content)},
            {"stop_reason", static_cast<int>(r.stop_reason)},
            {"stop_sequence", r.stop_sequence},
            {"usage", usage_json(r.usage)}};
}

inline std::string describe(const chat::Event &e) {
    using K = chat::Event::Kind;
    switch (e.kind) {
        case K::kStart:
            return "start " + e.id + " " + e.model + " " + usage_json(e.usage).dump();
        case K::kBlockStart:
            return "block_start " + std::to_string(e.index) + " " +
                   std::to_string(static_cast<int>(e.block.kind)) + " " + e.block.tool_id + " " +
                   e.block.tool_name;
        case K::kTextDelta:
            return "text " + std::to_string(e.index) + " " + e.text;
        case K::kToolInputDelta:
            return "input " + std::to_string(e.index) + " " + e.text;
        case K::kBlockStop:
            return "block_stop " + std::to_string(e.index);
        case K::kStop:
            return "stop " + std::to_string(static_cast<int>(e.stop_reason)) + " " +
                   e.stop_sequence;
        case K::kUsage:
            return "usage " + usage_json(e.usage).dump();
        case K::kEnd:
            return "end";
        case K::kError:
            return "error " + std::to_string(e.error.status) + " " + e.error.type + " " +
                   e.error.message;
    }
    return "?";
}

inline std::vector<std::string> describe(const std::vector<chat::Event> &events) {
    std::vector<std::string> out;
    for (const chat::Event &e : events)
        out.push_back(describe(e));
    return out;
}

}  // namespace pgi::test_support
