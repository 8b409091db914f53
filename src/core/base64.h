// Base64 (RFC 4648, standard alphabet) and the float32 vectors that OpenAI-compatible embeddings
// carry as base64 when a client asks for encoding_format "base64". The gateway converts every
// embedding response through these, so they are table-driven and size their output up front.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace pgi::base64 {

// Standard alphabet, with '=' padding.
std::string encode(const std::string &bytes);

// Accepts padded input and input with the padding left off; nullopt for anything else: characters
// outside the alphabet (whitespace and the URL-safe "-_" included), misplaced or partial padding,
// a length that no encoding produces, or non-zero unused bits in the last character.
std::optional<std::string> decode(const std::string &text);

// Each float as its IEEE 754 binary32 bits in little-endian order, whatever the host's byte order:
// the layout OpenAI's base64 embeddings use. NaN payloads and the sign of zero are preserved.
std::string encode_floats(const std::vector<float> &values);

// nullopt when the text is not valid base64 or its length in bytes is not a multiple of 4.
std::optional<std::vector<float>> decode_floats(const std::string &text);

}  // namespace pgi::base64
