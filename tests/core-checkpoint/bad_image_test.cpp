// Damaged images: every one is refused, with a message naming the problem.
#include <gtest/gtest.h>

#include <filesystem>

#include "core-checkpoint/crc32c.h"
#include "core-checkpoint/image.h"
#include "image_fixture.h"

namespace amber::checkpoint {
namespace {

using testing::TempDir;

// Offsets where each chunk starts, and the file's size last.
std::vector<size_t> chunk_starts(const std::vector<uint8_t>& file) {
  std::vector<size_t> starts;
  size_t at = 16;
  while (at + 8 <= file.size()) {
    starts.push_back(at);
    uint32_t len = file[at] | file[at + 1] << 8 | file[at + 2] << 16 | uint32_t{file[at + 3]} << 24;
    at += 8 + len;
  }
  starts.push_back(file.size());
  return starts;
}

class BadImage : public ::testing::Test {
 protected:
  void SetUp() override {
    node_ = testing::make_frozen_node({.frames_per_pipe = 40});
    path_ = dir_.file("good.img");
    ASSERT_TRUE(testing::write_image(node_, path_, {.sync = false, .chunk_bytes = 4096}).is_ok());
    good_ = testing::read_file(path_);
    starts_ = chunk_starts(good_);
    ASSERT_GE(starts_.size(), 6u) << "want a header, several batches and a trailer";
    ASSERT_EQ(starts_.back(), good_.size());
  }

  // Writes bytes as an image and verifies it; returns the refusal.
  Status check(const std::vector<uint8_t>& bytes, const std::string& name = "bad.img") {
    const std::string path = dir_.file(name);
    testing::write_file(path, bytes);
    return verify_image(path);
  }

  static uint32_t get_u32(const std::vector<uint8_t>& f, size_t at) {
    return f[at] | f[at + 1] << 8 | f[at + 2] << 16 | uint32_t{f[at + 3]} << 24;
  }

  TempDir dir_;
  testing::FrozenNode node_;
  std::string path_;
  std::vector<uint8_t> good_;
  std::vector<size_t> starts_;
};

#define EXPECT_REFUSED(status, code_, text)                                               \
  do {                                                                                    \
    const Status s_ = (status);                                                           \
    EXPECT_EQ(s_.code(), code_) << s_.to_string();                                        \
    EXPECT_NE(s_.message().find(text), std::string::npos) << "message: " << s_.message(); \
  } while (0)

TEST_F(BadImage, TheGoodImageVerifies) {
  EXPECT_TRUE(check(good_).is_ok());
}

TEST_F(BadImage, TruncatedAtEveryChunkBoundaryAndInsideEveryChunk) {
  for (size_t i = 0; i + 1 < starts_.size(); ++i) {
    const size_t start = starts_[i];
    const size_t end = starts_[i + 1];
    for (size_t cut : {start, start + 3, start + 8, start + (end - start) / 2, end - 1}) {
      std::vector<uint8_t> bytes(good_.begin(), good_.begin() + static_cast<long>(cut));
      SCOPED_TRACE(cat("cut at byte ", cut, " in chunk ", i));
      EXPECT_REFUSED(check(bytes), ErrorCode::kDataLoss, "truncated");
    }
  }
  for (size_t cut : {size_t{1}, size_t{8}, size_t{12}, size_t{15}}) {
    std::vector<uint8_t> bytes(good_.begin(), good_.begin() + static_cast<long>(cut));
    SCOPED_TRACE(cat("cut at byte ", cut, " in the file header"));
    EXPECT_REFUSED(check(bytes), ErrorCode::kDataLoss, "truncated");
  }
}

TEST_F(BadImage, TruncationIsFoundByOpenOrBeforeTheLastFrame) {
  // A restore reading frame by frame learns of the damage at the latest
  // when the trailer is missing, never by a silent short read.
  std::vector<uint8_t> bytes(good_.begin(), good_.begin() + static_cast<long>(starts_[3]));
  const std::string path = dir_.file("cut.img");
  testing::write_file(path, bytes);
  auto reader = ImageReader::open(path, "delay-node-1");
  ASSERT_TRUE(reader.is_ok());
  size_t pipe;
  FrameRecord r;
  Result<bool> more = true;
  while (more.is_ok() && *more) more = reader->next_frame(&pipe, &r);
  EXPECT_REFUSED(more.status(), ErrorCode::kDataLoss,
                 "truncated: the file ends at byte " + std::to_string(starts_[3]));
  // Once failed, it stays failed.
  EXPECT_FALSE(reader->next_frame(&pipe, &r).is_ok());
}

TEST_F(BadImage, EverySingleBitFlipIsRefused) {
  // CRC32C catches every single-bit error in a chunk; the file header has
  // its own CRC. Step through the file so the test stays fast.
  const std::string path = dir_.file("flip.img");
  int refused = 0, tried = 0;
  for (size_t at = 0; at < good_.size(); at += (at < 64 ? 1 : 47)) {
    std::vector<uint8_t> bytes = good_;
    bytes[at] ^= static_cast<uint8_t>(1u << (at % 8));
    testing::write_file(path, bytes);
    Status s = verify_image(path);
    ++tried;
    if (!s.is_ok()) ++refused;
    EXPECT_FALSE(s.is_ok()) << "bit " << at % 8 << " of byte " << at << " flipped, accepted";
  }
  EXPECT_EQ(refused, tried);
  EXPECT_GT(tried, 300);
}

TEST_F(BadImage, CorruptedPayloadNamesTheChunkAndTheChecksums) {
  std::vector<uint8_t> bytes = good_;
  bytes[starts_[2] + 20] ^= 0x40;
  EXPECT_REFUSED(check(bytes), ErrorCode::kDataLoss,
                 cat("chunk 2 at byte ", starts_[2], ": checksum mismatch"));
}

TEST_F(BadImage, ImpossibleChunkLengthIsRefusedAsCorruption) {
  std::vector<uint8_t> bytes = good_;
  bytes[starts_[1] + 3] = 0x7f;  // length ~2 GB
  EXPECT_REFUSED(check(bytes), ErrorCode::kDataLoss, "beyond the 67108864-byte limit");
}

TEST_F(BadImage, WrongVersionIsRefusedNamingBothVersions) {
  std::vector<uint8_t> bytes = good_;
  bytes[8] = 2;
  const uint32_t crc = crc32c(bytes.data(), 12);
  for (int i = 0; i < 4; ++i) bytes[12 + i] = static_cast<uint8_t>(crc >> (8 * i));
  EXPECT_REFUSED(check(bytes), ErrorCode::kFailedPrecondition,
                 "image format version 2 is not supported (this build reads version 1)");
}

TEST_F(BadImage, EmptyFileAndOtherFilesAreNotImages) {
  EXPECT_REFUSED(check({}), ErrorCode::kInvalidArgument, "not an amber image: the file is empty");
  std::string text = "hello, this is a text file\n";
  EXPECT_REFUSED(check(std::vector<uint8_t>(text.begin(), text.end())), ErrorCode::kInvalidArgument,
                 "not an amber image: it starts with \"hello, t\"");
  std::vector<uint8_t> elf = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_REFUSED(check(elf), ErrorCode::kInvalidArgument, "\\x7fELF");
  EXPECT_REFUSED(verify_image(dir_.file("missing.img")), ErrorCode::kNotFound, "no such image");
  EXPECT_REFUSED(verify_image(dir_.path()), ErrorCode::kUnavailable, "reading");
}

TEST_F(BadImage, WrongNodeIsRefusedUnlessAnyNodeIsAllowed) {
  auto reader = ImageReader::open(path_, "delay-node-2");
  ASSERT_FALSE(reader.is_ok());
  EXPECT_REFUSED(reader.status(), ErrorCode::kFailedPrecondition,
                 "the image is of node 'delay-node-1', this node is 'delay-node-2'");
  EXPECT_TRUE(ImageReader::open(path_, std::nullopt).is_ok());
}

TEST_F(BadImage, MissingRepeatedOrSwappedChunksAreRefused) {
  auto chunk = [&](size_t i) {
    return std::vector<uint8_t>(good_.begin() + static_cast<long>(starts_[i]),
                                good_.begin() + static_cast<long>(starts_[i + 1]));
  };
  auto assemble = [&](const std::vector<size_t>& order) {
    std::vector<uint8_t> out(good_.begin(), good_.begin() + 16);
    for (size_t i : order) {
      auto c = chunk(i);
      out.insert(out.end(), c.begin(), c.end());
    }
    return out;
  };
  const size_t n = starts_.size() - 1;  // chunks, the trailer last
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;

  auto dropped = order;
  dropped.erase(dropped.begin() + 2);
  EXPECT_REFUSED(check(assemble(dropped)), ErrorCode::kDataLoss, "a chunk is missing or repeated");
  auto repeated = order;
  repeated.insert(repeated.begin() + 2, 2);
  EXPECT_FALSE(check(assemble(repeated)).is_ok());
  // The last batch of pipe 0 missing: found when pipe 1's frames begin.
  size_t last_of_pipe0 = 1;
  {
    auto reader = ImageReader::open(path_, std::nullopt);
    ASSERT_TRUE(reader.is_ok());
    const uint64_t pipe0_frames = reader->pipes()[0].frames;
    ASSERT_GT(pipe0_frames, 0u);
    // Chunks holding pipe 0's frames come first; find the last of them by
    // dropping each in turn until the message names the incomplete pipe.
    for (size_t i = 1; i + 1 < n; ++i) {
      auto without = order;
      without.erase(without.begin() + static_cast<long>(i));
      Status st = check(assemble(without));
      if (st.message().find("while pipe 0 has") != std::string::npos) last_of_pipe0 = i;
    }
  }
  EXPECT_GT(last_of_pipe0, 1u) << "no chunk whose loss leaves pipe 0 incomplete";

  auto swapped = order;
  std::swap(swapped[1], swapped[2]);
  EXPECT_REFUSED(check(assemble(swapped)), ErrorCode::kDataLoss, "expected frame 0");
  auto no_header = order;
  no_header.erase(no_header.begin());
  EXPECT_REFUSED(check(assemble(no_header)), ErrorCode::kDataLoss, "expected the image header");
  auto two_headers = order;
  two_headers.insert(two_headers.begin() + 1, 0);
  EXPECT_REFUSED(check(assemble(two_headers)), ErrorCode::kDataLoss, "a second image header");
}

TEST_F(BadImage, BytesAfterTheTrailerAreRefused) {
  std::vector<uint8_t> bytes = good_;
  bytes.push_back(0);
  EXPECT_REFUSED(check(bytes), ErrorCode::kDataLoss, "1 unexpected bytes after the trailer");
}

}  // namespace
}  // namespace amber::checkpoint
