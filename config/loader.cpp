#include "config/loader.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "common/strings.h"
#include "common/units.h"
#include "config/text_format.h"
#include "link-emulator/schedule.h"
#include "proto/config.pb.h"

namespace amber::config {
namespace {

namespace pb = google::protobuf;

// Converts one Pipe message over defaults (the link's "both" block), field
// by field, naming `prefix` in errors.
class PipeReader {
 public:
  PipeReader(const Locator& loc, std::string prefix, std::string folder = {})
      : loc_(loc), prefix_(std::move(prefix)), folder_(std::move(folder)) {}

  Status apply(const amber::config::Pipe& p, link::PipeConfig& out) const {
    if (!p.duration().empty()) return error(p, "duration", "only a segment has a duration");
    AMBER_RETURN_IF_ERROR(apply_parameters(p, out));
    return apply_schedule(p, out);
  }

  // The whole direction, once all blocks are applied.
  Status validate(const link::PipeConfig& c, const pb::Message& where, const char* field) const {
    Status s = c.validate();
    if (!s) return invalid_argument(cat(loc_.at(where, field), prefix_, s.message()));
    return Status::ok();
  }

 private:
  // Fields given in a direction override those of "both": a trace, a
  // segment list (file or inline) and the end each replace what was there.
  Status apply_schedule(const amber::config::Pipe& p, link::PipeConfig& out) const {
    const bool touches = !p.trace().empty() || !p.segments().empty() || p.segment_size() > 0 ||
                         !p.schedule_end().empty() || p.has_trace_opportunity_bytes() ||
                         p.has_trace_header_bytes() || !p.schedule_start().empty();
    if (!touches) return Status::ok();
    link::Schedule schedule = out.schedule ? *out.schedule : link::Schedule{};
    if (!p.trace().empty()) {
      auto trace = link::load_mahimahi_trace(path_of(p.trace()));
      if (!trace) return error(p, "trace", trace.status().message());
      schedule.trace = std::move(trace).value();
    }
    if (p.has_trace_opportunity_bytes() || p.has_trace_header_bytes()) {
      if (!schedule.trace) {
        return error(
            p, p.has_trace_opportunity_bytes() ? "trace_opportunity_bytes" : "trace_header_bytes",
            "there is no trace");
      }
      if (p.has_trace_opportunity_bytes())
        schedule.trace->opportunity_bytes = p.trace_opportunity_bytes();
      if (p.has_trace_header_bytes()) schedule.trace->header_bytes = p.trace_header_bytes();
    }
    if (!p.segments().empty() && p.segment_size() > 0) {
      return error(p, "segment", "segments come from a file or inline, not both");
    }
    if (!p.segments().empty()) {
      auto segments = link::load_segments_csv(path_of(p.segments()));
      if (!segments) return error(p, "segments", segments.status().message());
      schedule.segments = std::move(segments).value();
    }
    if (p.segment_size() > 0) {
      schedule.segments.clear();
      for (int i = 0; i < p.segment_size(); ++i) {
        link::Segment seg;
        AMBER_RETURN_IF_ERROR(read_segment(p, i, seg));
        schedule.segments.push_back(seg);
      }
    }
    if (!p.schedule_end().empty()) {
      if (p.schedule_end() == "loop")
        schedule.at_end = link::ScheduleEnd::kLoop;
      else if (p.schedule_end() == "hold")
        schedule.at_end = link::ScheduleEnd::kHoldLast;
      else if (p.schedule_end() == "end")
        schedule.at_end = link::ScheduleEnd::kEnd;
      else
        return error(p, "schedule_end", cat("'", p.schedule_end(), "' is not loop, hold or end"));
    }
    if (!p.schedule_start().empty()) {
      bool known = false;
      for (auto start : {link::ScheduleStart::kAtOnce, link::ScheduleStart::kFirstFrame,
                         link::ScheduleStart::kOnEvent}) {
        if (p.schedule_start() != link::schedule_start_name(start)) continue;
        schedule.start = start;
        known = true;
      }
      if (!known) {
        return error(p, "schedule_start",
                     cat("'", p.schedule_start(), "' is not now, first_frame or event"));
      }
    }
    out.schedule = link::ScheduleRef(std::move(schedule));
    return Status::ok();
  }

  // One inline segment: the fields it sets become its changes.
  Status read_segment(const amber::config::Pipe& p, int i, link::Segment& seg) const {
    const amber::config::Pipe& m = p.segment(i);
    PipeReader reader(loc_.nested(p, "segment", i), cat(prefix_, "segment[", i + 1, "]."));
    if (m.duration().empty())
      return error(p, "segment", cat("segment ", i + 1, " needs a duration"), i);
    Result<int64_t> d = parse_duration_ns(m.duration());
    if (!d || *d <= 0) {
      return reader.error(m, "duration", d ? "must be above 0" : d.status().message());
    }
    seg.duration_ns = *d;
    for (const char* field : {"jitter_distribution", "overhead_bytes", "duplicate", "corrupt",
                              "reorder", "seed", "trace", "segments", "segment", "schedule_end",
                              "schedule_start", "trace_opportunity_bytes", "trace_header_bytes"}) {
      const pb::FieldDescriptor* fd = m.GetDescriptor()->FindFieldByName(field);
      const bool set = fd->is_repeated() ? m.GetReflection()->FieldSize(m, fd) > 0
                                         : m.GetReflection()->HasField(m, fd);
      if (set) {
        return reader.error(m, field,
                            "does not change over time (a segment sets rate, delay, jitter, loss "
                            "and queue limits)");
      }
    }
    link::PipeConfig changed;
    AMBER_RETURN_IF_ERROR(reader.apply_parameters(m, changed));
    if (!m.rate().empty()) seg.rate_bps = changed.rate_bps;
    if (!m.delay().empty()) seg.delay_ns = changed.delay_ns;
    if (!m.jitter().empty()) seg.jitter_ns = changed.jitter_ns;
    if (m.loss_case() != amber::config::Pipe::LOSS_NOT_SET) seg.loss = changed.loss;
    if (m.has_queue_frames()) seg.queue_limit_frames = changed.queue_limit_frames;
    if (!m.queue_bytes().empty()) seg.queue_limit_bytes = changed.queue_limit_bytes;
    return Status::ok();
  }

  std::string path_of(const std::string& file) const {
    if (file.empty() || file[0] == '/' || folder_.empty()) return file;
    return folder_ + "/" + file;
  }

  Status apply_parameters(const amber::config::Pipe& p, link::PipeConfig& out) const {
    if (!p.rate().empty())
      AMBER_RETURN_IF_ERROR(read(p, "rate", parse_rate_bps(p.rate()), out.rate_bps));
    if (!p.delay().empty())
      AMBER_RETURN_IF_ERROR(read(p, "delay", parse_duration_ns(p.delay()), out.delay_ns));
    if (!p.jitter().empty())
      AMBER_RETURN_IF_ERROR(read(p, "jitter", parse_duration_ns(p.jitter()), out.jitter_ns));
    if (!p.jitter_distribution().empty()) {
      if (p.jitter_distribution() == "uniform") {
        out.jitter_distribution = link::JitterDistribution::kUniform;
      } else if (p.jitter_distribution() == "normal") {
        out.jitter_distribution = link::JitterDistribution::kNormal;
      } else {
        return error(p, "jitter_distribution",
                     cat("'", p.jitter_distribution(), "' is not uniform or normal"));
      }
    }
    if (p.overhead_bytes()) out.overhead_bytes = p.overhead_bytes();
    if (p.has_queue_frames()) {
      if (p.queue_frames() == 0) {
        return error(p, "queue_frames", "must be at least 1 (leave it out for the default)");
      }
      out.queue_limit_frames = p.queue_frames();
    }
    if (!p.queue_bytes().empty()) {
      uint64_t bytes = 0;
      AMBER_RETURN_IF_ERROR(read(p, "queue_bytes", parse_bytes(p.queue_bytes()), bytes));
      if (bytes == 0) return error(p, "queue_bytes", "must be at least 1 byte");
      out.queue_limit_bytes = bytes;
    }
    switch (p.loss_case()) {
      case amber::config::Pipe::kRandomLoss: {
        link::RandomLoss l;
        Locator sub = loc_.nested(p, "random_loss");
        AMBER_RETURN_IF_ERROR(prob(sub, p.random_loss(), "probability",
                                   p.random_loss().probability(), "random_loss.", l.probability));
        out.loss = l;
        break;
      }
      case amber::config::Pipe::kGilbertElliott: {
        const auto& g = p.gilbert_elliott();
        link::GilbertElliottLoss l;
        Locator sub = loc_.nested(p, "gilbert_elliott");
        const char* pre = "gilbert_elliott.";
        if (g.p().empty() || g.r().empty()) {
          return error(p, "gilbert_elliott", "needs both p and r");
        }
        AMBER_RETURN_IF_ERROR(prob(sub, g, "p", g.p(), pre, l.p));
        AMBER_RETURN_IF_ERROR(prob(sub, g, "r", g.r(), pre, l.r));
        if (!g.loss_bad().empty())
          AMBER_RETURN_IF_ERROR(prob(sub, g, "loss_bad", g.loss_bad(), pre, l.loss_bad));
        if (!g.loss_good().empty())
          AMBER_RETURN_IF_ERROR(prob(sub, g, "loss_good", g.loss_good(), pre, l.loss_good));
        out.loss = l;
        break;
      }
      case amber::config::Pipe::kMarkov: {
        const auto& m = p.markov();
        link::MarkovLoss l;
        Locator sub = loc_.nested(p, "markov");
        const char* pre = "markov.";
        if (!m.p13().empty()) AMBER_RETURN_IF_ERROR(prob(sub, m, "p13", m.p13(), pre, l.p13));
        if (!m.p31().empty()) AMBER_RETURN_IF_ERROR(prob(sub, m, "p31", m.p31(), pre, l.p31));
        if (!m.p32().empty()) AMBER_RETURN_IF_ERROR(prob(sub, m, "p32", m.p32(), pre, l.p32));
        if (!m.p23().empty()) AMBER_RETURN_IF_ERROR(prob(sub, m, "p23", m.p23(), pre, l.p23));
        if (!m.p14().empty()) AMBER_RETURN_IF_ERROR(prob(sub, m, "p14", m.p14(), pre, l.p14));
        out.loss = l;
        break;
      }
      case amber::config::Pipe::LOSS_NOT_SET:
        break;
    }
    if (!p.duplicate().empty())
      AMBER_RETURN_IF_ERROR(prob(loc_, p, "duplicate", p.duplicate(), "", out.duplicate));
    if (!p.corrupt().empty())
      AMBER_RETURN_IF_ERROR(prob(loc_, p, "corrupt", p.corrupt(), "", out.corrupt));
    if (!p.reorder().empty())
      AMBER_RETURN_IF_ERROR(prob(loc_, p, "reorder", p.reorder(), "", out.reorder));
    if (p.has_seed()) out.seed = p.seed();
    return Status::ok();
  }

  template <typename T, typename U>
  Status read(const pb::Message& msg, const char* field, Result<T> value, U& out) const {
    if (!value) return error(msg, field, value.status().message());
    out = static_cast<U>(*value);
    return Status::ok();
  }
  Status prob(const Locator& loc, const pb::Message& msg, const char* field,
              const std::string& text, const char* sub, double& out) const {
    Result<double> p = parse_probability(text);
    if (!p)
      return invalid_argument(
          cat(loc.at(msg, field), prefix_, sub, field, ": ", p.status().message()));
    out = *p;
    return Status::ok();
  }
  Status error(const pb::Message& msg, const char* field, std::string_view what,
               int index = -1) const {
    return invalid_argument(cat(loc_.at(msg, field, index), prefix_, field, ": ", what));
  }

  Locator loc_;
  std::string prefix_;
  std::string folder_;  // relative file names are found here
};

uint64_t default_seed(const std::string& link, int direction) {
  // FNV-1a of the link name: stable across runs and machines.
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : link) h = (h ^ c) * 1099511628211ULL;
  return h ^ static_cast<uint64_t>(direction + 1);
}

}  // namespace

Result<NodeConfig> parse_node_config(std::string_view text, const std::string& name) {
  DelayNode msg;
  pb::TextFormat::ParseInfoTree tree;
  AMBER_RETURN_IF_ERROR(parse_text_message(std::string(text), name, &msg, &tree));
  Locator root(name, &tree);
  const size_t slash = name.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : name.substr(0, slash);
  NodeConfig out;
  out.source = name;
  out.node_id = msg.node_id();
  if (out.node_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    out.node_id = host;
  }
  if (!msg.idle_sleep().empty()) {
    if (msg.idle_sleep() == "off") {
      out.idle_sleep_ns = 0;
    } else {
      Result<int64_t> d = parse_duration_ns(msg.idle_sleep());
      if (!d || *d <= 0) {
        return invalid_argument(cat(root.at(msg, "idle_sleep"), "idle_sleep: ",
                                    d ? "must be positive, or \"off\"" : d.status().message()));
      }
      out.idle_sleep_ns = *d;
    }
  }
  if (msg.sizing_frame_bytes()) {
    if (msg.sizing_frame_bytes() < 60 || msg.sizing_frame_bytes() > 65535) {
      return invalid_argument(cat(root.at(msg, "sizing_frame_bytes"),
                                  "sizing_frame_bytes: must be between 60 and 65535"));
    }
    out.sizing_frame_bytes = msg.sizing_frame_bytes();
  }
  if (!msg.sizing_unlimited_rate().empty()) {
    Result<uint64_t> r = parse_rate_bps(msg.sizing_unlimited_rate());
    if (!r || *r == 0) {
      return invalid_argument(cat(root.at(msg, "sizing_unlimited_rate"), "sizing_unlimited_rate: ",
                                  r ? "must be a rate, not unlimited" : r.status().message()));
    }
    out.sizing_unlimited_rate_bps = *r;
  }
  if (msg.max_frame_bytes()) {
    if (msg.max_frame_bytes() < 64 || msg.max_frame_bytes() > 9728) {
      return invalid_argument(
          cat(root.at(msg, "max_frame_bytes"), "max_frame_bytes: must be between 64 and 9728"));
    }
    out.max_frame_bytes = msg.max_frame_bytes();
  }
  if (msg.link_size() == 0) return invalid_argument(cat(name, ": no link is configured"));

  std::set<std::string> names;
  std::map<std::string, std::string> port_owner;
  for (int i = 0; i < msg.link_size(); ++i) {
    const Link& l = msg.link(i);
    Locator loc = root.nested(msg, "link", i);
    LinkConfig link;
    link.where = root.at(msg, "link", i);
    link.where.resize(link.where.size() - 2);  // without ": "
    link.name = l.name();
    if (link.name.empty())
      return invalid_argument(cat(root.at(msg, "link", i), "link: needs a name"));
    if (!names.insert(link.name).second) {
      return invalid_argument(
          cat(loc.at(l, "name"), "link '", link.name, "': the name is used twice"));
    }
    const std::string who = cat("link '", link.name, "' ");
    if (l.port_a().empty() || l.port_b().empty()) {
      return invalid_argument(cat(root.at(msg, "link", i), who, "needs port_a and port_b"));
    }
    if (l.port_a() == l.port_b()) {
      return invalid_argument(cat(loc.at(l, "port_b"), who, "port_b: same port as port_a"));
    }
    for (const char* field : {"port_a", "port_b"}) {
      const std::string& port = field[5] == 'a' ? l.port_a() : l.port_b();
      auto [it, fresh] = port_owner.emplace(port, link.name);
      if (!fresh) {
        return invalid_argument(cat(loc.at(l, field), who, field, ": port '", port,
                                    "' is already used by link '", it->second, "'"));
      }
    }
    link.port_a = l.port_a();
    link.port_b = l.port_b();
    link.a_to_b.seed = default_seed(link.name, 0);
    link.b_to_a.seed = default_seed(link.name, 1);
    for (auto [field, pipe, dir] : {std::tuple{"a_to_b", &link.a_to_b, &l.a_to_b()},
                                    std::tuple{"b_to_a", &link.b_to_a, &l.b_to_a()}}) {
      if (l.has_both()) {
        Locator both = loc.nested(l, "both");
        AMBER_RETURN_IF_ERROR(PipeReader(both, cat(who, "both."), folder).apply(l.both(), *pipe));
      }
      Locator sub = loc.nested(l, field);
      PipeReader reader(sub, cat(who, field, "."), folder);
      AMBER_RETURN_IF_ERROR(reader.apply(*dir, *pipe));
      AMBER_RETURN_IF_ERROR(PipeReader(loc, cat(who, field, ": ")).validate(*pipe, l, field));
    }
    out.links.push_back(std::move(link));
  }
  return out;
}

Result<NodeConfig> load_node_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(cat(path, ": cannot open the configuration file"));
  std::stringstream text;
  text << in.rdbuf();
  return parse_node_config(text.str(), path);
}

}  // namespace amber::config
