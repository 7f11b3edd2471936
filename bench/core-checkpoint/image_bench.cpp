// Save and restore throughput of checkpoint images, and the memory they use
// beyond the frames. Frames live in in-memory buffers (as mbufs would);
// restore copies each frame back into a preallocated buffer.
//
//   image_bench --dir DIR --frames-per-pipe N --length L [--pipes 2] [--reps 3] [--sync]
//
// Prints one line per operation: median wall time over the repetitions,
// MB/s of frame bytes and frames/s; median CPU time (user + system) and
// MB/s per CPU second; image size; peak RSS beyond the frames.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/strings.h"
#include "core-checkpoint/image.h"

namespace {

using amber::checkpoint::FrameRecord;
using amber::checkpoint::ImageReader;
using amber::checkpoint::ImageWriter;
using amber::checkpoint::NodeInfo;
using amber::checkpoint::PipeInfo;

long proc_status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0) return std::atol(line.c_str() + n + 1);
  }
  return -1;
}

// Resets the peak RSS to the current RSS (Linux >= 4.0).
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return out.good();
}

struct Pipe {
  PipeInfo info;
  std::vector<amber::link::Frame> frames;
  std::vector<uint8_t> data;  // frames back to back, like mbuf data rooms
  uint32_t stride = 0;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CPU seconds (user + system) this process has used: less sensitive than
// wall time to other work on a shared machine.
double cpu_seconds() {
  struct rusage u;
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void report(const char* op, double secs, double cpu, uint64_t bytes, uint64_t frames,
            uint64_t file_bytes, long extra_kib) {
  std::printf(
      "%-11s %7.1f ms %6.0f MB/s %6.2f Mframes/s | cpu %7.1f ms %6.0f MB/s | image %6.1f MB | "
      "extra RSS %4.1f MiB (%.1f%%)\n",
      op, secs * 1e3, bytes / secs / 1e6, frames / secs / 1e6, cpu * 1e3, bytes / cpu / 1e6,
      file_bytes / 1e6, extra_kib / 1024.0,
      100.0 * extra_kib * 1024.0 / static_cast<double>(bytes));
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp";
  uint64_t per_pipe = 41667;
  uint32_t length = 1500;
  size_t pipes_count = 2;
  int reps = 3;
  bool sync = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "image_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dir")
      dir = next();
    else if (a == "--frames-per-pipe")
      per_pipe = std::strtoull(next(), nullptr, 10);
    else if (a == "--length")
      length = static_cast<uint32_t>(std::strtoul(next(), nullptr, 10));
    else if (a == "--pipes")
      pipes_count = std::strtoul(next(), nullptr, 10);
    else if (a == "--reps")
      reps = std::atoi(next());
    else if (a == "--sync")
      sync = true;
    else {
      std::fprintf(stderr,
                   "usage: image_bench [--dir DIR] [--frames-per-pipe N] [--length L] "
                   "[--pipes N] [--reps N] [--sync]\n");
      return 2;
    }
  }
  const std::string path = amber::cat(dir, "/amber-image-bench-", ::getpid(), ".img");

  std::vector<Pipe> pipes(pipes_count);
  uint64_t total_bytes = 0, total_frames = 0;
  for (size_t p = 0; p < pipes_count; ++p) {
    Pipe& pipe = pipes[p];
    pipe.stride = length;
    pipe.frames.resize(per_pipe);
    pipe.data.resize(per_pipe * length);
    for (size_t i = 0; i < pipe.data.size(); ++i) pipe.data[i] = static_cast<uint8_t>(i * 31 + p);
    for (uint64_t i = 0; i < per_pipe; ++i) {
      auto& f = pipe.frames[i];
      f.length = length;
      f.stage = i < per_pipe / 10 ? amber::link::FrameStage::kBottleneck
                                  : amber::link::FrameStage::kDelayLine;
      f.arrival_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(i) * 12'000;
      f.ready_ns = f.arrival_ns + 12'000;
      f.departure_ns = f.ready_ns + 500'000'000;
      f.extra_delay_ns = static_cast<int64_t>(i % 1000) - 500;
    }
    pipe.info.link = "bench";
    pipe.info.direction = p % 2 == 0 ? "a_to_b" : "b_to_a";
    pipe.info.config.rate_bps = 1'000'000'000;
    pipe.info.config.delay_ns = 500'000'000;
    pipe.info.state.rng = {1, 2, 3, 4};
    pipe.info.frames = per_pipe;
    pipe.info.bytes = per_pipe * length;
    total_bytes += pipe.info.bytes;
    total_frames += per_pipe;
  }
  std::vector<PipeInfo> infos;
  for (const auto& p : pipes) infos.push_back(p.info);
  NodeInfo node{"bench-node", 1, 2, 3, "bench"};
  // The restore target, allocated and touched up front like a mempool.
  std::vector<std::vector<uint8_t>> target(pipes_count, std::vector<uint8_t>(per_pipe * length, 1));
  std::vector<std::vector<amber::link::Frame>> target_frames(
      pipes_count, std::vector<amber::link::Frame>(per_pipe));

  std::printf("%zu pipes x %llu frames x %u bytes = %.1f MB of frames, image in %s%s\n",
              pipes_count, static_cast<unsigned long long>(per_pipe), length, total_bytes / 1e6,
              dir.c_str(), sync ? " (fsync on save)" : " (page cache, no fsync)");
  std::vector<double> save_t, restore_t, save_cpu, restore_cpu;
  long save_extra = 0, restore_extra = 0;
  uint64_t file_bytes = 0;
  for (int r = 0; r < reps; ++r) {
    ::unlink(path.c_str());
    const bool peak_ok = reset_peak_rss();
    long base = proc_status_kib(peak_ok ? "VmHWM:" : "VmRSS:");
    double c0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    auto writer = ImageWriter::create(path, node, infos, {.sync = sync});
    if (!writer) {
      std::fprintf(stderr, "image_bench: %s\n", writer.status().to_string().c_str());
      return 1;
    }
    for (size_t p = 0; p < pipes_count; ++p) {
      const Pipe& pipe = pipes[p];
      for (uint64_t i = 0; i < per_pipe; ++i) {
        FrameRecord rec = amber::checkpoint::record_of(pipe.frames[i]);
        rec.bytes =
            std::span<const uint8_t>(pipe.data.data() + i * pipe.stride, pipe.frames[i].length);
        if (auto s = writer->add_frame(p, rec); !s) {
          std::fprintf(stderr, "image_bench: %s\n", s.to_string().c_str());
          return 1;
        }
      }
    }
    if (auto s = writer->finish(); !s) {
      std::fprintf(stderr, "image_bench: %s\n", s.to_string().c_str());
      return 1;
    }
    save_t.push_back(seconds_since(t0));
    save_cpu.push_back(cpu_seconds() - c0);
    file_bytes = writer->bytes_written();
    save_extra = std::max(save_extra, proc_status_kib("VmHWM:") - base);
    { auto drop = std::move(writer).value(); }

    reset_peak_rss();
    base = proc_status_kib(peak_ok ? "VmHWM:" : "VmRSS:");
    c0 = cpu_seconds();
    t0 = std::chrono::steady_clock::now();
    {
      auto reader = ImageReader::open(path, "bench-node");
      if (!reader) {
        std::fprintf(stderr, "image_bench: %s\n", reader.status().to_string().c_str());
        return 1;
      }
      std::vector<uint64_t> next(pipes_count, 0);
      size_t p;
      FrameRecord rec;
      while (true) {
        auto more = reader->next_frame(&p, &rec);
        if (!more) {
          std::fprintf(stderr, "image_bench: %s\n", more.status().to_string().c_str());
          return 1;
        }
        if (!*more) break;
        const uint64_t i = next[p]++;
        std::memcpy(target[p].data() + i * length, rec.bytes.data(), rec.bytes.size());
        amber::checkpoint::apply_record(rec, &target_frames[p][i]);
      }
      restore_t.push_back(seconds_since(t0));
      restore_cpu.push_back(cpu_seconds() - c0);
      restore_extra = std::max(restore_extra, proc_status_kib("VmHWM:") - base);
    }
    if (std::memcmp(target[0].data(), pipes[0].data.data(), target[0].size()) != 0) {
      std::fprintf(stderr, "image_bench: restored bytes differ\n");
      return 1;
    }
  }
  ::unlink(path.c_str());
  report(sync ? "save+fsync" : "save", median(save_t), median(save_cpu), total_bytes, total_frames,
         file_bytes, save_extra);
  report("restore", median(restore_t), median(restore_cpu), total_bytes, total_frames, file_bytes,
         restore_extra);
  return 0;
}
