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
#include "proto/config.pb.h"

namespace amber::config {
namespace {

namespace pb = google::protobuf;

class CollectFirstError : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (!has_error) {
      has_error = true;
      this->line = line + 1;
      this->column = column + 1;
      this->message = message;
    }
  }
  void AddWarning(int, pb::io::ColumnNumber, const std::string&) override {}

  bool has_error = false;
  int line = 0;
  int column = 0;
  std::string message;
};

// Where a field was written, for error messages: "file:line:col: ".
class Locator {
 public:
  Locator(const std::string& file, const pb::TextFormat::ParseInfoTree* tree)
      : file_(file), tree_(tree) {}

  std::string at(const pb::Message& msg, const char* field, int index = -1) const {
    const pb::FieldDescriptor* fd = msg.GetDescriptor()->FindFieldByName(field);
    if (tree_ && fd) {
      pb::TextFormat::ParseLocation loc = tree_->GetLocation(fd, index);
      if (loc.line >= 0) return cat(file_, ":", loc.line + 1, ":", loc.column + 1, ": ");
    }
    return cat(file_, ": ");
  }
  Locator nested(const pb::Message& msg, const char* field, int index = -1) const {
    const pb::FieldDescriptor* fd = msg.GetDescriptor()->FindFieldByName(field);
    return Locator(file_, tree_ && fd ? tree_->GetTreeForNested(fd, index) : nullptr);
  }

 private:
  std::string file_;
  const pb::TextFormat::ParseInfoTree* tree_;
};

// Converts one Pipe message over defaults (the link's "both" block), field
// by field, naming `prefix` in errors.
class PipeReader {
 public:
  PipeReader(const Locator& loc, std::string prefix) : loc_(loc), prefix_(std::move(prefix)) {}

  Status apply(const amber::config::Pipe& p, link::PipeConfig& out) const {
    if (!p.rate().empty()) AMBER_RETURN_IF_ERROR(read(p, "rate", parse_rate_bps(p.rate()), out.rate_bps));
    if (!p.delay().empty()) AMBER_RETURN_IF_ERROR(read(p, "delay", parse_duration_ns(p.delay()), out.delay_ns));
    if (!p.jitter().empty()) AMBER_RETURN_IF_ERROR(read(p, "jitter", parse_duration_ns(p.jitter()), out.jitter_ns));
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
        AMBER_RETURN_IF_ERROR(prob(sub, p.random_loss(), "probability", p.random_loss().probability(), "random_loss.", l.probability));
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
        if (!g.loss_bad().empty()) AMBER_RETURN_IF_ERROR(prob(sub, g, "loss_bad", g.loss_bad(), pre, l.loss_bad));
        if (!g.loss_good().empty()) AMBER_RETURN_IF_ERROR(prob(sub, g, "loss_good", g.loss_good(), pre, l.loss_good));
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
    if (!p.duplicate().empty()) AMBER_RETURN_IF_ERROR(prob(loc_, p, "duplicate", p.duplicate(), "", out.duplicate));
    if (!p.corrupt().empty()) AMBER_RETURN_IF_ERROR(prob(loc_, p, "corrupt", p.corrupt(), "", out.corrupt));
    if (!p.reorder().empty()) AMBER_RETURN_IF_ERROR(prob(loc_, p, "reorder", p.reorder(), "", out.reorder));
    if (p.has_seed()) out.seed = p.seed();
    return Status::ok();
  }

  // The whole direction, once all blocks are applied.
  Status validate(const link::PipeConfig& c, const pb::Message& where, const char* field) const {
    Status s = c.validate();
    if (!s) return invalid_argument(cat(loc_.at(where, field), prefix_, s.message()));
    return Status::ok();
  }

 private:
  template <typename T, typename U>
  Status read(const pb::Message& msg, const char* field, Result<T> value, U& out) const {
    if (!value) return error(msg, field, value.status().message());
    out = static_cast<U>(*value);
    return Status::ok();
  }
  Status prob(const Locator& loc, const pb::Message& msg, const char* field,
              const std::string& text, const char* sub, double& out) const {
    Result<double> p = parse_probability(text);
    if (!p) return invalid_argument(cat(loc.at(msg, field), prefix_, sub, field, ": ", p.status().message()));
    out = *p;
    return Status::ok();
  }
  Status error(const pb::Message& msg, const char* field, std::string_view what) const {
    return invalid_argument(cat(loc_.at(msg, field), prefix_, field, ": ", what));
  }

  const Locator& loc_;
  std::string prefix_;
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
  pb::TextFormat::Parser parser;
  CollectFirstError errors;
  pb::TextFormat::ParseInfoTree tree;
  parser.RecordErrorsTo(&errors);
  parser.WriteLocationsTo(&tree);
  if (!parser.ParseFromString(std::string(text), &msg)) {
    return invalid_argument(
        cat(name, ":", errors.line, ":", errors.column, ": ", errors.has_error ? errors.message : "syntax error"));
  }
  Locator root(name, &tree);
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
      return invalid_argument(cat(root.at(msg, "max_frame_bytes"),
                                  "max_frame_bytes: must be between 64 and 9728"));
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
    if (link.name.empty()) return invalid_argument(cat(root.at(msg, "link", i), "link: needs a name"));
    if (!names.insert(link.name).second) {
      return invalid_argument(cat(loc.at(l, "name"), "link '", link.name, "': the name is used twice"));
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
    for (auto [field, pipe, dir] :
         {std::tuple{"a_to_b", &link.a_to_b, &l.a_to_b()}, std::tuple{"b_to_a", &link.b_to_a, &l.b_to_a()}}) {
      if (l.has_both()) {
        Locator both = loc.nested(l, "both");
        AMBER_RETURN_IF_ERROR(PipeReader(both, cat(who, "both.")).apply(l.both(), *pipe));
      }
      Locator sub = loc.nested(l, field);
      PipeReader reader(sub, cat(who, field, "."));
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
