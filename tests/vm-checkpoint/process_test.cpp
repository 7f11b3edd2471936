#include "vm-checkpoint/process.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace amber::vm {
namespace {

class FileTail : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/amb-tail-XXXXXX";
    int fd = ::mkstemp(name);
    ASSERT_GE(fd, 0);
    ::close(fd);
    path_ = name;
  }
  void TearDown() override { ::unlink(path_.c_str()); }
  void write(const std::string& text) { std::ofstream(path_, std::ios::binary) << text; }
  std::string path_;
};

TEST_F(FileTail, ALongFileGivesItsLastBytesWithoutTheFinalNewlines) {
  std::string text;
  for (int i = 0; i < 200'000; ++i) text += "line " + std::to_string(i) + "\n";
  write(text);
  const std::string tail = file_tail(path_, 64);
  const std::string expected = text.substr(text.size() - 64, 63);  // no trailing '\n'
  EXPECT_EQ(tail, expected);
  EXPECT_NE(tail.find("line 199999"), std::string::npos);
}

TEST_F(FileTail, AShortFileIsReturnedWhole) {
  write("one\ntwo\n\n");
  EXPECT_EQ(file_tail(path_, 600), "one\ntwo");
}

TEST_F(FileTail, AnEmptyOrMissingFileGivesNothing) {
  write("");
  EXPECT_EQ(file_tail(path_, 600), "");
  EXPECT_EQ(file_tail(path_ + ".absent", 600), "");
}

}  // namespace
}  // namespace amber::vm
