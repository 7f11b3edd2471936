#include "link-emulator/pipe_config.h"

#include <cmath>
#include <sstream>

#include "common/strings.h"
#include "common/units.h"
#include "link-emulator/schedule.h"

namespace amber::link {
namespace {

Status check_probability(const char* field, double p) {
  if (!(p >= 0.0 && p <= 1.0)) {  // also rejects NaN
    std::ostringstream out;
    out << field << ": probability must be within [0, 1] (got " << p << ")";
    return invalid_argument(out.str());
  }
  return Status::ok();
}

// Beyond this a delay is a configuration mistake, not a link (and time
// arithmetic keeps far away from int64 overflow).
constexpr int64_t kMaxDelayNs = int64_t{3600} * 1'000'000'000;

Status check_loss(const LossConfig& loss) {
  if (auto* r = std::get_if<RandomLoss>(&loss)) {
    return check_probability("loss.random.probability", r->probability);
  }
  if (auto* ge = std::get_if<GilbertElliottLoss>(&loss)) {
    AMBER_RETURN_IF_ERROR(check_probability("loss.gilbert_elliott.p", ge->p));
    AMBER_RETURN_IF_ERROR(check_probability("loss.gilbert_elliott.r", ge->r));
    AMBER_RETURN_IF_ERROR(check_probability("loss.gilbert_elliott.loss_bad", ge->loss_bad));
    return check_probability("loss.gilbert_elliott.loss_good", ge->loss_good);
  }
  if (auto* m = std::get_if<MarkovLoss>(&loss)) {
    AMBER_RETURN_IF_ERROR(check_probability("loss.markov.p13", m->p13));
    AMBER_RETURN_IF_ERROR(check_probability("loss.markov.p31", m->p31));
    AMBER_RETURN_IF_ERROR(check_probability("loss.markov.p32", m->p32));
    AMBER_RETURN_IF_ERROR(check_probability("loss.markov.p23", m->p23));
    AMBER_RETURN_IF_ERROR(check_probability("loss.markov.p14", m->p14));
    if (m->p13 + m->p14 > 1.0) {
      return invalid_argument("loss.markov: p13 + p14 must not exceed 1 (they leave state 1)");
    }
    if (m->p31 + m->p32 > 1.0) {
      return invalid_argument("loss.markov: p31 + p32 must not exceed 1 (they leave state 3)");
    }
  }
  return Status::ok();
}

}  // namespace

Status PipeConfig::validate() const {
  if (delay_ns < 0) {
    return invalid_argument("delay_ns: must not be negative (" + std::to_string(delay_ns) + ")");
  }
  if (delay_ns > kMaxDelayNs) {
    return invalid_argument("delay_ns: " + format_duration_ns(delay_ns) +
                            " is beyond the 1 hour a link may delay");
  }
  if (jitter_ns < 0) {
    return invalid_argument("jitter_ns: must not be negative (" + std::to_string(jitter_ns) + ")");
  }
  if (jitter_ns > kMaxDelayNs) {
    return invalid_argument("jitter_ns: " + format_duration_ns(jitter_ns) + " is beyond 1 hour");
  }
  if (queue_limit_frames && *queue_limit_frames == 0) {
    return invalid_argument("queue_limit_frames: must be at least 1 (unset it for no limit)");
  }
  if (queue_limit_bytes && *queue_limit_bytes == 0) {
    return invalid_argument("queue_limit_bytes: must be at least 1 (unset it for no limit)");
  }
  if (rate_bps != 0 && !queue_limit_frames && !queue_limit_bytes) {
    return invalid_argument(
        "queue_limit_frames, queue_limit_bytes: a rate-limited pipe needs a queue limit, "
        "or its queue grows without bound");
  }
  if (overhead_bytes > 1024) {
    return invalid_argument("overhead_bytes: " + std::to_string(overhead_bytes) +
                            " is more than any link layer adds (at most 1024)");
  }
  AMBER_RETURN_IF_ERROR(check_loss(loss));
  AMBER_RETURN_IF_ERROR(check_probability("duplicate", duplicate));
  AMBER_RETURN_IF_ERROR(check_probability("corrupt", corrupt));
  AMBER_RETURN_IF_ERROR(check_probability("reorder", reorder));
  if (schedule) return validate_schedule();
  return Status::ok();
}

// Every segment must make a valid configuration of its own, and a trace
// shapes like a rate: it needs a queue limit.
Status PipeConfig::validate_schedule() const {
  AMBER_RETURN_IF_ERROR(schedule->validate());
  PipeConfig base = *this;
  base.schedule = ScheduleRef();
  if (schedule->trace && !queue_limit_frames && !queue_limit_bytes) {
    return invalid_argument(
        "schedule: a traced pipe needs a queue limit, or its queue grows without bound");
  }
  for (size_t i = 0; i < schedule->segments.size(); ++i) {
    PipeConfig seg = schedule->segments[i].applied_to(base);
    if (schedule->trace && !seg.queue_limit_frames && !seg.queue_limit_bytes) {
      return invalid_argument(cat("segment ", i + 1, ": a traced pipe needs a queue limit"));
    }
    Status s = seg.validate();
    if (!s) return invalid_argument(cat("segment ", i + 1, ": ", s.message()));
  }
  return Status::ok();
}

std::string describe(const PipeConfig& c) {
  std::ostringstream out;
  if (c.down) out << "DOWN; ";
  out << format_rate_bps(c.rate_bps) << " delay " << format_duration_ns(c.delay_ns);
  if (c.jitter_ns) {
    out << " jitter " << format_duration_ns(c.jitter_ns)
        << (c.jitter_distribution == JitterDistribution::kNormal ? " normal" : " uniform");
  }
  if (c.rate_bps) {
    out << " queue";
    if (c.queue_limit_frames) out << " " << *c.queue_limit_frames << " frames";
    if (c.queue_limit_bytes) out << " " << format_bytes(*c.queue_limit_bytes);
  }
  std::visit(
      [&out](const auto& m) {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, RandomLoss>) {
          out << " loss " << m.probability * 100 << "%";
        } else if constexpr (std::is_same_v<M, GilbertElliottLoss>) {
          out << " loss gemodel p=" << m.p << " r=" << m.r << " bad=" << m.loss_bad
              << " good=" << m.loss_good;
        } else if constexpr (std::is_same_v<M, MarkovLoss>) {
          out << " loss state p13=" << m.p13 << " p31=" << m.p31 << " p32=" << m.p32
              << " p23=" << m.p23 << " p14=" << m.p14;
        }
      },
      c.loss);
  if (c.duplicate > 0) out << " duplicate " << c.duplicate * 100 << "%";
  if (c.corrupt > 0) out << " corrupt " << c.corrupt * 100 << "%";
  if (c.reorder > 0) out << " reorder " << c.reorder * 100 << "%";
  out << " seed " << c.seed;
  if (c.schedule) out << "; schedule: " << describe(*c.schedule);
  return out.str();
}

}  // namespace amber::link
