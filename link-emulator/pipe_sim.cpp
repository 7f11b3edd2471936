// amber-pipe-sim: drives one emulated link direction with a synthetic
// traffic pattern in simulated time, twice: once untouched and once frozen
// and thawed in the middle (endpoints frozen with it, as amber does), and
// reports whether every frame left at the same virtual time.
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/units.h"
#include "link-emulator/pipe.h"
#include "link-emulator/schedule.h"
#include "link-emulator/virtual_clock.h"

namespace {

using amber::link::Frame;
using amber::link::Pipe;
using amber::link::PipeConfig;
using amber::link::VirtualClock;

constexpr const char* kUsage = R"(usage: amber-pipe-sim [options]

Simulates one direction of an emulated link (amber's link model) with a
paced sender, with and without a freeze/thaw in the middle, and checks that
the freeze is invisible in virtual time.

Link:
  --rate R          link rate, e.g. 100Mbit, 1Gbit, unlimited (default 100Mbit)
  --delay D         one-way propagation delay, e.g. 20ms (default 20ms)
  --jitter J        uniform jitter, never reordering (default 0)
  --loss P          random loss probability, e.g. 1% (default 0)
  --queue N         bottleneck queue limit in frames (default 1000)
  --trace FILE      a Mahimahi delivery trace gives the rate (repeating)
  --segments FILE   CSV segments change the link over time (looping)
Traffic:
  --frames N        frames to send (default 200000)
  --size B          frame size in bytes (default 1500)
  --load F          offered load as a fraction of the rate (default 0.9)
Checkpoint:
  --freeze-at T     virtual instant of the freeze (default: half way)
  --freeze-for D    how long the freeze lasts in real time (default 5s)
  -h, --help        this text
)";

struct Options {
  PipeConfig pipe;
  uint64_t frames = 200'000;
  uint32_t size = 1500;
  double load = 0.9;
  int64_t freeze_at = -1;
  int64_t freeze_for = 5'000'000'000;
};

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "amber-pipe-sim: %s\n", message.c_str());
  std::exit(2);
}

template <typename T>
T must(amber::Result<T> r, const char* option) {
  if (!r) fail(std::string(option) + ": " + r.status().message());
  return std::move(r).value();
}

Options parse(int argc, char** argv) {
  Options o;
  amber::link::Schedule schedule;
  o.pipe.rate_bps = 100'000'000;
  o.pipe.delay_ns = 20'000'000;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) fail(std::string(a) + " needs a value (try --help)");
    const char* v = argv[++i];
    if (a == "--rate")
      o.pipe.rate_bps = must(amber::parse_rate_bps(v), "--rate");
    else if (a == "--delay")
      o.pipe.delay_ns = must(amber::parse_duration_ns(v), "--delay");
    else if (a == "--jitter")
      o.pipe.jitter_ns = must(amber::parse_duration_ns(v), "--jitter");
    else if (a == "--loss")
      o.pipe.loss = amber::link::RandomLoss{must(amber::parse_probability(v), "--loss")};
    else if (a == "--queue")
      o.pipe.queue_limit_frames = static_cast<uint32_t>(std::stoul(v));
    else if (a == "--trace")
      schedule.trace = must(amber::link::load_mahimahi_trace(v), "--trace");
    else if (a == "--segments")
      schedule.segments = must(amber::link::load_segments_csv(v), "--segments");
    else if (a == "--frames")
      o.frames = std::stoull(v);
    else if (a == "--size")
      o.size = static_cast<uint32_t>(must(amber::parse_bytes(v), "--size"));
    else if (a == "--load")
      o.load = std::stod(v);
    else if (a == "--freeze-at")
      o.freeze_at = must(amber::parse_duration_ns(v), "--freeze-at");
    else if (a == "--freeze-for")
      o.freeze_for = must(amber::parse_duration_ns(v), "--freeze-for");
    else
      fail("unknown option " + std::string(a) + " (try --help)");
  }
  if (schedule.trace || !schedule.segments.empty()) {
    o.pipe.schedule = amber::link::ScheduleRef(std::move(schedule));
  }
  amber::Status s = o.pipe.validate();
  if (!s) fail(s.message());
  if (o.frames == 0 || o.frames > 50'000'000) fail("--frames: between 1 and 50000000");
  if (o.size == 0 || o.size > 65535) fail("--size: between 1 and 65535 bytes");
  if (!(o.load > 0)) fail("--load: must be positive");
  return o;
}

struct Run {
  std::vector<int64_t> departure;  // virtual, -1 if dropped
  std::vector<int64_t> real;       // real departure instant
  amber::link::PipeCounters counters;
  int64_t max_held = 0;
};

Run simulate(const Options& o, const std::vector<int64_t>& sent, bool with_freeze) {
  Pipe pipe = std::move(Pipe::create(o.pipe)).value();
  std::vector<Frame> frames(sent.size());
  Run run;
  run.departure.assign(sent.size(), -1);
  run.real.assign(sent.size(), -1);
  VirtualClock clock;
  if (with_freeze) {
    (void)clock.schedule_freeze(o.freeze_at, 0);
    (void)clock.schedule_thaw(o.freeze_at + o.freeze_for, 0);
  }
  const int64_t pause = with_freeze ? o.freeze_for : 0;
  Frame* burst[32];
  size_t next = 0;
  auto sent_real = [&](size_t i) { return sent[i] < o.freeze_at ? sent[i] : sent[i] + pause; };
  // Poll every microsecond of real time, like a busy delay-node lcore.
  for (int64_t real = 0; next < sent.size() || pipe.held_frames() > 0; real += 1000) {
    int64_t now = clock.now(real);
    while (next < sent.size() && sent_real(next) <= real) {
      frames[next].length = o.size;
      pipe.enqueue(frames[next], now);
      ++next;
    }
    run.max_held = std::max<int64_t>(run.max_held, static_cast<int64_t>(pipe.held_frames()));
    if (clock.frozen(real)) continue;  // nothing departs while frozen
    unsigned n;
    while ((n = pipe.dequeue(now, burst, 32)) > 0) {
      for (unsigned k = 0; k < n; ++k) {
        size_t idx = static_cast<size_t>(burst[k] - frames.data());
        run.departure[idx] = burst[k]->departure_ns;
        run.real[idx] = real;
      }
    }
  }
  run.counters = pipe.counters();
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  // A paced sender at `load` of the link rate (a trace's mean rate), or one
  // frame per microsecond on an unlimited link.
  const uint64_t rate = o.pipe.schedule && o.pipe.schedule->trace
                            ? o.pipe.schedule->trace->mean_rate_bps()
                            : o.pipe.rate_bps;
  int64_t gap = rate ? static_cast<int64_t>(o.size * 8 * 1e9 / (rate * o.load)) : 1000;
  std::vector<int64_t> sent(o.frames);
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<int64_t>(i) * gap;
  if (o.freeze_at < 0) o.freeze_at = sent[sent.size() / 2] + gap / 2;

  std::printf("link: %s\n", amber::link::describe(o.pipe).c_str());
  std::printf("traffic: %llu frames of %u B, one every %s (%.0f%% load)\n",
              static_cast<unsigned long long>(o.frames), o.size,
              amber::format_duration_ns(gap).c_str(), o.load * 100);
  std::printf("freeze at virtual %s for %s\n\n", amber::format_duration_ns(o.freeze_at).c_str(),
              amber::format_duration_ns(o.freeze_for).c_str());

  Run plain = simulate(o, sent, false);
  Run frozen = simulate(o, sent, true);

  size_t held_at_freeze = 0, identical = 0, delivered = 0, shifted_ok = 0;
  double delay_sum = 0;
  for (size_t i = 0; i < sent.size(); ++i) {
    if (plain.departure[i] >= 0) {
      ++delivered;
      delay_sum += double(plain.departure[i] - sent[i]);
    }
    if (plain.departure[i] == frozen.departure[i]) ++identical;
    if (sent[i] < o.freeze_at && plain.departure[i] >= o.freeze_at) ++held_at_freeze;
    int64_t shift = plain.departure[i] >= o.freeze_at ? o.freeze_for : 0;
    if (plain.departure[i] < 0 || frozen.real[i] == plain.real[i] + shift) ++shifted_ok;
  }
  auto line = [](const char* name, const Run& r) {
    std::printf("  %-22s in %-9llu out %-9llu dropped %-7llu max held %lld\n", name,
                static_cast<unsigned long long>(r.counters.frames_in),
                static_cast<unsigned long long>(r.counters.frames_out),
                static_cast<unsigned long long>(r.counters.total_dropped()),
                static_cast<long long>(r.max_held));
  };
  line("without checkpoint", plain);
  line("frozen and thawed", frozen);
  std::printf(
      "\n  mean one-way delay       %s\n",
      amber::format_duration_ns(static_cast<int64_t>(delay_sum / std::max<size_t>(delivered, 1)))
          .c_str());
  std::printf("  frames held at freeze    %zu\n", held_at_freeze);
  std::printf("  same virtual departure   %zu of %zu frames\n", identical, sent.size());
  std::printf("  real departure shifted by exactly the freeze: %zu of %zu\n", shifted_ok,
              sent.size());
  bool ok =
      identical == sent.size() && shifted_ok == sent.size() && plain.counters == frozen.counters;
  std::printf("\n%s\n", ok ? "TRANSPARENT: the freeze is invisible in virtual time."
                           : "NOT TRANSPARENT: schedules differ.");
  return ok ? 0 : 1;
}
