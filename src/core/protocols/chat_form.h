// The one internal form of a chat exchange that every wire protocol module reads and writes:
// a request, a whole answer, and the events of a streamed answer. A module (openai_chat,
// anthropic, gemini, openai_responses, openai_completions) turns its own shapes into this form
// and back, so translating from dialect A to protocol B is A's reader followed by B's writer,
// and adding a protocol adds one module. When the caller's dialect is the upstream's own
// protocol the gateway forwards the caller's body with only "model" rewritten and this form is
// not used at all (provider-only fields survive that way).
//
// What the form holds is what at least two of the protocols can express; what only one can
// (Anthropic's cache_control, Gemini's safetySettings, OpenAI's logprobs) is dropped when a call
// crosses protocols, and what a target protocol cannot express at all is refused by its writer
// with 0A000 (docs/dialects.md lists both).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "translate.h"

namespace pgi::chat {

// One piece of a message's content.
struct Block {
    enum class Kind {
        kText,        // text
        kImage,       // image_url: an https URL or a data: URL (media type and base64 inside)
        kToolUse,     // the assistant calls a tool: tool_id, tool_name, input (a JSON object)
        kToolResult,  // the result of a call: tool_id, tool_name (Gemini needs it), text,
                      // is_error
    };
    Kind kind = Kind::kText;
    std::string text;
    std::string image_url;
    std::string tool_id;
    std::string tool_name;
    nlohmann::json input = nlohmann::json::object();
    bool is_error = false;
    // kToolUse: an opaque token the upstream attached to the call and wants back when the call
    // is replayed (Gemini's thoughtSignature: Gemini refuses a replayed call of a thinking model
    // without it). "" for none; protocols that have no place for it drop it.
    std::string signature;
};

// System text is not a message: it is Request::system, as Anthropic and Gemini keep it apart.
enum class Role { kUser, kAssistant };

struct Message {
    Role role = Role::kUser;
    std::vector<Block> content;
};

struct Tool {
    std::string name;
    std::string description;
    nlohmann::json parameters = nlohmann::json::object();  // a JSON Schema object
};

struct ToolChoice {
    enum class Mode { kAuto, kNone, kRequired, kNamed };
    Mode mode = Mode::kAuto;
    std::string name;  // kNamed
};

// The answer format asked for: free text, any JSON object, or JSON matching a schema.
struct OutputFormat {
    enum class Kind { kText, kJsonObject, kJsonSchema };
    Kind kind = Kind::kText;
    std::string name;  // kJsonSchema
    nlohmann::json schema = nlohmann::json::object();
    bool strict = false;
};

struct Request {
    std::string system;  // "" for none; several system/developer messages joined by "\n\n"
    std::vector<Message> messages;
    std::vector<Tool> tools;
    std::optional<ToolChoice> tool_choice;
    std::optional<long long> max_tokens;
    std::optional<double> temperature;
    std::optional<double> top_p;
    std::optional<long long> top_k;
    std::vector<std::string> stop;
    std::optional<long long> seed;
    std::optional<double> presence_penalty;  // OpenAI and Gemini; others drop them
    std::optional<double> frequency_penalty;
    // false: at most one tool call per answer (OpenAI's parallel_tool_calls, Anthropic's
    // disable_parallel_tool_use); unset leaves it to the provider.
    std::optional<bool> parallel_tool_calls;
    OutputFormat format;
    std::string user;  // the end user's id, when the caller names one
    bool stream = false;
    // The caller asked for usage in its stream (OpenAI's stream_options.include_usage). Usage
    // is always read from upstream for the ledger; this decides only whether the caller sees it.
    bool stream_usage = false;
};

enum class StopReason { kEndTurn, kMaxTokens, kStopSequence, kToolUse, kContentFilter, kOther };

struct Response {
    std::string id;     // the upstream's own id when it has one, else a generated one
    std::string model;  // the model the upstream reports, else the service's
    std::vector<Block> content;
    StopReason stop_reason = StopReason::kEndTurn;
    std::string stop_sequence;  // kStopSequence, when the upstream says which
    translate::Usage usage;
};

// A streamed answer as a sequence of events, modelled on the most ordered of the protocols:
//   kStart, then per content block kBlockStart, kTextDelta or kToolInputDelta..., kBlockStop,
//   then kStop (stop reason) and kUsage in any order, then kEnd.
// kError may come at any point and ends the stream. Readers emit this order whatever their
// protocol sends (OpenAI's interleaved tool-call deltas are regrouped by the reader); writers
// may rely on it.
struct Event {
    enum class Kind {
        kStart,           // id, model; usage may hold the prompt tokens already known
        kBlockStart,      // index, block.kind (kText or kToolUse: tool_id, tool_name)
        kTextDelta,       // index, text
        kToolInputDelta,  // index, text: a piece of the tool input's JSON text
        kBlockStop,       // index
        kStop,            // stop_reason, stop_sequence
        kUsage,           // usage: the totals so far (cumulative, not an increment)
        kEnd,
        kError,  // error
    };
    Kind kind = Kind::kStart;
    std::string id;
    std::string model;
    std::size_t index = 0;
    Block block;
    std::string text;
    StopReason stop_reason = StopReason::kEndTurn;
    std::string stop_sequence;
    translate::Usage usage;
    struct Failure {
        int status = 500;  // the HTTP status it stands for (429, 529, 500, ...)
        std::string type;  // the caller dialect's error type is derived from status
        std::string message;
    } error;
};

// What a chat call gets when the caller left it out.
struct Defaults {
    // Anthropic refuses a request without max_tokens; this fills it when the caller gave none
    // (inference.default_max_tokens). The other protocols get no limit the caller did not set.
    long default_max_tokens = 1024;
};

// A call that goes to a service of the caller's own protocol, as the caller wrote it.
struct Passed {
    translate::UpstreamRequest request;
    bool stream = false;
    bool stream_usage = false;  // the caller asked for a stream's usage chunk (OpenAI chat)
};

}  // namespace pgi::chat
