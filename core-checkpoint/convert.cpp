#include "core-checkpoint/convert.h"

#include <variant>

#include "common/strings.h"

namespace amber::checkpoint {
namespace {

// The loss oneof has the same three messages in PipeConfig and Segment.
template <typename M>
void loss_to_proto(const link::LossConfig& loss, M* out) {
  if (auto* r = std::get_if<link::RandomLoss>(&loss)) {
    out->mutable_random_loss()->set_probability(r->probability);
  } else if (auto* ge = std::get_if<link::GilbertElliottLoss>(&loss)) {
    auto* m = out->mutable_gilbert_elliott_loss();
    m->set_p(ge->p);
    m->set_r(ge->r);
    m->set_loss_bad(ge->loss_bad);
    m->set_loss_good(ge->loss_good);
  } else if (auto* mk = std::get_if<link::MarkovLoss>(&loss)) {
    auto* m = out->mutable_markov_loss();
    m->set_p13(mk->p13);
    m->set_p31(mk->p31);
    m->set_p32(mk->p32);
    m->set_p23(mk->p23);
    m->set_p14(mk->p14);
  }
}

template <typename M>
link::LossConfig loss_from_proto(const M& m) {
  if (m.has_random_loss()) return link::RandomLoss{m.random_loss().probability()};
  if (m.has_gilbert_elliott_loss()) {
    const auto& ge = m.gilbert_elliott_loss();
    return link::GilbertElliottLoss{ge.p(), ge.r(), ge.loss_bad(), ge.loss_good()};
  }
  if (m.has_markov_loss()) {
    const auto& mk = m.markov_loss();
    return link::MarkovLoss{mk.p13(), mk.p31(), mk.p32(), mk.p23(), mk.p14()};
  }
  return link::NoLoss{};
}

void to_proto(const link::Segment& seg, image::Segment* m) {
  m->set_duration_ns(seg.duration_ns);
  if (seg.rate_bps) m->set_rate_bps(*seg.rate_bps);
  if (seg.delay_ns) m->set_delay_ns(*seg.delay_ns);
  if (seg.jitter_ns) m->set_jitter_ns(*seg.jitter_ns);
  if (seg.loss) {
    m->set_sets_loss(true);
    loss_to_proto(*seg.loss, m);
  }
  if (seg.queue_limit_frames) m->set_queue_limit_frames(*seg.queue_limit_frames);
  if (seg.queue_limit_bytes) m->set_queue_limit_bytes(*seg.queue_limit_bytes);
}

link::Segment from_proto(const image::Segment& seg) {
  link::Segment out;
  out.duration_ns = seg.duration_ns();
  if (seg.has_rate_bps()) out.rate_bps = seg.rate_bps();
  if (seg.has_delay_ns()) out.delay_ns = seg.delay_ns();
  if (seg.has_jitter_ns()) out.jitter_ns = seg.jitter_ns();
  if (seg.sets_loss()) out.loss = loss_from_proto(seg);
  if (seg.has_queue_limit_frames()) out.queue_limit_frames = seg.queue_limit_frames();
  if (seg.has_queue_limit_bytes()) out.queue_limit_bytes = seg.queue_limit_bytes();
  return out;
}

void to_proto(const link::Schedule& s, image::Schedule* out) {
  for (const link::Segment& seg : s.segments) to_proto(seg, out->add_segments());
  if (s.trace) {
    auto* t = out->mutable_trace();
    uint32_t last = 0;
    for (uint32_t ms : s.trace->ms) {
      t->add_ms_delta(ms - last);
      last = ms;
    }
    t->set_opportunity_bytes(s.trace->opportunity_bytes);
    t->set_header_bytes(s.trace->header_bytes);
    t->set_source(s.trace->source);
  }
  out->set_at_end(static_cast<image::ScheduleEnd>(s.at_end));
  out->set_start(static_cast<image::ScheduleStart>(s.start));
}

Result<link::Schedule> from_proto(const image::Schedule& m) {
  link::Schedule s;
  for (const auto& seg : m.segments()) s.segments.push_back(from_proto(seg));
  if (m.has_trace()) {
    link::DeliveryTrace t;
    uint64_t at = 0;
    t.ms.reserve(static_cast<size_t>(m.trace().ms_delta_size()));
    for (uint32_t delta : m.trace().ms_delta()) {
      at += delta;
      if (at > UINT32_MAX) return invalid_argument("schedule.trace: beyond 2^32 ms");
      t.ms.push_back(static_cast<uint32_t>(at));
    }
    t.opportunity_bytes = m.trace().opportunity_bytes();
    t.header_bytes = m.trace().header_bytes();
    t.source = m.trace().source();
    s.trace = std::move(t);
  }
  switch (m.at_end()) {
    case image::SCHEDULE_LOOP:
      s.at_end = link::ScheduleEnd::kLoop;
      break;
    case image::SCHEDULE_HOLD_LAST:
      s.at_end = link::ScheduleEnd::kHoldLast;
      break;
    case image::SCHEDULE_END:
      s.at_end = link::ScheduleEnd::kEnd;
      break;
    default:
      return invalid_argument(cat("schedule.at_end: unknown value ", static_cast<int>(m.at_end())));
  }
  switch (m.start()) {
    case image::SCHEDULE_START_AT_ONCE:
      s.start = link::ScheduleStart::kAtOnce;
      break;
    case image::SCHEDULE_START_FIRST_FRAME:
      s.start = link::ScheduleStart::kFirstFrame;
      break;
    case image::SCHEDULE_START_ON_EVENT:
      s.start = link::ScheduleStart::kOnEvent;
      break;
    default:
      return invalid_argument(cat("schedule.start: unknown value ", static_cast<int>(m.start())));
  }
  return s;
}

// The position must lie within the schedule it belongs to.
Status check_position(const link::PipeConfig& config, const link::ScheduleState& s) {
  if (!config.schedule) {
    if (s.started)
      return invalid_argument("state.schedule: a position, but the pipe has no schedule");
    return Status::ok();
  }
  const link::Schedule& schedule = *config.schedule;
  if (!schedule.segments.empty() && s.segment >= schedule.segments.size()) {
    return invalid_argument(
        cat("state.schedule.segment: ", s.segment, " of ", schedule.segments.size(), " segments"));
  }
  if (schedule.trace && s.trace_index >= schedule.trace->ms.size()) {
    return invalid_argument(cat("state.schedule.trace_index: ", s.trace_index, " of ",
                                schedule.trace->ms.size(), " opportunities"));
  }
  if (schedule.trace && s.surplus_bytes > schedule.trace->opportunity_bytes) {
    return invalid_argument(
        cat("state.schedule.surplus_bytes: ", s.surplus_bytes, " is more than an opportunity"));
  }
  return Status::ok();
}

}  // namespace

void to_proto(const link::PipeConfig& c, image::PipeConfig* out) {
  out->Clear();
  out->set_rate_bps(c.rate_bps);
  out->set_overhead_bytes(c.overhead_bytes);
  out->set_delay_ns(c.delay_ns);
  out->set_jitter_ns(c.jitter_ns);
  out->set_jitter_distribution(c.jitter_distribution == link::JitterDistribution::kNormal
                                   ? image::JITTER_NORMAL
                                   : image::JITTER_UNIFORM);
  if (c.queue_limit_frames) out->set_queue_limit_frames(*c.queue_limit_frames);
  if (c.queue_limit_bytes) out->set_queue_limit_bytes(*c.queue_limit_bytes);
  loss_to_proto(c.loss, out);
  out->set_duplicate(c.duplicate);
  out->set_corrupt(c.corrupt);
  out->set_reorder(c.reorder);
  out->set_seed(c.seed);
  if (c.schedule) to_proto(*c.schedule, out->mutable_schedule());
  out->set_down(c.down);
}

Result<link::PipeConfig> from_proto(const image::PipeConfig& m) {
  link::PipeConfig c;
  c.rate_bps = m.rate_bps();
  c.overhead_bytes = m.overhead_bytes();
  c.delay_ns = m.delay_ns();
  c.jitter_ns = m.jitter_ns();
  switch (m.jitter_distribution()) {
    case image::JITTER_UNIFORM:
      c.jitter_distribution = link::JitterDistribution::kUniform;
      break;
    case image::JITTER_NORMAL:
      c.jitter_distribution = link::JitterDistribution::kNormal;
      break;
    default:
      return invalid_argument(
          cat("jitter_distribution: unknown value ", static_cast<int>(m.jitter_distribution())));
  }
  c.queue_limit_frames.reset();
  if (m.has_queue_limit_frames()) c.queue_limit_frames = m.queue_limit_frames();
  if (m.has_queue_limit_bytes()) c.queue_limit_bytes = m.queue_limit_bytes();
  c.loss = loss_from_proto(m);
  c.duplicate = m.duplicate();
  c.corrupt = m.corrupt();
  c.reorder = m.reorder();
  c.seed = m.seed();
  c.down = m.down();
  if (m.has_schedule()) {
    auto schedule = from_proto(m.schedule());
    if (!schedule) return schedule.status();
    c.schedule = link::ScheduleRef(std::move(schedule).value());
  }
  AMBER_RETURN_IF_ERROR(c.validate());
  return c;
}

void to_proto(const link::PipeState& s, image::PipeState* out) {
  out->Clear();
  for (uint64_t word : s.rng) out->add_rng(word);
  out->set_loss_state(s.loss_state);
  out->set_link_free_ns(s.link_free_ns);
  out->set_serialization_carry(s.serialization_carry);
  out->set_last_departure_ns(s.last_departure_ns);
  auto* k = out->mutable_counters();
  k->set_frames_in(s.counters.frames_in);
  k->set_bytes_in(s.counters.bytes_in);
  k->set_frames_out(s.counters.frames_out);
  k->set_bytes_out(s.counters.bytes_out);
  for (uint64_t v : s.counters.frames_dropped) k->add_frames_dropped(v);
  for (uint64_t v : s.counters.bytes_dropped) k->add_bytes_dropped(v);
  k->set_duplicated(s.counters.duplicated);
  k->set_corrupted(s.counters.corrupted);
  k->set_reordered(s.counters.reordered);
  const link::ScheduleState& p = s.schedule;
  auto* m = out->mutable_schedule();
  m->set_started(p.started);
  m->set_ended(p.ended);
  m->set_start_ns(p.start_ns);
  m->set_segment(p.segment);
  m->set_segment_start_ns(p.segment_start_ns);
  m->set_loops(p.loops);
  m->set_trace_loops(p.trace_loops);
  m->set_trace_index(p.trace_index);
  m->set_surplus_bytes(p.surplus_bytes);
  m->set_surplus_at_ns(p.surplus_at_ns);
  for (const link::LinkEvent& e : s.events) {
    auto* em = out->add_events();
    em->set_at_ns(e.at_ns);
    em->set_kind(static_cast<image::LinkEventKind>(e.kind));
    if (e.kind == link::LinkEventKind::kSet) to_proto(e.set, em->mutable_set());
  }
}

Result<link::PipeState> from_proto(const image::PipeState& m) {
  link::PipeState s;
  if (static_cast<size_t>(m.rng_size()) != s.rng.size()) {
    return invalid_argument(
        cat("state.rng: expected ", s.rng.size(), " words, found ", m.rng_size()));
  }
  for (size_t i = 0; i < s.rng.size(); ++i) s.rng[i] = m.rng(static_cast<int>(i));
  if (s.rng == link::Rng::State{}) {
    return invalid_argument("state.rng: all zero (xoshiro256** never leaves that state)");
  }
  // Gilbert–Elliott uses 0..1, the Markov model 1..4.
  if (m.loss_state() > 4) {
    return invalid_argument(
        cat("state.loss_state: ", m.loss_state(), " is not a loss state (0..4)"));
  }
  s.loss_state = static_cast<uint8_t>(m.loss_state());
  s.link_free_ns = m.link_free_ns();
  s.serialization_carry = m.serialization_carry();
  s.last_departure_ns = m.last_departure_ns();
  const auto& k = m.counters();
  s.counters.frames_in = k.frames_in();
  s.counters.bytes_in = k.bytes_in();
  s.counters.frames_out = k.frames_out();
  s.counters.bytes_out = k.bytes_out();
  // Older images may know fewer drop causes; more than we know is an error.
  if (static_cast<size_t>(k.frames_dropped_size()) > link::kDropCauseCount ||
      static_cast<size_t>(k.bytes_dropped_size()) > link::kDropCauseCount) {
    return invalid_argument(cat("state.counters: more than ", link::kDropCauseCount,
                                " drop causes (", k.frames_dropped_size(), ")"));
  }
  for (int i = 0; i < k.frames_dropped_size(); ++i)
    s.counters.frames_dropped[i] = k.frames_dropped(i);
  for (int i = 0; i < k.bytes_dropped_size(); ++i) s.counters.bytes_dropped[i] = k.bytes_dropped(i);
  s.counters.duplicated = k.duplicated();
  s.counters.corrupted = k.corrupted();
  s.counters.reordered = k.reordered();
  const auto& p = m.schedule();
  s.schedule.started = p.started();
  s.schedule.ended = p.ended();
  s.schedule.start_ns = p.start_ns();
  s.schedule.segment = p.segment();
  s.schedule.segment_start_ns = p.segment_start_ns();
  s.schedule.loops = p.loops();
  s.schedule.trace_loops = p.trace_loops();
  s.schedule.trace_index = p.trace_index();
  s.schedule.surplus_bytes = p.surplus_bytes();
  s.schedule.surplus_at_ns = p.surplus_at_ns();
  for (int i = 0; i < m.events_size(); ++i) {
    const image::LinkEvent& em = m.events(i);
    link::LinkEvent e;
    e.at_ns = em.at_ns();
    switch (em.kind()) {
      case image::EVENT_SET:
        e.kind = link::LinkEventKind::kSet;
        break;
      case image::EVENT_DOWN:
        e.kind = link::LinkEventKind::kDown;
        break;
      case image::EVENT_UP:
        e.kind = link::LinkEventKind::kUp;
        break;
      case image::EVENT_START:
        e.kind = link::LinkEventKind::kStart;
        break;
      default:
        return invalid_argument(
            cat("state.events[", i, "].kind: unknown value ", static_cast<int>(em.kind())));
    }
    if (e.kind == link::LinkEventKind::kSet) e.set = from_proto(em.set());
    if (!s.events.empty() && e.at_ns < s.events.back().at_ns) {
      return invalid_argument(cat("state.events[", i, "]: at ", e.at_ns,
                                  " ns, before the one above (", s.events.back().at_ns,
                                  " ns): events must be in order"));
    }
    s.events.push_back(e);
  }
  return s;
}

void to_proto(const NodeInfo& n, image::Node* out) {
  out->set_node_id(n.node_id);
  out->set_freeze_real_ns(n.freeze_real_ns);
  out->set_virtual_now_ns(n.virtual_now_ns);
  out->set_created_unix_ns(n.created_unix_ns);
  out->set_amber_version(n.amber_version);
  out->set_clock_id(n.clock_id);
}

NodeInfo from_proto(const image::Node& m) {
  return NodeInfo{m.node_id(),         m.freeze_real_ns(), m.virtual_now_ns(),
                  m.created_unix_ns(), m.amber_version(),  m.clock_id()};
}

void to_proto(const PipeInfo& p, image::Pipe* out) {
  out->set_link(p.link);
  out->set_direction(p.direction);
  out->set_port_in(p.port_in);
  out->set_port_out(p.port_out);
  to_proto(p.config, out->mutable_config());
  to_proto(p.state, out->mutable_state());
  out->set_frames(p.frames);
  out->set_bytes(p.bytes);
  out->set_virtual_now_ns(p.virtual_now_ns);
  out->set_ran_on_ns(p.ran_on_ns);
}

Result<PipeInfo> from_proto(const image::Pipe& m) {
  PipeInfo p;
  p.link = m.link();
  p.direction = m.direction();
  p.port_in = m.port_in();
  p.port_out = m.port_out();
  if (!m.has_config()) return invalid_argument("config: missing");
  auto config = from_proto(m.config());
  if (!config) return config.status().with_context("config: ");
  p.config = std::move(config).value();
  if (!m.has_state()) return invalid_argument("state: missing");
  auto state = from_proto(m.state());
  if (!state) return state.status();
  p.state = std::move(state).value();
  AMBER_RETURN_IF_ERROR(check_position(p.config, p.state.schedule));
  AMBER_RETURN_IF_ERROR(
      link::check_events(p.config, p.state.events).with_context("state.events: "));
  p.frames = m.frames();
  p.bytes = m.bytes();
  p.virtual_now_ns = m.virtual_now_ns();
  p.ran_on_ns = m.ran_on_ns();
  if (p.ran_on_ns < 0 || p.ran_on_ns > 10'000'000'000) {
    return invalid_argument(cat("ran_on_ns: ", p.ran_on_ns, " is not within 0..10 s"));
  }
  return p;
}

}  // namespace amber::checkpoint
