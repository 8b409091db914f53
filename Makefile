# PGXS build of record: `make && make install` builds and installs the extension.
# `make unit` builds and runs the core's GoogleTest suite through CMake/ctest.

EXTENSION = pg_inference
MODULE_big = pg_inference
DATA = sql/pg_inference--0.1.0.sql sql/pg_inference--0.2.0.sql
# The upgrade from 0.1.0 is its own first part followed by the 0.2.0 script, so that every
# function and view of 0.2.0 is written once (sql/upgrade/0.1.0--0.2.0.sql says why).
DATA_built = sql/pg_inference--0.1.0--0.2.0.sql
# The library's version is the extension's, from the control file.
PGI_VERSION := $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" pg_inference.control)

# The pure C++ core (src/core) and the PostgreSQL shell (src/pg), listed explicitly.
CORE_OBJS = \
	src/core/address_filter.o \
	src/core/base64.o \
	src/core/budget.o \
	src/core/chat_call.o \
	src/core/chat_prompt.o \
	src/core/chunking.o \
	src/core/count_tokens.o \
	src/core/crypto.o \
	src/core/env_policy.o \
	src/core/gateway.o \
	src/core/gateway_anthropic.o \
	src/core/gateway_budget.o \
	src/core/gateway_chat.o \
	src/core/gateway_connections.o \
	src/core/gateway_count_tokens.o \
	src/core/gateway_exchanges.o \
	src/core/gateway_gemini.o \
	src/core/gateway_openai.o \
	src/core/gateway_passthrough.o \
	src/core/gateway_request.o \
	src/core/gateway_requests.o \
	src/core/gateway_snapshot.o \
	src/core/gemini_embeddings.o \
	src/core/http_async.o \
	src/core/http_client.o \
	src/core/log_throttle.o \
	src/core/metrics.o \
	src/core/probe.o \
	src/core/protocol.o \
	src/core/rate_limiter.o \
	src/core/routing.o \
	src/core/redact.o \
	src/core/setting_list.o \
	src/core/sse.o \
	src/core/statement_redact.o \
	src/core/tls_files.o \
	src/core/transaction_steps.o \
	src/core/translate.o \
	src/core/translate_embeddings.o \
	src/core/translate_rerank.o \
	src/core/upstream_error.o \
	src/core/usage_counters.o \
	src/core/validation.o \
	src/core/wrapper_context.o
# One module per wire protocol (docs/dialects.md).
PROTOCOL_OBJS = $(patsubst %.cpp,%.o,$(sort $(wildcard src/core/protocols/*.cpp)))
PG_OBJS = \
	src/pg/access_keys.o \
	src/pg/backend_http.o \
	src/pg/breakers.o \
	src/pg/budgets.o \
	src/pg/catalog_generation.o \
	src/pg/cluster_limits.o \
	src/pg/context_trim.o \
	src/pg/cpp_wall.o \
	src/pg/extension_version.o \
	src/pg/gateway_worker.o \
	src/pg/governance.o \
	src/pg/health_worker.o \
	src/pg/jsonb_args.o \
	src/pg/log_redaction.o \
	src/pg/model_calls.o \
	src/pg/pg_inference.o \
	src/pg/pipeline_worker.o \
	src/pg/primary_link.o \
	src/pg/registry.o \
	src/pg/request_log.o \
	src/pg/restrictions.o \
	src/pg/route_calls.o \
	src/pg/routes.o \
	src/pg/secrets.o \
	src/pg/service_catalog.o \
	src/pg/spi_connection.o \
	src/pg/status_store.o \
	src/pg/usage_writer.o \
	src/pg/worker_connection.o \
	src/pg/worker_transaction.o
OBJS = $(CORE_OBJS) $(PROTOCOL_OBJS) $(PG_OBJS)

REGRESS = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/pg_inference--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --load-extension=pg_inference
# make installcheck runs the suite through test/regress.sh, which starts the mock upstream the
# tests talk to and stops it afterwards; PGXS's own rule would not.
NO_INSTALLCHECK = 1

PG_CONFIG ?= pg_config
PG_INCLUDEDIR_SERVER := $(shell $(PG_CONFIG) --includedir-server)
PG_INCLUDEDIR := $(shell $(PG_CONFIG) --includedir)

# PGXS adds PG_CXXFLAGS to its C++ compile line. PostgreSQL's headers are included as system headers so -Wextra -Werror applies to our code only.
PG_CXXFLAGS = -DPGI_VERSION=\"$(PGI_VERSION)\" -std=c++17 -Wall -Wextra -Werror -fPIC -isystem $(PG_INCLUDEDIR_SERVER) -isystem $(PG_INCLUDEDIR) -Isrc/core -Isrc/core/protocols -Isrc/pg
SHLIB_LINK = -lpq -lcurl -lssl -lcrypto -levent -levent_openssl -lstdc++

# Debian's server is built with LLVM JIT; PGXS would then compile bitcode with clang for every
# object. The extension has nothing worth inlining into JIT-compiled expressions.
override with_llvm = no
# Track header dependencies (.deps/*.Po), so a changed header rebuilds what includes it.
override autodepend = yes

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/pg_inference--0.1.0--0.2.0.sql: sql/upgrade/0.1.0--0.2.0.sql sql/pg_inference--0.2.0.sql
	cat $^ >$@

.PHONY: installcheck unit format lint
installcheck:
	@bash test/regress.sh '$(top_builddir)/src/test/regress/pg_regress' '$(bindir)' \
		$(pg_regress_locale_flags) $(EXTRA_REGRESS_OPTS) $(REGRESS_OPTS) $(REGRESS)
unit: all
	cmake -S . -B build -G 'Unix Makefiles' -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DPGI_REUSE_PGXS_OBJECTS=ON >/dev/null
	cmake --build build -j2
	cd build && ctest --output-on-failure

format:
	clang-format -i src/core/*.cpp src/core/*.h src/pg/*.cpp src/pg/*.h test/unit/*.cpp

lint:
	clang-format --dryrun --Werror src/core/*.cpp src/core/*.h src/pg/*.cpp src/pg/*.h test/unit/*.cpp
