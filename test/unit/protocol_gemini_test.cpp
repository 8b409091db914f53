// The Gemini protocol module: generateContent requests read from callers and written to
// upstreams, answers and streams both ways, and Google errors.
#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "error_capture.h"
#include "gemini.h"

namespace {

using nlohmann::json;
using namespace pgi;
namespace gemini = pgi::protocols::gemini;
using chat::Block;
using chat::Event;

const ServiceEndpoint kService{
    "gem", "gemini-2.5-flash", "http://up", Protocol::kGeminiV1Beta, "g-key", false, nullptr};

json j(const char *text) {
    return json::parse(text);
}

Failure refusal(const char *body) {
    return failure_of([&] { gemini::read_request(json::parse(body)); });
}

// ---------------------------------------------------------------- read_request

TEST(ProtocolGemini, ReadsAFullRequest) {
    chat::Request r = gemini::read_request(j(R"({
      "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"},
                                   {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                                   {"fileData": {"mimeType": "image/jpeg",
                                                 "fileUri": "https://x/cat.jpg"}}]},
        {"role": "model", "parts": [{"text": "thinking...", "thought": true},
                                    {"text": "Let me look."},
                                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}},
                                     "thoughtSignature": "sig1"},
                                    {"functionCall": {"name": "time", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "time",
                                                         "response": {"content": "noon"}}},
                                   {"functionResponse": {"name": "weather",
                                                         "response": {"temp": 21}}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "weather"}}]},
        {"parts": [{"functionResponse": {"name": "weather",
                                         "response": {"error": "down"}}}]}
      ],
      "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Be kind."}]},
      "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "topK": 40,
                           "stopSequences": ["END"], "candidateCount": 1, "seed": 7,
                           "presencePenalty": 0.1},
      "tools": [{"functionDeclarations": [
        {"name": "weather", "description": "Weather now",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}},
                        "required": ["city"], "propertyOrdering": ["city"]}},
        {"name": "time"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY",
                                               "allowedFunctionNames": ["weather"]}},
      "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]
    })"),
                                           true);
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.stream_usage);
    EXPECT_EQ(r.system, "Be brief.\n\nBe kind.");
    ASSERT_EQ(r.messages.size(), 5u);

    const auto &user = r.messages[0];
    EXPECT_EQ(user.role, chat::Role::kUser);
    ASSERT_EQ(user.content.size(), 3u);
    EXPECT_EQ(user.content[0].text, "Weather in Paris?");
    EXPECT_EQ(user.content[1].kind, Block::Kind::kImage);
    EXPECT_EQ(user.content[1].image_url, "data:image/png;base64,iVBO");
    EXPECT_EQ(user.content[2].image_url, "https://x/cat.jpg");

    const auto &model = r.messages[1];
    EXPECT_EQ(model.role, chat::Role::kAssistant);
    ASSERT_EQ(model.content.size(), 3u);  // the thought is skipped
    EXPECT_EQ(model.content[0].text, "Let me look.");
    EXPECT_EQ(model.content[1].kind, Block::Kind::kToolUse);
    EXPECT_EQ(model.content[1].tool_id, "call_0");
    EXPECT_EQ(model.content[1].tool_name, "weather");
    EXPECT_EQ(model.content[1].input, j(R"({"city":"Paris"})"));
    EXPECT_EQ(model.content[1].signature, "sig1");
    EXPECT_EQ(model.content[2].tool_id, "call_1");

    // Answers find their call by name, whatever their order.
    const auto &results = r.messages[2];
    ASSERT_EQ(results.content.size(), 2u);
    EXPECT_EQ(results.content[0].kind, Block::Kind::kToolResult);
    EXPECT_EQ(results.content[0].tool_id, "call_1");
    EXPECT_EQ(results.content[0].tool_name, "time");
    EXPECT_EQ(results.content[0].text, "noon");
    EXPECT_EQ(results.content[1].tool_id, "call_0");
    EXPECT_EQ(results.content[1].text, R"({"temp":21})");
    EXPECT_FALSE(results.content[1].is_error);

    // A second call of the same function is answered by the next response of that name.
    EXPECT_EQ(r.messages[3].content[0].tool_id, "call_2");
    EXPECT_EQ(r.messages[3].content[0].input, json::object());
    EXPECT_EQ(r.messages[4].role, chat::Role::kUser);
    EXPECT_EQ(r.messages[4].content[0].tool_id, "call_2");
    EXPECT_TRUE(r.messages[4].content[0].is_error);
    EXPECT_EQ(r.messages[4].content[0].text, "down");

    EXPECT_EQ(r.max_tokens, 100);
    EXPECT_EQ(r.temperature, 0.5);
    EXPECT_EQ(r.top_p, 0.9);
    EXPECT_EQ(r.top_k, 40);
    EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
    EXPECT_EQ(r.seed, 7);

    ASSERT_EQ(r.tools.size(), 2u);
    EXPECT_EQ(r.tools[0].name, "weather");
    EXPECT_EQ(r.tools[0].description, "Weather now");
    // Gemini's schema subset comes out as JSON Schema.
    EXPECT_EQ(r.tools[0].parameters, j(R"({"type":"object","properties":{"city":{"type":"string"}},
                                           "required":["city"]})"));
    EXPECT_EQ(r.tools[1].parameters, json::object());
    ASSERT_TRUE(r.tool_choice.has_value());
    EXPECT_EQ(r.tool_choice->mode, chat::ToolChoice::Mode::kNamed);
    EXPECT_EQ(r.tool_choice->name, "weather");
}

TEST(ProtocolGemini, ReadsSnakeCaseAndSingleParts) {
    chat::Request r = gemini::read_request(j(R"({
      "contents": {"parts": {"text": "hi"}},
      "system_instruction": {"parts": {"text": "sys"}},
      "generation_config": {"max_output_tokens": 5, "top_k": 3, "stop_sequences": ["x"],
                            "response_mime_type": "application/json",
                            "response_schema": {"type": "OBJECT", "nullable": true,
                                                "properties": {"a": {"type": "INTEGER"}}}},
      "tools": [{"function_declarations": [{"name": "f",
                                            "parameters_json_schema": {"type": "object"}}]}],
      "tool_config": {"function_calling_config": {"mode": "NONE"}}
    })"));
    EXPECT_FALSE(r.stream);
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0].role, chat::Role::kUser);
    EXPECT_EQ(r.messages[0].content[0].text, "hi");
    EXPECT_EQ(r.system, "sys");
    EXPECT_EQ(r.max_tokens, 5);
    EXPECT_EQ(r.top_k, 3);
    EXPECT_EQ(r.format.kind, chat::OutputFormat::Kind::kJsonSchema);
    EXPECT_EQ(r.format.schema,
              j(R"({"type":["object","null"],"properties":{"a":{"type":"integer"}}})"));
    EXPECT_EQ(r.tools[0].parameters, j(R"({"type":"object"})"));
    EXPECT_EQ(r.tool_choice->mode, chat::ToolChoice::Mode::kNone);
}

TEST(ProtocolGemini, ReadsAnswerFormats) {
    auto format = [](const char *config) {
        return gemini::read_request(
                   json::parse(std::string(R"({"contents":[{"parts":[{"text":"q"}]}],
                                                               "generationConfig":)") +
                               config + "}"))
            .format;
    };
    EXPECT_EQ(format(R"({"responseMimeType":"text/plain"})").kind, chat::OutputFormat::Kind::kText);
    EXPECT_EQ(format(R"({"responseMimeType":"application/json"})").kind,
              chat::OutputFormat::Kind::kJsonObject);
    chat::OutputFormat f = format(
        R"({"responseMimeType":"application/json",
            "responseJsonSchema":{"type":"object","additionalProperties":false}})");
    EXPECT_EQ(f.kind, chat::OutputFormat::Kind::kJsonSchema);
    EXPECT_EQ(f.schema, j(R"({"type":"object","additionalProperties":false})"));  // as given
}

TEST(ProtocolGemini, ReadsToolChoiceModes) {
    auto choice = [](const char *calling) {
        return gemini::read_request(
                   json::parse(std::string(R"({"contents":[{"parts":[{"text":"q"}]}],
                        "tools":[{"functionDeclarations":[{"name":"a"},{"name":"b"}]}],
                        "toolConfig":{"functionCallingConfig":)") +
                               calling + "}}"))
            .tool_choice;
    };
    EXPECT_EQ(choice(R"({"mode":"AUTO"})")->mode, chat::ToolChoice::Mode::kAuto);
    EXPECT_EQ(choice(R"({"mode":"ANY"})")->mode, chat::ToolChoice::Mode::kRequired);
    EXPECT_EQ(choice(R"({"mode":"ANY","allowedFunctionNames":["b","a"]})")->mode,
              chat::ToolChoice::Mode::kRequired);
    EXPECT_EQ(choice(R"({"mode":"NONE"})")->mode, chat::ToolChoice::Mode::kNone);
}

TEST(ProtocolGemini, RefusesBadRequestsWith22023) {
    const char *bad[] = {
        R"([])",
        R"({})",
        R"({"contents": []})",
        R"({"contents": [{"role": "system", "parts": [{"text": "x"}]}]})",
        R"({"contents": [{"role": "user"}]})",
        R"({"contents": [{"parts": ["text"]}]})",
        R"({"contents": [{"parts": [{"text": 5}]}]})",
        R"({"contents": [{"parts": [{"videoMetadata": {}}]}]})",
        R"({"contents": [{"parts": [{"thought": true, "text": "x"}]}]})",
        R"({"contents": [{"parts": [{"functionCall": {"name": "f"}}]}]})",
        R"({"contents": [{"role": "model", "parts": [{"functionCall": {"args": {}}}]}]})",
        R"({"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": []}}]}]})",
        R"({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]})",
        R"({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png"}}]}]})",
        R"({"contents": [{"parts": [{"fileData": {"mimeType": "image/png"}}]}]})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "systemInstruction": 5})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "generationConfig": {"maxOutputTokens": 0}})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "generationConfig": {"temperature": "hot"}})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "generationConfig": {"candidateCount": 0}})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "generationConfig": {"stopSequences": "x"}})",
        R"({"contents": [{"parts": [{"text": "q"}]}],
            "generationConfig": {"responseSchema": {"type": "OBJECT"}}})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "tools": {}})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "tools": [{"functionDeclarations": [{}]}]})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "tools": [{"functionDeclarations": [{"name":"f"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}})",
    };
    for (const char *body : bad) {
        Failure f = refusal(body);
        EXPECT_EQ(f.sqlstate, "22023") << body << ": " << f.message;
        EXPECT_FALSE(f.hint.empty()) << body;
    }
    Failure f = refusal(R"({"contents": [{"parts": [{"functionResponse": {"name": "f"}}]}]})");
    EXPECT_EQ(f.message,
              "contents[0].parts[0] answers function \"f\", which no earlier functionCall called");
}

TEST(ProtocolGemini, RefusesWhatTheFormCannotCarryWith0A000) {
    const char *cannot[] = {
        R"({"contents": [{"parts": [{"text": "q"}]}], "generationConfig": {"candidateCount": 2}})",
        R"({"contents": [{"parts": [{"inlineData": {"mimeType": "application/pdf", "data": "JVBE"}}]}]})",
        R"({"contents": [{"parts": [{"fileData": {"mimeType": "video/mp4", "fileUri": "gs://v"}}]}]})",
        R"({"contents": [{"role": "model", "parts": [{"executableCode": {"code": "1"}}]}]})",
        R"({"contents": [{"parts": [{"text": "q"}]}], "tools": [{"googleSearch": {}}]})",
        R"({"contents": [{"parts": [{"text": "q"}]}],
            "generationConfig": {"responseMimeType": "text/x.enum"}})",
        R"({"contents": [{"parts": [{"text": "q"}]}],
            "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY",
                                                     "allowedFunctionNames": ["a", "b"]}}})",
    };
    for (const char *body : cannot) {
        Failure f = refusal(body);
        EXPECT_EQ(f.sqlstate, "0A000") << body << ": " << f.message;
        EXPECT_FALSE(f.hint.empty()) << body;
    }
    EXPECT_EQ(refusal(cannot[0]).message,
              "the gateway cannot translate generationConfig.candidateCount above 1");
}

// ---------------------------------------------------------------- write_response

chat::Response sample_response() {
    chat::Response r;
    r.id = "resp-1";
    r.model = "claude-x";
    Block text;
    text.text = "Hello";
    Block call;
    call.kind = Block::Kind::kToolUse;
    call.tool_id = "toolu_1";
    call.tool_name = "weather";
    call.input = {{"city", "Paris"}};
    r.content = {text, call};
    r.stop_reason = chat::StopReason::kToolUse;
    r.usage = {10, 5, 15, true};
    return r;
}

TEST(ProtocolGemini, WritesAResponse) {
    EXPECT_EQ(gemini::write_response(sample_response()), j(R"({
      "candidates": [{"content": {"role": "model", "parts": [
                         {"text": "Hello"},
                         {"functionCall": {"name": "weather", "args": {"city": "Paris"},
                                           "id": "toolu_1"}}]},
                      "finishReason": "STOP", "index": 0}],
      "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
      "modelVersion": "claude-x", "responseId": "resp-1"})"));

    chat::Response r;
    r.id = "i";
    r.model = "m";
    r.stop_reason = chat::StopReason::kMaxTokens;
    json out = gemini::write_response(r);
    EXPECT_EQ(out["candidates"][0]["finishReason"], "MAX_TOKENS");
    EXPECT_FALSE(out.contains("usageMetadata"));  // none reported, none invented
    r.stop_reason = chat::StopReason::kContentFilter;
    EXPECT_EQ(gemini::write_response(r)["candidates"][0]["finishReason"], "SAFETY");
    r.stop_reason = chat::StopReason::kStopSequence;
    EXPECT_EQ(gemini::write_response(r)["candidates"][0]["finishReason"], "STOP");
    r.stop_reason = chat::StopReason::kOther;
    EXPECT_EQ(gemini::write_response(r)["candidates"][0]["finishReason"], "OTHER");
}

// ---------------------------------------------------------------- error_body

TEST(ProtocolGemini, ErrorBodiesNameTheStatus) {
    const std::pair<int, const char *> cases[] = {
        {400, "INVALID_ARGUMENT"}, {401, "UNAUTHENTICATED"},    {403, "PERMISSION_DENIED"},
        {404, "NOT_FOUND"},        {429, "RESOURCE_EXHAUSTED"}, {500, "INTERNAL"},
        {503, "UNAVAILABLE"},      {504, "DEADLINE_EXCEEDED"},  {529, "UNAVAILABLE"},
        {502, "UNAVAILABLE"},      {413, "INVALID_ARGUMENT"}};
    for (const auto &[status, name] : cases) {
        json body = json::parse(gemini::error_body(status, "went \"wrong\""));
        EXPECT_EQ(
            body,
            json({{"error", {{"code", status}, {"message", "went \"wrong\""}, {"status", name}}}}))
            << status;
    }
}

// ---------------------------------------------------------------- StreamWriter

Event ev(Event::Kind kind) {
    Event e;
    e.kind = kind;
    return e;
}

std::vector<Event> sample_events() {
    std::vector<Event> events;
    Event start = ev(Event::Kind::kStart);
    start.id = "msg_1";
    start.model = "claude-x";
    start.usage = {7, 0, 7, true};
    events.push_back(start);
    Event open = ev(Event::Kind::kBlockStart);
    open.index = 0;
    events.push_back(open);
    for (const char *piece : {"Hel", "lo"}) {
        Event d = ev(Event::Kind::kTextDelta);
        d.text = piece;
        events.push_back(d);
    }
    events.push_back(ev(Event::Kind::kBlockStop));
    Event tool = ev(Event::Kind::kBlockStart);
    tool.index = 1;
    tool.block.kind = Block::Kind::kToolUse;
    tool.block.tool_id = "toolu_1";
    tool.block.tool_name = "weather";
    events.push_back(tool);
    for (const char *piece : {"{\"city\":", "\"Paris\"}"}) {
        Event d = ev(Event::Kind::kToolInputDelta);
        d.index = 1;
        d.text = piece;
        events.push_back(d);
    }
    Event close = ev(Event::Kind::kBlockStop);
    close.index = 1;
    events.push_back(close);
    Event stop = ev(Event::Kind::kStop);
    stop.stop_reason = chat::StopReason::kToolUse;
    events.push_back(stop);
    Event usage = ev(Event::Kind::kUsage);
    usage.usage = {7, 4, 11, true};
    events.push_back(usage);
    events.push_back(ev(Event::Kind::kEnd));
    return events;
}

std::vector<json> data_events(const std::string &sse) {
    std::vector<json> out;
    std::size_t pos = 0;
    while (pos < sse.size()) {
        std::size_t end = sse.find("\r\n\r\n", pos);
        EXPECT_NE(end, std::string::npos) << sse.substr(pos);
        if (end == std::string::npos)
            break;
        std::string line = sse.substr(pos, end - pos);
        EXPECT_EQ(line.rfind("data: ", 0), 0u) << line;
        out.push_back(json::parse(line.substr(6)));
        pos = end + 4;
    }
    return out;
}

TEST(ProtocolGemini, StreamWriterWritesGeminiEvents) {
    gemini::StreamWriter w;
    std::string out;
    for (const Event &e : sample_events())
        w.write(e, out);
    std::vector<json> chunks = data_events(out);
    ASSERT_EQ(chunks.size(), 4u);
    // Every event carries the usage known so far, as Gemini's do.
    EXPECT_EQ(chunks[0], j(R"({"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},
                                               "index":0}],
                               "usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":0,
                                                "totalTokenCount":7},
                               "modelVersion":"claude-x","responseId":"msg_1"})"));
    EXPECT_EQ(chunks[1]["candidates"][0]["content"]["parts"], j(R"([{"text":"lo"}])"));
    // The tool call goes out whole once its input is complete.
    EXPECT_EQ(chunks[2]["candidates"][0]["content"]["parts"],
              j(R"([{"functionCall":{"name":"weather","args":{"city":"Paris"},"id":"toolu_1"}}])"));
    EXPECT_EQ(chunks[3], j(R"({"candidates":[{"content":{"role":"model","parts":[{"text":""}]},
                                               "finishReason":"STOP","index":0}],
                               "usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":4,
                                                "totalTokenCount":11},
                               "modelVersion":"claude-x","responseId":"msg_1"})"));
    // Nothing after the end.
    std::string more;
    w.write(ev(Event::Kind::kEnd), more);
    EXPECT_EQ(more, "");
}

TEST(ProtocolGemini, StreamWriterEndsOnError) {
    gemini::StreamWriter w;
    std::string out;
    std::vector<Event> events = sample_events();
    w.write(events[0], out);
    w.write(events[1], out);
    w.write(events[2], out);
    Event failure = ev(Event::Kind::kError);
    failure.error.status = 429;
    failure.error.message = "slow down";
    w.write(failure, out);
    w.write(events[3], out);
    std::vector<json> chunks = data_events(out);
    ASSERT_EQ(chunks.size(), 2u);
    EXPECT_EQ(chunks[1], j(R"({"error":{"code":429,"message":"slow down",
                                         "status":"RESOURCE_EXHAUSTED"}})"));
}

TEST(ProtocolGemini, StreamWriterRefusesBrokenToolInput) {
    gemini::StreamWriter w;
    std::string out;
    std::vector<Event> events = sample_events();
    Event tool = events[5];
    Event bad = ev(Event::Kind::kToolInputDelta);
    bad.text = "{\"city\":";
    w.write(events[0], out);
    w.write(tool, out);
    w.write(bad, out);
    w.write(ev(Event::Kind::kBlockStop), out);
    std::vector<json> chunks = data_events(out);
    ASSERT_EQ(chunks.size(), 1u);
    EXPECT_EQ(chunks[0]["error"]["status"], "INTERNAL");
}

// ---------------------------------------------------------------- write_request

chat::Request sample_request() {
    chat::Request r;
    r.system = "Be brief.";
    chat::Message user;
    Block q;
    q.text = "Weather in Paris?";
    Block img;
    img.kind = Block::Kind::kImage;
    img.image_url = "data:image/png;base64,iVBO";
    Block url;
    url.kind = Block::Kind::kImage;
    url.image_url = "https://x/cat.JPG?size=2";
    user.content = {q, img, url};
    chat::Message model;
    model.role = chat::Role::kAssistant;
    Block call;
    call.kind = Block::Kind::kToolUse;
    call.tool_id = "toolu_9";
    call.tool_name = "weather";
    call.input = {{"city", "Paris"}};
    call.signature = "sig";
    model.content = {call};
    chat::Message results;
    Block plain;
    plain.kind = Block::Kind::kToolResult;
    plain.tool_id = "toolu_9";  // no name: found from the call
    plain.text = "sunny";
    Block object = plain;
    object.tool_name = "weather";
    object.text = R"({"temp":21})";
    Block failed = plain;
    failed.is_error = true;
    failed.text = "down";
    results.content = {plain, object, failed};
    chat::Message more;
    Block t;
    t.text = "And tomorrow?";
    more.content = {t};
    r.messages = {user, model, results, more};
    chat::Tool tool;
    tool.name = "weather";
    tool.description = "Weather now";
    tool.parameters = {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}};
    chat::Tool bare;
    bare.name = "time";
    r.tools = {tool, bare};
    r.tool_choice = chat::ToolChoice{chat::ToolChoice::Mode::kNamed, "weather"};
    r.max_tokens = 100;
    r.temperature = 0.5;
    r.top_p = 0.9;
    r.top_k = 40;
    r.stop = {"END"};
    r.seed = 7;
    r.format.kind = chat::OutputFormat::Kind::kJsonSchema;
    r.format.name = "answer";
    r.format.schema = {{"type", "object"}};
    r.user = "u-1";
    return r;
}

TEST(ProtocolGemini, WritesARequest) {
    translate::UpstreamRequest up = gemini::write_request(kService, sample_request(), {});
    EXPECT_EQ(up.method, "POST");
    EXPECT_EQ(up.url, "http://up/v1beta/models/gemini-2.5-flash:generateContent");
    EXPECT_EQ(json::parse(up.body), j(R"({
      "contents": [
        {"role": "user", "parts": [
           {"text": "Weather in Paris?"},
           {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
           {"fileData": {"fileUri": "https://x/cat.JPG?size=2", "mimeType": "image/jpeg"}}]},
        {"role": "model", "parts": [
           {"functionCall": {"name": "weather", "args": {"city": "Paris"}},
            "thoughtSignature": "sig"}]},
        {"role": "user", "parts": [
           {"functionResponse": {"name": "weather", "response": {"content": "sunny"}}},
           {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
           {"functionResponse": {"name": "weather", "response": {"error": "down"}}},
           {"text": "And tomorrow?"}]}],
      "systemInstruction": {"parts": [{"text": "Be brief."}]},
      "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "topK": 40,
                           "stopSequences": ["END"], "seed": 7,
                           "responseMimeType": "application/json",
                           "responseJsonSchema": {"type": "object"}},
      "tools": [{"functionDeclarations": [
        {"name": "weather", "description": "Weather now",
         "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "time"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY",
                                               "allowedFunctionNames": ["weather"]}}
    })"));
}

TEST(ProtocolGemini, WritesTheModelsRouteForWholeAnswersAndStreams) {
    ServiceEndpoint s = kService;
    s.model = "models/gemini-2.5-pro";  // the prefix Gemini's own listings use is not doubled
    for (bool stream : {false, true}) {
        chat::Request r;
        r.stream = stream;
        chat::Message m;
        Block b;
        b.text = "hi";
        m.content = {b};
        r.messages = {m};
        translate::UpstreamRequest mine = gemini::write_request(s, r, {});
        EXPECT_EQ(mine.url, stream ? "http://up/v1beta/models/gemini-2.5-pro:streamGenerateContent"
                                     "?alt=sse"
                                   : "http://up/v1beta/models/gemini-2.5-pro:generateContent");
        EXPECT_EQ(json::parse(mine.body),
                  json::parse(R"({"contents":[{"role":"user","parts":[{"text":"hi"}]}]})"));
    }
}

TEST(ProtocolGemini, WriteRequestRefusals) {
    chat::Request empty;
    EXPECT_EQ(failure_of([&] { gemini::write_request(kService, empty, {}); }).sqlstate, "22023");

    chat::Request orphan;
    Block result;
    result.kind = Block::Kind::kToolResult;
    result.tool_id = "nope";
    orphan.messages.resize(1);
    orphan.messages[0].content = {result};
    Failure f = failure_of([&] { gemini::write_request(kService, orphan, {}); });
    EXPECT_EQ(f.sqlstate, "22023");
    EXPECT_EQ(f.message, "messages[0] answers tool call \"nope\", which no earlier message called");

    chat::Request image;
    Block bad;
    bad.kind = Block::Kind::kImage;
    bad.image_url = "data:image/png,rawbytes";
    image.messages.resize(1);
    image.messages[0].content = {bad};
    EXPECT_EQ(failure_of([&] { gemini::write_request(kService, image, {}); }).sqlstate, "22023");
}

// ---------------------------------------------------------------- read_response

TEST(ProtocolGemini, ReadsAResponse) {
    chat::Response r = gemini::read_response(kService, R"({
      "candidates": [{"content": {"role": "model", "parts": [
          {"text": "pondering", "thought": true},
          {"text": "It is "}, {"text": "sunny."},
          {"functionCall": {"name": "weather", "args": {"city": "Paris"}},
           "thoughtSignature": "s1"},
          {"functionCall": {"name": "time", "id": "own-id"}}]},
        "finishReason": "STOP", "index": 0},
        {"content": {"parts": [{"text": "second candidate"}]}, "index": 1}],
      "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                        "thoughtsTokenCount": 3, "totalTokenCount": 18},
      "modelVersion": "gemini-2.5-flash-001", "responseId": "r1"})");
    EXPECT_EQ(r.id, "r1");
    EXPECT_EQ(r.model, "gemini-2.5-flash-001");
    ASSERT_EQ(r.content.size(), 3u);
    EXPECT_EQ(r.content[0].text, "It is sunny.");
    EXPECT_EQ(r.content[1].kind, Block::Kind::kToolUse);
    EXPECT_EQ(r.content[1].tool_id, "call_0");
    EXPECT_EQ(r.content[1].tool_name, "weather");
    EXPECT_EQ(r.content[1].input, j(R"({"city":"Paris"})"));
    EXPECT_EQ(r.content[1].signature, "s1");
    EXPECT_EQ(r.content[2].tool_id, "own-id");
    EXPECT_EQ(r.content[2].input, json::object());
    EXPECT_EQ(r.stop_reason, chat::StopReason::kToolUse);
    EXPECT_TRUE(r.usage.present);
    EXPECT_EQ(r.usage.prompt_tokens, 10);
    EXPECT_EQ(r.usage.completion_tokens, 8);  // thinking is output
    EXPECT_EQ(r.usage.total_tokens, 18);
}

TEST(ProtocolGemini, ReadsFinishReasons) {
    auto reason = [](const char *finish) {
        return gemini::read_response(
                   kService, std::string(R"({"candidates":[{"content":{"parts":[{"text":"x"}]},
                                            "finishReason":")") +
                                 finish + "\"}]}")
            .stop_reason;
    };
    EXPECT_EQ(reason("STOP"), chat::StopReason::kEndTurn);
    EXPECT_EQ(reason("MAX_TOKENS"), chat::StopReason::kMaxTokens);
    for (const char *filtered : {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"})
        EXPECT_EQ(reason(filtered), chat::StopReason::kContentFilter) << filtered;
    EXPECT_EQ(reason("OTHER"), chat::StopReason::kOther);
    EXPECT_EQ(reason("MALFORMED_FUNCTION_CALL"), chat::StopReason::kOther);
}

TEST(ProtocolGemini, ReadsABlockedPromptAndFillsMissingIds) {
    chat::Response r =
        gemini::read_response(kService, R"({"promptFeedback":{"blockReason":"SAFETY"},
                      "usageMetadata":{"promptTokenCount":4,"totalTokenCount":4}})");
    EXPECT_TRUE(r.content.empty());
    EXPECT_EQ(r.stop_reason, chat::StopReason::kContentFilter);
    EXPECT_EQ(r.model, "gemini-2.5-flash");
    EXPECT_EQ(r.id.rfind("chatcmpl-", 0), 0u);
    EXPECT_EQ(r.usage.prompt_tokens, 4);
    EXPECT_EQ(r.usage.total_tokens, 4);
}

TEST(ProtocolGemini, RefusesMalformedResponsesWithPI400) {
    for (const char *body :
         {"not json", "[]", "{}", R"({"candidates": []})",
          R"({"error": {"code": 400, "message": "bad g-key", "status": "X"}})"}) {
        Failure f = failure_of([&] { gemini::read_response(kService, body); });
        EXPECT_EQ(f.sqlstate, "PI400") << body;
        EXPECT_EQ(f.message.find("g-key"), std::string::npos) << f.message;
        EXPECT_EQ(f.detail.find("g-key"), std::string::npos) << f.detail;
    }
}

TEST(ProtocolGemini, UsageSaturates) {
    chat::Response r =
        gemini::read_response(kService, R"({"candidates":[{"content":{"parts":[{"text":"x"}]}}],
                      "usageMetadata":{"promptTokenCount":1,
                                       "candidatesTokenCount":9223372036854775807,
                                       "thoughtsTokenCount":9223372036854775807}})");
    EXPECT_EQ(r.usage.completion_tokens, 9223372036854775807LL);
    EXPECT_EQ(r.usage.total_tokens, 9223372036854775807LL);
}

// ---------------------------------------------------------------- StreamReader

// A recorded stream, with Google's \r\n\r\n between events, a thought, a function call and usage
// on the last event.
const std::string kStream =
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hmm\",\"thought\":true}],"
    "\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":7,"
    "\"totalTokenCount\":7},\"modelVersion\":\"gemini-2.5-flash-001\",\"responseId\":\"r1\"}"
    "\r\n\r\n"
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Héllo\"}],\"role\":\"model\"},"
    "\"index\":0}],\"modelVersion\":\"gemini-2.5-flash-001\",\"responseId\":\"r1\"}\r\n\r\n"
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" world\"}],\"role\":\"model\"},"
    "\"index\":0}],\"modelVersion\":\"gemini-2.5-flash-001\",\"responseId\":\"r1\"}\r\n\r\n"
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\","
    "\"args\":{\"city\":\"Paris\"}},\"thoughtSignature\":\"s1\"}],\"role\":\"model\"},"
    "\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":7,"
    "\"candidatesTokenCount\":5,\"thoughtsTokenCount\":3,\"totalTokenCount\":15},"
    "\"modelVersion\":\"gemini-2.5-flash-001\",\"responseId\":\"r1\"}\r\n\r\n";

// Events as comparable text.
std::string show(const std::vector<Event> &events) {
    std::string s;
    for (const Event &e : events) {
        // A generated id is random: only its form is compared.
        std::string id = e.id.rfind("chatcmpl-", 0) == 0 ? "chatcmpl-*" : e.id;
        s += std::to_string(static_cast<int>(e.kind)) + " i=" + std::to_string(e.index) +
             " id=" + id + " model=" + e.model + " text=" + e.text +
             " block=" + std::to_string(static_cast<int>(e.block.kind)) + "/" + e.block.tool_id +
             "/" + e.block.tool_name + "/" + e.block.signature +
             " stop=" + std::to_string(static_cast<int>(e.stop_reason)) +
             " usage=" + std::to_string(e.usage.present) + ":" +
             std::to_string(e.usage.prompt_tokens) + "," +
             std::to_string(e.usage.completion_tokens) + "," +
             std::to_string(e.usage.total_tokens) + " error=" + std::to_string(e.error.status) +
             "/" + e.error.type + "/" + e.error.message + "\n";
    }
    return s;
}

std::vector<Event> read_stream(const std::vector<std::string_view> &pieces,
                               const ServiceEndpoint &s = kService) {
    gemini::StreamReader reader(s);
    std::vector<Event> out;
    for (std::string_view p : pieces)
        reader.feed(p, out);
    reader.finish(out);
    return out;
}

// The events of a stream fed whole, split at every point, and byte by byte: all the same.
std::vector<Event> read_every_way(const std::string &stream) {
    std::vector<Event> whole = read_stream({stream});
    std::string expected = show(whole);
    for (std::size_t at = 0; at <= stream.size(); ++at) {
        std::string_view v(stream);
        EXPECT_EQ(show(read_stream({v.substr(0, at), v.substr(at)})), expected)
            << "split at " << at;
    }
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < stream.size(); ++i)
        bytes.push_back(std::string_view(stream).substr(i, 1));
    EXPECT_EQ(show(read_stream(bytes)), expected) << "byte by byte";
    return whole;
}

TEST(ProtocolGemini, StreamReaderReadsARecordedStream) {
    std::vector<Event> events = read_every_way(kStream);
    ASSERT_EQ(events.size(), 11u) << show(events);
    EXPECT_EQ(events[0].kind, Event::Kind::kStart);
    EXPECT_EQ(events[0].id, "r1");
    EXPECT_EQ(events[0].model, "gemini-2.5-flash-001");
    EXPECT_EQ(events[0].usage.prompt_tokens, 7);
    EXPECT_EQ(events[1].kind, Event::Kind::kBlockStart);
    EXPECT_EQ(events[1].index, 0u);
    EXPECT_EQ(events[1].block.kind, Block::Kind::kText);
    EXPECT_EQ(events[2].kind, Event::Kind::kTextDelta);
    EXPECT_EQ(events[2].text, "Héllo");
    EXPECT_EQ(events[3].text, " world");
    EXPECT_EQ(events[4].kind, Event::Kind::kBlockStop);
    EXPECT_EQ(events[4].index, 0u);
    EXPECT_EQ(events[5].kind, Event::Kind::kBlockStart);
    EXPECT_EQ(events[5].index, 1u);
    EXPECT_EQ(events[5].block.kind, Block::Kind::kToolUse);
    EXPECT_EQ(events[5].block.tool_id, "call_0");
    EXPECT_EQ(events[5].block.tool_name, "weather");
    EXPECT_EQ(events[5].block.signature, "s1");
    EXPECT_EQ(events[6].kind, Event::Kind::kToolInputDelta);
    EXPECT_EQ(events[6].index, 1u);
    EXPECT_EQ(json::parse(events[6].text), j(R"({"city":"Paris"})"));
    EXPECT_EQ(events[7].kind, Event::Kind::kBlockStop);
    EXPECT_EQ(events[7].index, 1u);
    EXPECT_EQ(events[8].kind, Event::Kind::kStop);
    EXPECT_EQ(events[8].stop_reason, chat::StopReason::kToolUse);
    EXPECT_EQ(events[9].kind, Event::Kind::kUsage);
    EXPECT_EQ(events[9].usage.prompt_tokens, 7);
    EXPECT_EQ(events[9].usage.completion_tokens, 8);
    EXPECT_EQ(events[9].usage.total_tokens, 15);
    EXPECT_EQ(events[10].kind, Event::Kind::kEnd);
}

TEST(ProtocolGemini, StreamReaderEndsWithEnd) {
    std::vector<Event> events = read_stream({kStream});
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind, Event::Kind::kEnd);
}

TEST(ProtocolGemini, StreamReaderTakesPlainNewlinesAndAMissingLastBlankLine) {
    std::string lf =
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\n\n"
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},"
        "\"finishReason\":\"MAX_TOKENS\"}]}";
    std::vector<Event> events = read_every_way(lf);
    ASSERT_EQ(events.size(), 7u) << show(events);
    EXPECT_EQ(events[0].model, "gemini-2.5-flash");  // the service's when Gemini names none
    EXPECT_EQ(events[0].id.rfind("chatcmpl-", 0), 0u);
    EXPECT_EQ(events[2].text, "a");
    EXPECT_EQ(events[3].text, "b");
    EXPECT_EQ(events[4].kind, Event::Kind::kBlockStop);
    EXPECT_EQ(events[5].kind, Event::Kind::kStop);
    EXPECT_EQ(events[5].stop_reason, chat::StopReason::kMaxTokens);
    EXPECT_EQ(events[6].kind, Event::Kind::kEnd);  // no usage reported: no kUsage
}

TEST(ProtocolGemini, StreamReaderErrorChunk) {
    std::string stream =
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\n"
        "data: {\"error\":{\"code\":429,\"message\":\"quota for g-key\",\"status\":"
        "\"RESOURCE_EXHAUSTED\"}}\r\n\r\n"
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"ignored\"}]}}]}\r\n\r\n";
    std::vector<Event> events = read_every_way(stream);
    ASSERT_EQ(events.size(), 4u) << show(events);
    EXPECT_EQ(events[3].kind, Event::Kind::kError);
    EXPECT_EQ(events[3].error.status, 429);
    EXPECT_EQ(events[3].error.type, "RESOURCE_EXHAUSTED");
    EXPECT_EQ(events[3].error.message, "quota for [redacted]");
}

TEST(ProtocolGemini, StreamReaderMalformedAndEmptyStreams) {
    std::vector<Event> bad = read_every_way("data: {not json\r\n\r\n");
    ASSERT_EQ(bad.size(), 1u);
    EXPECT_EQ(bad[0].kind, Event::Kind::kError);
    EXPECT_EQ(bad[0].error.message, "service \"gem\" sent a malformed stream event");

    std::vector<Event> none = read_stream({""});
    ASSERT_EQ(none.size(), 1u);
    EXPECT_EQ(none[0].kind, Event::Kind::kError);
    EXPECT_EQ(none[0].error.message, "service \"gem\" ended the stream without an answer");
}

TEST(ProtocolGemini, StreamReaderBlockedPrompt) {
    std::vector<Event> events = read_every_way(
        "data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},"
        "\"usageMetadata\":{\"promptTokenCount\":3,\"totalTokenCount\":3}}\r\n\r\n");
    ASSERT_EQ(events.size(), 4u) << show(events);
    EXPECT_EQ(events[0].kind, Event::Kind::kStart);
    EXPECT_EQ(events[1].kind, Event::Kind::kStop);
    EXPECT_EQ(events[1].stop_reason, chat::StopReason::kContentFilter);
    EXPECT_EQ(events[2].kind, Event::Kind::kUsage);
    EXPECT_EQ(events[3].kind, Event::Kind::kEnd);
}

TEST(ProtocolGemini, StreamReaderOversizedEvent) {
    gemini::StreamReader reader(kService);
    std::vector<Event> out;
    std::string huge = "data: \"" + std::string(SseParser::kDefaultMaxEventBytes + 10, 'x');
    reader.feed(huge, out);
    reader.finish(out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].kind, Event::Kind::kError);
}

// ---------------------------------------------------------------- round trips

TEST(ProtocolGemini, RequestRoundTrip) {
    chat::Request sent = sample_request();
    sent.stream = true;
    translate::UpstreamRequest up = gemini::write_request(kService, sent, {});
    chat::Request back = gemini::read_request(json::parse(up.body), true);
    EXPECT_EQ(back.system, sent.system);
    EXPECT_EQ(back.max_tokens, sent.max_tokens);
    EXPECT_EQ(back.temperature, sent.temperature);
    EXPECT_EQ(back.top_p, sent.top_p);
    EXPECT_EQ(back.top_k, sent.top_k);
    EXPECT_EQ(back.stop, sent.stop);
    EXPECT_EQ(back.seed, sent.seed);
    EXPECT_EQ(back.format.kind, sent.format.kind);
    EXPECT_EQ(back.format.schema, sent.format.schema);
    ASSERT_EQ(back.tools.size(), 2u);
    EXPECT_EQ(back.tools[0].parameters, sent.tools[0].parameters);
    EXPECT_EQ(back.tools[0].description, sent.tools[0].description);
    EXPECT_EQ(back.tool_choice->mode, chat::ToolChoice::Mode::kNamed);
    EXPECT_EQ(back.tool_choice->name, "weather");
    // Consecutive user messages came back as one Gemini turn.
    ASSERT_EQ(back.messages.size(), 3u);
    EXPECT_EQ(back.messages[0].content[1].image_url, sent.messages[0].content[1].image_url);
    EXPECT_EQ(back.messages[0].content[2].image_url, sent.messages[0].content[2].image_url);
    const Block &call = back.messages[1].content[0];
    EXPECT_EQ(call.tool_name, "weather");
    EXPECT_EQ(call.input, sent.messages[1].content[0].input);
    EXPECT_EQ(call.signature, "sig");
    const auto &results = back.messages[2].content;
    ASSERT_EQ(results.size(), 4u);
    for (int i = 0; i < 3; ++i)
        EXPECT_EQ(results[i].tool_id, call.tool_id);
    EXPECT_EQ(results[0].text, "sunny");
    EXPECT_EQ(results[1].text, R"({"temp":21})");
    EXPECT_EQ(results[2].text, "down");
    EXPECT_TRUE(results[2].is_error);
    EXPECT_EQ(results[3].text, "And tomorrow?");

    // And the body written again from what was read is the same body.
    EXPECT_EQ(gemini::write_request(kService, back, {}).body, up.body);
}

TEST(ProtocolGemini, ResponseRoundTrip) {
    chat::Response sent = sample_response();
    chat::Response back = gemini::read_response(kService, gemini::write_response(sent).dump());
    EXPECT_EQ(back.id, sent.id);
    EXPECT_EQ(back.model, sent.model);
    ASSERT_EQ(back.content.size(), 2u);
    EXPECT_EQ(back.content[0].text, "Hello");
    EXPECT_EQ(back.content[1].tool_id, "toolu_1");  // the id travels in functionCall.id
    EXPECT_EQ(back.content[1].input, sent.content[1].input);
    EXPECT_EQ(back.stop_reason, chat::StopReason::kToolUse);
    EXPECT_EQ(back.usage.total_tokens, 15);
}

TEST(ProtocolGemini, StreamRoundTrip) {
    // Gemini's stream read and written again, then read: the same events.
    std::vector<Event> first = read_stream({kStream});
    gemini::StreamWriter w;
    std::string written;
    for (const Event &e : first)
        w.write(e, written);
    EXPECT_EQ(show(read_every_way(written)), show(first));

    // And the form's events through the writer and back keep their meaning (deltas may merge).
    gemini::StreamWriter w2;
    std::string out;
    for (const Event &e : sample_events())
        w2.write(e, out);
    std::vector<Event> back = read_stream({out});
    ASSERT_EQ(back.size(), 11u) << show(back);
    EXPECT_EQ(back[0].id, "msg_1");
    EXPECT_EQ(back[2].text, "Hel");
    EXPECT_EQ(back[3].text, "lo");
    EXPECT_EQ(back[5].block.tool_id, "toolu_1");
    EXPECT_EQ(json::parse(back[6].text), j(R"({"city":"Paris"})"));
    EXPECT_EQ(back[8].stop_reason, chat::StopReason::kToolUse);
    EXPECT_EQ(back[9].usage.total_tokens, 11);
}

}  // namespace
