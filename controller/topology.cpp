#include "controller/topology.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/strings.h"
#include "common/units.h"
#include "config/text_format.h"
#include "link-emulator/link_event.h"
#include "rpc/grpc_status.h"

namespace amber::controller {
namespace {

using google::protobuf::TextFormat;

class Where {
 public:
  Where(const std::string& origin, const TextFormat::ParseInfoTree& tree) : at_(origin, &tree) {}
  // "file:line:column: " of a field (index -1: not repeated), or "file: ".
  std::string operator()(const char* field_name, int index = -1) const {
    return at_.at(config::Topology::descriptor(), field_name, index);
  }

 private:
  config::Locator at_;
};

Result<int64_t> duration_or(const std::string& text, int64_t fallback, const std::string& at,
                            const char* field) {
  if (text.empty()) return fallback;
  auto d = parse_duration_ns(text);
  if (!d) return invalid_argument(cat(at, field, ": ", d.status().message()));
  if (*d <= 0) return invalid_argument(cat(at, field, ": must be positive ('", text, "')"));
  return *d;
}

Result<std::string> parse_hex(const std::string& hex, const std::string& at) {
  std::string bytes;
  std::string digits;
  for (char c : hex) {
    if (c == ' ' || c == ':') continue;
    digits.push_back(c);
  }
  if (digits.empty() || digits.size() % 2 != 0) {
    return invalid_argument(
        cat(at, "frame.hex '", hex, "': expected an even number of hex digits"));
  }
  for (size_t i = 0; i < digits.size(); i += 2) {
    unsigned value = 0;
    if (std::sscanf(digits.substr(i, 2).c_str(), "%2x", &value) != 1 ||
        !std::isxdigit(static_cast<unsigned char>(digits[i])) ||
        !std::isxdigit(static_cast<unsigned char>(digits[i + 1]))) {
      return invalid_argument(
          cat(at, "frame.hex '", hex, "': '", digits.substr(i, 2), "' is not a hex byte"));
    }
    bytes.push_back(static_cast<char>(value));
  }
  return bytes;
}

Status check_address(const std::string& address, bool tls, const std::string& at,
                     const std::string& what) {
  if (address.empty()) return invalid_argument(cat(at, what, ": address is missing"));
  if (tls) return Status::ok();
  Status s = check_plaintext_address(address);
  if (!s) return s.with_context(cat(at, what, ": without tls { ... }: "));
  return Status::ok();
}

// A value as one settings item: "1 %" and "100 Mbit" are one value.
std::string squeezed(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c != ' ') out.push_back(c);
  }
  return out;
}

// Checks the topology's events, in experiment time, against its links.
Result<std::vector<ScheduledEvent>> parse_events(const config::Topology& t, const Where& where) {
  std::map<std::string, std::vector<std::string>> nodes_of;  // link -> node ids
  for (const auto& n : t.delay_node()) {
    for (const auto& link : n.link()) nodes_of[link].push_back(n.id());
  }
  std::vector<ScheduledEvent> events;
  for (int i = 0; i < t.event_size(); ++i) {
    const config::LinkEvent& e = t.event(i);
    const std::string at = where("event", i);
    const std::string what = cat("event { at: \"", e.at(), "\" link: \"", e.link(), "\" }: ");
    ScheduledEvent out;
    if (e.at().empty()) return invalid_argument(cat(at, what, "give at: the experiment time"));
    auto when = parse_duration_ns(e.at());
    if (!when) return invalid_argument(cat(at, what, "at: ", when.status().message()));
    if (*when < 0) {
      return invalid_argument(
          cat(at, what, "at: experiment time starts at 0, '", e.at(), "' is before"));
    }
    out.at_ns = *when;
    auto nodes = nodes_of.find(e.link());
    if (nodes == nodes_of.end()) {
      return invalid_argument(cat(at, what, "link '", e.link(), "' is listed for no delay node"));
    }
    if (!e.delay_node().empty()) {
      if (std::find(nodes->second.begin(), nodes->second.end(), e.delay_node()) ==
          nodes->second.end()) {
        return invalid_argument(cat(at, what, "link '", e.link(),
                                    "' is not listed for delay node '", e.delay_node(), "'"));
      }
      out.delay_node = e.delay_node();
    } else if (nodes->second.size() > 1) {
      std::string ids;
      for (const auto& id : nodes->second) ids += cat(ids.empty() ? "" : ", ", id);
      return invalid_argument(cat(at, what, "link '", e.link(), "' is on delay nodes ", ids,
                                  ": say which (delay_node)"));
    } else {
      out.delay_node = nodes->second.front();
    }
    out.link = e.link();
    if (!e.direction().empty() && e.direction() != "a_to_b" && e.direction() != "b_to_a") {
      return invalid_argument(cat(at, what, "direction '", e.direction(),
                                  "': a_to_b, b_to_a, or leave it out for both"));
    }
    out.direction = e.direction();
    if (int(e.has_set()) + int(e.down()) + int(e.up()) + int(e.start()) != 1) {
      return invalid_argument(
          cat(at, what, "give exactly one of set { ... }, down: true, up: true, start: true"));
    }
    if (e.down() || e.up() || e.start()) {
      out.change = e.down() ? "down" : e.up() ? "up" : "start";
    } else {
      auto settings = event_settings(e.set());
      if (!settings) return settings.status().with_context(cat(at, what));
      out.change = *settings;
    }
    // The agent parses the change the same way.
    if (auto parsed = link::parse_link_event(0, out.change); !parsed) {
      return parsed.status().with_context(cat(at, what));
    }
    events.push_back(std::move(out));
  }
  return events;
}

}  // namespace

Result<std::string> event_settings(const config::Pipe& set) {
  static const std::map<std::string, std::string> kKeys = {{"rate", "rate"},
                                                           {"delay", "delay"},
                                                           {"jitter", "jitter"},
                                                           {"queue_frames", "queue_frames"},
                                                           {"queue_bytes", "queue_bytes"},
                                                           {"random_loss", "loss"}};
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  set.GetReflection()->ListFields(set, &fields);
  std::string settings;
  for (const auto* f : fields) {
    if (!kKeys.count(f->name())) {
      return invalid_argument(cat("set { ", f->name(),
                                  " }: an event sets rate, delay, jitter, queue_frames, "
                                  "queue_bytes or random_loss"));
    }
  }
  auto add = [&](const char* key, const std::string& value) {
    settings += cat(settings.empty() ? "" : " ", key, "=", squeezed(value));
  };
  if (!set.rate().empty()) add("rate", set.rate());
  if (!set.delay().empty()) add("delay", set.delay());
  if (!set.jitter().empty()) add("jitter", set.jitter());
  if (set.has_queue_frames()) add("queue_frames", std::to_string(set.queue_frames()));
  if (!set.queue_bytes().empty()) add("queue_bytes", set.queue_bytes());
  if (set.has_random_loss()) add("loss", set.random_loss().probability());
  if (settings.empty())
    return invalid_argument("set { }: give what changes (delay: \"200ms\" ...)");
  return settings;
}

bool is_plain_name(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

Result<Topology> parse_topology(const std::string& text, const std::string& origin) {
  Topology topo;
  config::Topology& t = topo.proto;
  TextFormat::ParseInfoTree tree;
  AMBER_RETURN_IF_ERROR(config::parse_text_message(text, origin, &t, &tree));
  const Where where(origin, tree);
  if (!is_plain_name(t.experiment())) {
    return invalid_argument(cat(where("experiment"), "experiment '", t.experiment(),
                                "': give a name of letters, digits, '-', '_' or '.'"));
  }
  const bool tls = t.has_tls();
  if (tls && (t.tls().ca().empty() || t.tls().cert().empty() || t.tls().key().empty())) {
    return invalid_argument(cat(where("tls"), "tls: give all three of ca, cert and key"));
  }
  if (t.listen().empty()) {
    return invalid_argument(cat(origin, ": listen: give unix:/PATH or 127.0.0.1:PORT"));
  }
  AMBER_RETURN_IF_ERROR(check_address(t.listen(), tls, where("listen"), "listen"));
  if (t.store().empty() || t.store()[0] != '/') {
    return invalid_argument(cat(where("store"), "store '", t.store(),
                                "': give an absolute path every agent sees the same way"));
  }
  if (t.delay_node_size() + t.vm_host_size() == 0) {
    return invalid_argument(cat(origin, ": no delay_node { ... } or vm_host { ... } configured"));
  }
  std::set<std::string> ids;
  std::set<std::string> vms;
  std::set<std::string> links;
  for (int i = 0; i < t.delay_node_size(); ++i) {
    const auto& n = t.delay_node(i);
    const std::string at = where("delay_node", i);
    if (!is_plain_name(n.id())) {
      return invalid_argument(cat(at, "delay_node id '", n.id(), "': give a plain name"));
    }
    if (!ids.insert(n.id()).second) {
      return invalid_argument(cat(at, "id '", n.id(), "' used twice"));
    }
    AMBER_RETURN_IF_ERROR(check_address(n.address(), tls, at, cat("delay node ", n.id())));
    for (const auto& link : n.link()) links.insert(cat(n.id(), "/", link));
  }
  for (int i = 0; i < t.vm_host_size(); ++i) {
    const auto& h = t.vm_host(i);
    const std::string at = where("vm_host", i);
    if (!is_plain_name(h.id())) {
      return invalid_argument(cat(at, "vm_host id '", h.id(), "': give a plain name"));
    }
    if (!ids.insert(h.id()).second) {
      return invalid_argument(cat(at, "id '", h.id(), "' used twice"));
    }
    AMBER_RETURN_IF_ERROR(check_address(h.address(), tls, at, cat("vm host ", h.id())));
    if (h.vm_size() == 0) {
      return invalid_argument(cat(at, "vm host ", h.id(), ": list its VMs (vm: \"name\")"));
    }
    for (const auto& vm : h.vm()) {
      if (!vms.insert(vm).second) {
        return invalid_argument(cat(at, "VM '", vm, "' listed on two hosts"));
      }
    }
  }
  for (int i = 0; i < t.delay_node_size(); ++i) {
    const auto& n = t.delay_node(i);
    const std::string at = where("delay_node", i);
    std::set<std::string> ends;
    for (const auto& a : n.attach()) {
      const std::string what = cat("delay node ", n.id(), ": attach { link: \"", a.link(),
                                   "\" end: \"", a.end(), "\" vm: \"", a.vm(), "\" }: ");
      if (!links.count(cat(n.id(), "/", a.link()))) {
        return invalid_argument(cat(at, what, "link '", a.link(), "' is not listed for the node"));
      }
      if (a.end() != "a" && a.end() != "b") {
        return invalid_argument(cat(at, what, "end: give \"a\" (port_a) or \"b\" (port_b)"));
      }
      if (!vms.count(a.vm())) {
        return invalid_argument(cat(at, what, "VM '", a.vm(), "' is on no vm_host"));
      }
      if (!ends.insert(cat(a.link(), "/", a.end())).second) {
        return invalid_argument(cat(at, what, "that link end has a VM attached already"));
      }
    }
  }
  if (!t.sync_mode().empty() && t.sync_mode() != "free_running" && t.sync_mode() != "disciplined" &&
      t.sync_mode() != "grandmaster") {
    return invalid_argument(cat(where("sync_mode"), "sync_mode '", t.sync_mode(),
                                "': expected free_running, disciplined or grandmaster"));
  }
  if (t.ptp_socket().empty() && !t.allow_unsynchronized()) {
    return invalid_argument(cat(origin,
                                ": no ptp_socket: give ptp4l's management socket, or set "
                                "allow_unsynchronized: true (one machine, tests)"));
  }
  Durations& d = topo.durations;
  auto margin = duration_or(t.margin(), d.margin_ns, where("margin"), "margin");
  if (!margin) return margin.status();
  d.margin_ns = *margin;
  auto step =
      duration_or(t.step_deadline(), d.step_deadline_ns, where("step_deadline"), "step_deadline");
  if (!step) return step.status();
  d.step_deadline_ns = *step;
  auto save =
      duration_or(t.save_deadline(), d.save_deadline_ns, where("save_deadline"), "save_deadline");
  if (!save) return save.status();
  d.save_deadline_ns = *save;
  if (!t.run_on().empty() && t.run_on() != "off") {
    auto run_on = duration_or(t.run_on(), 0, where("run_on"), "run_on");
    if (!run_on) return run_on.status();
    if (*run_on > 1'000'000'000) {
      return invalid_argument(
          cat(where("run_on"), "run_on '", t.run_on(), "': at most 1s (or \"off\")"));
    }
    d.run_on_ns = *run_on;
  }
  if (t.has_periodic()) {
    const std::string at = where("periodic");
    auto interval = duration_or(t.periodic().interval(), 0, at, "periodic.interval");
    if (!interval) return interval.status();
    if (*interval < 1'000'000'000) {
      return invalid_argument(
          cat(at, "periodic.interval '", t.periodic().interval(), "': give at least 1s"));
    }
    d.periodic_interval_ns = *interval;
  }
  std::set<std::string> trigger_names;
  for (int i = 0; i < t.trigger_size(); ++i) {
    const auto& trig = t.trigger(i);
    const std::string at = where("trigger", i);
    if (trig.name().empty() || !trigger_names.insert(trig.name()).second) {
      return invalid_argument(cat(at, "trigger: give each a unique name"));
    }
    auto cooldown = duration_or(trig.cooldown(), 10'000'000'000, at, "cooldown");
    if (!cooldown) return cooldown.status();
    d.trigger_cooldown_ns.push_back(*cooldown);
    const std::string what = cat("trigger '", trig.name(), "': ");
    if (trig.has_frame()) {
      const auto& f = trig.frame();
      bool known = false;
      for (const auto& n : t.delay_node()) known |= n.id() == f.delay_node();
      if (!known) {
        return invalid_argument(
            cat(at, what, "delay_node '", f.delay_node(), "' is not in the topology"));
      }
      if (!f.link().empty() && !links.count(cat(f.delay_node(), "/", f.link()))) {
        return invalid_argument(
            cat(at, what, "link '", f.link(), "' is not listed for delay node ", f.delay_node()));
      }
      if (f.hex().empty() == f.text().empty()) {
        return invalid_argument(cat(at, what, "give exactly one of hex and text"));
      }
      if (!f.hex().empty()) {
        auto bytes = parse_hex(f.hex(), at);
        if (!bytes) return bytes.status();
        d.trigger_pattern.push_back(*bytes);
      } else {
        d.trigger_pattern.push_back(f.text());
      }
    } else if (trig.has_console()) {
      const auto& c = trig.console();
      bool known = false;
      for (const auto& h : t.vm_host()) {
        if (h.id() != c.vm_host()) continue;
        for (const auto& vm : h.vm()) known |= vm == c.vm();
      }
      if (!known) {
        return invalid_argument(cat(at, what, "VM '", c.vm(), "' on vm_host '", c.vm_host(),
                                    "' is not in the topology"));
      }
      if (c.contains().empty()) return invalid_argument(cat(at, what, "contains is empty"));
      d.trigger_pattern.push_back(c.contains());
    } else {
      return invalid_argument(cat(at, what, "give frame { ... } or console { ... }"));
    }
  }
  auto events = parse_events(t, where);
  if (!events) return events.status();
  topo.events = std::move(events).value();
  return topo;
}

Result<Topology> load_topology(const std::string& path) {
  auto text = config::read_text_file(path, "topology file");
  if (!text) return text.status();
  return parse_topology(*text, path);
}

}  // namespace amber::controller
