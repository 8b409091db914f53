// The Gemini dialect, end to end in one process: a Gemini caller of a Gemini service (its body
// forwarded as it is to the service model's route), of an OpenAI and an Anthropic service
// (translated both ways, streams included), the ledger's tokens, keys from x-goog-api-key and
// ?key=, model objects, and errors in Google's shape with Google's statuses.
#include "gateway_harness.h"

namespace {

class GeminiDialectTest : public GatewayTest {
  protected:
    // The @google/genai SDK's call: its key in x-goog-api-key, a JSON body as text.
    Reply generate(const std::string &service, const std::string &body, bool stream = false,
                   std::vector<std::string> headers = {}) {
        CallOptions o;
        o.method = "POST";
        o.key = false;
        o.body = body;
        o.headers = {std::string("x-goog-api-key: ") + kGatewayKey,
                     "Content-Type: application/json"};
        for (auto &h : headers)
            o.headers.push_back(h);
        std::string path = "/v1beta/models/" + service +
                           (stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
        return call(port, path, o);
    }

    static std::string hello() {
        return R"({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],)"
               R"( "generationConfig": {"maxOutputTokens": 100}})";
    }

    // The data of each SSE event, in order.
    static std::vector<json> events(const std::string &body) {
        std::vector<json> out;
        for (size_t at = body.find("data: "); at != std::string::npos;
             at = body.find("data: ", at + 1)) {
            size_t end = body.find("\r\n\r\n", at);
            if (end == std::string::npos)
                end = body.find("\n\n", at);
            out.push_back(json::parse(body.substr(at + 6, end - at - 6), nullptr, false));
        }
        return out;
    }

    static void expect_google_error(const Reply &r, long status, const char *name) {
        EXPECT_EQ(r.status, status) << r.body;
        json j = r.js();
        EXPECT_EQ(j["error"]["code"], status) << r.body;
        EXPECT_EQ(j["error"]["status"], name) << r.body;
        EXPECT_TRUE(j["error"]["message"].is_string()) << r.body;
    }

    Finished last_finished() {
        EXPECT_TRUE(eventually([&] { return !governor.all().empty(); }));
        auto all = governor.all();
        return all.empty() ? Finished{} : all.back();
    }
};

TEST_F(GeminiDialectTest, GeminiServiceGetsTheCallersBody) {
    start();
    const std::string body =
        R"({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "safetySettings": )"
        R"([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}], "x_new": 1})";
    Reply r = generate("gemini", body);
    ASSERT_EQ(r.status, 200) << r.body;
    Recorded up = upstream->last();
    EXPECT_EQ(up.path, "/v1beta/models/gemini-up:generateContent");
    EXPECT_EQ(up.body, body);
    EXPECT_NE(r.js()["candidates"].size(), 0u) << r.body;
    EXPECT_EQ(last_finished().status, 200);
}

TEST_F(GeminiDialectTest, OpenAiServiceIsTranslated) {
    start();
    Reply r = generate("chat", R"({"systemInstruction": {"parts": [{"text": "Be brief."}]},)"
                               R"( "contents": [{"role": "user", "parts": [{"text": "hi"}]}],)"
                               R"( "generationConfig": {"maxOutputTokens": 50, "topP": 0.5}})");
    ASSERT_EQ(r.status, 200) << r.body;
    Recorded up = upstream->last();
    EXPECT_EQ(up.path, "/v1/chat/completions");
    json sent = json::parse(up.body);
    EXPECT_EQ(sent["model"], "gpt-up");
    EXPECT_EQ(sent["messages"][0], json({{"role", "system"}, {"content", "Be brief."}}));
    EXPECT_EQ(sent["top_p"], 0.5);
    json j = r.js();
    EXPECT_EQ(j["candidates"][0]["content"]["parts"][0]["text"], "hello world") << r.body;
    EXPECT_EQ(j["candidates"][0]["finishReason"], "STOP");
    EXPECT_EQ(j["usageMetadata"]["promptTokenCount"], 3);
    EXPECT_EQ(j["usageMetadata"]["candidatesTokenCount"], 2);
    Finished f = last_finished();
    EXPECT_EQ(f.usage.prompt_tokens, 3);
    EXPECT_EQ(f.usage.completion_tokens, 2);
}

TEST_F(GeminiDialectTest, AnthropicServiceStreamBecomesGeminiEvents) {
    start();
    Reply r = generate("claude", hello(), true);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("content-type"), "text/event-stream");
    EXPECT_EQ(upstream->last().path, "/v1/messages");
    EXPECT_EQ(json::parse(upstream->last().body)["stream"], true);
    std::string text;
    json last;
    for (const json &e : events(r.body)) {
        ASSERT_TRUE(e.is_object()) << r.body;
        for (const json &part : e["candidates"][0]["content"]["parts"])
            text += part.value("text", "");
        last = e;
    }
    EXPECT_EQ(text, "hello world");
    EXPECT_EQ(last["candidates"][0]["finishReason"], "STOP") << r.body;
    EXPECT_EQ(last["usageMetadata"]["candidatesTokenCount"], 2) << r.body;
    Finished f = last_finished();
    EXPECT_EQ(f.status, 200);
    EXPECT_EQ(f.usage.prompt_tokens, 3);
    EXPECT_EQ(f.usage.completion_tokens, 2);
}

TEST_F(GeminiDialectTest, KeysFromTheQueryAndEveryHeader) {
    start();
    CallOptions o;
    o.method = "POST";
    o.key = false;
    o.body = hello();
    EXPECT_EQ(
        call(port, std::string("/v1beta/models/chat:generateContent?key=") + kGatewayKey, o).status,
        200);
    o.headers = {std::string("X-API-Key: ") + kGatewayKey};
    EXPECT_EQ(call(port, "/v1beta/models/chat:generateContent", o).status, 200);
    o.key = true;
    o.headers.clear();
    EXPECT_EQ(call(port, "/v1beta/models/chat:generateContent", o).status, 200);
    // The caller's key never reaches the upstream, in the query or anywhere else.
    Recorded up = upstream->last();
    EXPECT_EQ(up.path.find(kGatewayKey), std::string::npos);
    EXPECT_EQ(up.body.find(kGatewayKey), std::string::npos);
}

TEST_F(GeminiDialectTest, ErrorsInGoogleShape) {
    start();
    expect_google_error(generate("no-such-service", hello()), 404, "NOT_FOUND");
    expect_google_error(generate("chat", "{not json"), 400, "INVALID_ARGUMENT");
    // What the form cannot carry crossing protocols: refused before any upstream call.
    expect_google_error(
        generate("chat", R"({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],)"
                         R"( "generationConfig": {"candidateCount": 2}})"),
        400, "INVALID_ARGUMENT");
    CallOptions o;
    o.method = "POST";
    o.key = false;
    o.body = hello();
    o.headers = {"x-goog-api-key: not-a-key"};
    expect_google_error(call(port, "/v1beta/models/chat:generateContent", o), 401,
                        "UNAUTHENTICATED");
    o.headers.clear();
    expect_google_error(call(port, "/v1beta/models/chat:generateContent", o), 401,
                        "UNAUTHENTICATED");
    // A method the gateway does not serve on a model.
    EXPECT_EQ(generate("chat", hello(), false, {}).status, 200);
    o.headers = {std::string("x-goog-api-key: ") + kGatewayKey};
    EXPECT_EQ(call(port, "/v1beta/models/chat:predict", o).status, 404);
}

TEST_F(GeminiDialectTest, ModelsInGoogleShape) {
    start();
    CallOptions o;
    o.key = false;
    o.headers = {std::string("x-goog-api-key: ") + kGatewayKey};
    Reply list = call(port, "/v1beta/models", o);
    ASSERT_EQ(list.status, 200) << list.body;
    const json models = list.js()["models"];
    std::vector<std::string> names;
    for (const json &m : models)
        names.push_back(m["name"]);
    EXPECT_NE(std::find(names.begin(), names.end(), "models/chat"), names.end()) << list.body;
    EXPECT_EQ(models[0]["supportedGenerationMethods"],
              json({"generateContent", "streamGenerateContent", "countTokens", "embedContent",
                    "batchEmbedContents"}));
    EXPECT_NE(std::find(names.begin(), names.end(), "models/claude"), names.end());
    Reply one = call(port, "/v1beta/models/claude", o);
    ASSERT_EQ(one.status, 200) << one.body;
    EXPECT_EQ(one.js()["name"], "models/claude");
    expect_google_error(call(port, "/v1beta/models/nope", o), 404, "NOT_FOUND");
    // The SDK lists on /v1/models too, with its own headers: Google's shape there as well.
    Reply v1 = call(port, "/v1/models", o);
    ASSERT_EQ(v1.status, 200) << v1.body;
    EXPECT_TRUE(v1.js().contains("models")) << v1.body;
    Reply v1one = call(port, "/v1/models/chat", o);
    EXPECT_EQ(v1one.js()["name"], "models/chat") << v1one.body;
    // An OpenAI caller still gets OpenAI's.
    EXPECT_EQ(call(port, "/v1/models/chat").js()["object"], "model");
}

}  // namespace
