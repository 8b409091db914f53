// Splitting a pipeline's input into chunks of characters (docs/pipelines.md).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace pgi {

// Pieces of `size` characters (UTF-8 code points, never a split character), each starting
// `size - overlap` characters after the one before; the last piece holds what is left. Empty
// text gives no piece. Requires 0 <= overlap < size.
std::vector<std::string> chunk_text(std::string_view text, std::size_t size, std::size_t overlap);

}  // namespace pgi
