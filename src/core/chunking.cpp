#include "chunking.h"

#include "utf8.h"

namespace pgi {

std::vector<std::string> chunk_text(std::string_view text, std::size_t size, std::size_t overlap) {
    // Where each character starts, in bytes, and the end.
    std::vector<std::size_t> starts;
    for (std::size_t i = 0; i < text.size(); i += utf8_step(text.substr(i)).bytes)
        starts.push_back(i);
    const std::size_t chars = starts.size();
    starts.push_back(text.size());
    std::vector<std::string> pieces;
    const std::size_t step = size - overlap;
    for (std::size_t first = 0; first < chars; first += step) {
        const std::size_t last = first + size < chars ? first + size : chars;
        pieces.emplace_back(text.substr(starts[first], starts[last] - starts[first]));
        if (last == chars)
            break;
    }
    return pieces;
}

}  // namespace pgi
