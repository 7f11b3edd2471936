// pcap export of held frames: one nanosecond pcap file per pipe, each frame
// stamped with its virtual arrival time at the pipe, readable by tcpdump
// and Wireshark. Works from an image file or, through PcapExporter, from a
// frozen node's pipes directly.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "core-checkpoint/image.h"

namespace amber::checkpoint {

// File name of pipe `index` in an export: "pipe0-<link>-<direction>.pcap",
// with characters outside [A-Za-z0-9._-] replaced by '_'.
std::string pcap_file_name(size_t index, const PipeInfo& pipe);

// Frames are added pipe by pipe in order (as in an image); one file is open
// at a time, so any number of pipes can be exported. Every pipe gets a
// file, empty pipes an empty capture.
class PcapExporter {
 public:
  static Result<PcapExporter> create(const std::string& out_dir,
                                     const std::vector<PipeInfo>& pipes);
  PcapExporter(PcapExporter&&) noexcept;
  PcapExporter& operator=(PcapExporter&&) noexcept;
  ~PcapExporter();

  Status add_frame(size_t pipe_index, const FrameRecord& frame);
  // Closes the files; lists them, in pipe order, in files_written.
  Status finish(std::vector<std::string>* files_written);

 private:
  struct State;
  explicit PcapExporter(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// Exports every pipe of an image into out_dir (created if missing), after
// the image is read through and verified.
Status export_pcap(const std::string& image_path, const std::string& out_dir,
                   std::vector<std::string>* files_written);

}  // namespace amber::checkpoint
