#include "wrapper_context.h"

#include <gtest/gtest.h>
#include <string>

namespace {

std::string caller_part(const std::string &context) {
    return context.substr(pgi::wrapper_context_length(context));
}

TEST(WrapperContext, CutsTheWrappersPlpgsqlLinesAndTheStatementsTheyRan) {
    const std::string context =
        "SQL statement \"SELECT inference_internal.check_access_key_fields($2, $3)\"\n"
        "PL/pgSQL function inference.create_access_key(text,text[]) line 14 at PERFORM";
    EXPECT_EQ(caller_part(context), "");
}

TEST(WrapperContext, CutsTheSqlWrappersByName) {
    EXPECT_EQ(caller_part("SQL function \"register_external_service\" statement 1"), "");
    EXPECT_EQ(caller_part("PL/pgSQL function inference_internal.set_state(text) line 3 at RAISE\n"
                          "SQL function \"pause_pipeline\" statement 1"),
              "");
}

TEST(WrapperContext, KeepsTheCallersOwnLines) {
    const std::string context =
        "PL/pgSQL function inference.create_route(text,jsonb) line 9 at RAISE\n"
        "SQL statement \"SELECT inference.create_route('r', '[]')\"\n"
        "PL/pgSQL function my_setup() line 4 at PERFORM";
    EXPECT_EQ(caller_part(context),
              "SQL statement \"SELECT inference.create_route('r', '[]')\"\n"
              "PL/pgSQL function my_setup() line 4 at PERFORM");
}

TEST(WrapperContext, AStatementQuotedOverSeveralLinesIsCutWhole) {
    const std::string context =
        "SQL statement \"INSERT INTO inference.pipeline_queue\n  SELECT \"x\"\n FROM t\"\n"
        "PL/pgSQL function inference_internal.create_pipeline(text) line 40 at EXECUTE\n"
        "DO block";
    EXPECT_EQ(caller_part(context), "DO block");
}

TEST(WrapperContext, LeavesEveryOtherContextAlone) {
    for (const std::string context :
         {"PL/pgSQL function my_fn() line 2 at RAISE",
          "SQL statement \"SELECT 1/0\"\nPL/pgSQL function my_fn() line 2 at PERFORM",
          "SQL statement \"SELECT 1/0\"", "SQL function \"list_models_of_mine\" statement 1",
          "SQL function \"my_wrapper\" statement 1",
          "PL/pgSQL function inferences.x() line 1 at RAISE", ""}) {
        EXPECT_EQ(caller_part(context), context) << context;
    }
}

}  // namespace
