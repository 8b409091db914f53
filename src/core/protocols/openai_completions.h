// OpenAI's legacy completions (POST /v1/completions) as a caller dialect: vLLM, KServe and OME
// users still call it. An OpenAI-protocol service serves it itself, so such a request passes
// through to its /v1/completions with only "model" set (and the usage chunk asked for a
// stream). For an Anthropic or Gemini service the prompt becomes a one-message chat and the
// answer a text_completion again.
//
// What crossing cannot carry is refused with 0A000: several prompts (each is its own completion),
// token-id prompts, n or best_of above 1, echo, logprobs and suffix.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "chat_form.h"
#include "protocol.h"
#include "translate.h"

namespace pgi::protocols::openai_completions {

// ---- caller side (a call to another protocol) ----

// The prompt as one user message; max_tokens, temperature, top_p, stop, seed, the penalties,
// user, stream and stream_options.include_usage as the form has them. Bad input is 22023.
chat::Request read_request(const nlohmann::json &body);

// A text_completion with one choice: the answer's text (tool calls cannot be asked for here).
nlohmann::json write_response(const chat::Response &response);

// text_completion chunks as `data:` events, then the usage chunk when asked, then [DONE]; an
// error is `data: {"error":{...}}` with no [DONE] after it.
class StreamWriter {
  public:
    explicit StreamWriter(bool stream_usage) : stream_usage_(stream_usage) {}
    void write(const chat::Event &event, std::string &out);

  private:
    // `data: {"id":...,"object":"text_completion","created":...,"model":...`, every chunk's start.
    void head(std::string &out) const;
    void chunk(std::string &out, std::string_view text, const char *finish_reason);

    bool stream_usage_;
    bool done_ = false;
    std::string id_;
    std::string model_;
    long long created_ = 0;
    chat::StopReason stop_reason_ = chat::StopReason::kEndTurn;
    translate::Usage usage_;
};

// ---- an OpenAI-protocol service ----

// POST {base_url}/v1/completions with the caller's bytes, "model" set to the service's and, for a
// stream, stream_options.include_usage. "stream" must be a boolean (22023).
chat::Passed pass_request(const ServiceEndpoint &service, nlohmann::json &body,
                          std::string_view raw, bool stream_route);

}  // namespace pgi::protocols::openai_completions
