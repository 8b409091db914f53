#include "gemini_embeddings.h"

#include <optional>

#include "translate_util.h"

namespace pgi::gemini_embeddings {

namespace {

using nlohmann::json;
namespace detail = translate::detail;

constexpr const char *kHint =
    "An embedContent request looks like {\"content\":{\"parts\":[{\"text\":\"...\"}]}}; "
    "batchEmbedContents takes {\"requests\":[{\"content\":{\"parts\":[{\"text\":\"...\"}]}}]}.";

[[noreturn]] void invalid(const std::string &message) {
    throw Error(sqlstate::kInvalidParameterValue, message, kHint);
}

// The text of one content: its text parts joined by a space.
std::string content_text(const json &request, const std::string &where) {
    const json *content = detail::given(request, "content");
    const json *parts = content != nullptr ? detail::member(*content, "parts") : nullptr;
    if (parts == nullptr || !parts->is_array() || parts->empty())
        invalid(where + ".content needs a non-empty \"parts\" array");
    std::string text;
    for (const json &part : *parts) {
        const json *t = detail::member(part, "text");
        if (t == nullptr || !t->is_string())
            continue;
        if (!text.empty())
            text += ' ';
        text += t->get<std::string>();
    }
    if (text.empty()) {
        throw Error(sqlstate::kFeatureNotSupported, where + ".content has no text to embed",
                    "Only text parts are embedded; give the content a {\"text\": \"...\"} part.");
    }
    return text;
}

std::optional<long long> dimensions_of(const json &request, const std::string &where) {
    const json *d = detail::given(request, "outputDimensionality");
    if (d == nullptr)
        return std::nullopt;
    if (!d->is_number_integer() || d->get<long long>() < 1)
        invalid(where + ".outputDimensionality must be a positive integer");
    return d->get<long long>();
}

std::string model_path(const ServiceEndpoint &service) {
    return "models/" + std::string(detail::gemini_model(service));
}

json values(const std::vector<float> &v) {
    return {{"values", v}};
}

}  // namespace

Call read(const json &body, bool batch) {
    if (!body.is_object())
        invalid("the request must be a JSON object");
    Call call;
    call.batch = batch;
    std::optional<long long> dimensions;
    if (!batch) {
        call.texts.push_back(content_text(body, "the request"));
        dimensions = dimensions_of(body, "the request");
    } else {
        const json *requests = detail::given(body, "requests");
        if (requests == nullptr || !requests->is_array() || requests->empty())
            invalid("batchEmbedContents needs a non-empty \"requests\" array");
        for (std::size_t i = 0; i < requests->size(); ++i) {
            const std::string where = "requests[" + std::to_string(i) + "]";
            const json &r = (*requests)[i];
            if (!r.is_object())
                invalid(where + " must be an object");
            call.texts.push_back(content_text(r, where));
            std::optional<long long> d = dimensions_of(r, where);
            if (i > 0 && d != dimensions) {
                throw Error(sqlstate::kFeatureNotSupported,
                            "the requests of one batch ask for different outputDimensionality",
                            "Send requests of different dimensions in separate batches.");
            }
            dimensions = d;
        }
    }
    if (dimensions)
        call.options["dimensions"] = *dimensions;
    return call;
}

translate::UpstreamRequest request(const ServiceEndpoint &service, const Call &call, json &body) {
    if (service.protocol != Protocol::kGeminiV1Beta)
        return translate::embeddings_request(service, call.texts, call.options, false);
    const std::string model = model_path(service);
    if (call.batch) {
        for (json &r : body["requests"])
            r["model"] = model;
    } else if (body.contains("model")) {
        body["model"] = model;
    }
    return detail::post_json(
        service, "/v1beta/" + model + (call.batch ? ":batchEmbedContents" : ":embedContent"), false,
        detail::serialise(body));
}

std::string answer(const ServiceEndpoint &service, const Call &call, std::string upstream_body,
                   translate::Usage &usage) {
    if (service.protocol == Protocol::kGeminiV1Beta) {
        // Checked like any answer (a vector per input), then passed on as the caller's own.
        json j = detail::parse_upstream_body(service, upstream_body, "embeddings");
        const json *list =
            call.batch ? detail::member(j, "embeddings") : detail::member(j, "embedding");
        if (list == nullptr ||
            (call.batch && (!list->is_array() || list->size() != call.texts.size())))
            detail::bad_response(service, "embeddings", "the body has no embedding for each input");
        usage = {};
        return upstream_body;
    }
    translate::Embeddings e =
        translate::embeddings_response(service, upstream_body, call.texts.size());
    usage = e.usage;
    if (!call.batch)
        return json{{"embedding", values(e.vectors.front())}}.dump();
    json list = json::array();
    for (const std::vector<float> &v : e.vectors)
        list.push_back(values(v));
    return json{{"embeddings", std::move(list)}}.dump();
}

}  // namespace pgi::gemini_embeddings
