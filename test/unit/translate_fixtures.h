// What the chat, embeddings and rerank translation suites share: capturing the pgi::Error a
// request throws, and the one Anthropic endpoint they need.
#pragma once

#include "error_capture.h"
#include "protocol.h"

// Anthropic has chat only, so one endpoint serves the chat tests and the embeddings and rerank
// tests that check it is refused.
const pgi::ServiceEndpoint kAnthropic{
    "claude", "claude-sonnet-4-5", "http://up:2", pgi::Protocol::kAnthropicV1, "sk-a", false,
    nullptr};
