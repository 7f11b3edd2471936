#include "controller/experiment_steps.h"

#include <chrono>

#include "common/strings.h"

namespace amber::controller {

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string join(const google::protobuf::RepeatedPtrField<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}

// The first error of a parallel step, with how many agents failed.
Status first_error(const std::vector<Status>& errors) {
  const Status* first = nullptr;
  size_t failed = 0;
  for (const Status& s : errors) {
    if (s.is_ok()) continue;
    if (first == nullptr) first = &s;
    ++failed;
  }
  if (first == nullptr) return Status::ok();
  if (failed == 1) return *first;
  return Status(first->code(), cat(first->message(), " (and ", failed - 1, " more agent",
                                   failed > 2 ? "s" : "", ")"));
}

}  // namespace amber::controller
