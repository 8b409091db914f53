// Runs inside error reporting, perhaps out of memory: it allocates nothing (the context is cut in
// place) and never reports.
#include "context_trim.h"

#include "cpp_wall.h"

extern "C" {
#include "utils/elog.h"
}

#include <cstring>
#include <string_view>

#include "wrapper_context.h"

namespace pgi::pg {

namespace {

emit_log_hook_type previous_emit_log_hook = nullptr;

void trim_context(ErrorData *edata) {
    if (edata->context != nullptr) {
        const std::size_t size = std::strlen(edata->context);
        const std::size_t cut = pgi::wrapper_context_length(std::string_view(edata->context, size));
        if (cut == size) {
            pfree(edata->context);  // errfinish would free it: the field is palloc'd
            edata->context = nullptr;
        } else if (cut > 0) {
            std::memmove(edata->context, edata->context + cut, size - cut + 1);
        }
    }
    if (previous_emit_log_hook)
        previous_emit_log_hook(edata);
}

}  // namespace

void context_trim_install() {
    previous_emit_log_hook = emit_log_hook;
    emit_log_hook = trim_context;
}

}  // namespace pgi::pg
