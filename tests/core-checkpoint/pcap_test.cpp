#include <gtest/gtest.h>
#include <pcap/pcap.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>

#include "core-checkpoint/pcap_export.h"
#include "image_fixture.h"

namespace amber::checkpoint {
namespace {

using testing::TempDir;

struct Packet {
  int64_t ts_ns;
  std::vector<uint8_t> bytes;
};

std::vector<Packet> read_pcap(const std::string& path, std::string* error) {
  char errbuf[PCAP_ERRBUF_SIZE];
  pcap_t* p =
      pcap_open_offline_with_tstamp_precision(path.c_str(), PCAP_TSTAMP_PRECISION_NANO, errbuf);
  std::vector<Packet> out;
  if (p == nullptr) {
    *error = errbuf;
    return out;
  }
  EXPECT_EQ(pcap_datalink(p), DLT_EN10MB);
  struct pcap_pkthdr* h;
  const u_char* data;
  while (pcap_next_ex(p, &h, &data) == 1) {
    EXPECT_EQ(h->caplen, h->len);
    out.push_back({static_cast<int64_t>(h->ts.tv_sec) * 1'000'000'000 + h->ts.tv_usec,
                   std::vector<uint8_t>(data, data + h->caplen)});
  }
  pcap_close(p);
  return out;
}

TEST(PcapExport, OneNanosecondCapturePerPipeWithVirtualArrivalTimes) {
  TempDir dir;
  auto node = testing::make_frozen_node({.frames_per_pipe = 100, .pipes = 3});
  const std::string image = dir.file("node.img");
  ASSERT_TRUE(testing::write_image(node, image).is_ok());
  std::vector<std::string> files;
  Status s = export_pcap(image, dir.file("pcap"), &files);
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(std::filesystem::path(files[0]).filename(), "pipe0-link0-a_to_b.pcap");
  EXPECT_EQ(std::filesystem::path(files[1]).filename(), "pipe1-link0-b_to_a.pcap");
  for (size_t p = 0; p < files.size(); ++p) {
    std::string error;
    auto packets = read_pcap(files[p], &error);
    ASSERT_TRUE(error.empty()) << error;
    ASSERT_EQ(packets.size(), node.held[p].frames.size());
    for (size_t i = 0; i < packets.size(); ++i) {
      EXPECT_EQ(packets[i].ts_ns, node.held[p].frames[i].arrival_ns);
      EXPECT_EQ(packets[i].bytes, node.held[p].bytes[i]);
    }
  }
}

TEST(PcapExport, TcpdumpReadsTheCapture) {
  if (!std::filesystem::exists("/usr/bin/tcpdump") &&
      !std::filesystem::exists("/usr/sbin/tcpdump")) {
    GTEST_SKIP() << "tcpdump is not installed";
  }
  TempDir dir;
  auto node =
      testing::make_frozen_node({.frames_per_pipe = 10, .length = 200, .pipes = 1, .plain = true});
  const std::string image = dir.file("node.img");
  ASSERT_TRUE(testing::write_image(node, image).is_ok());
  std::vector<std::string> files;
  ASSERT_TRUE(export_pcap(image, dir.path(), &files).is_ok());
  std::string cmd = cat("tcpdump -nn --time-stamp-precision=nano -r ", files[0], " 2>&1");
  FILE* out = ::popen(cmd.c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::string text;
  char line[512];
  while (std::fgets(line, sizeof(line), out) != nullptr) text += line;
  int rc = ::pclose(out);
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << text;
  EXPECT_NE(text.find("10.0.0.1.5001 > 10.0.0.2.40960: UDP, length 158"), std::string::npos)
      << text;
  // The first frame arrived at virtual 0: tcpdump prints it as the epoch.
  EXPECT_NE(text.find("00:00:00.000000000 IP"), std::string::npos) << text;
}

TEST(PcapExport, FramesFromAFrozenNodeDirectlyAndEmptyPipes) {
  TempDir dir;
  auto node = testing::make_frozen_node({.frames_per_pipe = 5, .pipes = 3});
  auto exporter = PcapExporter::create(dir.path(), node.infos());
  ASSERT_TRUE(exporter.is_ok());
  // Only pipe 1 gets frames; 0 and 2 still get (empty) captures.
  for (size_t i = 0; i < node.held[1].frames.size(); ++i) {
    FrameRecord r = record_of(node.held[1].frames[i]);
    r.bytes = node.held[1].bytes[i];
    ASSERT_TRUE(exporter->add_frame(1, r).is_ok());
  }
  Status late = exporter->add_frame(0, FrameRecord{});
  EXPECT_NE(late.message().find("pipes come in order"), std::string::npos) << late.message();
  auto fresh = PcapExporter::create(dir.file("again"), node.infos());
  ASSERT_TRUE(fresh.is_ok());
  ASSERT_TRUE(fresh->add_frame(1, FrameRecord{}).is_ok());
  std::vector<std::string> files;
  ASSERT_TRUE(fresh->finish(&files).is_ok());
  ASSERT_EQ(files.size(), 3u);
  std::string error;
  EXPECT_EQ(read_pcap(files[0], &error).size(), 0u);
  EXPECT_EQ(read_pcap(files[1], &error).size(), 1u);
  EXPECT_EQ(read_pcap(files[2], &error).size(), 0u);
  EXPECT_TRUE(error.empty()) << error;
}

TEST(PcapExport, ADamagedImageIsRefused) {
  TempDir dir;
  testing::write_file(dir.file("bad.img"), {'n', 'o', 'p', 'e'});
  std::vector<std::string> files;
  Status s = export_pcap(dir.file("bad.img"), dir.file("out"), &files);
  EXPECT_NE(s.message().find("not an amber image"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace amber::checkpoint
