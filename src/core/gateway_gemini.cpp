// What the gateway's Gemini dialect needs beyond its protocol module: the model objects of
// GET /v1beta/models and /v1beta/models/{model}, in Google's shape, and the embedding routes
// (embedContent, batchEmbedContents; gemini_embeddings has the translation). A service is a model
// named "models/<service>"; it serves the methods whatever protocol it speaks.
#include <memory>

#include "gateway_internal.h"
#include "gemini_embeddings.h"

namespace pgi::gateway {

using json = nlohmann::json;

namespace {

struct GeminiEmbeddingsExchange : Exchange {
    using Exchange::Exchange;

    gemini_embeddings::Call call;

    void on_done(http::Response &r) override {
        if (!upstream_ok(r)) {
            server.respond_upstream_failure(*this, r);
            return;
        }
        server.respond(*this, 200,
                       gemini_embeddings::answer(*context.service, call, std::move(r.body), usage));
    }
};

}  // namespace

json gemini_model_object(const std::string &name) {
    return json{{"name", "models/" + name},
                {"displayName", name},
                {"description", "pg_inference service " + name},
                {"supportedGenerationMethods",
                 json::array({"generateContent", "streamGenerateContent", "countTokens",
                              "embedContent", "batchEmbedContents"})}};
}

json gemini_model_list(const std::vector<std::string> &names) {
    json models = json::array();
    for (const std::string &name : names)
        models.push_back(gemini_model_object(name));
    return json{{"models", std::move(models)}};
}

void start_gemini_embeddings(Server::Impl &server, RequestContext &&context, json body,
                             bool batch) {
    auto &ex = static_cast<GeminiEmbeddingsExchange &>(
        server.adopt(std::make_unique<GeminiEmbeddingsExchange>(server, std::move(context))));
    ex.begin = [&server, &ex, batch, body = std::move(body)]() mutable {
        ex.call = gemini_embeddings::read(body, batch);
        // The request may edit the body; a route's next target needs it whole.
        json edited = ex.context.route != nullptr ? body : std::move(body);
        server.call_upstream(
            ex, to_http(gemini_embeddings::request(*ex.context.service, ex.call, edited)), false);
    };
    guarded_start(server, ex, ex.begin);
}

}  // namespace pgi::gateway
