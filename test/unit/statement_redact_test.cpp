// What the server-log scrubber treats as key-bearing, how it replaces every kind of SQL string
// literal (including an unterminated one and bound parameter values), that it never writes past
// the caller's buffer, and how it finds the prepared statement an EXECUTE runs.
#include "statement_redact.h"

#include <gtest/gtest.h>
#include <random>
#include <string>

namespace {

using pgi::executed_statement_name;
using pgi::is_key_bearing;
using pgi::LiteralSyntax;
using pgi::quotes_parameters;
using pgi::redact_literals;

std::string scrub(std::string_view text) {
    return redact_literals(text);
}

TEST(KeyBearing, NamesTheFunctionsThatTakeAKey) {
    EXPECT_TRUE(is_key_bearing("SELECT inference.register_external_service('x', 'm', 'u')"));
    EXPECT_TRUE(is_key_bearing("select INFERENCE.Update_External_Service('x')"));
    EXPECT_TRUE(is_key_bearing("SELECT \"inference\" . \"register_external_service\"('x')"));
    EXPECT_TRUE(is_key_bearing("SELECT inference_internal.register_external_service('x')"));
    EXPECT_TRUE(is_key_bearing("SELECT inference_internal.update_external_service('x')"));
    EXPECT_TRUE(is_key_bearing("SELECT\n\tregister_external_service\n(name => 'x')"));
}

TEST(KeyBearing, NamesAnApiKeyArgument) {
    EXPECT_TRUE(is_key_bearing("SELECT f(api_key => 'sk')"));
    EXPECT_TRUE(is_key_bearing("SELECT f(API_KEY:='sk')"));
    EXPECT_TRUE(is_key_bearing("SELECT f(\"api_key\" => 'sk')"));
    // Inside a DO block's or a function's body.
    EXPECT_TRUE(is_key_bearing("DO $$BEGIN PERFORM g(api_key => 'sk'); END$$"));
    EXPECT_TRUE(
        is_key_bearing("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS "
                       "'BEGIN PERFORM inference.update_external_service(''x'', ''sk''); END'"));
}

TEST(KeyBearing, OtherStatementsAreNot) {
    EXPECT_FALSE(is_key_bearing(""));
    EXPECT_FALSE(is_key_bearing("SELECT 1"));
    EXPECT_FALSE(is_key_bearing("SELECT inference.deregister_external_service('x')"));
    EXPECT_FALSE(is_key_bearing("SELECT inference.chat('x', 'hi')"));
    EXPECT_FALSE(is_key_bearing("SELECT api_key_env FROM inference.service_secrets"));
    EXPECT_FALSE(is_key_bearing("SELECT my_api_key, api_keys, api_key$ FROM t"));
    EXPECT_FALSE(is_key_bearing("SELECT register_external_services()"));
    EXPECT_FALSE(is_key_bearing("SELECT inference.create_access_key('k')"));
}

TEST(RedactLiterals, PlainStrings) {
    EXPECT_EQ(scrub("SELECT 1"), "SELECT 1");
    EXPECT_EQ(scrub("SELECT 'sk-1'"), "SELECT '[redacted]'");
    EXPECT_EQ(scrub("f(api_key => 'it''s sk', tags => '{a}')"),
              "f(api_key => '[redacted]', tags => '[redacted]')");
    EXPECT_EQ(scrub("''"), "'[redacted]'");
    EXPECT_EQ(scrub("'a' 'b'"), "'[redacted]' '[redacted]'");
    // A backslash is an ordinary character in a standard string: the literal ends at 'x\'.
    EXPECT_EQ(scrub("'x\\' || 'sk'"), "'[redacted]' || '[redacted]'");
}

TEST(RedactLiterals, BackslashesWithoutStandardStrings) {
    LiteralSyntax old_style;
    old_style.standard_strings = false;
    EXPECT_EQ(redact_literals("f('a\\'sk', 'b')", old_style), "f('[redacted]', '[redacted]')");
}

TEST(RedactLiterals, EscapeStrings) {
    EXPECT_EQ(scrub("f(E'sk\\'1', 2)"), "f('[redacted]', 2)");
    EXPECT_EQ(scrub("f(e'a\\\\', 'b')"), "f('[redacted]', '[redacted]')");
    EXPECT_EQ(scrub("f(E'a''b')"), "f('[redacted]')");
    // An identifier ending in e is no prefix.
    EXPECT_EQ(scrub("name'x'"), "name'[redacted]'");
}

TEST(RedactLiterals, UnicodeStrings) {
    EXPECT_EQ(scrub("f(U&'sk\\0041', 2)"), "f('[redacted]', 2)");
    EXPECT_EQ(scrub("f(u&'a''b' UESCAPE '!')"), "f('[redacted]' UESCAPE '[redacted]')");
}

TEST(RedactLiterals, DollarQuoted) {
    EXPECT_EQ(scrub("f($$sk'1$$, 2)"), "f('[redacted]', 2)");
    EXPECT_EQ(scrub("DO $body$ PERFORM g(api_key => 'sk'); $x$ $body$;"), "DO '[redacted]';");
    // A parameter and a dollar inside an identifier open nothing.
    EXPECT_EQ(scrub("f($1, a$b$c)"), "f($1, a$b$c)");
}

TEST(RedactLiterals, UnterminatedRunsToTheEnd) {
    EXPECT_EQ(scrub("f(api_key => 'sk-1)"), "f(api_key => '[redacted]'");
    EXPECT_EQ(scrub("f(E'sk\\'"), "f('[redacted]'");
    EXPECT_EQ(scrub("DO $a$ sk"), "DO '[redacted]'");
    EXPECT_EQ(scrub("unterminated quoted string at or near \"'sk-1)\""),
              "unterminated quoted string at or near \"'[redacted]'");
}

TEST(RedactLiterals, MessagesQuotingTokens) {
    EXPECT_EQ(scrub("syntax error at or near \"'sk-1'\""),
              "syntax error at or near \"'[redacted]'\"");
    EXPECT_EQ(scrub("SQL statement \"SELECT g(api_key => 'sk', \"tags\" => '{}')\""),
              "SQL statement \"SELECT g(api_key => '[redacted]', \"tags\" => '[redacted]')\"");
}

TEST(RedactLiterals, Comments) {
    EXPECT_EQ(scrub("f( -- don't\n'sk')"), "f( -- don't\n'[redacted]')");
    EXPECT_EQ(scrub("f(/* it's /* nested's */ still */ 'sk')"),
              "f(/* it's /* nested's */ still */ '[redacted]')");
    // Inside a literal a comment opener is text.
    EXPECT_EQ(scrub("f('--', 'sk')"), "f('[redacted]', '[redacted]')");
}

TEST(RedactLiterals, QuotedIdentifiersInSql) {
    LiteralSyntax sql;
    sql.sql_only = true;
    EXPECT_EQ(redact_literals("SELECT \"it's\" FROM t WHERE k = 'sk'", sql),
              "SELECT \"it's\" FROM t WHERE k = '[redacted]'");
}

// PostgreSQL's messages quote the value they refuse; a key passed in the wrong argument comes
// back that way.
TEST(RedactLiterals, QuotedValuesInMessages) {
    LiteralSyntax message;
    message.quoted_values = true;
    EXPECT_EQ(redact_literals("malformed array literal: \"sk-abc\"", message),
              "malformed array literal: \"[redacted]\"");
    EXPECT_EQ(redact_literals("syntax error at or near \"'sk-abc'\"", message),
              "syntax error at or near \"[redacted]\"");
    EXPECT_EQ(redact_literals("invalid input: \"sk-unterminated", message),
              "invalid input: \"[redacted]\"");
    // Without the option a double-quoted value is text, as in the extension's own messages.
    EXPECT_EQ(redact_literals("service \"x\" already exists"), "service \"x\" already exists");
}

TEST(RedactLiterals, ParameterValues) {
    EXPECT_TRUE(quotes_parameters("parameters: $1 = 'sk', $2 = NULL"));
    EXPECT_TRUE(quotes_parameters("unnamed portal with parameters: $1 = 'x'"));
    EXPECT_FALSE(quotes_parameters("statement: SELECT $1"));
    EXPECT_EQ(scrub("parameters: $1 = 'x', $2 = 'it''s', $3 = NULL, $4 = 'a\\', $5 = 'sk'"),
              "parameters: $1 = '[redacted]', $2 = '[redacted]', $3 = NULL, $4 = '[redacted]', "
              "$5 = '[redacted]'");
    EXPECT_EQ(scrub("parameters: $1 = 'E', $2 = '$$', $3 = 'sk...'"),
              "parameters: $1 = '[redacted]', $2 = '[redacted]', $3 = '[redacted]'");
}

TEST(RedactLiterals, NeverWritesPastTheBuffer) {
    const std::string text = "f('a', E'b', $$c$$, U&'d')";
    const std::size_t full = redact_literals(text, {}, nullptr, 0);
    const std::string expected = scrub(text);
    ASSERT_EQ(full, expected.size());
    for (std::size_t cap = 0; cap <= full; ++cap) {
        std::string buf(full + 8, '#');
        EXPECT_EQ(redact_literals(text, {}, buf.data(), cap), full);
        EXPECT_EQ(buf.substr(0, cap), expected.substr(0, cap));
        EXPECT_EQ(buf.substr(cap), std::string(full + 8 - cap, '#')) << cap;
    }
}

// Random SQL-ish texts: whatever the mix, no byte of a secret placed inside any kind of literal
// survives, and the scrubber is idempotent.
TEST(RedactLiterals, NoSecretSurvivesRandomTexts) {
    std::mt19937 rng(7);
    const char *pieces[] = {" ",  ",",  "(",  ")",  "f",   "E",  "U&", "$",  "$1", "\"",
                            "--", "\n", "/*", "*/", "a$b", "''", "\\", "=>", "x"};
    const char *wrap[][2] = {{"'", "'"}, {"E'", "'"}, {"U&'", "'"}, {"$$", "$$"}, {"$t$", "$t$"}};
    for (int round = 0; round < 2000; ++round) {
        std::string text;
        const int n = static_cast<int>(rng() % 12);
        for (int i = 0; i < n; ++i)
            text += pieces[rng() % (sizeof pieces / sizeof pieces[0])];
        // A secret in a well-formed literal after a statement boundary the scanner agrees on.
        const auto &w = wrap[rng() % 5];
        text += "\n; ";
        std::string cleaned;
        for (char c : text) {
            // Keep the prefix free of openers that could legitimately swallow the rest.
            if (c != '\'' && c != '$' && c != '"' && c != '-' && c != '/' && c != '*')
                cleaned += c;
        }
        cleaned += std::string(w[0]) + "SECRETKEY" + w[1];
        const std::string out = scrub(cleaned);
        EXPECT_EQ(out.find("SECRETKEY"), std::string::npos) << cleaned;
        EXPECT_EQ(scrub(out), out) << cleaned;
    }
}

TEST(ExecutedStatementName, FindsTheName) {
    char name[64];
    ASSERT_TRUE(executed_statement_name("EXECUTE reg('sk')", name, sizeof name));
    EXPECT_STREQ(name, "reg");
    ASSERT_TRUE(
        executed_statement_name("  /* c */ -- x\n execute Reg_1 ('sk')", name, sizeof name));
    EXPECT_STREQ(name, "reg_1");
    ASSERT_TRUE(executed_statement_name("EXECUTE \"My \"\"P\"\"\"('sk')", name, sizeof name));
    EXPECT_STREQ(name, "My \"P\"");
    char small[4];
    ASSERT_TRUE(executed_statement_name("EXECUTE abcdef", small, sizeof small));
    EXPECT_STREQ(small, "abc");
}

TEST(ExecutedStatementName, OtherStatements) {
    char name[64];
    EXPECT_FALSE(executed_statement_name("SELECT 1", name, sizeof name));
    EXPECT_FALSE(executed_statement_name("EXECUTEx", name, sizeof name));
    EXPECT_FALSE(executed_statement_name("EXECUTE", name, sizeof name));
    EXPECT_FALSE(executed_statement_name("EXECUTE 'x'", name, sizeof name));
    EXPECT_FALSE(executed_statement_name("", name, 0));
}

}  // namespace
