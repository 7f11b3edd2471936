// The pipe at steady state: each iteration enqueues one frame and dequeues
// the one that is due, with 10^5 frames held (arrivals every 10 ns of
// virtual time, 1 ms of delay). Reports ns per frame (enqueue + dequeue) and
// heap allocations per frame, counted by replacing the global operator new
// for this binary: it must read 0.
//
//   build/bench/pipe_bench                      (all variants)
//   build/bench/pipe_bench --benchmark_filter=Delay
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "link-emulator/pipe.h"

namespace {
std::atomic<uint64_t> g_allocations{0};
}

// Counting allocator: every operator new of this binary goes through here.
// (GCC cannot tell these are a matching pair, hence the pragma.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}

namespace amber::link {
namespace {

constexpr int64_t kHeld = 100'000;
constexpr int64_t kSpacingNs = 10;

// burst = frames per enqueue/dequeue round, as the dataplane's rx/tx
// bursts; 1 is the worst case (every call pays its fixed cost for one frame).
// whole: the burst in one enqueue_burst() of unwritten frames, as the
// dataplane offers it to a plain pipe (all arriving at one instant).
void run_steady_state(benchmark::State& state, PipeConfig config, uint32_t length,
                      unsigned burst = 1, bool whole = false) {
  auto created = Pipe::create(config);
  if (!created) {
    state.SkipWithError(created.status().to_string().c_str());
    return;
  }
  Pipe pipe = std::move(created).value();
  // A ring of frames, reused once they have left the pipe. A power of two,
  // so the harness indexes with a mask rather than a division.
  constexpr size_t kRing = size_t{1} << 18;
  static_assert(kRing > kHeld + 64);
  pipe.reserve(kRing);  // every held frame on the dense wire, as the dataplane sizes it
  std::vector<Frame> frames(kRing);
  size_t next = 0;
  int64_t now = 0;
  Frame* out[64];
  // Fill to steady state.
  for (int64_t i = 0; i < kHeld; ++i, now += kSpacingNs) {
    Frame& f = frames[next++ & (kRing - 1)];
    f.length = length;
    pipe.enqueue(f, now);
    pipe.dequeue(now, out, 8);
  }
  uint64_t allocations_before = g_allocations.load();
  uint64_t departed = 0;
  Frame* in[64];
  uint32_t lengths[64];
  std::fill(lengths, lengths + 64, length);
  for (auto _ : state) {
    if (whole) {
      for (unsigned i = 0; i < burst; ++i) in[i] = &frames[next++ & (kRing - 1)];
      pipe.enqueue_burst(in, lengths, burst, now);
      now += kSpacingNs * burst;
      departed += pipe.dequeue(now, out, 64);
      continue;
    }
    for (unsigned i = 0; i < burst; ++i) {
      Frame& f = frames[next++ & (kRing - 1)];
      f.length = length;
      benchmark::DoNotOptimize(pipe.enqueue(f, now));
      now += kSpacingNs;
    }
    departed += pipe.dequeue(now, out, 64);
  }
  uint64_t allocations = g_allocations.load() - allocations_before;
  state.counters["held"] = static_cast<double>(pipe.held_frames());
  const double offered = static_cast<double>(state.iterations()) * burst;
  state.counters["allocs_per_frame"] = static_cast<double>(allocations) / offered;
  state.counters["departed_per_frame"] = static_cast<double>(departed) / offered;
  state.counters["ns_per_frame"] =
      benchmark::Counter(offered, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.SetItemsProcessed(static_cast<int64_t>(offered));
}

PipeConfig delay_only() {
  PipeConfig c;
  c.delay_ns = kHeld * kSpacingNs;  // exactly kHeld frames on the wire
  return c;
}

void BM_DelayOnly(benchmark::State& state) {
  run_steady_state(state, delay_only(), 64);
}

void BM_DelayOnlyBurst32(benchmark::State& state) {
  run_steady_state(state, delay_only(), 64, 32);
}

void BM_DelayOnlyPlainBurst32(benchmark::State& state) {
  run_steady_state(state, delay_only(), 64, 32, true);
}

void BM_RateAndDelay(benchmark::State& state) {
  PipeConfig c = delay_only();
  c.rate_bps = 64 * 8 * 100'000'000ULL;  // exactly one 64 B frame per 10 ns
  c.delay_ns -= kSpacingNs;
  c.queue_limit_frames = 1000;
  run_steady_state(state, c, 64);
}

// The same link with its rate from a Mahimahi trace: 100,000 opportunities
// in each millisecond (one line "1" repeated), each taking one 64 B frame
// (50 bytes beyond its Ethernet header), so the mean rate equals the
// static one and frames leave in one burst per millisecond.
void BM_TraceAndDelay(benchmark::State& state) {
  PipeConfig c = delay_only();
  c.delay_ns -= kSpacingNs;
  c.queue_limit_frames = 200'000;
  DeliveryTrace trace;
  trace.ms.assign(100'000, 1);
  trace.opportunity_bytes = 50;
  trace.header_bytes = 14;
  Schedule schedule;
  schedule.trace = std::move(trace);
  c.schedule = ScheduleRef(std::move(schedule));
  run_steady_state(state, c, 64);
}

// The static rate under a schedule of two segments that change the delay
// every 10 ms: the cost of watching for segment changes.
void BM_RateAndDelaySegments(benchmark::State& state) {
  PipeConfig c = delay_only();
  c.rate_bps = 64 * 8 * 100'000'000ULL;
  c.delay_ns -= kSpacingNs;
  c.queue_limit_frames = 1000;
  Schedule schedule;
  schedule.segments = {Segment{.duration_ns = 10'000'000},
                       Segment{.duration_ns = 10'000'000, .delay_ns = c.delay_ns - 1000}};
  c.schedule = ScheduleRef(std::move(schedule));
  run_steady_state(state, c, 64);
}

void BM_DelayJitterLoss(benchmark::State& state) {
  PipeConfig c = delay_only();
  c.jitter_ns = 1'000;
  c.loss = RandomLoss{0.001};
  run_steady_state(state, c, 64);
}

void BM_AllImpairments(benchmark::State& state) {
  PipeConfig c = delay_only();
  c.rate_bps = 64 * 8 * 100'000'000ULL;
  c.queue_limit_frames = 1000;
  c.jitter_ns = 1'000;
  c.jitter_distribution = JitterDistribution::kNormal;
  c.loss = GilbertElliottLoss{0.001, 0.3, 0.5, 0.0};
  c.reorder = 0.001;
  c.corrupt = 0.001;
  run_steady_state(state, c, 64);
}

BENCHMARK(BM_DelayOnly);
BENCHMARK(BM_DelayOnlyBurst32);
BENCHMARK(BM_DelayOnlyPlainBurst32);
BENCHMARK(BM_RateAndDelay);
BENCHMARK(BM_TraceAndDelay);
BENCHMARK(BM_RateAndDelaySegments);
BENCHMARK(BM_DelayJitterLoss);
BENCHMARK(BM_AllImpairments);

}  // namespace
}  // namespace amber::link

BENCHMARK_MAIN();
