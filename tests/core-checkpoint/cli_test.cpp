// The amber-image CLI, run as a process on real images.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "image_fixture.h"

namespace amber::checkpoint {
namespace {

using testing::TempDir;

struct CliRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

CliRun run(const std::string& args) {
  const char* binary = std::getenv("AMBER_IMAGE");
  CliRun r;
  if (binary == nullptr) return r;
  std::string cmd = cat(binary, " ", args, " 2>&1");
  FILE* out = ::popen(cmd.c_str(), "r");
  if (out == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), out)) > 0) r.output.append(buf, n);
  int status = ::pclose(out);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("AMBER_IMAGE") == nullptr) GTEST_SKIP() << "AMBER_IMAGE is not set";
    node_ = testing::make_frozen_node({.frames_per_pipe = 30});
    image_ = dir_.file("node.img");
    ASSERT_TRUE(testing::write_image(node_, image_).is_ok());
  }
  TempDir dir_;
  testing::FrozenNode node_;
  std::string image_;
};

TEST_F(Cli, HelpListsTheCommands) {
  CliRun r = run("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"info", "verify", "pcap", "frames", "--pipe", "Exit status"}) {
    EXPECT_NE(r.output.find(word), std::string::npos) << word << " missing in:\n" << r.output;
  }
}

TEST_F(Cli, InfoShowsTheNodeAndEveryPipe) {
  CliRun r = run(cat("info ", image_));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("node      delay-node-1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("pipe 0    link0 a_to_b (port0 -> port1)"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("pipe 1    link0 b_to_a"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(cat("held ", node_.held[0].info.frames, " frames")), std::string::npos)
      << r.output;
}

TEST_F(Cli, InfoShowsEachPipesScheduleAndWhereItStood) {
  testing::FrozenNode node = testing::make_frozen_node({.frames_per_pipe = 300, .scheduled = true});
  const std::string image = dir_.file("scheduled.img");
  ASSERT_TRUE(testing::write_image(node, image).is_ok());
  CliRun r = run(cat("info ", image));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(
                "schedule: 3 segments over 800us, trace synthetic.trace (8 opportunities of 1500 B "
                "over 5ms, mean 19.2Mbit/s), then loop"),
            std::string::npos)
      << r.output;
  const auto& s = node.held[0].info.state.schedule;
  EXPECT_NE(r.output.find(cat("segment 2 of 3, ")), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(cat("trace at opportunity ", s.trace_index + 1, " of 8, pass ",
                              s.trace_loops, ", ", s.surplus_bytes, " bytes left")),
            std::string::npos)
      << r.output;
}

TEST_F(Cli, VerifyAcceptsAGoodImageAndRefusesDamagedOnes) {
  CliRun ok = run(cat("verify ", image_, " --node delay-node-1"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find(": ok, node delay-node-1, 2 pipes"), std::string::npos) << ok.output;

  CliRun other = run(cat("verify ", image_, " --node delay-node-9"));
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.output.find("this node is 'delay-node-9'"), std::string::npos) << other.output;

  auto bytes = testing::read_file(image_);
  bytes.resize(bytes.size() - 5);
  testing::write_file(dir_.file("cut.img"), bytes);
  CliRun cut = run(cat("verify ", dir_.file("cut.img")));
  EXPECT_EQ(cut.exit_code, 1);
  EXPECT_NE(cut.output.find("data loss"), std::string::npos) << cut.output;
  EXPECT_NE(cut.output.find("truncated"), std::string::npos) << cut.output;

  CliRun missing = run(cat("verify ", dir_.file("nope.img")));
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("no such image"), std::string::npos) << missing.output;
}

TEST_F(Cli, PcapWritesOneFilePerPipe) {
  CliRun r = run(cat("pcap ", image_, " ", dir_.file("out")));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir_.file("out/pipe0-link0-a_to_b.pcap"))) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir_.file("out/pipe1-link0-b_to_a.pcap"))) << r.output;
}

TEST_F(Cli, FramesListsOnePipeWithDecodedHeaders) {
  CliRun r = run(cat("frames ", image_, " --pipe 1 --limit 3"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  size_t lines = 0;
  for (char c : r.output) lines += c == '\n';
  EXPECT_EQ(lines, 3u) << r.output;
  EXPECT_NE(r.output.find("pipe 1 #0 "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("pipe 0 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("IPv4 10.0.0.1:5001 > 10.0.0.2:40960 UDP"), std::string::npos)
      << r.output;
}

TEST_F(Cli, BadUsageExitsWithTwoAndSaysWhy) {
  CliRun none = run("");
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.output.find("missing COMMAND"), std::string::npos) << none.output;
  CliRun unknown = run(cat("explode ", image_));
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.output.find("unknown command 'explode'"), std::string::npos);
  CliRun bad_pipe = run(cat("frames ", image_, " --pipe 9"));
  EXPECT_EQ(bad_pipe.exit_code, 2);
  EXPECT_NE(bad_pipe.output.find("the image has 2 pipes"), std::string::npos) << bad_pipe.output;
  CliRun number = run(cat("frames ", image_, " --limit many"));
  EXPECT_EQ(number.exit_code, 2);
  EXPECT_NE(number.output.find("--limit: expected a non-negative integer, got 'many'"),
            std::string::npos)
      << number.output;
}

}  // namespace
}  // namespace amber::checkpoint
