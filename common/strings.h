// String building for error messages without operator+ chains (which also
// trip a GCC 12 -Wrestrict false positive).
#pragma once

#include <concepts>
#include <string>
#include <string_view>

namespace amber {

namespace detail {
inline void append_part(std::string& out, std::string_view part) {
  out.append(part);
}
inline void append_part(std::string& out, char c) {
  out.push_back(c);
}
template <std::integral T>
requires(!std::same_as<T, char> && !std::same_as<T, bool>) void append_part(std::string& out,
                                                                            T value) {
  out.append(std::to_string(value));
}
}  // namespace detail

template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::string out;
  (detail::append_part(out, parts), ...);
  return out;
}

}  // namespace amber
