// The rules an OpenAI chat request is held to, and the chat.completion it is answered with:
// shared by the openai_chat module's caller side and the pass-through path, so that an OpenAI
// caller's bad request is refused in the same words whichever service it names.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "translate.h"

namespace pgi::protocols::openai_chat::rules {

// The hint of the errors below: what a request looks like.
inline constexpr const char *kRequestHint =
    "An OpenAI chat request looks like {\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}.";

// Checks what every protocol relies on (shapes of messages, tool calls, stream options and the
// numeric parameters), so a bad request fails the same way everywhere: a 22023 error saying
// what to fix. Content part types, tool types and n are left to the protocol that reads them.
void validate(const nlohmann::json &request);
// max_completion_tokens, else max_tokens; nullopt when neither is set.
std::optional<long long> max_tokens(const nlohmann::json &request);
// "stop" as an array of strings whichever of its two forms was used; null when not set.
nlohmann::json stop_sequences(const nlohmann::json &request);
// tool_choice: mode is auto, none, required, or function (then function names it).
struct ToolChoice {
    std::string mode;
    std::string function;
};
std::optional<ToolChoice> tool_choice(const nlohmann::json &request);
// An assistant tool call's arguments (JSON text) as the object they spell; {} when empty. Text
// that is not a JSON object is a 22023 error naming messages[message_index] and the call.
nlohmann::json tool_arguments(const nlohmann::json &call, std::size_t message_index);
// "stream" is true (validate() has checked it is a boolean).
bool streaming(const nlohmann::json &request);
// stream_options.include_usage is true.
bool stream_usage_asked(const nlohmann::json &request);
// A chat.completion with one choice: the assistant's text (null content when it is empty and there
// are tool calls), its tool_calls (OpenAI's shape, omitted when empty), finish_reason, usage, and
// created set to now.
nlohmann::json completion(std::string id, std::string model, std::string text,
                          nlohmann::json tool_calls, const char *finish_reason,
                          const translate::Usage &usage);

}  // namespace pgi::protocols::openai_chat::rules
