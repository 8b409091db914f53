#include "request_members.h"

#include <climits>
#include <string>

#include "error.h"
#include "translate_util.h"

namespace pgi::protocols {

std::optional<long long> integer_member(const nlohmann::json &object, const char *key,
                                        long long min, const char *hint) {
    const nlohmann::json *v = translate::detail::given(object, key);
    if (v == nullptr)
        return std::nullopt;
    if (!v->is_number_integer() ||
        (v->is_number_unsigned() && v->get<unsigned long long>() > LLONG_MAX) ||
        v->get<long long>() < min) {
        throw Error(
            sqlstate::kInvalidParameterValue,
            std::string("\"") + key + "\" must be an integer of at least " + std::to_string(min),
            hint);
    }
    return v->get<long long>();
}

std::optional<double> number_member(const nlohmann::json &object, const char *key,
                                    const char *hint) {
    const nlohmann::json *v = translate::detail::given(object, key);
    if (v == nullptr)
        return std::nullopt;
    if (!v->is_number())
        throw Error(sqlstate::kInvalidParameterValue,
                    std::string("\"") + key + "\" must be a number", hint);
    return v->get<double>();
}

}  // namespace pgi::protocols
