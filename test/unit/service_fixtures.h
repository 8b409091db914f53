// A service of each protocol, for the suites of the dialect modules and the calls built on them
// (the URLs they expect start with these base URLs).
#pragma once

#include "protocol.h"

namespace pgi::test_support {

inline const ServiceEndpoint kOpenAiService{
    "oa",  "gpt-4o-mini", "https://api.openai.test", Protocol::kOpenAiV1, "sk-oa-secret-key-123",
    false, nullptr};
inline const ServiceEndpoint kAnthropicService{"claude",
                                               "claude-sonnet-4-5",
                                               "https://api.anthropic.test",
                                               Protocol::kAnthropicV1,
                                               "sk-ant-secret-key-123",
                                               false,
                                               nullptr};
inline const ServiceEndpoint kGeminiService{"gem",
                                            "gemini-2.0-flash",
                                            "https://gemini.test",
                                            Protocol::kGeminiV1Beta,
                                            "sk-gem-secret-key-123",
                                            false,
                                            nullptr};

}  // namespace pgi::test_support
