// The pipeline worker (pipeline_worker.cpp): keeps the embeddings of every pipeline up to date.
#pragma once

namespace pgi::pg {

void pipeline_worker_define_settings();  // inference.pipeline_max_attempts
void pipeline_worker_register();         // from _PG_init, when preloaded

}  // namespace pgi::pg
