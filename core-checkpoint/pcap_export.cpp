#include "core-checkpoint/pcap_export.h"

#include <pcap/pcap.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "common/strings.h"

namespace amber::checkpoint {
namespace {

constexpr int kSnapLen = 65535;

}  // namespace

std::string pcap_file_name(size_t index, const PipeInfo& pipe) {
  auto clean = [](const std::string& text) {
    std::string out = text.empty() ? std::string("unnamed") : text;
    for (char& c : out) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == '-';
      if (!ok) c = '_';
    }
    return out;
  };
  return cat("pipe", index, "-", clean(pipe.link), "-", clean(pipe.direction), ".pcap");
}

struct PcapExporter::State {
  std::string out_dir;
  std::vector<PipeInfo> pipes;
  std::vector<std::string> files;  // one per pipe, opened or not
  pcap_t* dead = nullptr;
  pcap_dumper_t* dumper = nullptr;
  size_t next_pipe = 0;  // pipes below it are done
  size_t open_pipe = 0;
  Status failed;

  ~State() {
    if (dumper != nullptr) pcap_dump_close(dumper);
    if (dead != nullptr) pcap_close(dead);
  }

  Status close_current() {
    if (dumper == nullptr) return Status::ok();
    int rc = pcap_dump_flush(dumper);
    pcap_dump_close(dumper);
    dumper = nullptr;
    if (rc != 0) return unavailable(cat("writing ", files[open_pipe], " failed"));
    return Status::ok();
  }

  // Closes the current file and opens every file up to `pipe` (empty ones
  // for pipes without frames).
  Status advance_to(size_t pipe) {
    while (dumper == nullptr || open_pipe != pipe) {
      AMBER_RETURN_IF_ERROR(close_current());
      if (next_pipe > pipe) return Status::ok();
      dumper = pcap_dump_open(dead, files[next_pipe].c_str());
      if (dumper == nullptr) {
        return unavailable(cat("cannot create ", files[next_pipe], ": ", pcap_geterr(dead)));
      }
      open_pipe = next_pipe++;
    }
    return Status::ok();
  }
};

PcapExporter::PcapExporter(std::unique_ptr<State> state) : s_(std::move(state)) {}
PcapExporter::PcapExporter(PcapExporter&&) noexcept = default;
PcapExporter& PcapExporter::operator=(PcapExporter&&) noexcept = default;
PcapExporter::~PcapExporter() = default;

Result<PcapExporter> PcapExporter::create(const std::string& out_dir,
                                          const std::vector<PipeInfo>& pipes) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return unavailable(cat("cannot create directory ", out_dir, ": ", ec.message()));
  auto s = std::make_unique<State>();
  s->out_dir = out_dir;
  s->pipes = pipes;
  for (size_t i = 0; i < pipes.size(); ++i) {
    s->files.push_back((std::filesystem::path(out_dir) / pcap_file_name(i, pipes[i])).string());
  }
  s->dead = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, kSnapLen, PCAP_TSTAMP_PRECISION_NANO);
  if (s->dead == nullptr) return internal_error("pcap_open_dead_with_tstamp_precision failed");
  return PcapExporter(std::move(s));
}

Status PcapExporter::add_frame(size_t pipe_index, const FrameRecord& frame) {
  State& s = *s_;
  if (!s.failed.is_ok()) return s.failed;
  if (pipe_index >= s.pipes.size()) {
    return s.failed = invalid_argument(
               cat("pcap export: pipe index ", pipe_index, " beyond ", s.pipes.size(), " pipes"));
  }
  const bool behind = s.dumper != nullptr ? pipe_index < s.open_pipe : pipe_index < s.next_pipe;
  if (behind) {
    return s.failed = invalid_argument(cat("pcap export: a frame of pipe ", pipe_index,
                                           " after its file was closed (pipes come in order)"));
  }
  if (Status st = s.advance_to(pipe_index); !st) return s.failed = st;
  struct pcap_pkthdr header {};
  // Floor division, so virtual times before the epoch still get a valid
  // fraction.
  int64_t sec = frame.arrival_ns / 1'000'000'000;
  int64_t nsec = frame.arrival_ns % 1'000'000'000;
  if (nsec < 0) {
    nsec += 1'000'000'000;
    --sec;
  }
  header.ts.tv_sec = static_cast<time_t>(sec);
  header.ts.tv_usec = static_cast<suseconds_t>(nsec);  // nanoseconds in a nano capture
  header.len = static_cast<bpf_u_int32>(frame.bytes.size());
  header.caplen = static_cast<bpf_u_int32>(std::min<size_t>(frame.bytes.size(), kSnapLen));
  pcap_dump(reinterpret_cast<u_char*>(s.dumper), &header, frame.bytes.data());
  return Status::ok();
}

Status PcapExporter::finish(std::vector<std::string>* files_written) {
  State& s = *s_;
  if (!s.failed.is_ok()) return s.failed;
  if (!s.pipes.empty()) {
    if (Status st = s.advance_to(s.pipes.size() - 1); !st) return s.failed = st;
  }
  if (Status st = s.close_current(); !st) return s.failed = st;
  if (files_written != nullptr) *files_written = s.files;
  return Status::ok();
}

Status export_pcap(const std::string& image_path, const std::string& out_dir,
                   std::vector<std::string>* files_written) {
  auto reader = ImageReader::open(image_path, std::nullopt);
  if (!reader) return reader.status();
  auto exporter = PcapExporter::create(out_dir, reader->pipes());
  if (!exporter) return exporter.status();
  size_t pipe;
  FrameRecord frame;
  while (true) {
    auto more = reader->next_frame(&pipe, &frame);
    if (!more) return more.status();
    if (!*more) break;
    AMBER_RETURN_IF_ERROR(exporter->add_frame(pipe, frame));
  }
  return exporter->finish(files_written);
}

}  // namespace amber::checkpoint
