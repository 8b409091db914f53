#include "statement_redact.h"

#include "redact.h"

namespace pgi {

namespace {

// The functions that take an upstream key, and the argument that carries one.
constexpr std::string_view kKeyWords[] = {
    "register_external_service",
    "update_external_service",
    "api_key",
};

bool is_alpha(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}
// Bytes of a multibyte character count as letters, as in PostgreSQL's scanner.
bool ident_start(unsigned char c) {
    return is_alpha(c) || c == '_' || c >= 0x80;
}
bool ident_char(unsigned char c) {
    return ident_start(c) || is_digit(c) || c == '$';
}
char fold(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool equal_folded(std::string_view a, std::string_view b) {
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (fold(a[i]) != fold(b[i]))
            return false;
    }
    return true;
}

// Appends to a caller's buffer, counting what does not fit.
class Writer {
  public:
    Writer(char *out, std::size_t cap) : out_(out), cap_(cap) {}
    void put(char c) {
        if (n_ < cap_)
            out_[n_] = c;
        ++n_;
    }
    void put(std::string_view s) {
        for (char c : s)
            put(c);
    }
    // Takes back the last k bytes written (a literal's E or U& prefix, seen before its quote).
    void unput(std::size_t k) { n_ -= k; }
    std::size_t size() const { return n_; }

  private:
    char *out_;
    std::size_t cap_;
    std::size_t n_ = 0;
};

// The length of the $tag$ (or $$) that opens a dollar-quoted string at i, or 0. A '$' inside an
// identifier (a$b) or before a digit ($1, a parameter) opens nothing.
std::size_t dollar_tag(std::string_view text, std::size_t i) {
    if (i > 0 && ident_char(static_cast<unsigned char>(text[i - 1])))
        return 0;
    std::size_t j = i + 1;
    if (j < text.size() && text[j] == '$')
        return 2;
    if (j >= text.size() || !ident_start(static_cast<unsigned char>(text[j])))
        return 0;
    while (j < text.size() && ident_char(static_cast<unsigned char>(text[j])) && text[j] != '$')
        ++j;
    return j < text.size() && text[j] == '$' ? j + 1 - i : 0;
}

// Where a comment that starts at i ends (one past it), or i when none starts there.
std::size_t comment_end(std::string_view text, std::size_t i) {
    if (text.substr(i, 2) == "--") {
        const std::size_t nl = text.find('\n', i);
        return nl == std::string_view::npos ? text.size() : nl;
    }
    if (text.substr(i, 2) != "/*")
        return i;
    // Nested, as PostgreSQL's are.
    std::size_t depth = 0;
    std::size_t j = i;
    while (j < text.size()) {
        if (text.substr(j, 2) == "/*") {
            ++depth;
            j += 2;
        } else if (text.substr(j, 2) == "*/") {
            j += 2;
            if (--depth == 0)
                return j;
        } else {
            ++j;
        }
    }
    return text.size();
}

// One past the end of the quoted literal whose opening quote is at i.
std::size_t quoted_end(std::string_view text, std::size_t i, bool backslashes) {
    std::size_t j = i + 1;
    while (j < text.size()) {
        if (backslashes && text[j] == '\\') {
            j += 2;
        } else if (text[j] == '\'') {
            if (j + 1 < text.size() && text[j + 1] == '\'')
                j += 2;
            else
                return j + 1;
        } else {
            ++j;
        }
    }
    return text.size();
}

std::size_t skip_space_and_comments(std::string_view text, std::size_t i) {
    while (i < text.size()) {
        const char c = text[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            ++i;
            continue;
        }
        const std::size_t end = comment_end(text, i);
        if (end == i)
            break;
        i = end;
    }
    return i;
}

}  // namespace

bool is_key_bearing(std::string_view text) noexcept {
    std::size_t i = 0;
    while (i < text.size()) {
        if (!ident_char(static_cast<unsigned char>(text[i]))) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < text.size() && ident_char(static_cast<unsigned char>(text[j])))
            ++j;
        const std::string_view word = text.substr(i, j - i);
        for (std::string_view key_word : kKeyWords) {
            if (equal_folded(word, key_word))
                return true;
        }
        i = j;
    }
    return false;
}

bool quotes_parameters(std::string_view text) noexcept {
    return text.find("parameters: $") != std::string_view::npos;
}

std::size_t redact_literals(std::string_view text, const LiteralSyntax &syntax, char *out,
                            std::size_t cap) noexcept {
    Writer w(out, cap);
    std::size_t i = 0;
    const auto literal = [&w]() {
        w.put('\'');
        w.put(kRedacted);
        w.put('\'');
    };
    while (i < text.size()) {
        const char c = text[i];
        const std::size_t comment = comment_end(text, i);
        if (comment != i) {
            w.put(text.substr(i, comment - i));
            i = comment;
        } else if (c == '"' && syntax.quoted_values) {
            // The value is quoted as it is, without doubling: it ends at the next quote.
            const std::size_t close = text.find('"', i + 1);
            w.put('"');
            w.put(kRedacted);
            w.put('"');
            i = close == std::string_view::npos ? text.size() : close + 1;
        } else if (c == '"' && syntax.sql_only) {
            const std::size_t close = text.find('"', i + 1);
            const std::size_t end = close == std::string_view::npos ? text.size() : close + 1;
            w.put(text.substr(i, end - i));
            i = end;
        } else if (c == '\'') {
            // E'...' and U&'...': the prefix, already written, becomes part of the replacement.
            bool backslashes = !syntax.standard_strings;
            const auto word_start = [&text](std::size_t at) {
                return at == 0 || !ident_char(static_cast<unsigned char>(text[at - 1]));
            };
            if (i >= 1 && fold(text[i - 1]) == 'e' && word_start(i - 1)) {
                w.unput(1);
                backslashes = true;
            } else if (i >= 2 && text[i - 1] == '&' && fold(text[i - 2]) == 'u' &&
                       word_start(i - 2)) {
                w.unput(2);
                backslashes = false;
            }
            literal();
            i = quoted_end(text, i, backslashes);
        } else if (c == '$' && dollar_tag(text, i) > 0) {
            const std::size_t tag_size = dollar_tag(text, i);
            const std::string_view tag = text.substr(i, tag_size);
            const std::size_t close = text.find(tag, i + tag_size);
            literal();
            i = close == std::string_view::npos ? text.size() : close + tag_size;
        } else {
            w.put(c);
            ++i;
        }
    }
    return w.size();
}

bool executed_statement_name(std::string_view text, char *out, std::size_t cap) noexcept {
    if (cap == 0)
        return false;
    std::size_t i = skip_space_and_comments(text, 0);
    constexpr std::string_view kExecute = "execute";
    if (!equal_folded(text.substr(i, kExecute.size()), kExecute))
        return false;
    i += kExecute.size();
    if (i < text.size() && ident_char(static_cast<unsigned char>(text[i])))
        return false;  // EXECUTEx: another word
    i = skip_space_and_comments(text, i);
    std::size_t n = 0;
    const auto put = [&](char c) {
        if (n + 1 < cap)
            out[n++] = c;
    };
    if (i < text.size() && text[i] == '"') {
        for (++i; i < text.size(); ++i) {
            if (text[i] == '"') {
                if (i + 1 < text.size() && text[i + 1] == '"')
                    ++i;
                else
                    break;
            }
            put(text[i]);
        }
    } else if (i < text.size() && ident_start(static_cast<unsigned char>(text[i]))) {
        for (; i < text.size() && ident_char(static_cast<unsigned char>(text[i])); ++i)
            put(fold(text[i]));
    } else {
        return false;
    }
    out[n] = '\0';
    return n > 0;
}

std::string redact_literals(std::string_view text, const LiteralSyntax &syntax) {
    std::string out(redact_literals(text, syntax, nullptr, 0), '\0');
    redact_literals(text, syntax, out.data(), out.size());
    return out;
}

}  // namespace pgi
