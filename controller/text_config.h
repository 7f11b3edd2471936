// Configuration files in Protobuf text format (the VM host's, the
// topology): parsing with errors that name file, line and column, and the
// line a field came from for errors found afterwards.
#pragma once

#include <google/protobuf/message.h>
#include <google/protobuf/text_format.h>

#include <string>

#include "common/status.h"

namespace amber::controller {

// Parses `text` into `message`, recording every field's location in `tree`.
// `origin` names the text in the error ("topology.conf:3:7: ...").
Status parse_text_message(const std::string& text, const std::string& origin,
                          google::protobuf::Message* message,
                          google::protobuf::TextFormat::ParseInfoTree* tree);

// "origin:line: " of field `name` of `message`'s type (index -1: not
// repeated), or "origin: " when the file does not say.
std::string field_location(const std::string& origin,
                           const google::protobuf::TextFormat::ParseInfoTree& tree,
                           const google::protobuf::Descriptor* type, const char* name,
                           int index = -1);

// The whole of a file, or kNotFound naming it as `what`.
Result<std::string> read_text_file(const std::string& path, const char* what);

}  // namespace amber::controller
