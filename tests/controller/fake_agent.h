// In-process agents and a master clock for tests of the controller's
// protocols (experiment_test.cpp). Every operation of a fake agent succeeds,
// fails or hangs past its deadline as the test says, and each call is
// recorded with a sequence number shared by all the fakes of a test, so
// that phases can be ordered across agents. No gRPC: the test also runs
// under ThreadSanitizer.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/strings.h"
#include "controller/agent.h"
#include "controller/master_clock.h"
#include "rpc/files.h"

namespace amber::controller::fake {

// Master time that moves only when the test moves it.
class Clock final : public MasterClock {
 public:
  explicit Clock(int64_t start_ns) : now_(start_ns) {}
  Result<int64_t> now_ns() const override { return now_.load(); }
  std::string describe() const override { return "fake clock"; }
  bool trustworthy() const override { return true; }
  void advance(int64_t ns) { now_ += ns; }

 private:
  std::atomic<int64_t> now_;
};

enum class Op {
  kPrepare,
  kStopAt,
  kSave,
  kResumeAt,
  kRollBack,
  kShutdown,
  kRunning,
  kLoad,
  kAlign,
  kVirtualTime,
  kScheduleEvents,
  kVmStopped
};

inline const char* name(Op op) {
  switch (op) {
    case Op::kPrepare:
      return "prepare";
    case Op::kStopAt:
      return "stop_at";
    case Op::kSave:
      return "save";
    case Op::kResumeAt:
      return "resume_at";
    case Op::kRollBack:
      return "roll_back";
    case Op::kShutdown:
      return "shutdown";
    case Op::kRunning:
      return "running";
    case Op::kLoad:
      return "load";
    case Op::kAlign:
      return "align";
    case Op::kVirtualTime:
      return "virtual_time";
    case Op::kScheduleEvents:
      return "schedule_events";
    case Op::kVmStopped:
      return "vm_stopped";
  }
  return "?";
}

// For GoogleTest's messages.
inline void PrintTo(Op op, std::ostream* os) {
  *os << name(op);
}

enum class Outcome {
  kSucceed,
  kFail,  // refuses at once
  kHang,  // answers nothing until the call's deadline passes
};

struct Call {
  Op op = Op::kPrepare;
  uint64_t seq = 0;                             // order among the calls of every fake of the test
  int64_t at_ns = 0;                            // stop_at, resume_at, roll_back
  int64_t lease_ns = 0;                         // stop_at
  std::string dir;                              // prepare, save, load
  bool late = false;                            // resume_at: the instant had passed when it arrived
  std::map<std::string, int64_t> pause_excess;  // align
  std::map<std::string, int64_t> stopped;       // vm_stopped: each VM's stop
  agent::ScheduleEventsRequest events;          // schedule_events

  static Call of(Op op, int64_t at_ns = 0, int64_t lease_ns = 0, std::string dir = "") {
    Call c;
    c.op = op;
    c.at_ns = at_ns;
    c.lease_ns = lease_ns;
    c.dir = std::move(dir);
    return c;
  }
};

// A trigger stream that reports nothing and ends after `lasts` as
// `ends_with` says (its deadline, an agent gone), or when cancelled.
class QuietStream final : public TriggerStream {
 public:
  QuietStream(std::chrono::milliseconds lasts, Status ends_with)
      : until_(std::chrono::steady_clock::now() + lasts), ends_with_(std::move(ends_with)) {}
  bool next(agent::TriggerEvent*) override {
    std::unique_lock lock(mutex_);
    wake_.wait_until(lock, until_, [&] { return cancelled_; });
    return false;
  }
  void cancel() override {
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
    }
    wake_.notify_all();
  }
  Status finish() override {
    std::lock_guard lock(mutex_);
    return cancelled_ ? Status(ErrorCode::kCancelled, "cancelled") : ends_with_;
  }

 private:
  const std::chrono::steady_clock::time_point until_;
  const Status ends_with_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool cancelled_ = false;
};

class Agent final : public controller::Agent {
 public:
  // A delay node `id`, or a VM host `id` running `vms`.
  Agent(Kind kind, std::string id, std::vector<std::string> vms, const Clock& clock,
        std::atomic<uint64_t>& sequence)
      : kind_(kind), id_(std::move(id)), vms_(std::move(vms)), clock_(clock), sequence_(sequence) {}

  // ---- What the test tells it (before the operation runs) ----
  // How `op` ends, after `delay` of real time.
  void set(Op op, Outcome outcome, std::chrono::milliseconds delay = std::chrono::milliseconds(0)) {
    std::lock_guard lock(mutex_);
    behaviour_[op] = {outcome, delay};
  }
  // Runs on the calling thread when `op` is called, before it acts.
  void on(Op op, std::function<void()> hook) {
    std::lock_guard lock(mutex_);
    hooks_[op] = std::move(hook);
  }
  // How long a resume request takes to reach it, in master time: an instant
  // nearer than that has passed when it arrives.
  void set_resume_transit_ns(int64_t ns) { resume_transit_ns_ = ns; }
  // VM host: how much longer than the network `vm`'s clock stands still at
  // each resume (reported in the resume's step).
  void set_pause_excess(const std::string& vm, int64_t ns) {
    std::lock_guard lock(mutex_);
    pause_excess_[vm] = ns;
  }
  // VM host: `vm`'s guest clock stops this long after a stop's instant
  // (its step's vm_clock_ns; without: QEMU's log said nothing).
  void set_stop_lag(const std::string& vm, int64_t ns) {
    std::lock_guard lock(mutex_);
    stop_lag_[vm] = ns;
  }
  // Delay node: the direction `pipe` ("link/b_to_a") delivers to `vm`.
  void attach(const std::string& vm, const std::string& pipe) {
    std::lock_guard lock(mutex_);
    attached_[vm] = pipe;
  }
  // Delay node: its virtual clock reads master time less this.
  void set_virtual_offset(int64_t ns) { virtual_offset_ns_ = ns; }
  // Delay node: the timeline its clock follows (NodeTime::clock_id); a
  // process started afresh has another.
  void set_clock_id(uint64_t id) { clock_id_ = id; }
  // How long a hanging call takes to give up (its deadline).
  static constexpr std::chrono::milliseconds kHang{60};
  // watch() opens a QuietStream (without this: it has no triggers).
  void set_watch(std::chrono::milliseconds lasts, Status ends_with) {
    std::lock_guard lock(mutex_);
    watch_ = {lasts, std::move(ends_with)};
  }

  // ---- What it saw ----
  std::vector<Call> calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  std::vector<Op> ops() const {
    std::vector<Op> out;
    for (const auto& c : calls()) out.push_back(c.op);
    return out;
  }
  std::vector<Call> calls_of(Op op) const {
    std::vector<Call> out;
    for (const auto& c : calls()) {
      if (c.op == op) out.push_back(c);
    }
    return out;
  }
  std::optional<Call> last(Op op) const {
    auto of = calls_of(op);
    if (of.empty()) return std::nullopt;
    return of.back();
  }
  void forget_calls() {
    std::lock_guard lock(mutex_);
    calls_.clear();
  }
  void forget_calls(Op op) {
    std::lock_guard lock(mutex_);
    std::erase_if(calls_, [op](const Call& c) { return c.op == op; });
  }
  // Frozen (node) or VMs paused (host).
  bool stopped() const {
    std::lock_guard lock(mutex_);
    return stopped_;
  }
  // VM host: its VMs quit (swap-out).
  bool down() const {
    std::lock_guard lock(mutex_);
    return down_;
  }
  // The state an earlier controller left it in (before the Experiment
  // that drives it is created).
  void leave(bool stopped, bool down, int64_t lease_ns) {
    set_state([&](Agent& a) {
      a.stopped_ = stopped;
      a.down_ = down;
      a.lease_ns_ = lease_ns;
    });
  }
  // status() says it does not answer.
  void set_unreachable(bool unreachable) {
    set_state([&](Agent& a) { a.unreachable_ = unreachable; });
  }
  // When it would resume by itself (a real agent's lease); 0: never.
  int64_t lease_ns() const {
    std::lock_guard lock(mutex_);
    return lease_ns_;
  }
  // How many trigger streams were opened.
  int watches() const {
    std::lock_guard lock(mutex_);
    return watches_;
  }

  // ---- controller::Agent ----
  Kind kind() const override { return kind_; }
  const std::string& id() const override { return id_; }
  std::string what() const override {
    return cat(kind_ == Kind::kDelayNode ? "delay node " : "vm host ", id_);
  }

  Result<Prepared> prepare(const std::string& dir, bool) override {
    AMBER_RETURN_IF_ERROR(act(Call::of(Op::kPrepare, 0, 0, dir)));
    return Prepared{4096, 100'000};
  }

  Result<AgentStep> stop_at(int64_t at_ns, int64_t lease_until_ns, int64_t) override {
    AMBER_RETURN_IF_ERROR(act(Call::of(Op::kStopAt, at_ns, lease_until_ns)));
    set_state([&](Agent& a) {
      a.stopped_ = true;
      a.lease_ns_ = lease_until_ns;
    });
    AgentStep step;
    step.set_lateness_ns(1000);
    for (const auto& vm : vms_) (*step.mutable_vm_event_ns())[vm] = at_ns + 1000;
    std::lock_guard lock(mutex_);
    last_stop_ns_ = at_ns;
    for (const auto& [vm, lag] : stop_lag_) (*step.mutable_vm_clock_ns())[vm] = at_ns + lag;
    return step;
  }

  // Delay node: each attached direction ran on from the last stop's
  // instant to its VM's stop.
  Result<AgentStep> vm_stopped(const std::map<std::string, int64_t>& stopped_ns) override {
    Call call = Call::of(Op::kVmStopped);
    call.stopped = stopped_ns;
    AMBER_RETURN_IF_ERROR(act(call));
    AgentStep step;
    std::lock_guard lock(mutex_);
    for_attached(stopped_ns, [&](const std::string& pipe, int64_t stopped) {
      (*step.mutable_ran_on_ns())[pipe] = std::max<int64_t>(stopped - last_stop_ns_, 0);
    });
    return step;
  }

  Result<Saved> save(const std::string& dir) override {
    AMBER_RETURN_IF_ERROR(act(Call::of(Op::kSave, 0, 0, dir)));
    Saved saved;
    if (kind_ == Kind::kDelayNode) {
      auto piece = write_piece(dir, "delay node", id_, {cat("delaynodes/", id_, ".img")});
      if (!piece) return piece.status();
      saved.pieces.push_back(*std::move(piece));
    } else {
      for (const auto& vm : vms_) {
        auto piece = write_piece(dir, "vm", vm,
                                 {cat("vms/", vm, "/state.bin"), cat("vms/", vm, "/meta.json")});
        if (!piece) return piece.status();
        saved.pieces.push_back(*std::move(piece));
      }
    }
    uint64_t bytes = 0;
    for (const auto& p : saved.pieces) {
      for (const auto& f : p.files()) bytes += f.bytes();
    }
    saved.step.set_bytes(bytes);
    return saved;
  }

  Result<Resumed> resume_at(int64_t at_ns, int64_t) override {
    const int64_t arrived = *clock_.now_ns() + resume_transit_ns_;
    Call call = Call::of(Op::kResumeAt, at_ns);
    call.late = arrived > at_ns;
    AMBER_RETURN_IF_ERROR(act(call));
    set_state([](Agent& a) {
      a.stopped_ = false;
      a.lease_ns_ = 0;
    });
    Resumed resumed;
    resumed.late = call.late;  // then it resumed at once, on arrival
    const int64_t event = std::max(arrived, at_ns);
    resumed.step.set_lateness_ns(event - at_ns);
    for (const auto& vm : vms_) (*resumed.step.mutable_vm_event_ns())[vm] = event;
    std::lock_guard lock(mutex_);
    for (const auto& [vm, ns] : pause_excess_)
      (*resumed.step.mutable_vm_pause_excess_ns())[vm] = ns;
    return resumed;
  }

  Result<AgentStep> align(const std::map<std::string, int64_t>& pause_excess_ns) override {
    Call call = Call::of(Op::kAlign);
    call.pause_excess = pause_excess_ns;
    AMBER_RETURN_IF_ERROR(act(call));
    AgentStep step;
    std::lock_guard lock(mutex_);
    for_attached(pause_excess_ns, [&](const std::string& pipe, int64_t excess) {
      (*step.mutable_shift_ns())[pipe] = excess;
    });
    return step;
  }

  Status roll_back(int64_t at_ns, int64_t) override {
    AMBER_RETURN_IF_ERROR(act(Call::of(Op::kRollBack, at_ns)));
    set_state([](Agent& a) {
      a.stopped_ = false;
      a.lease_ns_ = 0;
    });
    return Status::ok();
  }

  Status shutdown() override {
    AMBER_RETURN_IF_ERROR(act(Call::of(Op::kShutdown)));
    // The VMs quit; a node stays frozen (Hold). Neither has a lease left.
    set_state([](Agent& a) {
      if (a.kind_ == Kind::kVmHost) {
        a.down_ = true;
        a.stopped_ = false;
      }
      a.lease_ns_ = 0;
    });
    return Status::ok();
  }

  Status find_pieces(const Manifest& manifest) const override {
    const std::vector<std::string> names =
        kind_ == Kind::kDelayNode ? std::vector<std::string>{id_} : vms_;
    const std::string kind = kind_ == Kind::kDelayNode ? "delay node" : "vm";
    for (const auto& n : names) {
      auto found = std::find_if(manifest.pieces().begin(), manifest.pieces().end(),
                                [&](const Piece& p) { return p.kind() == kind && p.name() == n; });
      if (found == manifest.pieces().end()) {
        return failed_precondition(cat("checkpoint ", manifest.id(), " holds nothing of ", n));
      }
    }
    return Status::ok();
  }

  Result<bool> running() override {
    AMBER_RETURN_IF_ERROR(act(Call::of(Op::kRunning)));
    std::lock_guard lock(mutex_);
    return kind_ == Kind::kDelayNode ? !stopped_ : !down_;
  }

  Status load(const std::string& dir, int64_t lease_until_ns) override {
    AMBER_RETURN_IF_ERROR(act(Call::of(Op::kLoad, 0, lease_until_ns, dir)));
    // Loaded pieces wait, frozen or paused, for the resume or the lease.
    set_state([&](Agent& a) {
      a.down_ = false;
      a.stopped_ = true;
      a.lease_ns_ = lease_until_ns;
    });
    return Status::ok();
  }

  AgentStatus status() override {
    AgentStatus a;
    a.set_kind(kind_ == Kind::kDelayNode ? "delay node" : "vm host");
    a.set_id(id_);
    std::lock_guard lock(mutex_);
    a.set_reachable(!unreachable_);
    if (unreachable_) {
      a.set_error("unreachable (as the test says)");
      return a;
    }
    a.set_frozen(stopped_);
    if (kind_ == Kind::kDelayNode)
      a.set_virtual_now_ns(*clock_.now_ns() - virtual_offset_ns_.load());
    for (const auto& vm : vms_) {
      a.add_vms(cat(vm, down_ ? " absent" : stopped_ ? " paused" : " running"));
    }
    return a;
  }

  Result<std::unique_ptr<TriggerStream>> watch(const config::Trigger&,
                                               const std::string&) override {
    std::lock_guard lock(mutex_);
    if (!watch_) return Status(ErrorCode::kUnimplemented, "this fake agent has no triggers");
    ++watches_;
    return std::unique_ptr<TriggerStream>(
        std::make_unique<QuietStream>(watch_->first, watch_->second));
  }

  Result<NodeTime> virtual_time_at(int64_t at_ns) override {
    if (kind_ != Kind::kDelayNode) return controller::Agent::virtual_time_at(at_ns);
    AMBER_RETURN_IF_ERROR(act(Call::of(Op::kVirtualTime, at_ns)));
    return NodeTime{at_ns - virtual_offset_ns_.load(), clock_id_.load(), stopped()};
  }

  Result<uint32_t> schedule_events(const agent::ScheduleEventsRequest& request) override {
    if (kind_ != Kind::kDelayNode) return controller::Agent::schedule_events(request);
    Call call = Call::of(Op::kScheduleEvents);
    call.events = request;
    AMBER_RETURN_IF_ERROR(act(call));
    uint32_t n = 0;
    for (const auto& e : request.events()) n += e.pipe().direction().empty() ? 2 : 1;
    return n;
  }

 private:
  struct Behaviour {
    Outcome outcome = Outcome::kSucceed;
    std::chrono::milliseconds delay{0};
  };

  // Records the call, runs its hook, then ends as told.
  Status act(Call call) {
    Behaviour b;
    std::function<void()> hook;
    {
      std::lock_guard lock(mutex_);
      call.seq = sequence_++;
      calls_.push_back(call);
      b = behaviour_[call.op];
      hook = hooks_[call.op];
    }
    if (hook) hook();
    std::this_thread::sleep_for(b.delay);
    switch (b.outcome) {
      case Outcome::kSucceed:
        return Status::ok();
      case Outcome::kFail:
        return failed_precondition(cat(what(), ": ", name(call.op), " refused (as the test says)"));
      case Outcome::kHang:
        std::this_thread::sleep_for(kHang);
        return deadline_exceeded(cat(what(), " did not answer in time"));
    }
    return Status::ok();
  }

  // Delay node, mutex_ held: `f(pipe, value)` for each attached VM that
  // `by_vm` names.
  template <typename F>
  void for_attached(const std::map<std::string, int64_t>& by_vm, F f) const {
    for (const auto& [vm, pipe] : attached_) {
      if (auto v = by_vm.find(vm); v != by_vm.end()) f(pipe, v->second);
    }
  }

  template <typename Change>
  void set_state(Change change) {
    std::lock_guard lock(mutex_);
    change(*this);
  }

  // Writes each file of a piece into the checkpoint's folder `dir`, as an
  // agent saving would, with its size and digest.
  Result<Piece> write_piece(const std::string& dir, const std::string& kind,
                            const std::string& name, const std::vector<std::string>& files) {
    Piece piece;
    piece.set_kind(kind);
    piece.set_name(name);
    piece.set_agent(what());
    for (const auto& rel : files) {
      const std::filesystem::path path = cat(dir, "/", rel);
      std::filesystem::create_directories(path.parent_path());
      std::ofstream(path) << "saved by " << what() << ": " << rel << "\n";
      auto sha = sha256_file(path.string());
      if (!sha) return sha.status();
      StoredFile* f = piece.add_files();
      f->set_path(rel);
      f->set_bytes(std::filesystem::file_size(path));
      f->set_sha256(*sha);
    }
    return piece;
  }

  const Kind kind_;
  const std::string id_;
  const std::vector<std::string> vms_;
  const Clock& clock_;
  std::atomic<uint64_t>& sequence_;
  std::atomic<int64_t> resume_transit_ns_{0};
  std::atomic<int64_t> virtual_offset_ns_{0};
  std::atomic<uint64_t> clock_id_{1};

  mutable std::mutex mutex_;
  std::map<Op, Behaviour> behaviour_;
  std::map<Op, std::function<void()>> hooks_;
  std::vector<Call> calls_;
  std::map<std::string, int64_t> pause_excess_;  // VM host
  std::map<std::string, std::string> attached_;  // delay node: vm -> pipe
  std::map<std::string, int64_t> stop_lag_;      // VM host
  int64_t last_stop_ns_ = 0;
  bool stopped_ = false;
  bool down_ = false;
  int64_t lease_ns_ = 0;
  bool unreachable_ = false;
  std::optional<std::pair<std::chrono::milliseconds, Status>> watch_;
  int watches_ = 0;
};

}  // namespace amber::controller::fake
