#include "validation.h"

#include <gtest/gtest.h>
#include <string>
#include <vector>

#include "error.h"
#include "error_capture.h"

namespace {

namespace v = pgi::validate;

// Every refusal here is invalid_parameter_value, and no message may carry a raw line break.
void expect_refused(const Failure &f, const std::string &message, const std::string &hint) {
    EXPECT_EQ(f.sqlstate, "22023") << f.message;
    EXPECT_EQ(f.message, message);
    EXPECT_EQ(f.hint, hint);
    EXPECT_EQ(f.message.find_first_of("\r\n"), std::string::npos) << f.message;
    EXPECT_FALSE(f.message.empty());
    EXPECT_TRUE(f.message.back() != '.') << f.message;
}

const std::string kNameHint =
    "Use 1 to 63 lowercase letters, digits, \"-\" and \".\"; \"-\" may not start or end a segment.";

Failure name_failure(const std::string &name) {
    return failure_of([&] { v::service_name(name); });
}

TEST(ServiceName, AcceptsDnsStyleNames) {
    for (const std::string name : {"a", "0", "openai", "gpt-4o", "my-svc.prod", "a1.b2.c3", "x-y-z",
                                   "nim.llama-3-1.eu-west-1", "123"})
        EXPECT_NO_THROW(v::service_name(name)) << name;
}

TEST(ServiceName, AcceptsSixtyThreeCharacters) {
    EXPECT_NO_THROW(v::service_name(std::string(63, 'a')));
    EXPECT_NO_THROW(v::service_name(std::string(31, 'a') + "." + std::string(31, 'b')));
}

TEST(ServiceName, RefusesEmpty) {
    expect_refused(name_failure(""), "service name must not be empty", kNameHint);
}

TEST(ServiceName, RefusesSixtyFourCharacters) {
    const std::string name(64, 'a');
    expect_refused(name_failure(name),
                   "service name \"" + name + "\" is too long (64 characters; the maximum is 63)",
                   kNameHint);
}

TEST(ServiceName, TruncatesAVeryLongNameInTheMessage) {
    const Failure f = name_failure(std::string(100000, 'a'));
    expect_refused(f,
                   "service name \"" + std::string(64, 'a') +
                       "...\" is too long (100000 characters; the maximum is 63)",
                   kNameHint);
}

TEST(ServiceName, RefusesUppercaseAndUnderscore) {
    expect_refused(name_failure("My_Svc"), "invalid character \"M\" in service name \"My_Svc\"",
                   kNameHint);
    expect_refused(name_failure("my_svc"), "invalid character \"_\" in service name \"my_svc\"",
                   kNameHint);
    expect_refused(name_failure("a b"), "invalid character \" \" in service name \"a b\"",
                   kNameHint);
    expect_refused(name_failure("a/b"), "invalid character \"/\" in service name \"a/b\"",
                   kNameHint);
}

TEST(ServiceName, NamesAMultiByteCharacterWhole) {
    expect_refused(name_failure("caf\xc3\xa9"),
                   "invalid character \"\xc3\xa9\" in service name \"caf\xc3\xa9\"", kNameHint);
}

TEST(ServiceName, EscapesControlCharactersInTheMessage) {
    expect_refused(name_failure("a\r\nb"), "invalid character \"\\r\" in service name \"a\\r\\nb\"",
                   kNameHint);
    expect_refused(name_failure("a\nb"), "invalid character \"\\n\" in service name \"a\\nb\"",
                   kNameHint);
    expect_refused(name_failure(std::string("a\x01", 2)),
                   "invalid character \"\\x01\" in service name \"a\\x01\"", kNameHint);
    expect_refused(name_failure(std::string("a\0b", 3)),
                   "invalid character \"\\x00\" in service name \"a\\x00b\"", kNameHint);
}

TEST(ServiceName, RefusesHyphenAtSegmentEdges) {
    for (const std::string name : {"-abc", "abc-", "a.-b", "a-.b", "-", "ok.x-"})
        expect_refused(
            name_failure(name),
            "invalid service name \"" + name + "\": a segment may not start or end with \"-\"",
            kNameHint);
}

TEST(ServiceName, RefusesEmptySegments) {
    for (const std::string name : {"a..b", ".a", "a.", ".", ".."})
        expect_refused(
            name_failure(name),
            "invalid service name \"" + name + "\": segments between \".\" may not be empty",
            kNameHint);
}

const std::string kModelHint =
    "Use the model id exactly as the provider lists it, e.g. \"meta/llama-3.1-8b-instruct\".";
const std::string kModelSpaceMessage =
    ": model names may not contain whitespace or control characters";
const std::string kModelSpaceHint = "Remove the spaces, line breaks and other control characters.";

Failure model_failure(const std::string &model) {
    return failure_of([&] { v::model(model); });
}

TEST(Model, AcceptsProviderIds) {
    for (const std::string model :
         {"gpt-4o-mini", "meta/llama-3.1-8b-instruct", "models/gemini-1.5-pro",
          "Qwen/Qwen2.5-7B-Instruct", "llama3:8b", "ft:gpt-4o-mini:org:custom:abc123",
          "@cf/meta/llama-3-8b-instruct", "claude-3-5-sonnet-20241022", "a.b", "..a", "a..",
          "text-embedding-3-small", "\xe6\xa8\xa1\xe5\x9e\x8b"})
        EXPECT_NO_THROW(v::model(model)) << model;
    EXPECT_NO_THROW(v::model(std::string(256, 'm')));
    // 256 characters, 512 bytes: the limit counts characters.
    std::string wide;
    for (int i = 0; i < 256; ++i)
        wide += "\xc3\xa9";
    EXPECT_NO_THROW(v::model(wide));
}

TEST(Model, RefusesEmptyAndTooLong) {
    expect_refused(model_failure(""), "model must not be empty", kModelHint);
    expect_refused(model_failure(std::string(257, 'm')),
                   "model \"" + std::string(64, 'm') +
                       "...\" is too long (257 characters; the maximum is 256)",
                   kModelHint);
}

TEST(Model, RefusesWhitespaceAndControlCharacters) {
    expect_refused(model_failure("a b"), "invalid model \"a b\"" + kModelSpaceMessage,
                   kModelSpaceHint);
    expect_refused(model_failure(" x"), "invalid model \" x\"" + kModelSpaceMessage,
                   kModelSpaceHint);
    expect_refused(model_failure("x "), "invalid model \"x \"" + kModelSpaceMessage,
                   kModelSpaceHint);
    expect_refused(model_failure("x\r\nHost: evil"),
                   "invalid model \"x\\r\\nHost: evil\"" + kModelSpaceMessage, kModelSpaceHint);
    expect_refused(model_failure("x\ty"), "invalid model \"x\\ty\"" + kModelSpaceMessage,
                   kModelSpaceHint);
    expect_refused(model_failure("x\x7f"), "invalid model \"x\\x7f\"" + kModelSpaceMessage,
                   kModelSpaceHint);
    // U+00A0 no-break space and U+0085 next line (a C1 control).
    expect_refused(model_failure("a\xc2\xa0"
                                 "b"),
                   "invalid model \"a\xc2\xa0"
                   "b\"" +
                       kModelSpaceMessage,
                   kModelSpaceHint);
    expect_refused(model_failure("a\xc2\x85"
                                 "b"),
                   "invalid model \"a\\u0085b\"" + kModelSpaceMessage, kModelSpaceHint);
    // U+2028 line separator.
    expect_refused(model_failure("a\xe2\x80\xa8"
                                 "b"),
                   "invalid model \"a\\u2028b\"" + kModelSpaceMessage, kModelSpaceHint);
}

TEST(Model, RefusesQueryAndFragmentCharacters) {
    const std::string hint =
        "Pass the model id alone; pg_inference builds each request URL itself.";
    expect_refused(model_failure("x?y"),
                   "invalid model \"x?y\": model names may not contain \"?\" or \"#\"", hint);
    expect_refused(model_failure("x#y"),
                   "invalid model \"x#y\": model names may not contain \"?\" or \"#\"", hint);
}

TEST(Model, RefusesEmptySegments) {
    for (const std::string model : {"/x", "x/", "a//b", "/"})
        expect_refused(
            model_failure(model),
            "invalid model \"" + model + "\": model names may not have an empty \"/\" segment",
            "Remove the leading, trailing or doubled \"/\".");
}

TEST(Model, RefusesDotSegments) {
    for (const std::string model :
         {"a/../b", "..", ".", "a/./b", "../x", "x/..", "a/%2e%2E/b", "%2e", "a/.%2e"})
        expect_refused(
            model_failure(model),
            "invalid model \"" + model + "\": model names may not contain \".\" or \"..\" segments",
            kModelHint);
}

Failure url_failure(const std::string &url) {
    return failure_of([&] { v::base_url(url); });
}

const std::string kUrlExampleHint =
    "Use an http:// or https:// URL, e.g. \"https://api.openai.com\" or \"http://10.0.0.5:8000\".";
const std::string kHostHint =
    "Use a host name, an IPv4 address or an IPv6 address in brackets, e.g. \"http://[::1]:8000\".";
const std::string kSpaceHint = "Remove the spaces and line breaks from the URL.";
const std::string kQueryHint =
    "Remove everything from \"?\" or \"#\" on: keys go in api_key, and pg_inference builds each "
    "request's query itself.";
const std::string kPortHint = "Use a port number from 1 to 65535.";

TEST(BaseUrl, NormalisesAcceptedUrls) {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"https://api.openai.com", "https://api.openai.com"},
        {"https://api.openai.com/", "https://api.openai.com"},
        {"https://api.openai.com///", "https://api.openai.com"},
        {"HTTPS://API.OpenAI.com", "https://api.openai.com"},
        {"Http://LocalHost:8000/", "http://localhost:8000"},
        {"http://10.0.0.5:8000/prefix/path/", "http://10.0.0.5:8000/prefix/path"},
        {"http://[::1]:8000", "http://[::1]:8000"},
        {"http://[2001:DB8::1]/x", "http://[2001:db8::1]/x"},
        {"http://[::ffff:10.0.0.1]", "http://[::ffff:10.0.0.1]"},
        {"https://api.groq.com/openai", "https://api.groq.com/openai"},
        {"https://gateway.ai.cloudflare.com/v1/acct/gw/openai",
         "https://gateway.ai.cloudflare.com/v1/acct/gw/openai"},
        {"http://my_vllm:8000", "http://my_vllm:8000"},
        {"https://host/v1x", "https://host/v1x"},
        {"https://host/v2", "https://host/v2"},
        {"https://host/api/v1/openai", "https://host/api/v1/openai"},
        {"http://h:65535", "http://h:65535"},
        {"http://h:1", "http://h:1"},
        {"http://h:080", "http://h:80"},
        {"https://host/a%20b/Case", "https://host/a%20b/Case"},
        {"https://host/~u/a-b_c.d/x:y@z/!$&'()*+,;=", "https://host/~u/a-b_c.d/x:y@z/!$&'()*+,;="},
        {"https://host/...", "https://host/..."},
    };
    for (const auto &[input, expected] : cases) {
        std::string got;
        EXPECT_NO_THROW(got = v::base_url(input)) << input;
        EXPECT_EQ(got, expected) << input;
    }
    EXPECT_EQ(v::base_url("https://h/" + std::string(2048 - 10, 'p')).size(), 2048u);
}

TEST(BaseUrl, RefusesEmptyAndTooLong) {
    expect_refused(url_failure(""), "base URL must not be empty", kUrlExampleHint);
    expect_refused(url_failure("https://h/" + std::string(2039, 'p')),
                   "base URL is too long (2049 characters; the maximum is 2048)",
                   "Pass the server's address and path prefix only.");
}

TEST(BaseUrl, RefusesOtherSchemes) {
    expect_refused(url_failure("ftp://example.com"),
                   "unsupported scheme \"ftp\" in base URL \"ftp://example.com\"",
                   "Use http:// or https://.");
    expect_refused(url_failure("file:///etc/passwd"),
                   "unsupported scheme \"file\" in base URL \"file:///etc/passwd\"",
                   "Use http:// or https://.");
    expect_refused(url_failure("api.openai.com"),
                   "base URL \"api.openai.com\" has no http:// or https:// scheme",
                   kUrlExampleHint);
    expect_refused(url_failure("//api.openai.com"),
                   "base URL \"//api.openai.com\" has no http:// or https:// scheme",
                   kUrlExampleHint);
    expect_refused(url_failure("https:/api.openai.com"),
                   "base URL \"https:/api.openai.com\" has no http:// or https:// scheme",
                   kUrlExampleHint);
}

TEST(BaseUrl, RefusesVersionSuffix) {
    const std::string v1_hint =
        "Remove \"/v1\": pg_inference appends the API version path for each protocol.";
    expect_refused(url_failure("https://api.openai.com/v1"),
                   "base URL \"https://api.openai.com/v1\" must not end in \"/v1\"", v1_hint);
    expect_refused(url_failure("https://api.openai.com/v1/"),
                   "base URL \"https://api.openai.com/v1/\" must not end in \"/v1\"", v1_hint);
    expect_refused(url_failure("https://api.groq.com/openai/v1//"),
                   "base URL \"https://api.groq.com/openai/v1//\" must not end in \"/v1\"",
                   v1_hint);
    expect_refused(
        url_failure("https://generativelanguage.googleapis.com/v1beta"),
        "base URL \"https://generativelanguage.googleapis.com/v1beta\" must not end in \"/v1beta\"",
        "Remove \"/v1beta\": pg_inference appends the API version path for each protocol.");
    expect_refused(url_failure("https://h/V1"), "base URL \"https://h/V1\" must not end in \"/V1\"",
                   "Remove \"/V1\": pg_inference appends the API version path for each protocol.");
}

TEST(BaseUrl, RefusesWhitespaceAndControlCharacters) {
    expect_refused(url_failure("https://h/x\r\nHost: evil"),
                   "invalid base URL \"https://h/x\\r\\nHost: evil\": URLs may not contain "
                   "whitespace or control characters",
                   kSpaceHint);
    expect_refused(
        url_failure("https://h/x\n"),
        "invalid base URL \"https://h/x\\n\": URLs may not contain whitespace or control "
        "characters",
        kSpaceHint);
    expect_refused(url_failure(" https://h"),
                   "invalid base URL \" https://h\": URLs may not contain whitespace or control "
                   "characters",
                   kSpaceHint);
    expect_refused(url_failure("https://h/a b"),
                   "invalid base URL \"https://h/a b\": URLs may not contain whitespace or control "
                   "characters",
                   kSpaceHint);
    expect_refused(url_failure("https://h\t/"),
                   "invalid base URL \"https://h\\t/\": URLs may not contain whitespace or control "
                   "characters",
                   kSpaceHint);
    expect_refused(url_failure("https://h\xc3\xa9.com"),
                   "invalid base URL \"https://h\xc3\xa9.com\": non-ASCII characters must be "
                   "percent-encoded",
                   "Use the host's ASCII (punycode) form and percent-encode the path.");
}

TEST(BaseUrl, RefusesCredentialsWithoutEchoingThem) {
    const std::string hint =
        "Remove the user name and password from the URL and pass the key as api_key.";
    Failure f = url_failure("https://user:s3cret@host/x");
    expect_refused(f, "base URL \"https://...@host/x\" must not contain credentials", hint);
    f = url_failure("https://s3cret@host");
    expect_refused(f, "base URL \"https://...@host\" must not contain credentials", hint);
    // A key in the userinfo must not leak through any other refusal either.
    for (const std::string url :
         {"ftp://u:s3cret@host", "https://u:s3cret@host?x", "https://u:s3cret@host/v1",
          "https://u:s3cret@host/a b", "u:s3cret@host", "https://u:s3/cret@host"}) {
        f = url_failure(url);
        EXPECT_EQ(f.sqlstate, "22023") << url;
        EXPECT_EQ(f.message.find("s3"), std::string::npos) << f.message;
    }
}

TEST(BaseUrl, RefusesQueryAndFragmentWithoutEchoingThem) {
    Failure f = url_failure("https://h/x?key=s3cret");
    expect_refused(f,
                   "invalid base URL \"https://h/x?...\": it must not contain a query string or "
                   "fragment",
                   kQueryHint);
    f = url_failure("https://h/x#s3cret");
    expect_refused(f,
                   "invalid base URL \"https://h/x#...\": it must not contain a query string or "
                   "fragment",
                   kQueryHint);
    expect_refused(url_failure("https://h?"),
                   "invalid base URL \"https://h?...\": it must not contain a query string or "
                   "fragment",
                   kQueryHint);
}

TEST(BaseUrl, RefusesDotAndEmptyPathSegments) {
    const std::string message = ": the path may not contain \".\" or \"..\" segments";
    const std::string hint = "Write the path prefix without \".\" and \"..\" segments.";
    for (const std::string url : {"https://h/a/../b", "https://h/..", "https://h/./b",
                                  "https://h/a/.", "https://h/%2e%2e/b", "https://h/a/%2E/"})
        expect_refused(url_failure(url), "invalid base URL \"" + url + "\"" + message, hint);
    expect_refused(url_failure("https://h//x"),
                   "invalid base URL \"https://h//x\": the path has an empty segment (\"//\")",
                   "Remove the doubled \"/\".");
}

TEST(BaseUrl, RefusesBadPorts) {
    for (const std::string port : {"0", "65536", "", "abc", "123456", "-1", "8o"})
        expect_refused(url_failure("http://h:" + port),
                       "invalid port \"" + port + "\" in base URL \"http://h:" + port + "\"",
                       kPortHint);
    expect_refused(url_failure("http://[::1]:0/x"),
                   "invalid port \"0\" in base URL \"http://[::1]:0/x\"", kPortHint);
}

TEST(BaseUrl, RefusesBadHosts) {
    expect_refused(url_failure("https://"), "base URL \"https://\" has no host", kUrlExampleHint);
    expect_refused(url_failure("https:///x"), "base URL \"https:///x\" has no host",
                   kUrlExampleHint);
    expect_refused(url_failure("http://:8000"), "base URL \"http://:8000\" has no host",
                   kUrlExampleHint);
    expect_refused(url_failure("http://[::1"),
                   "invalid IPv6 address \"::1\" in base URL \"http://[::1\"", kHostHint);
    expect_refused(url_failure("http://[zz::1]"),
                   "invalid IPv6 address \"zz::1\" in base URL \"http://[zz::1]\"", kHostHint);
    expect_refused(url_failure("http://[fe80::1%25eth0]"),
                   "invalid IPv6 address \"fe80::1%25eth0\" in base URL "
                   "\"http://[fe80::1%25eth0]\"",
                   kHostHint);
    expect_refused(url_failure("http://[::1]x"),
                   "invalid base URL \"http://[::1]x\": unexpected text after the IPv6 address",
                   kHostHint);
    expect_refused(url_failure("http://::1:8000"),
                   "invalid base URL \"http://::1:8000\": an IPv6 address must be enclosed in "
                   "brackets",
                   kHostHint);
    expect_refused(url_failure("http://999.1.1.1"),
                   "invalid IPv4 address \"999.1.1.1\" in base URL \"http://999.1.1.1\"",
                   kHostHint);
    expect_refused(url_failure("http://10.1"),
                   "invalid IPv4 address \"10.1\" in base URL \"http://10.1\"", kHostHint);
    for (const std::string host : {"-host", "host-", "a..b", ".a", "a.", "h%41", "h\\x"})
        expect_refused(url_failure("http://" + host),
                       "invalid host \"" + host + "\" in base URL \"http://" + host + "\"",
                       kHostHint);
    expect_refused(url_failure("http://" + std::string(64, 'a') + ".com"),
                   "invalid host \"" + std::string(64, 'a') + "...\" in base URL \"http://" +
                       std::string(64, 'a') + ".com\"",
                   kHostHint);
}

TEST(BaseUrl, RefusesCharactersThatNeedEncoding) {
    expect_refused(url_failure("https://h/a\\b"),
                   "invalid character \"\\\" in base URL \"https://h/a\\b\"", "Percent-encode it.");
    expect_refused(url_failure("https://h/a\"b"),
                   "invalid character \"\"\" in base URL \"https://h/a\"b\"", "Percent-encode it.");
    expect_refused(url_failure("https://h/[x]"),
                   "invalid character \"[\" in base URL \"https://h/[x]\"", "Percent-encode it.");
    expect_refused(url_failure("https://h/50%"),
                   "invalid base URL \"https://h/50%\": \"%\" must start a percent-encoded byte "
                   "such as \"%20\"",
                   "Write a literal \"%\" as \"%25\".");
    expect_refused(url_failure("https://h/%zz"),
                   "invalid base URL \"https://h/%zz\": \"%\" must start a percent-encoded byte "
                   "such as \"%20\"",
                   "Write a literal \"%\" as \"%25\".");
}

Failure key_failure(const std::string &key) {
    return failure_of([&] { v::api_key(key); });
}

const std::string kBearerMessage = "api_key must be the key alone, without the \"Bearer \" prefix";
const std::string kBearerHint =
    "Remove \"Bearer \"; the protocol decides which header carries the key.";
const std::string kKeySpaceMessage = "api_key must not contain whitespace or control characters";
const std::string kKeySpaceHint = "Pass the key exactly as issued, without spaces or line breaks.";
const std::string kEnvHint =
    "Use env:NAME, where NAME is letters, digits and \"_\" and does not start with a digit.";

TEST(ApiKey, AcceptsPlainKeys) {
    for (const std::string key :
         {"sk-proj-abc123", "nvapi-XYZ_09", "AIzaSyA-bcdEFG", "sk-ant-api03-x", "x", "Bearer",
          "bearer-token-like-key", "key=with+base64/chars=="})
        EXPECT_NO_THROW(v::api_key(key)) << key;
    EXPECT_NO_THROW(v::api_key(std::string(4096, 'k')));
}

TEST(ApiKey, RefusesEmptyWithAHintAboutNull) {
    expect_refused(key_failure(""), "api_key must not be empty",
                   "Pass NULL for an endpoint that needs no key.");
}

TEST(ApiKey, RefusesTooLong) {
    expect_refused(key_failure(std::string(4097, 'k')),
                   "api_key is too long (4097 characters; the maximum is 4096)",
                   "Pass the key alone.");
}

TEST(ApiKey, RefusesBearerPrefixInAnyCase) {
    for (const std::string key : {"Bearer sk-abc", "bearer sk-abc", "BEARER sk-abc", "BeArEr x",
                                  "Bearer ", "Bearer  sk-abc"})
        expect_refused(key_failure(key), kBearerMessage, kBearerHint);
}

TEST(ApiKey, RefusesWhitespaceAndControlCharacters) {
    for (const std::string &key :
         std::vector<std::string>{"sk abc", "sk\r\nX-Evil: 1", "sk\n", "\tsk", "sk\x7f", " sk",
                                  "Bearer\tsk", "sk\x01", std::string("sk\0x", 4)})
        expect_refused(key_failure(key), kKeySpaceMessage, kKeySpaceHint);
    expect_refused(key_failure("k\xc3\xa9y"), "api_key must contain only ASCII characters",
                   "Pass the key exactly as issued.");
}

TEST(ApiKey, NeverEchoesTheKey) {
    const std::string secret = "sk-s3cretvalue";
    for (const std::string &key : {"Bearer " + secret, secret + " ", secret + "\r\n",
                                   secret + "\xc3\xa9", secret + std::string(4096, 'x')}) {
        const Failure f = key_failure(key);
        EXPECT_EQ(f.sqlstate, "22023");
        for (const std::string &text : {f.message, f.hint, f.detail})
            EXPECT_EQ(text.find("s3cret"), std::string::npos) << text;
    }
}

TEST(ApiKey, AcceptsEnvironmentReferences) {
    for (const std::string key : {"env:OPENAI_API_KEY", "env:_x1", "env:a", "env:A_1_B"})
        EXPECT_NO_THROW(v::api_key(key)) << key;
}

TEST(ApiKey, RefusesBadEnvironmentNames) {
    for (const std::string key : {"env:", "env:1BAD", "env:A-B", "env:A B", "env:A.B", "env:$X"})
        expect_refused(key_failure(key),
                       "invalid environment variable name in api_key \"" + key + "\"", kEnvHint);
    expect_refused(key_failure("env:A\nB"),
                   "invalid environment variable name in api_key \"env:A\\nB\"", kEnvHint);
}

TEST(ApiKey, EnvKeyName) {
    EXPECT_EQ(v::env_key_name("env:OPENAI_API_KEY"), std::optional<std::string>("OPENAI_API_KEY"));
    EXPECT_EQ(v::env_key_name("env:_x1"), std::optional<std::string>("_x1"));
    EXPECT_EQ(v::env_key_name("sk-abc"), std::nullopt);
    EXPECT_EQ(v::env_key_name("ENV:X"), std::nullopt);
    EXPECT_EQ(v::env_key_name("env:"), std::nullopt);
    EXPECT_EQ(v::env_key_name("env:1X"), std::nullopt);
    EXPECT_EQ(v::env_key_name(""), std::nullopt);
    EXPECT_EQ(v::env_key_name("env"), std::nullopt);
}

using Labels = std::vector<std::optional<std::string>>;

Failure labels_failure(const Labels &values, const char *what) {
    return failure_of([&] { v::labels(values, what); });
}

TEST(Labels, AcceptsAnyPrintableStrings) {
    EXPECT_NO_THROW(v::labels({}, "functions"));
    EXPECT_NO_THROW(v::labels({"chat", "embeddings", "rerank"}, "functions"));
    EXPECT_NO_THROW(v::labels({"", "Team A", "caf\xc3\xa9", "a/b?c#d"}, "tags"));
    EXPECT_NO_THROW(v::labels({std::string(256, 't')}, "tags"));
}

TEST(Labels, RefusesNullElements) {
    expect_refused(labels_failure({"chat", std::nullopt}, "functions"),
                   "functions must not contain NULL elements",
                   "Remove the NULL elements from the array.");
    expect_refused(labels_failure({std::nullopt}, "tags"), "tags must not contain NULL elements",
                   "Remove the NULL elements from the array.");
}

TEST(Labels, RefusesControlCharacters) {
    const std::string hint = "Remove the line breaks and other control characters.";
    expect_refused(labels_failure({"ok", "a\nb"}, "tags"),
                   "invalid element \"a\\nb\" in tags: elements may not contain control characters",
                   hint);
    expect_refused(labels_failure({"a\rb"}, "functions"),
                   "invalid element \"a\\rb\" in functions: elements may not contain control "
                   "characters",
                   hint);
    expect_refused(labels_failure({"a\xc2\x85"}, "tags"),
                   "invalid element \"a\\u0085\" in tags: elements may not contain control "
                   "characters",
                   hint);
}

TEST(Labels, RefusesLongElements) {
    expect_refused(labels_failure({std::string(257, 't')}, "tags"),
                   "element \"" + std::string(64, 't') +
                       "...\" of tags is too long (257 characters; the maximum is 256)",
                   "Use labels of at most 256 characters.");
}

TEST(DisplayValue, EscapesAndTruncates) {
    EXPECT_EQ(v::display_value("plain"), "plain");
    EXPECT_EQ(v::display_value("a\r\n\tb"), "a\\r\\n\\tb");
    EXPECT_EQ(v::display_value(std::string("\x00\x1b\x7f", 3)), "\\x00\\x1b\\x7f");
    EXPECT_EQ(v::display_value("caf\xc3\xa9"), "caf\xc3\xa9");
    // Invalid UTF-8 (a lone continuation byte, a truncated sequence, an overlong '/') is escaped so
    // the message stays valid in a UTF-8 database.
    EXPECT_EQ(v::display_value("a\x80z"), "a\\x80z");
    EXPECT_EQ(v::display_value("a\xc3"), "a\\xc3");
    EXPECT_EQ(v::display_value("\xc0\xaf"), "\\xc0\\xaf");
    EXPECT_EQ(v::display_value("\xe2\x80\xa9"), "\\u2029");
    EXPECT_EQ(v::display_value("abcdef", 3), "abc...");
    EXPECT_EQ(v::display_value("abc", 3), "abc");
    // Truncation counts characters and never splits one.
    EXPECT_EQ(v::display_value("\xc3\xa9\xc3\xa9\xc3\xa9", 2), "\xc3\xa9\xc3\xa9...");
}

}  // namespace
