#include "chat_call.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "chat_prompt.h"
#include "error_capture.h"
#include "translate_fixtures.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace tr = pgi::translate;

const ServiceEndpoint kOpenAi{"oa",   "gpt-4o-mini", "http://up:1", Protocol::kOpenAiV1,
                              "sk-o", false,         nullptr};
const ServiceEndpoint kGemini{
    "gem", "gemini-2.5-flash", "https://up:3", Protocol::kGeminiV1Beta, "g-key", false, nullptr};

// An OpenAI caller's chat request for the service, as the SQL functions and the gateway plan it.
pgi::chat_call::Call chat_request(const ServiceEndpoint &s, json req,
                                  const pgi::chat::Defaults &defaults, std::string_view raw = {}) {
    return pgi::chat_call::plan(pgi::protocols::module_for(Protocol::kOpenAiV1), s, req, defaults,
                                raw);
}

// The OpenAI caller's answer for the upstream's body.
json chat_response(const ServiceEndpoint &s, std::string_view body) {
    json req = {{"messages", json::array({{{"role", "user"}, {"content", "hi"}}})}};
    return pgi::chat_call::answer_document(chat_request(s, req, {}), s, body);
}

json body_of(const pgi::chat_call::Call &call) {
    return json::parse(call.request.body);
}

json request(const ServiceEndpoint &s, const json &req) {
    return body_of(chat_request(s, req, pgi::chat::Defaults{}));
}

// Drops what changes on every call (created; generated ids) before comparing.
json stable(json response) {
    response.erase("created");
    return response;
}

// A conversation with everything the mappings touch: system and developer prompts, text parts,
// two parallel tool calls answered by two tool messages, then a user follow-up.
const json kToolConversation = json::parse(R"({
  "model": "ignored",
  "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call_a", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
      {"id": "call_b", "type": "function",
       "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
    {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\":21}"},
    {"role": "tool", "tool_call_id": "call_b", "content": "sunny"},
    {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]}
  ],
  "tools": [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "now"}}
  ],
  "tool_choice": "required",
  "max_tokens": 300
})");

// A body that is JSON but not an object never reaches a service, whichever module would pass it
// through (a Gemini route takes the model from its path, so the gateway hands any JSON on).
TEST(ChatCall, APassedBodyMustBeAnObject) {
    for (const ServiceEndpoint *s : {&kOpenAi, &kAnthropic, &kGemini}) {
        const pgi::protocols::Module &caller = pgi::protocols::module_for(s->protocol);
        for (const char *raw : {R"("{")", "[1,2]", "42"}) {
            json body = json::parse(raw);
            const Failure f = failure_of([&] { pgi::chat_call::plan(caller, *s, body, {}, raw); });
            EXPECT_EQ(f.sqlstate, "22023") << caller.name << " " << raw;
            EXPECT_NE(f.message.find("JSON object"), std::string::npos) << f.message;
        }
    }
}

}  // namespace

// ---------------------------------------------------------------- requests: OpenAI

TEST(ChatCall, OpenAiPassesTheRequestWithTheServiceModel) {
    json req = {{"model", "oa"},
                {"messages", {{{"role", "user"}, {"content", "hi"}}}},
                {"temperature", 0.5},
                {"response_format", {{"type", "json_object"}}},
                {"logit_bias", {{"50256", -100}}}};
    auto call = chat_request(kOpenAi, req, pgi::chat::Defaults{});
    EXPECT_EQ(call.request.method, "POST");
    EXPECT_EQ(call.request.url, "http://up:1/v1/chat/completions");
    EXPECT_EQ(call.request.headers, (std::vector<std::string>{"Authorization: Bearer sk-o",
                                                              "Content-Type: application/json"}));
    EXPECT_FALSE(call.stream);
    EXPECT_FALSE(call.stream_usage);
    json expected = req;
    expected["model"] = "gpt-4o-mini";
    EXPECT_EQ(body_of(call), expected);
}

TEST(ChatCall, OpenAiStreamAlwaysAsksForUsage) {
    json req = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"stream", true}};
    auto call = chat_request(kOpenAi, req, pgi::chat::Defaults{});
    EXPECT_TRUE(call.stream);
    EXPECT_FALSE(call.stream_usage);
    EXPECT_EQ(call.request.headers.back(), "Accept: text/event-stream");
    EXPECT_EQ(body_of(call)["stream_options"], json({{"include_usage", true}}));
    EXPECT_EQ(body_of(call)["model"], "gpt-4o-mini");

    req["stream_options"] = {{"include_usage", true}};
    call = chat_request(kOpenAi, req, pgi::chat::Defaults{});
    EXPECT_TRUE(call.stream_usage);
    EXPECT_EQ(body_of(call)["stream_options"], json({{"include_usage", true}}));

    req["stream_options"] = {{"include_usage", false}};
    call = chat_request(kOpenAi, req, pgi::chat::Defaults{});
    EXPECT_FALSE(call.stream_usage);
    EXPECT_EQ(body_of(call)["stream_options"], json({{"include_usage", true}}));
}

TEST(ChatCall, OpenAiPassesTheCallersBytesOn) {
    // The gateway hands in the caller's text: only the model changes, the rest stays as written.
    std::string raw = R"( {"model" : "oa", "messages":[{"role":"user","content":"h\u00e9"}],
        "temperature":0.50, "x_vendor":{"k":[1,2]}} )";
    auto call = chat_request(kOpenAi, json::parse(raw), pgi::chat::Defaults{}, raw);
    EXPECT_EQ(call.request.body,
              R"( {"model" : "gpt-4o-mini", "messages":[{"role":"user","content":"h\u00e9"}],
        "temperature":0.50, "x_vendor":{"k":[1,2]}} )");

    // A stream gets stream_options added, the same way.
    raw = R"({"model":"oa","stream":true,"messages":[{"role":"user","content":"hi"}]})";
    call = chat_request(kOpenAi, json::parse(raw), pgi::chat::Defaults{}, raw);
    EXPECT_EQ(call.request.body,
              R"({"stream_options":{"include_usage":true},"model":"gpt-4o-mini","stream":true,)"
              R"("messages":[{"role":"user","content":"hi"}]})");
    EXPECT_FALSE(call.stream_usage);
}

TEST(ChatCall, OpenAiSerialisesWhatCannotBeEditedInPlace) {
    // The caller's own stream_options, a model given twice, a key spelt with escapes: the
    // document is serialised, so the upstream sees exactly one model, the service's.
    const char *bodies[] = {
        R"({"model":"oa","stream":true,"stream_options":{"include_usage":false,"x":1},)"
        R"("messages":[{"role":"user","content":"hi"}]})",
        R"({"model":"other","model":"oa","messages":[{"role":"user","content":"hi"}]})",
        R"({"mod\u0065l":"oa","messages":[{"role":"user","content":"hi"}]})",
    };
    for (const char *raw : bodies) {
        auto call = chat_request(kOpenAi, json::parse(raw), pgi::chat::Defaults{}, raw);
        json body = body_of(call);
        EXPECT_EQ(body["model"], "gpt-4o-mini") << raw;
        EXPECT_EQ(call.request.body.find("\"oa\""), std::string::npos) << raw;
        EXPECT_EQ(call.request.body.find("other"), std::string::npos) << raw;
        if (call.stream) {
            EXPECT_EQ(body["stream_options"], json({{"include_usage", true}, {"x", 1}}));
        }
    }
}

// ---------------------------------------------------------------- requests: Anthropic

TEST(ChatCall, AnthropicBasicRequest) {
    json req = json::parse(R"({
      "model": "whatever",
      "messages": [{"role": "system", "content": "You are terse."},
                   {"role": "user", "content": "Hello"}],
      "temperature": 1.6, "top_p": 0.9, "stop": "END", "seed": 7, "user": "u1"})");
    auto call = chat_request(kAnthropic, req, pgi::chat::Defaults{});
    EXPECT_EQ(call.request.url, "http://up:2/v1/messages");
    EXPECT_EQ(call.request.headers,
              (std::vector<std::string>{"x-api-key: sk-a", "anthropic-version: 2023-06-01",
                                        "Content-Type: application/json"}));
    EXPECT_EQ(body_of(call), json::parse(R"({
      "model": "claude-sonnet-4-5",
      "system": "You are terse.",
      "messages": [{"role": "user", "content": "Hello"}],
      "max_tokens": 1024,
      "temperature": 1.0,
      "top_p": 0.9,
      "stop_sequences": ["END"],
      "metadata": {"user_id": "u1"}})"));
}

TEST(ChatCall, AnthropicMaxTokensPrecedence) {
    json req = {{"messages", {{{"role", "user"}, {"content", "x"}}}}};
    EXPECT_EQ(body_of(chat_request(kAnthropic, req, pgi::chat::Defaults{77}))["max_tokens"], 77);
    req["max_tokens"] = 50;
    EXPECT_EQ(request(kAnthropic, req)["max_tokens"], 50);
    req["max_completion_tokens"] = 60;
    EXPECT_EQ(request(kAnthropic, req)["max_tokens"], 60);
    req["temperature"] = 0.3;
    req["stop"] = {"a", "b"};
    json body = request(kAnthropic, req);
    EXPECT_EQ(body["temperature"], 0.3);
    EXPECT_EQ(body["stop_sequences"], json({"a", "b"}));
}

TEST(ChatCall, AnthropicToolConversation) {
    json body = request(kAnthropic, kToolConversation);
    EXPECT_EQ(body, json::parse(R"({
      "model": "claude-sonnet-4-5",
      "system": "Be brief.\n\nUse tools.",
      "max_tokens": 300,
      "messages": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
          {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
          {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
          {"type": "tool_result", "tool_use_id": "call_a", "content": "{\"temp\":21}"},
          {"type": "tool_result", "tool_use_id": "call_b", "content": "sunny"}]},
        {"role": "user", "content": "And tomorrow?"}
      ],
      "tools": [
        {"name": "get_weather", "description": "Weather now",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
      ],
      "tool_choice": {"type": "any"}})"));
}

TEST(ChatCall, AnthropicAssistantTextBeforeToolCalls) {
    json req = json::parse(R"({"messages": [
      {"role": "user", "content": "q"},
      {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
      {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "ok"}]},
      {"role": "assistant", "content": "Done."}]})");
    EXPECT_EQ(request(kAnthropic, req)["messages"], json::parse(R"([
      {"role": "user", "content": "q"},
      {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                                        {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
      {"role": "assistant", "content": "Done."}])"));
}

TEST(ChatCall, AnthropicToolChoiceMapping) {
    json req = kToolConversation;
    req.erase("tool_choice");
    EXPECT_FALSE(request(kAnthropic, req).contains("tool_choice"));
    req["tool_choice"] = "auto";
    EXPECT_EQ(request(kAnthropic, req)["tool_choice"], json({{"type", "auto"}}));
    req["tool_choice"] = "none";
    EXPECT_EQ(request(kAnthropic, req)["tool_choice"], json({{"type", "none"}}));
    req["tool_choice"] = "required";
    EXPECT_EQ(request(kAnthropic, req)["tool_choice"], json({{"type", "any"}}));
    req["tool_choice"] = {{"type", "function"}, {"function", {{"name", "now"}}}};
    EXPECT_EQ(request(kAnthropic, req)["tool_choice"], json({{"type", "tool"}, {"name", "now"}}));
    req["parallel_tool_calls"] = false;
    EXPECT_EQ(request(kAnthropic, req)["tool_choice"],
              json({{"type", "tool"}, {"name", "now"}, {"disable_parallel_tool_use", true}}));
    req.erase("tool_choice");
    EXPECT_EQ(request(kAnthropic, req)["tool_choice"],
              json({{"type", "auto"}, {"disable_parallel_tool_use", true}}));
    req["tool_choice"] = "sometimes";
    EXPECT_EQ(error_of([&] { request(kAnthropic, req); }).sqlstate(), "22023");
}

TEST(ChatCall, AnthropicStreamFlag) {
    json req = {{"messages", {{{"role", "user"}, {"content", "x"}}}},
                {"stream", true},
                {"stream_options", {{"include_usage", true}}}};
    auto call = chat_request(kAnthropic, req, pgi::chat::Defaults{});
    EXPECT_TRUE(call.stream);
    EXPECT_TRUE(call.stream_usage);
    EXPECT_EQ(body_of(call)["stream"], true);
    EXPECT_FALSE(body_of(call).contains("stream_options"));
    EXPECT_EQ(call.request.headers.back(), "Accept: text/event-stream");
}

TEST(ChatCall, AnthropicRefusesWhatItCannotExpress) {
    json images = {{"messages",
                    {{{"role", "user"},
                      {"content",
                       {{{"type", "text"}, {"text", "what is this"}},
                        {{"type", "image_url"}, {"image_url", {{"url", "https://x/y.png"}}}}}}}}}};
    // Images cross as Anthropic image blocks.
    EXPECT_EQ(
        request(kAnthropic, images)["messages"][0]["content"][1],
        json::parse(R"({"type": "image", "source": {"type": "url", "url": "https://x/y.png"}})"));
    json audio = {{"messages",
                   {{{"role", "user"},
                     {"content",
                      {{{"type", "input_audio"},
                        {"input_audio", {{"data", "AAAA"}, {"format", "wav"}}}}}}}}}};
    auto e = error_of([&] { request(kAnthropic, audio); });
    EXPECT_EQ(e.sqlstate(), "0A000");
    EXPECT_NE(std::string(e.what()).find("input_audio"), std::string::npos) << e.what();

    json n = {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"n", 2}};
    EXPECT_EQ(error_of([&] { request(kAnthropic, n); }).sqlstate(), "0A000");
    n["n"] = 1;
    EXPECT_NO_THROW(request(kAnthropic, n));

    json other_tool = {{"messages", {{{"role", "user"}, {"content", "x"}}}},
                       {"tools", {{{"type", "custom"}, {"custom", {{"name", "x"}}}}}}};
    EXPECT_EQ(error_of([&] { request(kAnthropic, other_tool); }).sqlstate(), "0A000");
    // OpenAI services get it as sent.
    EXPECT_NO_THROW(request(kOpenAi, other_tool));
    EXPECT_NO_THROW(request(kOpenAi, images));

    json only_system = {{"messages", {{{"role", "system"}, {"content", "x"}}}}};
    auto empty = error_of([&] { request(kAnthropic, only_system); });
    EXPECT_EQ(empty.sqlstate(), "22023");
    EXPECT_STREQ(empty.what(), "the chat request has no user or assistant message");

    json bad_args = json::parse(R"({"messages": [{"role": "assistant", "content": null,
      "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]})");
    auto args = error_of([&] { request(kAnthropic, bad_args); });
    EXPECT_EQ(args.sqlstate(), "22023");
    EXPECT_STREQ(args.what(),
                 "messages[0]: tool call \"x\" has arguments that are not a JSON object");
}

// ---------------------------------------------------------------- requests: Gemini

TEST(ChatCall, GeminiBasicRequest) {
    json req = json::parse(R"({
      "messages": [{"role": "system", "content": "Be kind."},
                   {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello!"},
                   {"role": "user", "content": [{"type": "text", "text": "Tell me"},
                                                {"type": "text", "text": " more"}]}],
      "max_completion_tokens": 64, "temperature": 1.5, "top_p": 0.8, "stop": ["x", "y"],
      "seed": 42, "presence_penalty": 0.1, "frequency_penalty": 0.2,
      "response_format": {"type": "json_schema",
                          "json_schema": {"name": "s", "schema": {"type": "object"}}}})");
    auto call = chat_request(kGemini, req, pgi::chat::Defaults{});
    EXPECT_EQ(call.request.url, "https://up:3/v1beta/models/gemini-2.5-flash:generateContent");
    EXPECT_EQ(call.request.headers, (std::vector<std::string>{"x-goog-api-key: g-key",
                                                              "Content-Type: application/json"}));
    EXPECT_EQ(body_of(call), json::parse(R"({
      "systemInstruction": {"parts": [{"text": "Be kind."}]},
      "contents": [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Hello!"}]},
        {"role": "user", "parts": [{"text": "Tell me"}, {"text": " more"}]}],
      "generationConfig": {"maxOutputTokens": 64, "temperature": 1.5, "topP": 0.8,
                           "stopSequences": ["x", "y"], "seed": 42,
                           "presencePenalty": 0.1, "frequencyPenalty": 0.2,
                           "responseMimeType": "application/json",
                           "responseJsonSchema": {"type": "object"}}})"));
    // The chat form carries one answer: more than one is for OpenAI services only.
    req["n"] = 2;
    EXPECT_EQ(error_of([&] { request(kGemini, req); }).sqlstate(), "0A000");
}

TEST(ChatCall, GeminiNoDefaultMaxTokensAndStreamUrl) {
    json req = {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"stream", true}};
    auto call = chat_request(kGemini, req, pgi::chat::Defaults{});
    EXPECT_EQ(call.request.url,
              "https://up:3/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse");
    EXPECT_EQ(body_of(call),
              json::parse(R"({"contents": [{"role": "user", "parts": [{"text": "x"}]}]})"));
    EXPECT_TRUE(call.stream);
    EXPECT_FALSE(call.stream_usage);

    ServiceEndpoint prefixed = kGemini;
    prefixed.model = "models/gemini-2.5-pro";
    EXPECT_EQ(chat_request(prefixed, req, pgi::chat::Defaults{}).request.url,
              "https://up:3/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse");
}

TEST(ChatCall, GeminiToolConversation) {
    json body = request(kGemini, kToolConversation);
    EXPECT_EQ(body, json::parse(R"({
      "systemInstruction": {"parts": [{"text": "Be brief.\n\nUse tools."}]},
      "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {"role": "model", "parts": [
          {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
          {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]},
        {"role": "user", "parts": [
          {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
          {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}},
          {"text": "And tomorrow?"}]}],
      "generationConfig": {"maxOutputTokens": 300},
      "tools": [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather now",
         "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]}},
        {"name": "now"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}})"));
}

TEST(ChatCall, GeminiToolChoiceMapping) {
    json req = kToolConversation;
    req.erase("tool_choice");
    EXPECT_FALSE(request(kGemini, req).contains("toolConfig"));
    req["tool_choice"] = "auto";
    EXPECT_EQ(request(kGemini, req)["toolConfig"]["functionCallingConfig"],
              json({{"mode", "AUTO"}}));
    req["tool_choice"] = "none";
    EXPECT_EQ(request(kGemini, req)["toolConfig"]["functionCallingConfig"],
              json({{"mode", "NONE"}}));
    req["tool_choice"] = {{"type", "function"}, {"function", {{"name", "now"}}}};
    EXPECT_EQ(request(kGemini, req)["toolConfig"]["functionCallingConfig"],
              json::parse(R"({"mode": "ANY", "allowedFunctionNames": ["now"]})"));
}

TEST(ChatCall, GeminiToolMessageNeedsAKnownCall) {
    json req = json::parse(R"({"messages": [{"role": "user", "content": "q"},
      {"role": "tool", "tool_call_id": "nope", "content": "1"}]})");
    auto e = error_of([&] { request(kGemini, req); });
    EXPECT_EQ(e.sqlstate(), "22023");
    EXPECT_STREQ(e.what(),
                 "messages[1] answers tool call \"nope\", which no earlier message called");
    // Anthropic matches by id upstream, so it needs no lookup.
    EXPECT_NO_THROW(request(kAnthropic, req));
}

TEST(ChatCall, GeminiThoughtSignatureGoesBack) {
    json req = json::parse(R"({"messages": [{"role": "user", "content": "q"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": "{}"},
         "extra_content": {"google": {"thought_signature": "c2ln"}}}]},
      {"role": "tool", "tool_call_id": "call_0", "content": "[1,2]"}]})");
    EXPECT_EQ(request(kGemini, req)["contents"], json::parse(R"([
      {"role": "user", "parts": [{"text": "q"}]},
      {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}]},
      {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"content": "[1,2]"}}}]}])"));
}

// ---------------------------------------------------------------- validation

TEST(ChatCall, ValidationErrors) {
    struct Case {
        const char *request;
        const char *message;
    };
    const Case cases[] = {
        {R"([1])", "the chat request must be a JSON object"},
        {R"({})", "the chat request has no \"messages\""},
        {R"({"messages": null})", "the chat request has no \"messages\""},
        {R"({"messages": []})", "\"messages\" must be a non-empty array"},
        {R"({"messages": "hi"})", "\"messages\" must be a non-empty array"},
        {R"({"messages": ["hi"]})", "messages[0] must be an object with \"role\" and \"content\""},
        {R"({"messages": [{"role": "bot", "content": "x"}]})",
         "messages[0] has an unknown role \"bot\""},
        {R"({"messages": [{"content": "x"}]})", "messages[0] has an unknown role \"\""},
        {R"({"messages": [{"role": "user"}]})", "messages[0] has no \"content\""},
        {R"({"messages": [{"role": "user", "content": 5}]})",
         "messages[0].content must be a string or an array of content parts"},
        {R"({"messages": [{"role": "user", "content": [{"text": "x"}]}]})",
         "messages[0].content parts must be objects with a \"type\""},
        {R"({"messages": [{"role": "tool", "content": "x"}]})",
         "messages[0] (role tool) has no \"tool_call_id\""},
        {R"({"messages": [{"role": "user", "content": "x", "tool_calls": []}]})",
         "messages[0]: only assistant messages have tool_calls"},
        {R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]})",
         "messages[0].tool_calls entries need an \"id\" and a function name"},
        {R"({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": {}}}]}]})",
         "messages[0].tool_calls[].function.arguments must be a JSON string"},
        {R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0})",
         "\"max_tokens\" must be a positive integer"},
        {R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": "9"})",
         "\"max_completion_tokens\" must be a positive integer"},
        {R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})",
         "\"temperature\" must be a number"},
        {R"({"messages": [{"role": "user", "content": "x"}], "stop": [1]})",
         "\"stop\" must be a string or an array of strings"},
        {R"({"messages": [{"role": "user", "content": "x"}], "seed": 1.5})",
         "\"seed\" must be an integer"},
        {R"({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})",
         "\"stream\" must be a boolean"},
        {R"({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 1}})",
         "\"stream_options\" must be an object like {\"include_usage\": true}"},
        {R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})",
         "\"tools\" must be an array"},
    };
    for (const ServiceEndpoint *s : {&kOpenAi, &kAnthropic, &kGemini}) {
        for (const Case &c : cases) {
            auto e = error_of([&] { request(*s, json::parse(c.request)); });
            EXPECT_EQ(e.sqlstate(), "22023") << c.request;
            EXPECT_STREQ(e.what(), c.message) << c.request;
            EXPECT_FALSE(e.hint().empty()) << c.request;
        }
    }
    auto role = error_of([&] {
        request(kOpenAi, json::parse(R"({"messages": [{"role": "bot", "content": "x"}]})"));
    });
    EXPECT_EQ(role.hint(), "Valid roles are system, developer, user, assistant and tool.");
}

TEST(ChatCall, NullMeansNotSet) {
    json req = json::parse(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": null,
      "temperature": null, "stop": null, "tools": null, "tool_choice": null, "stream": null})");
    EXPECT_EQ(request(kAnthropic, req),
              json::parse(R"({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                              "messages": [{"role": "user", "content": "x"}]})"));
}

// ---------------------------------------------------------------- inference.chat

TEST(ChatCall, PromptRequest) {
    json req = tr::chat_request_from_prompt(
        "Why?", json::parse(R"({"system": "Answer in French.", "max_tokens": 20,
                               "temperature": 0.2, "top_p": 1, "stop": ["\n"], "seed": 3})"));
    EXPECT_EQ(req, json::parse(R"({"messages": [{"role": "system", "content": "Answer in French."},
                                                {"role": "user", "content": "Why?"}],
                                   "max_tokens": 20, "temperature": 0.2, "top_p": 1,
                                   "stop": ["\n"], "seed": 3})"));
    EXPECT_EQ(tr::chat_request_from_prompt("x", json::object()),
              json::parse(R"({"messages": [{"role": "user", "content": "x"}]})"));
    EXPECT_EQ(tr::chat_request_from_prompt("x", json()),
              json::parse(R"({"messages": [{"role": "user", "content": "x"}]})"));
    // It goes on to any protocol.
    EXPECT_EQ(request(kAnthropic, req)["system"], "Answer in French.");
    EXPECT_EQ(request(kGemini, req)["generationConfig"]["maxOutputTokens"], 20);
}

TEST(ChatCall, PromptOptionErrors) {
    auto unknown = error_of([] { tr::chat_request_from_prompt("x", {{"temprature", 1}}); });
    EXPECT_EQ(unknown.sqlstate(), "22023");
    EXPECT_STREQ(unknown.what(), "unknown chat option \"temprature\"");
    EXPECT_EQ(unknown.hint(),
              "Valid options are system, max_tokens, temperature, top_p, stop and seed.");
    const std::pair<json, const char *> cases[] = {
        {{{"system", 1}}, "chat option \"system\" must be a string"},
        {{{"max_tokens", -1}}, "chat option \"max_tokens\" must be a positive integer"},
        {{{"max_tokens", 1.5}}, "chat option \"max_tokens\" must be a positive integer"},
        {{{"temperature", "0.5"}}, "chat option \"temperature\" must be a number"},
        {{{"top_p", true}}, "chat option \"top_p\" must be a number"},
        {{{"stop", {1, 2}}}, "chat option \"stop\" must be a string or an array of strings"},
        {{{"seed", 0.5}}, "chat option \"seed\" must be an integer"},
        {json::array(), "chat options must be a JSON object"},
    };
    for (const auto &[options, message] : cases) {
        auto e = error_of([&] { tr::chat_request_from_prompt("x", options); });
        EXPECT_EQ(e.sqlstate(), "22023") << options;
        EXPECT_STREQ(e.what(), message) << options;
    }
}

TEST(ChatCall, ChatText) {
    EXPECT_EQ(
        tr::chat_text(kOpenAi, json::parse(R"({"choices": [{"message": {"content": "Hi"}}]})")),
        "Hi");
    EXPECT_EQ(
        tr::chat_text(kOpenAi, json::parse(R"({"choices": [{"message": {"content": null}}]})")),
        "");
    EXPECT_EQ(tr::chat_text(kOpenAi, json::parse(R"({"choices": [{"message": {"content":
        [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}]})")),
              "ab");
    auto tools = error_of([] {
        tr::chat_text(kOpenAi, json::parse(R"({"choices": [{"message": {"content": null,
            "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]})"));
    });
    EXPECT_EQ(tools.sqlstate(), "0A000");
    EXPECT_STREQ(tools.what(), "service \"oa\" answered with tool calls, not text");
    auto none = error_of([] { tr::chat_text(kOpenAi, json::parse(R"({"choices": []})")); });
    EXPECT_EQ(none.sqlstate(), "PI400");
    EXPECT_STREQ(none.what(), "service \"oa\" returned no choices");
}

// ---------------------------------------------------------------- responses

TEST(ChatCallAnswer, OpenAiComesBackAsItIs) {
    const char *body = R"({"id": "chatcmpl-1", "object": "chat.completion", "created": 5,
      "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "message": {"role": "assistant",
      "content": "Hi"}, "finish_reason": "stop", "logprobs": null}],
      "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
      "system_fingerprint": "fp"})";
    EXPECT_EQ(chat_response(kOpenAi, body), json::parse(body));
}

TEST(ChatCallAnswer, MalformedBodiesNameTheService) {
    for (const ServiceEndpoint *s : {&kOpenAi, &kAnthropic, &kGemini}) {
        auto e = error_of([&] { chat_response(*s, "<html>oops</html>"); });
        EXPECT_EQ(e.sqlstate(), "PI400");
        EXPECT_EQ(std::string(e.what()),
                  "service \"" + s->name + "\" returned a malformed chat response");
        EXPECT_EQ(e.detail(), "the body is not JSON: <html>oops</html>");
        auto shape = error_of([&] { chat_response(*s, R"({"unexpected": true})"); });
        EXPECT_EQ(shape.sqlstate(), "PI400");
        auto error_in_200 = error_of([&] {
            chat_response(*s, R"({"error": {"message": "upstream exploded", "code": 502}})");
        });
        EXPECT_EQ(error_in_200.sqlstate(), "PI400");
        EXPECT_EQ(std::string(error_in_200.what()),
                  "service \"" + s->name + "\" returned an error: upstream exploded");
    }
}

TEST(ChatCallAnswer, AnthropicTextAndToolUse) {
    json r = chat_response(kAnthropic, R"({
      "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
      "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                  {"type": "text", "text": "Checking "},
                  {"type": "text", "text": "both."},
                  {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                  {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}],
      "stop_reason": "tool_use", "stop_sequence": null,
      "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 5,
                "cache_creation_input_tokens": 1}})");
    EXPECT_GT(r["created"].get<long long>(), 1700000000);
    EXPECT_EQ(stable(r), json::parse(R"({
      "id": "msg_01", "object": "chat.completion", "model": "claude-sonnet-4-5-20250929",
      "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null,
        "message": {"role": "assistant", "content": "Checking both.", "tool_calls": [
          {"id": "toolu_1", "type": "function",
           "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
          {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]}}],
      "usage": {"prompt_tokens": 16, "completion_tokens": 20, "total_tokens": 36,
                "prompt_tokens_details": {"cached_tokens": 5}}})"));
}

TEST(ChatCallAnswer, AnthropicStopReasons) {
    const std::pair<const char *, const char *> cases[] = {
        {"end_turn", "stop"},       {"stop_sequence", "stop"},     {"max_tokens", "length"},
        {"tool_use", "tool_calls"}, {"refusal", "content_filter"}, {"pause_turn", "stop"},
        {"something_new", "stop"},
    };
    for (const auto &[reason, expected] : cases) {
        json body = {{"id", "m"},
                     {"model", "c"},
                     {"content", {{{"type", "text"}, {"text", "x"}}}},
                     {"stop_reason", reason},
                     {"usage", {{"input_tokens", 1}, {"output_tokens", 2}}}};
        EXPECT_EQ(chat_response(kAnthropic, body.dump())["choices"][0]["finish_reason"], expected)
            << reason;
    }
}

TEST(ChatCallAnswer, AnthropicOnlyToolUseHasNullContent) {
    json r = chat_response(kAnthropic, R"({"id": "m", "model": "c", "stop_reason": "tool_use",
      "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": [1, "b"]}}],
      "usage": {"input_tokens": 1, "output_tokens": 2}})");
    EXPECT_TRUE(r["choices"][0]["message"]["content"].is_null());
    EXPECT_EQ(r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
              "{\"a\":[1,\"b\"]}");
    // An empty answer is "" (not null) when there are no tool calls.
    json empty = chat_response(kAnthropic, R"({"content": [], "stop_reason": "end_turn"})");
    EXPECT_EQ(empty["choices"][0]["message"]["content"], "");
    EXPECT_EQ(empty["model"], "claude-sonnet-4-5");
    EXPECT_FALSE(empty["id"].get<std::string>().empty());  // generated: Anthropic gave none
    EXPECT_EQ(empty["usage"],
              json::parse(R"({"prompt_tokens":0,"completion_tokens":0,"total_tokens":0})"));
}

TEST(ChatCallAnswer, GeminiTextThoughtsAndFunctionCalls) {
    json r = chat_response(kGemini, R"({
      "candidates": [{"content": {"role": "model", "parts": [
          {"text": "private reasoning", "thought": true},
          {"text": "Sure. "},
          {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig"},
          {"functionCall": {"name": "now", "args": {}}},
          {"text": "Done."}]},
        "finishReason": "STOP", "index": 0}],
      "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 9, "thoughtsTokenCount": 4,
                        "totalTokenCount": 20},
      "modelVersion": "gemini-2.5-flash-001", "responseId": "resp-1"})");
    EXPECT_EQ(stable(r), json::parse(R"({
      "id": "resp-1", "object": "chat.completion", "model": "gemini-2.5-flash-001",
      "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null,
        "message": {"role": "assistant", "content": "Sure. Done.", "tool_calls": [
          {"id": "call_0", "type": "function",
           "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
           "extra_content": {"google": {"thought_signature": "sig"}}},
          {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": "{}"}}]}}],
      "usage": {"prompt_tokens": 7, "completion_tokens": 13, "total_tokens": 20}})"));
}

TEST(ChatCallAnswer, GeminiFinishReasons) {
    const std::pair<const char *, const char *> cases[] = {
        {"STOP", "stop"},
        {"MAX_TOKENS", "length"},
        {"SAFETY", "content_filter"},
        {"RECITATION", "content_filter"},
        {"BLOCKLIST", "content_filter"},
        {"PROHIBITED_CONTENT", "content_filter"},
        {"SPII", "content_filter"},
        {"OTHER", "stop"},
        {"MALFORMED_FUNCTION_CALL", "stop"},
    };
    for (const auto &[reason, expected] : cases) {
        json body = {{"candidates",
                      {{{"content", {{"parts", {{{"text", "x"}}}}}}, {"finishReason", reason}}}}};
        EXPECT_EQ(chat_response(kGemini, body.dump())["choices"][0]["finish_reason"], expected)
            << reason;
    }
}

TEST(ChatCallAnswer, GeminiCandidatesAndBlockedPrompts) {
    json r = chat_response(kGemini, R"({"candidates": [
        {"content": {"parts": [{"text": "one"}]}, "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "two"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        {"finishReason": "SAFETY", "index": 2}]})");
    // One answer per call: the first candidate (n above 1 reaches only OpenAI services).
    ASSERT_EQ(r["choices"].size(), 1u);
    EXPECT_EQ(r["choices"][0]["message"]["content"], "one");
    EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(r["model"], "gemini-2.5-flash");
    EXPECT_FALSE(r["usage"].is_null());

    json blocked = chat_response(kGemini, R"({"promptFeedback": {"blockReason": "SAFETY"},
      "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}})");
    EXPECT_EQ(stable(blocked)["choices"],
              json::parse(R"([{"index": 0, "finish_reason": "content_filter",
      "logprobs": null, "message": {"role": "assistant", "content": ""}}])"));
    EXPECT_EQ(blocked["usage"],
              json::parse(R"({"prompt_tokens":5,"completion_tokens":0,"total_tokens":5})"));

    auto e = error_of([] { chat_response(kGemini, R"({"usageMetadata": {}})"); });
    EXPECT_EQ(e.sqlstate(), "PI400");
    EXPECT_EQ(e.detail(), "the body has no candidates");
}

// A reply with tool calls, fed back as the assistant turn of the next request, must reach the
// upstream as the same calls it made.
TEST(ChatCallAnswer, AnthropicToolCallsRoundTrip) {
    json original = json::parse(R"([
      {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "days": [1, 2]}},
      {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}])");
    json reply = chat_response(kAnthropic,
                               json({{"content", original}, {"stop_reason", "tool_use"}}).dump());
    json next = {{"messages",
                  {{{"role", "user"}, {"content", "q"}},
                   reply["choices"][0]["message"],
                   {{"role", "tool"}, {"tool_call_id", "toolu_1"}, {"content", "r1"}},
                   {{"role", "tool"}, {"tool_call_id", "toolu_2"}, {"content", "r2"}}}}};
    json body = request(kAnthropic, next);
    EXPECT_EQ(body["messages"][1], json({{"role", "assistant"}, {"content", original}}));
    EXPECT_EQ(body["messages"][2]["content"][1],
              json({{"type", "tool_result"}, {"tool_use_id", "toolu_2"}, {"content", "r2"}}));
}

TEST(ChatCallAnswer, GeminiToolCallsRoundTrip) {
    json original = json::parse(R"([
      {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "abc"},
      {"functionCall": {"name": "now", "args": {}}}])");
    json reply =
        chat_response(kGemini, json({{"candidates",
                                      {{{"content", {{"role", "model"}, {"parts", original}}},
                                        {"finishReason", "STOP"}}}}})
                                   .dump());
    EXPECT_EQ(reply["choices"][0]["finish_reason"], "tool_calls");
    json next = {{"messages",
                  {{{"role", "user"}, {"content", "q"}},
                   reply["choices"][0]["message"],
                   {{"role", "tool"}, {"tool_call_id", "call_0"}, {"content", "{\"c\":1}"}},
                   {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "noon"}}}}};
    json body = request(kGemini, next);
    EXPECT_EQ(body["contents"][1], json({{"role", "model"}, {"parts", original}}));
    EXPECT_EQ(body["contents"][2], json::parse(R"({"role": "user", "parts": [
      {"functionResponse": {"name": "get_weather", "response": {"c": 1}}},
      {"functionResponse": {"name": "now", "response": {"content": "noon"}}}]})"));
}

TEST(ChatCall, NonFunctionToolCallsPassOnlyToOpenAi) {
    json req = json::parse(R"({"messages": [{"role": "user", "content": "q"},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "c1", "type": "custom", "custom": {"name": "grep", "input": "x"}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "found"}]})");
    EXPECT_EQ(request(kOpenAi, req)["messages"], req["messages"]);
    for (const ServiceEndpoint *s : {&kAnthropic, &kGemini}) {
        auto e = error_of([&] { request(*s, req); });
        EXPECT_EQ(e.sqlstate(), "0A000");
        EXPECT_EQ(std::string(e.what()),
                  "tool calls of type \"custom\" cannot be translated to another protocol");
    }
}

TEST(ChatCall, InvalidUtf8BecomesReplacementCharacters) {
    json req = tr::chat_request_from_prompt("caf\xE9", json::object());
    for (const ServiceEndpoint *s : {&kOpenAi, &kAnthropic, &kGemini}) {
        std::string body = chat_request(*s, req, pgi::chat::Defaults{}).request.body;
        EXPECT_NE(body.find("caf\xEF\xBF\xBD"), std::string::npos) << s->name;
    }
}
