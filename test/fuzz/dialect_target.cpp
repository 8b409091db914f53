// One target per caller dialect and direction, chosen at build time (CMakeLists.txt): the
// harness is in dialect_harness.cpp.
#include "dialect_harness.h"

namespace {

const pgi::protocols::Module &dialect() {
#if defined(PGI_FUZZ_DIALECT_ANTHROPIC)
    return pgi::protocols::anthropic_module();
#elif defined(PGI_FUZZ_DIALECT_GEMINI)
    return pgi::protocols::module_for(pgi::Protocol::kGeminiV1Beta);
#elif defined(PGI_FUZZ_DIALECT_RESPONSES)
    return pgi::protocols::responses_module();
#elif defined(PGI_FUZZ_DIALECT_COMPLETIONS)
    return pgi::protocols::completions_module();
#endif
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pgi::fuzz::PGI_FUZZ_HARNESS(dialect(), data, size);
    return 0;
}
