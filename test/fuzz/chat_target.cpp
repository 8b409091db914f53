// One chat target per direction and protocol, chosen at build time (CMakeLists.txt): the harness
// is in chat_harness.cpp.
#include "chat_harness.h"

#if defined(PGI_FUZZ_PROTOCOL_OPENAI)
constexpr pgi::Protocol kProtocol = pgi::Protocol::kOpenAiV1;
#elif defined(PGI_FUZZ_PROTOCOL_ANTHROPIC)
constexpr pgi::Protocol kProtocol = pgi::Protocol::kAnthropicV1;
#elif defined(PGI_FUZZ_PROTOCOL_GEMINI)
constexpr pgi::Protocol kProtocol = pgi::Protocol::kGeminiV1Beta;
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pgi::fuzz::PGI_FUZZ_HARNESS(kProtocol, data, size);
    return 0;
}
