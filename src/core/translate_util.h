// Helpers shared by the translate_*.cpp files. Not an API for the rest of the project.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol.h"
#include "saturating.h"
#include "translate.h"

namespace pgi::translate::detail {

// A JSON POST to the service: base_url + path, its auth headers, Content-Type, and for streams
// Accept: text/event-stream.
UpstreamRequest post_json(const ServiceEndpoint &service, std::string_view path, bool stream,
                          std::string body);

// Finds the raw text of the named top-level members of a JSON object in one pass, without
// allocating. values[i] is set to the raw value of keys[i] ("null", "[]", "{...}"), or left
// empty when the member is absent. Keys are compared byte for byte (escaped keys never match).
// Returns false when the text is not a JSON object; the scan is not a full validation.
bool top_level_members(std::string_view json, const std::string_view *keys,
                       std::string_view *values, std::size_t count);

// A top-level member to set in a JSON object's text: the key and its new value as JSON text.
struct MemberEdit {
    std::string_view key;
    std::string_view value;
};

// The JSON object's own text with the given top-level members replaced, or added at the front
// when absent; everything else stays byte for byte as it was. Used to pass a caller's request to
// an OpenAI upstream without re-serialising it. nullopt when the text cannot be edited safely in
// place: not an object, an edited key present twice, or a top-level key written with escapes
// (it might spell an edited key); the caller then serialises its document.
std::optional<std::string> with_members(std::string_view json, const MemberEdit *edits,
                                        std::size_t count);

// The raw text of each element of a JSON array, in order, found the same way. False when the
// text is not an array.
bool array_elements(std::string_view json, std::vector<std::string_view> &elements);

// Appends s as a quoted JSON string. Bytes that are not UTF-8 become U+FFFD (one per maximal
// subpart, as nlohmann's replacing dump does): the result is always valid JSON.
void append_json_string(std::string &out, std::string_view s);

// A caller's JSON as a request body. Text from a non-UTF-8 database could hold invalid bytes;
// they become U+FFFD rather than an exception from the JSON library.
std::string serialise(const nlohmann::json &body);

// A fresh "chatcmpl-<24 random alphanumerics>", for upstreams that give no id of their own.
std::string completion_id();

// Parses an upstream's 2xx body. A body that is not JSON, or an error object where an answer
// should be, becomes a PI400 error naming the service and what was expected.
nlohmann::json parse_upstream_body(const ServiceEndpoint &service, std::string_view body,
                                   const char *what);

// PI400 `service "<name>" returned a malformed <what> response`, with `why` as the detail.
[[noreturn]] void bad_response(const ServiceEndpoint &service, const char *what,
                               const std::string &why);

// OpenAI usage from a usage object in each provider's shape.
Usage usage_from_openai(const nlohmann::json &usage);
// The same from the usage object's JSON text, read in place (no document is built); present is
// false when the text is not an object.
Usage usage_from_openai_text(std::string_view object);
Usage usage_from_anthropic(const nlohmann::json &usage);
Usage usage_from_gemini(const nlohmann::json &usage_metadata);
void append_usage_json(std::string &out, const Usage &usage);
nlohmann::json usage_json(const Usage &usage);

// finish_reason for a provider's stop reason.
const char *anthropic_finish_reason(const nlohmann::json &stop_reason);
const char *gemini_finish_reason(const nlohmann::json &finish_reason, bool has_tool_calls);

// An OpenAI tool call for a Gemini functionCall part. Gemini gives no id (or an id of its own,
// kept when present), so calls are numbered "call_<number>". A thoughtSignature is handed out
// as extra_content.google.thought_signature, where Google's OpenAI layer puts it, so a client
// that replays the message lets chat_request send it back.
nlohmann::json gemini_tool_call(const nlohmann::json &function_call, const nlohmann::json &part,
                                int number);

// The service's model for Gemini paths, without the "models/" prefix Gemini's own listings use
// (tolerated in a registered model so it is not doubled).
std::string_view gemini_model(const ServiceEndpoint &service);

// Member access that tolerates absent keys and wrong types (upstream bodies vary).
const nlohmann::json *member(const nlohmann::json &object, const char *key);
std::string string_member(const nlohmann::json &object, const char *key);
// A member that is present and not null: OpenAI clients send null for "not set".
const nlohmann::json *given(const nlohmann::json &object, const char *key);

}  // namespace pgi::translate::detail
