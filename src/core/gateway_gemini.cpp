// What the gateway's Gemini dialect needs beyond its protocol module: the model objects of
// GET /v1beta/models and /v1beta/models/{model}, in Google's shape. A service is a model named
// "models/<service>"; it serves the generate methods whatever protocol it speaks.
#include "gateway_internal.h"

namespace pgi::gateway {

using json = nlohmann::json;

json gemini_model_object(const std::string &name) {
    return json{
        {"name", "models/" + name},
        {"displayName", name},
        {"description", "pg_inference service " + name},
        {"supportedGenerationMethods", json::array({"generateContent", "streamGenerateContent"})}};
}

json gemini_model_list(const std::vector<std::string> &names) {
    json models = json::array();
    for (const std::string &name : names)
        models.push_back(gemini_model_object(name));
    return json{{"models", std::move(models)}};
}

}  // namespace pgi::gateway
