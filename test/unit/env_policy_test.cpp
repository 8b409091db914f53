#include "env_policy.h"

#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "error_capture.h"

namespace {

namespace v = pgi::validate;

TEST(EnvPolicy, ParsesNameLists) {
    EXPECT_TRUE(v::parse_env_key_list("").empty());
    EXPECT_TRUE(v::parse_env_key_list("   ").empty());
    EXPECT_EQ(v::parse_env_key_list("OPENAI_API_KEY"), std::vector<std::string>{"OPENAI_API_KEY"});
    EXPECT_EQ(v::parse_env_key_list(" A_KEY , _B,c9 "),
              (std::vector<std::string>{"A_KEY", "_B", "c9"}));
}

TEST(EnvPolicy, RefusesBadNames) {
    for (const std::string bad : {"9KEY", "A-KEY", "A,", "A,,B", "env:A", "A B"}) {
        Failure f = failure_of([&] { v::parse_env_key_list(bad); });
        EXPECT_EQ(f.sqlstate, "22023") << bad;
        EXPECT_NE(f.message.find("in inference.allowed_env_keys"), std::string::npos) << bad;
    }
    Failure f = failure_of([] { v::parse_env_key_list("GOOD, 1BAD"); });
    EXPECT_EQ(f.message, "invalid variable name \"1BAD\" in inference.allowed_env_keys");
}

TEST(EnvPolicy, OnlyListedNamesAreAllowed) {
    const std::vector<std::string> allowed = {"OPENAI_API_KEY", "NIM_KEY"};
    EXPECT_NO_THROW(v::check_env_key_allowed("NIM_KEY", allowed));
    Failure f = failure_of([&] { v::check_env_key_allowed("PGPASSWORD", allowed); });
    EXPECT_EQ(f.sqlstate, "42501");
    EXPECT_EQ(f.message,
              "environment variable \"PGPASSWORD\" is not in inference.allowed_env_keys");
    EXPECT_EQ(f.hint,
              "Only a superuser may use env:NAME for a variable not listed in "
              "inference.allowed_env_keys: ask one to add it there, or store the key itself.");
    // The environment is case-sensitive, and so is the list.
    f = failure_of([&] { v::check_env_key_allowed("nim_key", allowed); });
    EXPECT_EQ(f.sqlstate, "42501");
    f = failure_of([] { v::check_env_key_allowed("ANY", {}); });
    EXPECT_EQ(f.sqlstate, "42501");
}

}  // namespace
