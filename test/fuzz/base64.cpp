// Base64 and base64 float vectors (base64.h), both ways: whatever decodes re-encodes to the same
// text (padding restored), and whatever is encoded decodes back bit for bit.
#include "base64.h"

#include <cstring>

#include "fuzz_common.h"

using namespace pgi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string input(reinterpret_cast<const char *>(data), size);

    // Bytes -> text -> bytes.
    const std::string encoded = base64::encode(input);
    FUZZ_CHECK(encoded.size() == (size + 2) / 3 * 4);
    FUZZ_CHECK(encoded.find_first_not_of(
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
               std::string::npos);
    const std::optional<std::string> decoded = base64::decode(encoded);
    FUZZ_CHECK(decoded && *decoded == input);
    // Padding may be left off.
    const std::string bare = encoded.substr(0, encoded.find('='));
    const std::optional<std::string> from_bare = base64::decode(bare);
    FUZZ_CHECK(from_bare && *from_bare == input);

    // Text -> bytes -> text: an accepted text is the canonical encoding, maybe without padding.
    if (const std::optional<std::string> bytes = base64::decode(input)) {
        const std::string again = base64::encode(*bytes);
        FUZZ_CHECK(again == input || again.substr(0, again.find('=')) == input);
    }

    // Floats -> text -> floats, bit for bit; and text -> floats only in whole floats.
    std::vector<float> floats(size / 4);
    if (!floats.empty())
        std::memcpy(floats.data(), data, floats.size() * 4);
    const std::optional<std::vector<float>> back =
        base64::decode_floats(base64::encode_floats(floats));
    FUZZ_CHECK(back && back->size() == floats.size());
    FUZZ_CHECK(floats.empty() || std::memcmp(back->data(), floats.data(), floats.size() * 4) == 0);
    if (const std::optional<std::vector<float>> read = base64::decode_floats(input)) {
        FUZZ_CHECK(decoded.has_value());
        const std::optional<std::string> raw = base64::decode(input);
        FUZZ_CHECK(raw && raw->size() == read->size() * 4);
        FUZZ_CHECK(base64::encode_floats(*read) == base64::encode(*raw));
    }
    return 0;
}
