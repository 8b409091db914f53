// redact(): secrets out of upstream text (redact.h). Up to three secrets and a kept name come
// from the input, the rest is the text. Nothing of a secret survives but where it cannot be told
// from what is kept or from the replacement itself, and the scrub always ends.
#include "redact.h"

#include "fuzz_common.h"

using namespace pgi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    std::vector<std::string> secrets(in.ConsumeIntegralInRange<std::size_t>(0, 3));
    for (std::string &s : secrets)
        s = in.ConsumeRandomLengthString(16);
    const std::string keep = in.ConsumeRandomLengthString(16);
    const std::string text = in.ConsumeRemainingBytesAsString();
    const std::vector<std::string_view> views(secrets.begin(), secrets.end());
    const std::string out = redact(
        text, views,
        keep.empty() ? std::vector<std::string_view>{} : std::vector<std::string_view>{keep});
    for (const std::string &s : secrets) {
        if (s.empty() || std::string(kRedacted).find(s) != std::string::npos ||
            s.find_first_of("[]") != std::string::npos || keep.find(s) != std::string::npos)
            continue;
        // Another secret's replacement can leave text on either side that spells this one
        // only together with it; with brackets absent from s, that cannot happen.
        FUZZ_CHECK(out.find(s) == std::string::npos);
    }
    // Nothing to remove: the text is unchanged.
    bool any = false;
    for (const std::string &s : secrets)
        any = any || (!s.empty() && text.find(s) != std::string::npos);
    if (!any && text.find("...") == std::string::npos && text.find("***") == std::string::npos &&
        text.find("\xe2\x80\xa6") == std::string::npos)
        FUZZ_CHECK(out == text);
    return 0;
}
