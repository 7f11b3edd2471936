// Configuration files in Protobuf text format, one way for all of them (the
// delay node's links, the topology, the VM host's): parsing with errors
// that name file, line and column, and where a field was written for the
// errors found afterwards, in the same "file:line:column: " form.
#pragma once

#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>

#include <string>

#include "common/status.h"

namespace amber::config {

// Parses `text` into `message`, recording every field's location in `tree`.
// `origin` names the text in the error ("topology.conf:3:7: ...").
Status parse_text_message(const std::string& text, const std::string& origin,
                          google::protobuf::Message* message,
                          google::protobuf::TextFormat::ParseInfoTree* tree);

// Where a field was written, for errors found after the parse:
// "origin:line:column: ", or "origin: " when the text does not say (a
// default, a field set by no one).
class Locator {
 public:
  Locator(std::string origin, const google::protobuf::TextFormat::ParseInfoTree* tree)
      : origin_(std::move(origin)), tree_(tree) {}

  // Field `field` of `type` (index -1: not repeated).
  std::string at(const google::protobuf::Descriptor* type, const char* field, int index = -1) const;
  std::string at(const google::protobuf::Message& msg, const char* field, int index = -1) const {
    return at(msg.GetDescriptor(), field, index);
  }
  // The locator of a message field's contents.
  Locator nested(const google::protobuf::Message& msg, const char* field, int index = -1) const;
  const std::string& origin() const { return origin_; }

 private:
  std::string origin_;
  const google::protobuf::TextFormat::ParseInfoTree* tree_;
};

// The whole of a file, or kNotFound naming it as `what`.
Result<std::string> read_text_file(const std::string& path, const char* what);

}  // namespace amber::config
