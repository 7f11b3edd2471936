#include "config/text_format.h"

#include <google/protobuf/io/tokenizer.h>

#include <fstream>
#include <sstream>

#include "common/strings.h"

namespace amber::config {
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

std::string Locator::at(const google::protobuf::Descriptor* type, const char* field,
                        int index) const {
  const google::protobuf::FieldDescriptor* fd = type->FindFieldByName(field);
  if (tree_ != nullptr && fd != nullptr) {
    const auto loc = tree_->GetLocation(fd, index);
    if (loc.line >= 0) return cat(origin_, ":", loc.line + 1, ":", loc.column + 1, ": ");
  }
  return cat(origin_, ": ");
}

Locator Locator::nested(const google::protobuf::Message& msg, const char* field, int index) const {
  const google::protobuf::FieldDescriptor* fd = msg.GetDescriptor()->FindFieldByName(field);
  return Locator(origin_,
                 tree_ != nullptr && fd != nullptr ? tree_->GetTreeForNested(fd, index) : nullptr);
}

Result<std::string> read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return not_found(cat(path, ": cannot open the ", what));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace amber::config
