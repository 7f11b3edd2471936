// Test support: a temporary directory, and a frozen node made of real link
// model pipes holding real frames, written to an image.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/strings.h"
#include "core-checkpoint/image.h"
#include "link-emulator/pipe.h"

namespace amber::checkpoint::testing {

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "amber-ckpt-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) != nullptr ? tmpl : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return cat(path_, "/", name); }

 private:
  std::string path_;
};

// A pipe with the frames it holds and, for each, its bytes.
struct HeldPipe {
  PipeInfo info;
  std::vector<link::Frame> frames;          // storage; never resized once linked
  std::vector<std::vector<uint8_t>> bytes;  // bytes[i] belongs to frames[i]
};

// Deterministic frame contents: an Ethernet/IPv4/UDP header then a pattern
// derived from seed, so a test sees any byte out of place.
std::vector<uint8_t> make_frame_bytes(uint32_t length, uint64_t seed);

// Runs a real pipe with `count` frames of `length` bytes (length 0: mixed
// sizes 60..1514) arriving every `gap_ns` from 0, freezes at the last
// arrival, and captures state and held frames. The config exercises
// jitter, loss and reordering unless plain is set, and a schedule if
// scheduled is.
struct NodeSpec {
  size_t frames_per_pipe = 200;
  uint32_t length = 0;
  int64_t gap_ns = 2'000;
  size_t pipes = 2;
  bool plain = false;
  // A trace gives the rate and segments change delay and jitter over time,
  // frozen part-way through both.
  bool scheduled = false;
};
struct FrozenNode {
  NodeInfo node;
  std::vector<std::unique_ptr<link::Frame[]>> storage;  // frames linked into pipes
  std::vector<link::Pipe> pipes;  // the originals, frozen, still holding frames
  std::vector<HeldPipe> held;     // the same frames, as the image holds them
  std::vector<PipeInfo> infos() const;
};
FrozenNode make_frozen_node(const NodeSpec& spec = {});

// Writes the node's image; fails the test on error.
Status write_image(const FrozenNode& node, const std::string& path,
                   const WriterOptions& options = {});

std::vector<uint8_t> read_file(const std::string& path);
void write_file(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace amber::checkpoint::testing
