#include "setting_list.h"

namespace pgi {

namespace {

std::string trim(const std::string &s) {
    std::size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos)
        return {};
    std::size_t e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

}  // namespace

std::vector<std::string> split_setting_list(const std::string &list) {
    std::vector<std::string> elements;
    if (trim(list).empty())
        return elements;
    std::size_t start = 0;
    while (start <= list.size()) {
        std::size_t comma = list.find(',', start);
        if (comma == std::string::npos)
            comma = list.size();
        elements.push_back(trim(list.substr(start, comma - start)));
        start = comma + 1;
    }
    return elements;
}

}  // namespace pgi
