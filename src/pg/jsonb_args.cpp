#include "jsonb_args.h"

extern "C" {
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
}

namespace pgi::pg {

std::optional<nlohmann::json> jsonb_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    char *text = pg_guard([&]() {
        Jsonb *jb = PG_GETARG_JSONB_P(n);
        return JsonbToCString(nullptr, &jb->root, VARSIZE(jb));
    });
    return nlohmann::json::parse(text);
}

Datum jsonb_datum(const std::string &text) {
    return pg_guard([&]() { return DirectFunctionCall1(jsonb_in, CStringGetDatum(text.c_str())); });
}

}  // namespace pgi::pg
