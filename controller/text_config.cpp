#include "controller/text_config.h"

#include <google/protobuf/io/tokenizer.h>

#include <fstream>
#include <sstream>

#include "common/strings.h"

namespace amber::controller {
namespace {

class Collector final : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(const std::string& origin) : origin_(origin) {}
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty()) first_ = cat(origin_, ":", line + 1, ":", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  const std::string& origin_;
  std::string first_;
};

}  // namespace

Status parse_text_message(const std::string& text, const std::string& origin,
                          google::protobuf::Message* message,
                          google::protobuf::TextFormat::ParseInfoTree* tree) {
  google::protobuf::TextFormat::Parser parser;
  Collector errors(origin);
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(tree);
  if (parser.ParseFromString(text, message)) return Status::ok();
  return invalid_argument(errors.first().empty()
                              ? cat(origin, ": not a ", message->GetTypeName(), " text message")
                              : errors.first());
}

std::string field_location(const std::string& origin,
                           const google::protobuf::TextFormat::ParseInfoTree& tree,
                           const google::protobuf::Descriptor* type, const char* name, int index) {
  auto loc = tree.GetLocation(type->FindFieldByName(name), index);
  if (loc.line < 0) return cat(origin, ": ");
  return cat(origin, ":", loc.line + 1, ": ");
}

Result<std::string> read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return not_found(cat(path, ": cannot open the ", what));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace amber::controller
