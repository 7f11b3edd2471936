#include "core-checkpoint/convert.h"

#include <variant>

#include "common/strings.h"

namespace amber::checkpoint {

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
  if (auto* r = std::get_if<link::RandomLoss>(&c.loss)) {
    out->mutable_random_loss()->set_probability(r->probability);
  } else if (auto* ge = std::get_if<link::GilbertElliottLoss>(&c.loss)) {
    auto* m = out->mutable_gilbert_elliott_loss();
    m->set_p(ge->p);
    m->set_r(ge->r);
    m->set_loss_bad(ge->loss_bad);
    m->set_loss_good(ge->loss_good);
  } else if (auto* mk = std::get_if<link::MarkovLoss>(&c.loss)) {
    auto* m = out->mutable_markov_loss();
    m->set_p13(mk->p13);
    m->set_p31(mk->p31);
    m->set_p32(mk->p32);
    m->set_p23(mk->p23);
    m->set_p14(mk->p14);
  }
  out->set_duplicate(c.duplicate);
  out->set_corrupt(c.corrupt);
  out->set_reorder(c.reorder);
  out->set_seed(c.seed);
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
  switch (m.loss_case()) {
    case image::PipeConfig::kRandomLoss:
      c.loss = link::RandomLoss{m.random_loss().probability()};
      break;
    case image::PipeConfig::kGilbertElliottLoss: {
      const auto& ge = m.gilbert_elliott_loss();
      c.loss = link::GilbertElliottLoss{ge.p(), ge.r(), ge.loss_bad(), ge.loss_good()};
      break;
    }
    case image::PipeConfig::kMarkovLoss: {
      const auto& mk = m.markov_loss();
      c.loss = link::MarkovLoss{mk.p13(), mk.p31(), mk.p32(), mk.p23(), mk.p14()};
      break;
    }
    case image::PipeConfig::LOSS_NOT_SET:
      c.loss = link::NoLoss{};
      break;
  }
  c.duplicate = m.duplicate();
  c.corrupt = m.corrupt();
  c.reorder = m.reorder();
  c.seed = m.seed();
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
  return s;
}

void to_proto(const NodeInfo& n, image::Node* out) {
  out->set_node_id(n.node_id);
  out->set_freeze_real_ns(n.freeze_real_ns);
  out->set_virtual_now_ns(n.virtual_now_ns);
  out->set_created_unix_ns(n.created_unix_ns);
  out->set_amber_version(n.amber_version);
}

NodeInfo from_proto(const image::Node& m) {
  return NodeInfo{m.node_id(), m.freeze_real_ns(), m.virtual_now_ns(), m.created_unix_ns(),
                  m.amber_version()};
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
  p.frames = m.frames();
  p.bytes = m.bytes();
  p.virtual_now_ns = m.virtual_now_ns();
  return p;
}

}  // namespace amber::checkpoint
