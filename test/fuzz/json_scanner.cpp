// The hand-written JSON scanner of translate_util.h (top_level_members, with_members,
// array_elements) and the in-place usage readers built on it, against nlohmann's parser. The
// scanner is what pins an OpenAI upstream's model to the service's: with_members must never hand
// on a body whose "model" (as any JSON parser reads it) is the caller's.
#include <nlohmann/json.hpp>

#include "fuzz_common.h"
#include "translate.h"
#include "translate_util.h"

using nlohmann::json;
using namespace pgi;
namespace detail = pgi::translate::detail;

namespace {

// nlohmann's parser ends the input at a NUL byte and ignores what follows, which the scanner
// (rightly) does not: text holding a NUL is not taken for JSON here.
json parse(std::string_view text) {
    if (text.find('\0') != std::string_view::npos)
        return json(json::value_t::discarded);
    return json::parse(text.begin(), text.end(), nullptr, false);
}

void check_members(std::string_view text, const json &j) {
    static constexpr std::string_view kKeys[] = {"model", "usage", "choices", "stream_options"};
    std::string_view values[4];
    const bool ok = detail::top_level_members(text, kKeys, values, 4);
    if (!j.is_object())
        return;
    FUZZ_CHECK(ok);
    // Keys written with escapes are not recognised (documented); without any, the scanner
    // finds exactly what the parser does.
    const bool escapes = text.find('\\') != std::string_view::npos;
    for (std::size_t k = 0; k < 4; ++k) {
        const std::string key(kKeys[k]);
        if (!values[k].empty()) {
            FUZZ_CHECK(j.contains(key));
            if (!escapes)
                FUZZ_CHECK(parse(values[k]) == j[key]);
        } else if (!escapes) {
            FUZZ_CHECK(!j.contains(key));
        }
    }
}

void check_pinning(std::string_view text, const json &j, bool with_stream_options) {
    const detail::MemberEdit edits[] = {{"model", "\"pinned\""},
                                        {"stream_options", "{\"include_usage\":true}"}};
    const std::size_t count = with_stream_options ? 2 : 1;
    const std::optional<std::string> edited = detail::with_members(text, edits, count);
    if (!edited)
        return;  // the caller then serialises its own document
    const json e = parse(*edited);
    if (e.is_discarded()) {
        FUZZ_CHECK(!j.is_object());  // a valid object stays valid
        return;
    }
    // Whatever went in, a body that parses has the service's model.
    if (e.is_object())
        FUZZ_CHECK(e.value("model", json()) == "pinned");
    if (!j.is_object())
        return;
    FUZZ_CHECK(e.is_object());
    if (with_stream_options)
        FUZZ_CHECK(e["stream_options"] == json({{"include_usage", true}}));
    for (const auto &[key, value] : j.items()) {
        if (key != "model" && !(with_stream_options && key == "stream_options"))
            FUZZ_CHECK(e.contains(key) && e[key] == value);
    }
    FUZZ_CHECK(e.size() == j.size() + !j.contains("model") +
                               (with_stream_options && !j.contains("stream_options")));
}

void check_elements(std::string_view text, const json &j) {
    std::vector<std::string_view> elements;
    const bool ok = detail::array_elements(text, elements);
    if (!j.is_array())
        return;
    FUZZ_CHECK(ok && elements.size() == j.size());
    for (std::size_t i = 0; i < elements.size(); ++i)
        FUZZ_CHECK(parse(elements[i]) == j[i]);
}

void check_usage(std::string_view text, const json &j) {
    const translate::Usage in_place = translate::usage_from_openai_body(text);
    if (!j.is_object() || text.find('\\') != std::string_view::npos)
        return;
    const json *usage = detail::member(j, "usage");
    // Counts are compared where both readers are exact: integers.
    if (usage == nullptr || !usage->is_object()) {
        FUZZ_CHECK(!in_place.present);
        return;
    }
    FUZZ_CHECK(in_place.present);
    for (const char *key : {"prompt_tokens", "completion_tokens", "total_tokens"}) {
        const json *v = detail::member(*usage, key);
        // Past long long (an unsigned 2^64 - 1) the two readers are documented only as not
        // failing.
        if (v != nullptr &&
            (!v->is_number_integer() ||
             (v->is_number_unsigned() && v->get<unsigned long long>() > 9223372036854775807ull)))
            return;
    }
    const translate::Usage dom = detail::usage_from_openai(*usage);
    FUZZ_CHECK(dom.prompt_tokens == in_place.prompt_tokens);
    FUZZ_CHECK(dom.completion_tokens == in_place.completion_tokens);
    FUZZ_CHECK(dom.total_tokens == in_place.total_tokens);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    const bool with_stream_options = data[0] & 1;
    const std::string_view text(reinterpret_cast<const char *>(data) + 1, size - 1);
    const json j = parse(text);
    check_members(text, j);
    check_pinning(text, j, with_stream_options);
    check_elements(text, j);
    check_usage(text, j);
    (void)detail::usage_from_openai_text(text);
    return 0;
}
