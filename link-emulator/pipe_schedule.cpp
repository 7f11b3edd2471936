// The pipe's schedule (schedule.h): segments changing its parameters at
// exact virtual instants, and the delivery-opportunity trace that replaces
// its rate. Everything here follows from arrival times and the schedule's
// position, never from how often the pipe is polled: a change whose instant
// passed while nobody looked is applied at that instant, and a pipe idle
// for many loops of its segments jumps over them with the same result.
#include <algorithm>

#include "link-emulator/pipe.h"

namespace amber::link {

// A new schedule: at once starts at now (the first event), the others wait.
void Pipe::await_schedule(int64_t now) {
  sched_ = ScheduleState{};
  if (schedule_) {
    sched_.started = schedule_->start == ScheduleStart::kAtOnce;
    sched_.start_ns = sched_.segment_start_ns = now;
  }
  update_awaiting();
}

void Pipe::bind_schedule() {
  schedule_ = base_.schedule.get();
  PipeConfig plain = base_;
  plain.schedule = ScheduleRef();
  segment_configs_.clear();
  cycle_changes_loss_ = false;
  if (schedule_) {
    for (const Segment& s : schedule_->segments) segment_configs_.push_back(s.applied_to(plain));
    const size_t m = segment_configs_.size();
    for (size_t i = 0; i < m; ++i) {
      cycle_changes_loss_ |= segment_configs_[i].loss != segment_configs_[(i + m - 1) % m].loss;
    }
  }
  segment_configs_.push_back(std::move(plain));  // last: the static parameters
}

const PipeConfig& Pipe::scheduled_config() const {
  const bool in_segment =
      schedule_ && sched_.started && !sched_.ended && sched_.segment < schedule_->segments.size();
  return in_segment ? segment_configs_[sched_.segment] : segment_configs_.back();
}

bool Pipe::scheduled_trace() const {
  return schedule_ && schedule_->trace && sched_.started && !sched_.ended;
}

int64_t Pipe::next_change_after_position() const {
  if (!schedule_ || sched_.ended) return kNever;
  if (!sched_.started) {
    // At once: at the first event. The others: a frame or an event starts it.
    return schedule_->start == ScheduleStart::kAtOnce ? std::numeric_limits<int64_t>::min()
                                                      : kNever;
  }
  const auto& segments = schedule_->segments;
  if (segments.empty()) {
    // A trace alone repeats, unless the schedule ends after one pass.
    return schedule_->at_end == ScheduleEnd::kEnd ? sched_.start_ns + schedule_->trace->period_ns()
                                                  : kNever;
  }
  if (schedule_->at_end == ScheduleEnd::kHoldLast && sched_.segment + 1 == segments.size()) {
    return kNever;
  }
  return sched_.segment_start_ns + segments[sched_.segment].duration_ns;
}

void Pipe::catch_up_slow(int64_t now) {
  while (next_change_ns_ <= now) {
    if (schedule_ && !sched_.started && schedule_->start == ScheduleStart::kAtOnce) {
      start_schedule(now);
      continue;
    }
    // An event and a change of segment at one instant: the event first
    // (either order gives the same parameters).
    const int64_t event_at = events_.empty() ? kNever : events_.front().at_ns;
    if (event_at <= next_segment_ns_) {
      fire_event();
      continue;
    }
    const int64_t at = next_segment_ns_;
    advance(at);  // frames serialized before the change, at the old parameters
    if (skip_cycles(at, std::min(now, event_at))) continue;
    step_schedule(at);
  }
}

void Pipe::start_schedule(int64_t at) {
  sched_ = ScheduleState{};
  sched_.started = true;
  sched_.start_ns = sched_.segment_start_ns = at;
  awaiting_frame_ = false;
  change_to(scheduled_config(), scheduled_trace(), at);
  next_segment_ns_ = next_change_after_position();
  update_next_change();
}

void Pipe::start_schedule_at(int64_t at, int64_t now) {
  if (!awaiting_frame_ || at < sched_.start_ns) return;
  at = std::min(at, now);
  catch_up(at);                             // events due before the start fire first
  if (awaiting_frame_) start_schedule(at);  // unless one of them was a start
  catch_up(now);
}

void Pipe::step_schedule(int64_t at) {
  const auto& segments = schedule_->segments;
  if (segments.empty()) {
    sched_.ended = true;  // the one pass of the trace is over
  } else if (sched_.segment + 1 < segments.size()) {
    ++sched_.segment;
    sched_.segment_start_ns = at;
  } else if (schedule_->at_end == ScheduleEnd::kLoop) {
    sched_.segment = 0;
    sched_.segment_start_ns = at;
    ++sched_.loops;
  } else {
    sched_.ended = true;  // kEnd (kHoldLast never changes after its last segment)
    ++sched_.loops;
  }
  change_to(scheduled_config(), scheduled_trace(), at);
  next_segment_ns_ = next_change_after_position();
  update_next_change();
}

// Whole loops of segments while the bottleneck is empty change nothing but
// the position and, if any segment changes the loss model, its state (each
// change of model starts it afresh): jumped over in one step, up to `now`
// (the caller's limit: no further than the next event).
bool Pipe::skip_cycles(int64_t at, int64_t now) {
  if (!bottleneck_.empty() || schedule_->at_end != ScheduleEnd::kLoop ||
      schedule_->segments.empty()) {
    return false;
  }
  const int64_t cycle = schedule_->cycle_ns();
  if (now - at < cycle) return false;
  const int64_t k = (now - at) / cycle;
  sched_.segment_start_ns += k * cycle;
  sched_.loops += static_cast<uint64_t>(k);
  next_segment_ns_ += k * cycle;
  update_next_change();
  if (cycle_changes_loss_) loss_ = LossProcess(config_.loss);
  return true;
}

// Mahimahi's LinkQueue, computed ahead for the head of the bottleneck: the
// rest of the last opportunity serves it if it was queued before that
// opportunity; then it takes whole opportunities after its arrival (and not
// before the frame ahead of it left) until its bytes are delivered.
int64_t Pipe::trace_ready(const Frame& head) {
  const DeliveryTrace& t = *trace_;
  uint64_t need = head.length > t.header_bytes ? head.length - t.header_bytes : 1;
  if (sched_.surplus_bytes > 0 && head.arrival_ns < sched_.surplus_at_ns) {
    if (need <= sched_.surplus_bytes) {
      sched_.surplus_bytes -= static_cast<uint32_t>(need);
      return sched_.surplus_at_ns;
    }
    need -= sched_.surplus_bytes;
  }
  sched_.surplus_bytes = 0;
  skip_opportunities_through(std::max(head.arrival_ns, link_free_ns_ - 1));
  while (true) {
    const int64_t at = opportunity_ns();
    next_opportunity();
    if (need <= t.opportunity_bytes) {
      sched_.surplus_bytes = t.opportunity_bytes - static_cast<uint32_t>(need);
      sched_.surplus_at_ns = at;
      return at;
    }
    need -= t.opportunity_bytes;
  }
}

// Opportunities at or before t found no frame queued: they are lost.
void Pipe::skip_opportunities_through(int64_t t) {
  if (opportunity_ns() > t) return;
  const int64_t period = trace_->period_ns();
  const int64_t since_start = t - sched_.start_ns;  // >= 0: opportunity_ns() >= start
  const int64_t loops = since_start / period;
  const auto in_pass_ms = static_cast<uint32_t>((since_start - loops * period) / 1'000'000);
  // The first opportunity after t: in this pass, since the last one of a
  // pass lies at its very end (the period), after t.
  const auto& ms = trace_->ms;
  sched_.trace_loops = static_cast<uint64_t>(loops);
  sched_.trace_index =
      static_cast<uint32_t>(std::upper_bound(ms.begin(), ms.end(), in_pass_ms) - ms.begin());
  trace_loop_base_ns_ = sched_.start_ns + loops * period;
}

uint64_t Pipe::trace_rate_bps(int64_t from, int64_t window) const {
  if (!traced_ || window <= 0) return 0;
  const auto& ms = trace_->ms;
  const int64_t period = trace_->period_ns();
  // Opportunities at instants <= t since the trace started.
  const auto through = [&](int64_t t) -> int64_t {
    const int64_t since = t - sched_.start_ns;
    if (since < 0) return 0;
    const int64_t loops = since / period;
    const auto in_pass_ms = static_cast<uint32_t>((since - loops * period) / 1'000'000);
    return loops * static_cast<int64_t>(ms.size()) +
           (std::upper_bound(ms.begin(), ms.end(), in_pass_ms) - ms.begin());
  };
  const int64_t count = through(from + window - 1) - through(from - 1);
  const unsigned __int128 bits =
      static_cast<unsigned __int128>(count) * trace_->opportunity_bytes * 8;
  return static_cast<uint64_t>(bits * 1'000'000'000 / static_cast<uint64_t>(window));
}

}  // namespace amber::link
