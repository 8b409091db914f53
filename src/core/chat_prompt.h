// inference.chat's plain-text call: the OpenAI chat request a prompt and its options stand for,
// and the text of the answer.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "protocol.h"

namespace pgi::translate {

// The OpenAI request behind inference.chat(service, prompt, options). Options: system (text),
// max_tokens (positive integer), temperature and top_p (numbers), stop (text or array of text),
// seed (integer). Anything else, or a wrong type, is a 22023 error naming the valid options.
nlohmann::json chat_request_from_prompt(const std::string &prompt, const nlohmann::json &options);

// The text of the first choice, for inference.chat. A reply made only of tool calls cannot be
// returned as text: that is a 0A000 error pointing to inference.chat_completion. A reply with no
// choices is a PI400 error; a choice with null content gives "".
std::string chat_text(const ServiceEndpoint &service, const nlohmann::json &openai_response);

}  // namespace pgi::translate
