#include "link-emulator/pipe.h"

#include <algorithm>

#include "common/strings.h"

namespace amber::link {

const char* drop_cause_name(DropCause cause) {
  switch (cause) {
    case DropCause::kLoss:
      return "loss";
    case DropCause::kQueueFrames:
      return "queue_frames";
    case DropCause::kQueueBytes:
      return "queue_bytes";
    case DropCause::kRemoved:
      return "removed";
    case DropCause::kLinkDown:
      return "link_down";
  }
  return "unknown";
}

uint64_t PipeCounters::total_dropped() const {
  uint64_t total = 0;
  for (uint64_t n : frames_dropped) total += n;
  return total;
}

Result<Pipe> Pipe::create(const PipeConfig& config) {
  Status status = config.validate();
  if (!status) return status;
  return Pipe(config);
}

Pipe::Pipe(const PipeConfig& config)
    : rng_(config.seed), loss_(config.loss), dense_(kDefaultWireFrames), base_(config) {
  bind_schedule();
  update_awaiting();
  apply_config(scheduled_config(), false);
  next_segment_ns_ = next_change_after_position();
  update_next_change();
}

void Pipe::apply_config(const PipeConfig& config, bool traced) {
  config_ = config;
  config_.schedule = ScheduleRef();
  traced_ = traced;
  trace_ = traced ? &*schedule_->trace : nullptr;
  if (traced) {
    trace_loop_base_ns_ =
        sched_.start_ns + static_cast<int64_t>(sched_.trace_loops) * trace_->period_ns();
  }
  shaped_ = config.rate_bps != 0 || traced;
  down_ = config.down;
  duplicate_ = Chance(config.duplicate);
  corrupt_ = Chance(config.corrupt);
  reorder_ = Chance(config.reorder);
  limit_frames_ = config.queue_limit_frames.value_or(std::numeric_limits<uint32_t>::max());
  limit_bytes_ = config.queue_limit_bytes.value_or(std::numeric_limits<uint64_t>::max());
  update_plain();
}

void Pipe::update_plain() {
  // A schedule or an event may change any of this between two frames of a
  // burst.
  plain_ = !shaped_ && !down_ && config_.jitter_ns == 0 &&
           loss_.kind() == LossProcess::Kind::kNone && duplicate_.never() && corrupt_.never() &&
           reorder_.never() && schedule_ == nullptr && events_.empty();
}

Verdict Pipe::enqueue(Frame& frame, int64_t now) {
  return offer<true>(frame, frame.length, now);
}

Verdict Pipe::enqueue(Frame& frame, uint32_t length, int64_t now) {
  return offer<false>(frame, length, now);
}

template <bool kWritten>
Verdict Pipe::offer(Frame& frame, uint32_t length, int64_t now) {
  catch_up(now);
  if (awaiting_frame_) [[unlikely]]
    start_schedule(now);
  advance(now);
  ++counters_.frames_in;
  counters_.bytes_in += length;
  Verdict verdict;
  // A link that is down draws nothing: the random stream after it comes
  // up is the one it would have been.
  if (down_) [[unlikely]]
    return drop(length, DropCause::kLinkDown, verdict);
  // Decisions are drawn in a fixed order (loss, corruption, duplication,
  // then in admit() reordering and jitter) so the stream is reproducible.
  if (loss_.lose(rng_)) return drop(length, DropCause::kLoss, verdict);
  if (!corrupt_.never() && corrupt_.draw(rng_) && length > 0) {
    verdict.corrupt_bit = static_cast<int64_t>(rng_.below(uint64_t{length} * 8));
  }
  if (!duplicate_.never() && duplicate_.draw(rng_)) {
    verdict.duplicate = true;
    ++counters_.duplicated;
  }
  return admit<kWritten>(frame, length, now, verdict);
}

void Pipe::enqueue_burst(Frame* const* frames, const uint32_t* lengths, unsigned n, int64_t now) {
  catch_up(now);
  advance(now);
  uint64_t bytes = 0;
  for (unsigned i = 0; i < n; ++i) bytes += lengths[i];
  counters_.frames_in += n;
  counters_.bytes_in += bytes;
  held_frames_ += n;
  held_bytes_ += bytes;
  // No jitter: one departure for the burst, as each frame in turn would get.
  const int64_t departure = departure_after(now, 0);
  const DenseWire::Stamps stamps{now, 0};
  refill();
  if (delay_line_.empty() && dense_.push_burst(frames, lengths, n, departure, stamps)) return;
  for (unsigned i = 0; i < n; ++i) put_on_wire(*frames[i], lengths[i], departure, stamps);
}

Verdict Pipe::enqueue_duplicate(Frame& frame, int64_t now) {
  catch_up(now);
  advance(now);
  ++counters_.frames_in;
  counters_.bytes_in += frame.length;
  if (down_) [[unlikely]]
    return drop(frame.length, DropCause::kLinkDown, Verdict{});
  return admit<true>(frame, frame.length, now, Verdict{});
}

Verdict Pipe::drop(uint32_t length, DropCause cause, Verdict verdict) {
  auto i = static_cast<size_t>(cause);
  ++counters_.frames_dropped[i];
  counters_.bytes_dropped[i] += length;
  verdict.accepted = false;
  verdict.cause = cause;
  verdict.corrupt_bit = -1;
  return verdict;
}

template <bool kWritten>
Verdict Pipe::admit(Frame& frame, uint32_t length, int64_t now, Verdict verdict) {
  const bool express = !reorder_.never() && reorder_.draw(rng_);
  const int64_t extra_delay = config_.jitter_ns ? draw_jitter() : 0;
  const auto write = [&] {
    frame.length = length;
    frame.arrival_ns = now;
    frame.express = express;
    frame.extra_delay_ns = extra_delay;
  };

  if (!shaped_) {
    // Unlimited rate: no serialization, straight onto the wire. (advance()
    // has emptied the bottleneck: with no rate its frames take no time.)
    if (kWritten || express) {
      write();
      frame.ready_ns = now;
      put_on_wire(frame);
    } else {
      put_on_wire(frame, length, departure_after(now, extra_delay), {now, extra_delay});
    }
  } else {
    if (queued_frames_ >= limit_frames_) return drop(length, DropCause::kQueueFrames, verdict);
    if (queued_bytes_ + length > limit_bytes_) return drop(length, DropCause::kQueueBytes, verdict);
    write();
    frame.stage = FrameStage::kBottleneck;
    // Not assigned yet (the storage may hold an earlier frame's): the
    // head's serialization sets ready, the wire the departure.
    frame.ready_ns = 0;
    frame.departure_ns = 0;
    bool idle = bottleneck_.empty();
    bottleneck_.push_back(frame);
    ++queued_frames_;
    queued_bytes_ += length;
    if (idle) start_serialization(frame);
  }
  ++held_frames_;
  held_bytes_ += length;
  if (verdict.corrupt_bit >= 0) ++counters_.corrupted;
  verdict.accepted = true;
  return verdict;
}

// The head of the bottleneck starts when both it and the link are there. The
// sub-nanosecond carry makes a train of back-to-back frames take exactly
// total bits / rate; an idle link starts afresh.
void Pipe::start_serialization(Frame& head) {
  if (traced_) {
    head.ready_ns = trace_ready(head);
    return;
  }
  int64_t start = std::max(head.arrival_ns, link_free_ns_);
  if (start > link_free_ns_) serialization_carry_ = 0;
  head.ready_ns = start + serialization_ns(head.length);
}

int64_t Pipe::serialization_ns(uint32_t length) {
  const uint64_t rate = config_.rate_bps;
  if (rate == 0) return 0;
  // bits * 1e9 fits in 64 bits for any frame up to 2 GB.
  uint64_t scaled =
      (uint64_t{length} + config_.overhead_bytes) * 8 * 1'000'000'000ULL + serialization_carry_;
  serialization_carry_ = scaled % rate;
  return static_cast<int64_t>(scaled / rate);
}

void Pipe::advance_slow(int64_t now) {
  while (!bottleneck_.empty()) {
    Frame& head = bottleneck_.front();
    if (head.ready_ns > now) break;
    bottleneck_.pop_front();
    --queued_frames_;
    queued_bytes_ -= head.length;
    link_free_ns_ = head.ready_ns;
    put_on_wire(head);
    if (!bottleneck_.empty()) start_serialization(bottleneck_.front());
  }
}

void Pipe::put_on_wire(Frame& frame) {
  if (frame.express) {
    frame.stage = FrameStage::kExpress;
    frame.departure_ns = frame.ready_ns;
    if (!express_.empty() && express_.back().departure_ns > frame.departure_ns) {
      insert_sorted(express_, frame);  // behind a frame injected for later
    } else {
      express_.push_back(frame);
    }
    ++counters_.reordered;
    return;
  }
  frame.departure_ns = departure_after(frame.ready_ns, frame.extra_delay_ns);
  frame.stage = FrameStage::kDelayLine;
  delay_line_.push_back(frame);
}

void Pipe::put_on_wire(Frame& frame, uint32_t length, int64_t departure_ns,
                       DenseWire::Stamps stamps) {
  refill();
  if (delay_line_.empty() && dense_.push_unwritten(frame, length, departure_ns, stamps)) return;
  DenseWire::write_delay_line(frame, length, departure_ns, false, stamps);
  delay_line_.push_back(frame);
}

int64_t Pipe::draw_jitter() {
  const int64_t j = config_.jitter_ns;
  if (config_.jitter_distribution == JitterDistribution::kUniform) {
    return static_cast<int64_t>(rng_.below(2 * static_cast<uint64_t>(j) + 1)) - j;
  }
  // Irwin–Hall: the sum of 12 uniforms minus 6 is close to N(0, 1), bounded
  // at ±6, in integers only, so a checkpoint restored on another machine
  // draws bit-identical delays.
  int64_t sum = 0;
  for (int i = 0; i < 6; ++i) {
    uint64_t r = rng_.next();
    sum += static_cast<int64_t>(r >> 32) + static_cast<int64_t>(r & 0xffffffffu);
  }
  __int128 z = sum - (int64_t{6} << 32);  // N(0,1) in 32.32 fixed point
  return static_cast<int64_t>((z * j) >> 32);
}

namespace {
// Hands the head of a list on as the next frame out.
Frame& take_head(FrameList& list, Frame** out, int64_t* departures, int64_t* arrivals, unsigned& n,
                 uint64_t& bytes) {
  Frame& f = list.front();
  list.pop_front();
  bytes += f.length;
  if (departures) departures[n] = f.departure_ns;
  if (arrivals) arrivals[n] = DenseWire::kWritten;  // frames in a list are written
  out[n++] = &f;
  return f;
}
}  // namespace

[[gnu::always_inline]] inline unsigned Pipe::hand_out(int64_t now, Frame** out, int64_t* departures,
                                                      unsigned max, int64_t* arrivals,
                                                      uint64_t& bytes) {
  unsigned n = 0;
  if (express_.empty()) {
    // The common case: the delay line alone, in departure order; first its
    // dense rings, read without touching a frame, then its list.
    n = dense_.pop_due(now, out, departures, max, bytes, arrivals);
    if (dense_.empty()) {
      while (n < max && !delay_line_.empty() && delay_line_.front().departure_ns <= now) {
        advance_lookahead(&take_head(delay_line_, out, departures, arrivals, n, bytes));
      }
    }
    return n;
  }
  while (n < max) {
    const int64_t line = delay_line_head_ns();
    bool wire = line <= now;
    bool express = !express_.empty() && express_.front().departure_ns <= now;
    if (wire && (!express || line <= express_.front().departure_ns)) {
      if (dense_.empty()) {
        take_head(delay_line_, out, departures, arrivals, n, bytes);
      } else {
        n += dense_.pop_due(now, out + n, departures ? departures + n : nullptr, 1, bytes,
                            arrivals ? arrivals + n : nullptr);
      }
    } else if (express) {
      take_head(express_, out, departures, arrivals, n, bytes);
    } else {
      break;
    }
  }
  return n;
}

unsigned Pipe::dequeue(int64_t now, Frame** out, int64_t* departures, unsigned max,
                       int64_t* arrivals) {
  catch_up(now);
  uint64_t bytes = 0;
  unsigned n;
  if (bottleneck_.empty() || bottleneck_.front().ready_ns > now) {
    n = hand_out(now, out, departures, max, arrivals, bytes);
  } else {
    // The bottleneck moves. What is on the wire and due by the instant its
    // head leaves goes first: nothing the move puts on the wire can depart
    // earlier (a departure is never before its frame's ready time), and at
    // a delivery opportunity of a trace, a millisecond's frames go onto the
    // wire at the very instant the frames it put there one delay earlier
    // are due; those must not wait for that work. Then the bottleneck
    // moves, and what it put on the wire already due (a late poll) leaves.
    n = hand_out(bottleneck_.front().ready_ns, out, departures, max, arrivals, bytes);
    if (n < max) {
      advance_slow(now);
      if (delay_line_head_ns() <= now ||
          (!express_.empty() && express_.front().departure_ns <= now))
        n += hand_out(now, out + n, departures ? departures + n : nullptr, max - n,
                      arrivals ? arrivals + n : nullptr, bytes);
    }
  }
  counters_.frames_out += n;
  counters_.bytes_out += bytes;
  held_frames_ -= n;
  held_bytes_ -= bytes;
  return n;
}

void Pipe::refill_slow() {
  for (unsigned i = 0; i < kRefill && !delay_line_.empty(); ++i) {
    Frame& f = delay_line_.front();
    if (!dense_.push_written(f, f.length, f.departure_ns)) return;
    delay_line_.pop_front();
    advance_lookahead(&f);
  }
}

// Frames in the list were written one delay ago and are cold: a cursor runs
// kLookahead frames ahead of the head and prefetches.
void Pipe::advance_lookahead(const Frame* popped) {
  if (lookahead_ == popped || lookahead_ == nullptr) {
    // (Re)start from the new head: those frames are few or recent.
    lookahead_ = nullptr;
    auto it = delay_line_.begin();
    for (unsigned i = 0; i < kLookahead && it != delay_line_.end(); ++i, ++it) {
      __builtin_prefetch(&*it);
      lookahead_ = &*it;
    }
    return;
  }
  auto it = FrameList::s_iterator_to(*lookahead_);
  if (++it == delay_line_.end()) return;  // stay at the tail until it moves on
  lookahead_ = &*it;
  __builtin_prefetch(lookahead_);
}

void Pipe::reserve(uint32_t frames) {
  if (frames <= dense_.capacity()) return;
  DenseWire bigger(frames);
  dense_.for_each([&](Frame& f) { bigger.push_written(f, f.length, f.departure_ns); });
  dense_ = std::move(bigger);
}

void Pipe::take_wire(Pipe& old) {
  if (!old.dense_.empty() || !dense_.empty()) return;
  if (old.dense_.capacity() > dense_.capacity()) std::swap(dense_, old.dense_);
}

int64_t Pipe::delay_line_head_ns() const {
  if (!dense_.empty()) return dense_.head_departure_ns();
  return delay_line_.empty() ? kNever : delay_line_.front().departure_ns;
}

int64_t Pipe::next_event_ns() const {
  int64_t next = delay_line_head_ns();
  if (!express_.empty()) next = std::min(next, express_.front().departure_ns);
  if (!bottleneck_.empty()) {
    // A change of segment may move the head's end of serialization.
    next = std::min({next, bottleneck_.front().ready_ns, next_change_ns_});
  }
  return next;
}

Status Pipe::reconfigure(const PipeConfig& config, int64_t now) {
  AMBER_RETURN_IF_ERROR(config.validate());
  catch_up(now);
  AMBER_RETURN_IF_ERROR(check_events(config, events_));
  const bool same_schedule = config.schedule == base_.schedule;
  base_ = config;
  bind_schedule();
  if (!same_schedule) await_schedule(now);
  change_to(scheduled_config(), scheduled_trace(), now);
  next_segment_ns_ = next_change_after_position();
  update_next_change();
  return Status::ok();
}

void Pipe::change_to(const PipeConfig& next, bool traced, int64_t now) {
  advance(now);
  if (!bottleneck_.empty()) {
    Frame& head = bottleneck_.front();
    if (next.rate_bps == 0 && !traced) {
      head.ready_ns = now;  // unlimited: nothing waits
      serialization_carry_ = 0;
    } else if (!traced && !traced_ &&
               (next.rate_bps != config_.rate_bps ||
                next.overhead_bytes != config_.overhead_bytes)) {
      // The head is part-way through serialization: its remaining bits go
      // out at the new rate.
      const unsigned __int128 remaining = static_cast<uint64_t>(head.ready_ns - now);
      unsigned __int128 scaled = remaining * config_.rate_bps;
      head.ready_ns = now + static_cast<int64_t>((scaled + next.rate_bps - 1) / next.rate_bps);
      serialization_carry_ = 0;
    } else if (traced != traced_) {
      serialization_carry_ = 0;  // the head finishes as scheduled; the next starts afresh
    }
  }
  if (next.seed != config_.seed) rng_.reseed(next.seed);
  if (next.loss != config_.loss) loss_ = LossProcess(next.loss);
  apply_config(next, traced);
  advance(now);
}

PipeState Pipe::state() const {
  PipeState s;
  s.schedule = sched_;
  s.events = events_;
  s.rng = rng_.state();
  s.loss_state = loss_.state();
  s.link_free_ns = link_free_ns_;
  s.serialization_carry = serialization_carry_;
  s.last_departure_ns = last_departure_ns_;
  s.counters = counters_;
  return s;
}

void Pipe::set_state(const PipeState& s) {
  // The parameters of the saved position first: its loss model is the one
  // whose state was saved.
  sched_ = s.schedule;
  update_awaiting();
  events_ = s.events;
  loss_ = LossProcess(scheduled_config().loss);
  apply_config(scheduled_config(), scheduled_trace());
  next_segment_ns_ = next_change_after_position();
  update_next_change();
  rng_.set_state(s.rng);
  loss_.set_state(s.loss_state);
  link_free_ns_ = s.link_free_ns;
  serialization_carry_ = s.serialization_carry;
  last_departure_ns_ = s.last_departure_ns;
  counters_ = s.counters;
}

int64_t Pipe::delay_line_tail_ns() const {
  if (!delay_line_.empty()) return delay_line_.back().departure_ns;
  return dense_.empty() ? std::numeric_limits<int64_t>::min() : dense_.tail_departure_ns();
}

Status Pipe::restore_frame(Frame& frame) {
  lookahead_ = nullptr;
  FrameList* list;
  int64_t key, last_key;
  switch (frame.stage) {
    case FrameStage::kBottleneck:
      if (!shaped_) {
        return failed_precondition("a frame in the bottleneck queue of an unlimited-rate pipe");
      }
      list = &bottleneck_;
      key = frame.arrival_ns;
      last_key = list->empty() ? key : list->back().arrival_ns;
      break;
    case FrameStage::kDelayLine:
      list = &delay_line_;
      key = frame.departure_ns;
      last_key = delay_line_tail_ns();
      break;
    case FrameStage::kExpress:
      list = &express_;
      key = frame.departure_ns;
      last_key = list->empty() ? key : list->back().departure_ns;
      break;
    default:
      return invalid_argument("unknown frame stage " + std::to_string(int(frame.stage)));
  }
  if (key < last_key) {
    return invalid_argument("frames out of order: " + std::to_string(key) + " ns after " +
                            std::to_string(last_key) + " ns");
  }
  list->push_back(frame);
  if (frame.stage == FrameStage::kBottleneck) {
    ++queued_frames_;
    queued_bytes_ += frame.length;
  }
  ++held_frames_;
  held_bytes_ += frame.length;
  return Status::ok();
}

}  // namespace amber::link

namespace amber::link {

namespace {
FrameList* list_of(FrameStage stage, FrameList& bottleneck, FrameList& delay_line,
                   FrameList& express) {
  switch (stage) {
    case FrameStage::kBottleneck:
      return &bottleneck;
    case FrameStage::kDelayLine:
      return &delay_line;
    case FrameStage::kExpress:
      return &express;
  }
  return nullptr;
}
}  // namespace

void Pipe::count_removed(uint32_t length) {
  held_frames_ -= 1;
  held_bytes_ -= length;
  ++counters_.frames_dropped[static_cast<size_t>(DropCause::kRemoved)];
  counters_.bytes_dropped[static_cast<size_t>(DropCause::kRemoved)] += length;
}

Status Pipe::remove_frame(Frame& frame) {
  uint32_t length = 0;
  if (frame.stage == FrameStage::kDelayLine && dense_.remove(frame, length)) {
    count_removed(length);
    return Status::ok();
  }
  FrameList* list = list_of(frame.stage, bottleneck_, delay_line_, express_);
  if (list == nullptr) return invalid_argument("frame has no valid stage");
  // Find its predecessor: slists unlink after a position.
  auto prev = list->before_begin();
  for (auto it = list->begin(); it != list->end(); prev = it, ++it) {
    if (&*it != &frame) continue;
    const bool was_head = it == list->begin();
    list->erase_after(prev);
    lookahead_ = nullptr;
    count_removed(frame.length);
    if (frame.stage == FrameStage::kBottleneck) {
      --queued_frames_;
      queued_bytes_ -= frame.length;
      // The frame in serialization left: the next one starts where it would
      // have started.
      if (was_head && !bottleneck_.empty()) start_serialization(bottleneck_.front());
    }
    return Status::ok();
  }
  return not_found("the frame is not held by this pipe");
}

void Pipe::insert_sorted(FrameList& list, Frame& frame) {
  auto prev = list.before_begin();
  for (auto it = list.begin(); it != list.end() && it->departure_ns <= frame.departure_ns; ++it) {
    prev = it;
  }
  list.insert_after(prev, frame);
}

Status Pipe::inject_frame(Frame& frame, int64_t departure_ns, int64_t now) {
  if (departure_ns < now) {
    return invalid_argument(
        cat("departure ", departure_ns, " ns is before the pipe's time ", now, " ns"));
  }
  // Injected frames travel the express path: they depart at their time
  // without holding back the frames behind them on the delay line.
  frame.stage = FrameStage::kExpress;
  frame.express = true;
  frame.arrival_ns = now;
  frame.extra_delay_ns = 0;
  frame.ready_ns = now;
  frame.departure_ns = departure_ns;
  insert_sorted(express_, frame);
  ++held_frames_;
  held_bytes_ += frame.length;
  ++counters_.frames_in;
  counters_.bytes_in += frame.length;
  return Status::ok();
}

void Pipe::resize_frame(Frame& frame, uint32_t new_length) {
  if (frame.stage == FrameStage::kDelayLine && !dense_.set_length(frame, new_length)) {
    // Too long for a slot (or in the list already): it and every frame
    // behind it on the dense wire move to the head of the list, in order.
    FrameList moved;
    if (dense_.split_at(frame, [&](Frame& f) { moved.push_back(f); })) {
      delay_line_.splice_after(delay_line_.before_begin(), moved);
      lookahead_ = nullptr;
    }
  }
  held_bytes_ = held_bytes_ - frame.length + new_length;
  if (frame.stage == FrameStage::kBottleneck) {
    queued_bytes_ = queued_bytes_ - frame.length + new_length;
  }
  frame.length = new_length;
}

}  // namespace amber::link
