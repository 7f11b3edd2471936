// The controller's checkpoint and restore protocols (controller/README.md)
// over fake agents (fake_agent.h), a real checkpoint store in a temporary
// folder and a master clock the test moves. Built twice: as
// controller-experiment and under ThreadSanitizer as
// controller-experiment-tsan (the phases run one thread per agent).
#include "controller/experiment.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/strings.h"
#include "controller/store.h"
#include "rpc/files.h"
#include "tests/controller/fake_agent.h"

namespace amber::controller {
namespace {

namespace fs = std::filesystem;
using fake::Op;
using fake::Outcome;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int64_t kStart = 1'700'000'000'000'000'000;  // master time at the start

class ExperimentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/amber-experiment-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    root_ = dir;
  }
  void TearDown() override {
    experiment_.reset();
    fs::remove_all(root_);
  }

  // `nodes` delay nodes dn1.. then `hosts` VM hosts h1.. with two VMs each
  // (vm1 vm2 on h1, vm3 vm4 on h2, ...): the daemon's order.
  // `before` runs once the fakes exist, before the Experiment (the
  // controller) starts over them: the state an earlier controller left.
  void start(int nodes, int hosts, const std::function<void()>& before = {}) {
    experiment_.reset();  // a controller started again: the store's lock is free
    nodes_.clear();
    hosts_.clear();
    notes_.clear();
    Topology t;
    t.events = events_;
    t.proto.set_experiment("unit");
    t.proto.set_store(root_);
    t.proto.set_allow_unsynchronized(true);
    t.durations.margin_ns = 2'000'000;
    t.durations.step_deadline_ns = 1'000'000'000;
    t.durations.save_deadline_ns = 2'000'000'000;
    t.durations.run_on_ns = run_on_ns_;
    for (const auto& trigger : triggers_) {
      *t.proto.add_trigger() = trigger;
      t.durations.trigger_cooldown_ns.push_back(1'000'000'000);
      t.durations.trigger_pattern.push_back("ab");
    }
    auto clock = std::make_unique<fake::Clock>(kStart);
    clock_ = clock.get();
    std::vector<std::unique_ptr<Agent>> agents;
    for (int i = 1; i <= nodes; ++i) {
      // Links: dn1 "lfn" and "wan", dn2 "lan" and "wan", ...
      config::DelayNodeRef* ref = t.proto.add_delay_node();
      ref->set_id(cat("dn", i));
      ref->add_link(i == 1 ? "lfn" : i == 2 ? "lan" : cat("l", i));
      ref->add_link("wan");
      auto a = std::make_unique<fake::Agent>(Agent::Kind::kDelayNode, cat("dn", i),
                                             std::vector<std::string>{}, *clock_, sequence_);
      nodes_.push_back(a.get());
      agents.push_back(std::move(a));
    }
    for (int i = 1; i <= hosts; ++i) {
      auto a = std::make_unique<fake::Agent>(
          Agent::Kind::kVmHost, cat("h", i),
          std::vector<std::string>{cat("vm", 2 * i - 1), cat("vm", 2 * i)}, *clock_, sequence_);
      hosts_.push_back(a.get());
      agents.push_back(std::move(a));
    }
    if (before) before();
    auto e = Experiment::create(std::move(t), std::move(agents), std::move(clock), &notes_);
    ASSERT_TRUE(e.is_ok()) << e.status().to_string();
    experiment_ = std::move(e).value();
    if (!keep_start_calls_) {
      // Experiment time starts on every delay node with the controller
      // (tested apart): out of the way of what the other tests count.
      for (auto* n : nodes_) n->forget_calls(Op::kVirtualTime);
      std::erase_if(notes_, [](const std::string& n) { return n.starts_with("experiment time"); });
    }
    experiment_->set_log([this](const std::string& line) {
      std::lock_guard lock(mutex_);
      log_.push_back(line);
    });
  }

  Result<Manifest> checkpoint(const CheckpointRequest& request = {}) {
    return experiment_->checkpoint(request, "test", progress());
  }
  Result<Manifest> restore(const std::string& id) {
    RestoreRequest request;
    request.set_id(id);
    return experiment_->restore(request, progress());
  }
  ProgressFn progress() {
    return [this](const Progress& p) {
      std::lock_guard lock(mutex_);
      progress_.push_back(p);
    };
  }

  std::vector<fake::Agent*> all() const {
    std::vector<fake::Agent*> out = nodes_;
    out.insert(out.end(), hosts_.begin(), hosts_.end());
    return out;
  }
  void forget_calls() {
    for (auto* a : all()) a->forget_calls();
  }
  // Checkpoint folders in the store, complete or partial.
  std::vector<std::string> folders() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(root_ + "/unit")) {
      if (e.is_directory()) out.push_back(e.path().filename().string());
    }
    return out;
  }
  std::vector<std::string> progress_steps() {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& p : progress_) {
      if (out.empty() || out.back() != p.step()) out.push_back(p.step());
    }
    return out;
  }
  bool progress_says(const std::string& step, const std::string& text) {
    std::lock_guard lock(mutex_);
    return std::any_of(progress_.begin(), progress_.end(), [&](const Progress& p) {
      return p.step() == step && p.detail().find(text) != std::string::npos;
    });
  }
  bool log_says(const std::string& text) {
    std::lock_guard lock(mutex_);
    return std::any_of(log_.begin(), log_.end(),
                       [&](const std::string& l) { return l.find(text) != std::string::npos; });
  }

  // The sequence numbers of every call of `op` to `agents`: first, last.
  static std::pair<uint64_t, uint64_t> span(const std::vector<fake::Agent*>& agents, Op op) {
    uint64_t first = UINT64_MAX, last = 0;
    for (auto* a : agents) {
      for (const auto& c : a->calls_of(op)) {
        first = std::min(first, c.seq);
        last = std::max(last, c.seq);
      }
    }
    return {first, last};
  }

  // Every agent of `agents` rolled back once, at one instant after `freeze_ns`.
  void expect_rolled_back_together(const std::vector<fake::Agent*>& agents, int64_t freeze_ns) {
    std::set<int64_t> instants;
    for (auto* a : agents) {
      auto calls = a->calls_of(Op::kRollBack);
      ASSERT_EQ(calls.size(), 1u) << a->what() << " was not rolled back once";
      instants.insert(calls[0].at_ns);
      EXPECT_FALSE(a->stopped()) << a->what();
      EXPECT_TRUE(a->calls_of(Op::kResumeAt).empty()) << a->what();
    }
    ASSERT_EQ(instants.size(), 1u) << "rolled back at different instants";
    EXPECT_GT(*instants.begin(), freeze_ns);
  }

  std::string root_;
  fake::Clock* clock_ = nullptr;
  std::atomic<uint64_t> sequence_{0};
  std::vector<fake::Agent*> nodes_, hosts_;
  std::unique_ptr<Experiment> experiment_;
  std::mutex mutex_;
  std::vector<Progress> progress_;
  std::vector<std::string> log_;
  std::vector<std::string> notes_;         // of the experiment's start
  std::vector<config::Trigger> triggers_;  // of the topology start() makes

  // One delay node with a frame trigger, whose every watch ends after
  // 50 ms with `end`.
  void start_watching_frames_on_dn1(const Status& end) {
    config::Trigger frame;
    frame.set_name("frame");
    frame.mutable_frame()->set_delay_node("dn1");
    triggers_.push_back(frame);
    start(1, 0);
    nodes_[0]->set_watch(std::chrono::milliseconds(50), end);
  }
  // STATE as a controller that died while restoring `id` left it (in
  // start()'s `before`: the store's lock is free then).
  void leave_restoring(const std::string& id) {
    auto store = CheckpointStore::open(root_, "unit", nullptr);
    ASSERT_TRUE(store.is_ok()) << store.status().to_string();
    ASSERT_TRUE((*store)->set_restoring(id).is_ok());
  }
  std::vector<ScheduledEvent> events_;  // the topology's link events
  bool keep_start_calls_ = false;       // start(): keep the calls that start experiment time
  int64_t run_on_ns_ = 0;               // Topology.run_on
};

// Waits up to 5 s for `done` (the controller's background thread acts on
// its own time); returns its last answer.
bool eventually(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

const std::vector<Op> kCheckpointed = {Op::kPrepare, Op::kStopAt, Op::kSave, Op::kResumeAt};

// #16 defect 9: a trigger stream has a deadline (a stream to an agent that
// vanished unnoticed ends); when it passes the controller watches again at
// once, while a stream that broke is opened again after 2 s.
TEST_F(ExperimentTest, ATriggerStreamThatReachedItsDeadlineIsOpenedAgainAtOnce) {
  start_watching_frames_on_dn1(deadline_exceeded("deadline"));
  experiment_->start_background();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_GE(nodes_[0]->watches(), 4);
  StatusReply status = experiment_->status();
  ASSERT_EQ(status.triggers_size(), 1);
  EXPECT_THAT(status.triggers(0), HasSubstr("watching frames on delay node dn1"));
}

TEST_F(ExperimentTest, ABrokenTriggerStreamIsOpenedAgainAfterAPauseAndSaysSo) {
  start_watching_frames_on_dn1(unavailable("delay node dn1 unreachable"));
  experiment_->start_background();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(nodes_[0]->watches(), 1);
  StatusReply status = experiment_->status();
  ASSERT_EQ(status.triggers_size(), 1);
  EXPECT_THAT(status.triggers(0), HasSubstr("not watching"));
  EXPECT_THAT(status.triggers(0), HasSubstr("unreachable"));
}

TEST_F(ExperimentTest, CheckpointRunsThePhasesInOrderAndResumesEveryAgentAtOneInstant) {
  start(1, 2);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_GT(m->freeze_ns(), kStart);
  EXPECT_GT(m->resume_ns(), m->freeze_ns());
  for (auto* a : all()) {
    EXPECT_EQ(a->ops(), kCheckpointed) << a->what();
    EXPECT_EQ(a->last(Op::kPrepare)->dir, root_ + "/unit/" + m->id());
    EXPECT_EQ(a->last(Op::kStopAt)->at_ns, m->freeze_ns()) << a->what();
    EXPECT_GT(a->last(Op::kStopAt)->lease_ns, m->freeze_ns()) << a->what();
    EXPECT_EQ(a->last(Op::kResumeAt)->at_ns, m->resume_ns()) << a->what();
    EXPECT_FALSE(a->stopped()) << a->what();
  }
  // Each phase ends on every agent before the next begins.
  EXPECT_LT(span(all(), Op::kPrepare).second, span(all(), Op::kStopAt).first);
  EXPECT_LT(span(all(), Op::kStopAt).second, span(all(), Op::kSave).first);
  EXPECT_LT(span(all(), Op::kSave).second, span(all(), Op::kResumeAt).first);

  // Every piece, its files in the store as recorded.
  std::set<std::pair<std::string, std::string>> pieces;
  uint64_t total = 0;
  for (const auto& p : m->pieces()) {
    pieces.insert({p.kind(), p.name()});
    for (const auto& f : p.files()) {
      const std::string path = root_ + "/unit/" + m->id() + "/" + f.path();
      EXPECT_EQ(fs::file_size(path), f.bytes()) << path;
      EXPECT_EQ(*sha256_file(path), f.sha256()) << path;
      total += f.bytes();
    }
  }
  const std::set<std::pair<std::string, std::string>> expected = {
      {"delay node", "dn1"}, {"vm", "vm1"}, {"vm", "vm2"}, {"vm", "vm3"}, {"vm", "vm4"}};
  EXPECT_EQ(pieces, expected);
  EXPECT_EQ(m->total_bytes(), total);

  // The steps, phase by phase in the agents' order (bench/transparency
  // reads them): freeze with each VM's event, save, resume.
  std::vector<std::pair<std::string, std::string>> steps;
  for (const auto& s : m->steps()) steps.push_back({s.step(), s.agent()});
  const std::vector<std::pair<std::string, std::string>> expected_steps = {
      {"freeze", "delay node dn1"}, {"freeze", "vm host h1"}, {"freeze", "vm host h2"},
      {"save", "delay node dn1"},   {"save", "vm host h1"},   {"save", "vm host h2"},
      {"resume", "delay node dn1"}, {"resume", "vm host h1"}, {"resume", "vm host h2"}};
  EXPECT_EQ(steps, expected_steps);
  EXPECT_EQ(m->steps(1).vm_event_ns().at("vm1"), m->freeze_ns() + 1000);
  EXPECT_EQ(m->steps(1).lateness_ns(), 1000);
  EXPECT_GT(m->steps(4).bytes(), 0u);

  // Committed: the store lists it as the head, and nothing else is there.
  auto stored = experiment_->get(m->id());
  ASSERT_TRUE(stored.is_ok()) << stored.status().to_string();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*stored, *m));
  EXPECT_EQ(experiment_->list().head(), m->id());
  EXPECT_EQ(folders(), std::vector<std::string>{m->id()});
  const std::vector<std::string> phases = {"prepare", "freeze", "save", "resume", "manifest"};
  EXPECT_EQ(progress_steps(), phases);
}

// Issue #15: a VM whose guest clock stood still longer (shorter) than the
// network would get the frames in flight early (late) in guest time; after
// every resume each node shifts the direction that delivers to that VM by
// the difference the VM host measured.
TEST_F(ExperimentTest, AfterTheResumeEachNodeShiftsTheDirectionToEachVmByItsPauseExcess) {
  start(1, 2);
  nodes_[0]->attach("vm2", "l0/a_to_b");
  nodes_[0]->attach("vm3", "l1/b_to_a");
  hosts_[0]->set_pause_excess("vm2", 1'500'000);
  hosts_[1]->set_pause_excess("vm3", -700'000);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  auto align = nodes_[0]->last(Op::kAlign);
  ASSERT_TRUE(align.has_value());
  const std::map<std::string, int64_t> excess = {{"vm2", 1'500'000}, {"vm3", -700'000}};
  EXPECT_EQ(align->pause_excess, excess);
  EXPECT_GT(align->seq, span(all(), Op::kResumeAt).second) << "aligned before every resume ended";
  for (auto* h : hosts_) EXPECT_TRUE(h->calls_of(Op::kAlign).empty()) << h->what();
  // The manifest keeps both sides: each VM's excess, each direction's shift.
  const AgentStep* resume_h1 = nullptr;
  const AgentStep* aligned = nullptr;
  for (const auto& step : m->steps()) {
    if (step.step() == "resume" && step.agent() == "vm host h1") resume_h1 = &step;
    if (step.step() == "align") aligned = &step;
  }
  ASSERT_NE(resume_h1, nullptr);
  EXPECT_EQ(resume_h1->vm_pause_excess_ns().at("vm2"), 1'500'000);
  ASSERT_NE(aligned, nullptr);
  EXPECT_EQ(aligned->agent(), "delay node dn1");
  EXPECT_EQ(aligned->shift_ns().at("l0/a_to_b"), 1'500'000);
  EXPECT_EQ(aligned->shift_ns().at("l1/b_to_a"), -700'000);
  EXPECT_TRUE(log_says("align: delay node dn1: l0/a_to_b +"));
  EXPECT_TRUE(log_says(", l1/b_to_a -"));
  // A restore resumes the same way.
  nodes_[0]->forget_calls();
  auto r = restore(m->id());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_TRUE(nodes_[0]->last(Op::kAlign).has_value());
  EXPECT_EQ(nodes_[0]->last(Op::kAlign)->pause_excess, excess);
}

TEST_F(ExperimentTest, WithoutPauseExcessNoNodeIsAskedToAlign) {
  start(1, 1);
  nodes_[0]->attach("vm1", "l0/a_to_b");
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_TRUE(nodes_[0]->calls_of(Op::kAlign).empty());
}

// Run-on: each VM host's report of its VMs' stops reaches the nodes as
// soon as that host answers, not when the slowest one does; the instant is
// the guest clock's stop where the host knows it. What the node ran on is
// in its freeze step, and the align takes it back even without excess.
TEST_F(ExperimentTest, RunOnPassesEachHostsStopsToTheNodesAsSoonAsItAnswers) {
  run_on_ns_ = 100'000'000;
  start(1, 2);
  nodes_[0]->attach("vm1", "l0/b_to_a");
  nodes_[0]->attach("vm3", "l1/a_to_b");
  hosts_[0]->set_stop_lag("vm1", 7'000'000);
  hosts_[0]->set(Op::kStopAt, Outcome::kSucceed, std::chrono::milliseconds(300));
  std::vector<bool> h1_done_when_told;
  nodes_[0]->on(Op::kVmStopped, [&] { h1_done_when_told.push_back(hosts_[0]->stopped()); });
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  auto told = nodes_[0]->calls_of(Op::kVmStopped);
  ASSERT_EQ(told.size(), 2u);
  ASSERT_EQ(h1_done_when_told.size(), 2u);
  EXPECT_FALSE(h1_done_when_told[0]) << "h2's stops waited for h1's answer";
  const int64_t at = nodes_[0]->last(Op::kStopAt)->at_ns;
  EXPECT_GT(told[0].seq, nodes_[0]->last(Op::kStopAt)->seq);
  EXPECT_EQ(told[0].stopped.at("vm3"), at + 1000);  // no clock known: QEMU's STOP event
  EXPECT_EQ(told[0].stopped.count("vm1"), 0u);
  EXPECT_EQ(told[1].stopped.at("vm1"), at + 7'000'000);  // the guest clock's stop
  const AgentStep* node_freeze = nullptr;
  for (const auto& step : m->steps()) {
    if (step.step() == "freeze" && step.agent() == "delay node dn1") node_freeze = &step;
  }
  ASSERT_NE(node_freeze, nullptr);
  EXPECT_EQ(node_freeze->ran_on_ns().at("l0/b_to_a"), 7'000'000);
  EXPECT_EQ(node_freeze->ran_on_ns().at("l1/a_to_b"), 1000);
  EXPECT_TRUE(nodes_[0]->last(Op::kAlign).has_value()) << "no align took the run-on back";
}

TEST_F(ExperimentTest, WithoutRunOnNoNodeIsToldOfStops) {
  start(1, 1);
  nodes_[0]->attach("vm1", "l0/a_to_b");
  hosts_[0]->set_stop_lag("vm1", 7'000'000);
  ASSERT_TRUE(checkpoint().is_ok());
  EXPECT_TRUE(nodes_[0]->calls_of(Op::kVmStopped).empty());
}

TEST_F(ExperimentTest, ANodeThatCannotAlignLeavesTheExperimentRunningWithAWarning) {
  start(1, 1);
  hosts_[0]->set_pause_excess("vm1", 2'000'000);
  nodes_[0]->set(Op::kAlign, Outcome::kFail);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_TRUE(progress_says("align", "warning"));
  for (auto* a : all()) EXPECT_FALSE(a->stopped()) << a->what();
  EXPECT_EQ(experiment_->list().head(), m->id());
}

// A pause: every agent stops at one instant and resumes at one instant the
// duration later; nothing is saved, nothing enters the store.
TEST_F(ExperimentTest, PauseStopsEveryAgentAtOneInstantAndResumesAllTheDurationLater) {
  start(1, 2);
  PauseRequest request;
  request.set_duration_ns(500'000'000);
  request.set_label("look");
  auto m = experiment_->pause(request, progress());
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_GT(m->freeze_ns(), kStart);
  EXPECT_EQ(m->resume_ns(), m->freeze_ns() + 500'000'000);
  EXPECT_TRUE(m->id().empty());
  EXPECT_EQ(m->label(), "look");
  const std::vector<Op> paused = {Op::kStopAt, Op::kResumeAt};
  for (auto* a : all()) {
    EXPECT_EQ(a->ops(), paused) << a->what();
    EXPECT_EQ(a->last(Op::kStopAt)->at_ns, m->freeze_ns()) << a->what();
    // The lease covers the pause: a vanished controller leaves nothing
    // stopped for long, and nothing resumes early by itself.
    EXPECT_GT(a->last(Op::kStopAt)->lease_ns, m->resume_ns()) << a->what();
    EXPECT_EQ(a->last(Op::kResumeAt)->at_ns, m->resume_ns()) << a->what();
    EXPECT_FALSE(a->stopped()) << a->what();
  }
  EXPECT_LT(span(all(), Op::kStopAt).second, span(all(), Op::kResumeAt).first);
  EXPECT_EQ(m->steps_size(), 6);
  EXPECT_TRUE(folders().empty());
  EXPECT_TRUE(experiment_->list().checkpoints().empty());
}

TEST_F(ExperimentTest, PauseWithAStopFailingRollsBackEveryAgent) {
  start(1, 2);
  hosts_[0]->set(Op::kStopAt, Outcome::kFail);
  PauseRequest request;
  request.set_duration_ns(100'000'000);
  auto m = experiment_->pause(request, progress());
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("freeze: vm host h1"));
  EXPECT_THAT(m.status().message(),
              HasSubstr("rolled back: every agent that stopped was resumed at one instant"));
  EXPECT_THAT(m.status().message(), ::testing::Not(HasSubstr("checkpoint")));
  expect_rolled_back_together(all(), nodes_[0]->last(Op::kStopAt)->at_ns);
}

TEST_F(ExperimentTest, APauseWithoutADurationOrLongerThanTheSaveDeadlineTouchesNothing) {
  start(1, 1);
  PauseRequest request;
  auto none = experiment_->pause(request, progress());
  EXPECT_EQ(none.status().code(), ErrorCode::kInvalidArgument);
  request.set_duration_ns(3'000'000'000);  // the save deadline is 2 s
  auto long_pause = experiment_->pause(request, progress());
  EXPECT_EQ(long_pause.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(long_pause.status().message(), HasSubstr("save deadline"));
  for (auto* a : all()) EXPECT_TRUE(a->ops().empty()) << a->what();
}

TEST_F(ExperimentTest, PrepareRefusedByOneAgentTouchesNothing) {
  start(1, 2);
  hosts_[1]->set(Op::kPrepare, Outcome::kFail);
  auto m = checkpoint();
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("prepare: vm host h2"));
  EXPECT_THAT(m.status().message(), HasSubstr("nothing was touched"));
  for (auto* a : all()) EXPECT_EQ(a->ops(), std::vector<Op>{Op::kPrepare}) << a->what();
  EXPECT_TRUE(folders().empty());
  EXPECT_EQ(experiment_->list().checkpoints_size(), 0);
}

TEST_F(ExperimentTest, StopFailingOnOneVmHostRollsBackEveryAgentAtOneInstant) {
  start(1, 2);
  hosts_[1]->set(Op::kStopAt, Outcome::kFail);
  auto m = checkpoint();
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("freeze: vm host h2"));
  EXPECT_THAT(m.status().message(),
              HasSubstr("rolled back: every agent that stopped was resumed at one instant"));
  EXPECT_THAT(m.status().message(), HasSubstr("the partial checkpoint is removed"));
  expect_rolled_back_together(all(), nodes_[0]->last(Op::kStopAt)->at_ns);
  for (auto* a : all()) EXPECT_TRUE(a->calls_of(Op::kSave).empty()) << a->what();
  EXPECT_TRUE(folders().empty());
  EXPECT_TRUE(progress_says("rollback", "freeze: vm host h2"));
  EXPECT_TRUE(log_says("rollback: freeze: vm host h2"));
}

TEST_F(ExperimentTest, AnAgentTheRollbackCouldNotReachIsResumedWhenItAnswersAgain) {
  start(1, 2);
  experiment_->start_background();
  hosts_[1]->set(Op::kSave, Outcome::kFail);
  hosts_[1]->set(Op::kRollBack, Outcome::kFail);  // its agent is gone
  auto m = checkpoint();
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("rolled back, but not everywhere"));
  EXPECT_THAT(m.status().message(), HasSubstr("resumed when they answer again"));
  EXPECT_TRUE(hosts_[1]->stopped());
  // The others are running; h2 is tried again, and resumed once it answers.
  EXPECT_FALSE(hosts_[0]->stopped());
  const auto tried_again = [&] { return hosts_[1]->calls_of(Op::kRollBack).size() >= 2; };
  ASSERT_TRUE(eventually(tried_again)) << "the straggler was not tried again";
  hosts_[1]->set(Op::kRollBack, Outcome::kSucceed);  // its agent is back
  EXPECT_TRUE(eventually([&] { return !hosts_[1]->stopped(); }))
      << "the agent that answers again stays stopped";
  EXPECT_TRUE(log_says("rollback: vm host h2 answers again"));
  // Done with it: no more roll-backs once it resumed.
  const size_t n = hosts_[1]->calls_of(Op::kRollBack).size();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(hosts_[1]->calls_of(Op::kRollBack).size(), n);
  EXPECT_EQ(hosts_[0]->calls_of(Op::kRollBack).size(), 1u);
}

TEST_F(ExperimentTest, AnAgentThatMissedTheResumeIsResumedWhenItAnswersAgain) {
  start(1, 2);
  experiment_->start_background();
  hosts_[1]->set(Op::kResumeAt, Outcome::kFail);  // its agent went away after the save
  hosts_[1]->set(Op::kRollBack, Outcome::kFail);
  auto m = checkpoint();
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("is resumed when it answers again"));
  EXPECT_TRUE(hosts_[1]->stopped());
  hosts_[1]->set(Op::kRollBack, Outcome::kSucceed);  // back
  EXPECT_TRUE(eventually([&] { return !hosts_[1]->stopped(); }))
      << "the agent that missed the resume stays stopped";
  EXPECT_TRUE(log_says("rollback: vm host h2 answers again"));
  EXPECT_TRUE(hosts_[0]->calls_of(Op::kRollBack).empty());  // the others resumed as planned
}

TEST_F(ExperimentTest, AgentsThatStopAfterTheControllerStartedAreResumed) {
  // A controller killed after its StopAt: the agents were running when the
  // new one reconciled, and stop at T after it started.
  start(1, 1);
  experiment_->start_background();
  ASSERT_TRUE(nodes_[0]->stop_at(kStart + 1'000'000, kStart + 10'000'000'000, 0).is_ok());
  ASSERT_TRUE(hosts_[0]->stop_at(kStart + 1'000'000, kStart + 10'000'000'000, 0).is_ok());
  EXPECT_TRUE(eventually([&] { return !nodes_[0]->stopped() && !hosts_[0]->stopped(); }));
  // At one instant.
  ASSERT_EQ(nodes_[0]->calls_of(Op::kRollBack).size(), 1u);
  ASSERT_EQ(hosts_[0]->calls_of(Op::kRollBack).size(), 1u);
  EXPECT_EQ(nodes_[0]->calls_of(Op::kRollBack)[0].at_ns,
            hosts_[0]->calls_of(Op::kRollBack)[0].at_ns);
  EXPECT_TRUE(log_says("stopped after this controller started"));
}

TEST_F(ExperimentTest, ANodeThatDiesDuringTheVmsSaveIsNotKeptAsACheckpoint) {
  // The VMs' vhost-user back ends go with the node: their saved state would
  // restore without a network (fault matrix: delay node killed mid-save).
  start(1, 1);
  hosts_[0]->on(Op::kSave, [&] { nodes_[0]->set_unreachable(true); });
  auto m = checkpoint();
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("delay node dn1 stopped answering during the save"));
  EXPECT_THAT(m.status().message(), HasSubstr("the partial checkpoint is removed"));
  EXPECT_TRUE(folders().empty());
  EXPECT_FALSE(hosts_[0]->stopped());  // rolled back
}

TEST_F(ExperimentTest, StopHangingPastItsDeadlineRollsBackEveryAgent) {
  start(1, 2);
  hosts_[0]->set(Op::kStopAt, Outcome::kHang);
  auto m = checkpoint();
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("freeze: vm host h1 did not answer in time"));
  EXPECT_THAT(m.status().message(), HasSubstr("rolled back"));
  expect_rolled_back_together(all(), nodes_[0]->last(Op::kStopAt)->at_ns);
  EXPECT_TRUE(folders().empty());
}

TEST_F(ExperimentTest, SaveFailingOnADelayNodeRollsBackAndRemovesWhatOthersWrote) {
  start(1, 2);
  // The VM hosts have written their pieces by the time the node fails.
  nodes_[0]->set(Op::kSave, Outcome::kFail, std::chrono::milliseconds(30));
  auto m = checkpoint();
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("save: delay node dn1"));
  EXPECT_THAT(m.status().message(), HasSubstr("rolled back"));
  expect_rolled_back_together(all(), nodes_[0]->last(Op::kStopAt)->at_ns);
  EXPECT_TRUE(folders().empty());
  EXPECT_EQ(experiment_->list().checkpoints_size(), 0);
}

TEST_F(ExperimentTest, SaveHangingPastItsDeadlineRollsBack) {
  start(1, 2);
  hosts_[1]->set(Op::kSave, Outcome::kHang);
  auto m = checkpoint();
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("save: vm host h2 did not answer in time"));
  expect_rolled_back_together(all(), nodes_[0]->last(Op::kStopAt)->at_ns);
  EXPECT_TRUE(folders().empty());
}

// Issue #16, defect 7: the "asked to stop" flags of several agents of one
// kind were bits of one std::vector<bool>, set from parallel threads; a
// lost bit skipped a frozen agent in the rollback. Again and again, since
// a race shows only sometimes (and always under ThreadSanitizer).
TEST_F(ExperimentTest, LateSaveFailureWithTwoAgentsOfEachKindRollsBackAllFour) {
  start(2, 2);
  hosts_[1]->set(Op::kSave, Outcome::kFail, std::chrono::milliseconds(20));
  for (int round = 1; round <= 8; ++round) {
    forget_calls();
    auto m = checkpoint();
    ASSERT_FALSE(m.is_ok());
    EXPECT_THAT(m.status().message(), HasSubstr("save: vm host h2"));
    expect_rolled_back_together(all(), nodes_[0]->last(Op::kStopAt)->at_ns);
    EXPECT_TRUE(folders().empty()) << "round " << round;
  }
}

TEST_F(ExperimentTest, ResumeInstantPassedOnArrivalResumesAtOnceAndSaysSo) {
  start(1, 2);
  hosts_[0]->set_resume_transit_ns(2'000'000'000);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  ASSERT_TRUE(hosts_[0]->last(Op::kResumeAt).has_value());
  EXPECT_TRUE(hosts_[0]->last(Op::kResumeAt)->late);
  EXPECT_FALSE(hosts_[0]->stopped());
  for (const auto& s : m->steps()) {
    if (s.step() != "resume") continue;
    if (s.agent() == "vm host h1") {
      EXPECT_GT(s.lateness_ns(), 1'000'000'000);
      EXPECT_EQ(s.vm_event_ns().at("vm1"), m->resume_ns() + s.lateness_ns());
    } else {
      EXPECT_EQ(s.lateness_ns(), 0) << s.agent();
    }
  }
  EXPECT_TRUE(progress_says("resume", "warning: vm host h1 resumed"));
  EXPECT_FALSE(progress_says("resume", "warning: vm host h2"));
  EXPECT_TRUE(log_says("the instant had passed when it arrived (raise the margin)"));
}

TEST_F(ExperimentTest, NaiveCheckpointTouchesNoDelayNode) {
  start(1, 2);
  CheckpointRequest naive;
  naive.set_naive(true);
  auto m = checkpoint(naive);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_TRUE(m->naive());
  EXPECT_TRUE(nodes_[0]->calls().empty());
  for (auto* h : hosts_) EXPECT_EQ(h->ops(), kCheckpointed) << h->what();
  for (const auto& p : m->pieces()) EXPECT_EQ(p.kind(), "vm");
  for (const auto& s : m->steps()) EXPECT_THAT(s.agent(), HasSubstr("vm host"));
  EXPECT_TRUE(progress_says("freeze", "VMs only (naive)"));

  // Nor does its rollback.
  hosts_[0]->set(Op::kSave, Outcome::kFail);
  auto failed = checkpoint(naive);
  ASSERT_FALSE(failed.is_ok());
  EXPECT_TRUE(nodes_[0]->calls().empty());
  for (auto* h : hosts_) EXPECT_EQ(h->calls_of(Op::kRollBack).size(), 1u) << h->what();
}

TEST_F(ExperimentTest, SwapOutShutsTheVmHostsDownAfterTheManifestAndLeavesTheNodesFrozen) {
  start(1, 2);
  bool manifest_first = true;
  hosts_[0]->on(Op::kShutdown,
                [&] { manifest_first = experiment_->list().checkpoints_size() == 1; });
  CheckpointRequest swap_out;
  swap_out.set_swap_out(true);
  auto m = checkpoint(swap_out);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_TRUE(m->swapped_out());
  EXPECT_EQ(m->resume_ns(), 0);
  EXPECT_TRUE(manifest_first) << "the VMs went down before the manifest was written";
  const std::vector<Op> node_ops = {Op::kPrepare, Op::kStopAt, Op::kSave, Op::kShutdown};
  EXPECT_EQ(nodes_[0]->ops(), node_ops);
  EXPECT_TRUE(nodes_[0]->stopped());
  const std::vector<Op> host_ops = {Op::kPrepare, Op::kStopAt, Op::kSave, Op::kShutdown};
  for (auto* h : hosts_) {
    EXPECT_EQ(h->ops(), host_ops) << h->what();
    EXPECT_TRUE(h->down()) << h->what();
  }
  EXPECT_EQ(experiment_->status().state(), "swapped out");

  forget_calls();
  auto refused = checkpoint();
  ASSERT_FALSE(refused.is_ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("swapped out"));
  for (auto* a : all()) EXPECT_TRUE(a->calls().empty()) << a->what();
}

// #16 defect 1: the freeze's lease once outlived a swap-out, and the nodes
// thawed by themselves when it ended.
TEST_F(ExperimentTest, SwapOutEndsEveryLeaseSoNothingResumesByItself) {
  start(2, 2);
  CheckpointRequest swap_out;
  swap_out.set_swap_out(true);
  auto m = checkpoint(swap_out);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  for (auto* n : nodes_) {
    EXPECT_GT(n->last(Op::kStopAt)->lease_ns, 0) << n->what();
    EXPECT_TRUE(n->stopped()) << n->what() << " thawed";
    EXPECT_EQ(n->lease_ns(), 0) << n->what() << " would thaw by itself when its lease ends";
  }
  for (auto* h : hosts_) {
    EXPECT_TRUE(h->down()) << h->what();
    EXPECT_EQ(h->lease_ns(), 0) << h->what();
  }
}

TEST_F(ExperimentTest, SwapOutWithANodeNotHoldingSaysItWillThaw) {
  start(1, 1);
  nodes_[0]->set(Op::kShutdown, Outcome::kFail);
  CheckpointRequest swap_out;
  swap_out.set_swap_out(true);
  auto m = checkpoint(swap_out);
  ASSERT_FALSE(m.is_ok());
  EXPECT_THAT(m.status().message(), HasSubstr("is saved, but swap out: delay node dn1"));
  EXPECT_THAT(m.status().message(), HasSubstr("resumes when its lease ends"));
  EXPECT_EQ(experiment_->list().checkpoints_size(), 1);
}

TEST_F(ExperimentTest, RestoreStopsWhatRunsBeforeLoadingAndResumesAtOneInstant) {
  start(1, 2);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  forget_calls();
  auto r = restore(m->id());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->id(), m->id());
  const std::vector<Op> node_ops = {Op::kRunning, Op::kStopAt, Op::kLoad, Op::kResumeAt};
  EXPECT_EQ(nodes_[0]->ops(), node_ops);
  EXPECT_GT(nodes_[0]->last(Op::kStopAt)->lease_ns, nodes_[0]->last(Op::kStopAt)->at_ns);
  const std::vector<Op> host_ops = {Op::kRunning, Op::kShutdown, Op::kLoad, Op::kResumeAt};
  for (auto* h : hosts_) EXPECT_EQ(h->ops(), host_ops) << h->what();
  // The running node froze before the VMs went down, and they went down
  // before anything loaded: no frame of the discarded run reaches a
  // restored node.
  EXPECT_LT(span(nodes_, Op::kStopAt).second, span(hosts_, Op::kShutdown).first);
  EXPECT_LT(span(hosts_, Op::kShutdown).second, span(all(), Op::kLoad).first);
  EXPECT_LT(span(all(), Op::kLoad).second, span(all(), Op::kResumeAt).first);
  for (auto* a : all()) {
    EXPECT_EQ(a->last(Op::kLoad)->dir, root_ + "/unit/" + m->id()) << a->what();
    EXPECT_EQ(a->last(Op::kResumeAt)->at_ns, r->resume_ns()) << a->what();
    EXPECT_FALSE(a->stopped()) << a->what();
  }
  EXPECT_EQ(r->steps_size(), 3);
  for (const auto& s : r->steps()) EXPECT_EQ(s.step(), "resume");
  EXPECT_EQ(experiment_->list().head(), m->id());
}

// #16 defect 3: a restore's freeze had no lease and the agents' Restore
// cleared theirs: a controller that died mid-restore left everything frozen.
TEST_F(ExperimentTest, RestoreGivesEveryFreezeAndLoadALease) {
  start(1, 2);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  forget_calls();
  // The controller is gone before the resume: nobody resumes anything.
  for (auto* a : all()) a->set(Op::kResumeAt, Outcome::kHang);
  auto r = restore(m->id());
  ASSERT_FALSE(r.is_ok());
  const int64_t lease = nodes_[0]->last(Op::kStopAt)->lease_ns;
  EXPECT_GT(lease, nodes_[0]->last(Op::kStopAt)->at_ns);
  for (auto* a : all()) {
    EXPECT_EQ(a->last(Op::kLoad)->lease_ns, lease) << a->what();
    EXPECT_TRUE(a->stopped()) << a->what();
    EXPECT_EQ(a->lease_ns(), lease) << a->what() << " would stay stopped for good";
  }
}

TEST_F(ExperimentTest, RestoreWithTheInstantLaterThanTheLeaseMovesTheLease) {
  start(1, 1);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  RestoreRequest request;
  request.set_id(m->id());
  request.set_at_ns(kStart + 60'000'000'000);
  auto r = experiment_->restore(request, progress());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_GT(nodes_[0]->last(Op::kLoad)->lease_ns, request.at_ns());
}

// #16 defect 3: a controller that starts asks its agents their state and
// resumes what an earlier one left stopped, at one instant.
TEST_F(ExperimentTest, StartResumesWhatAnEarlierControllerLeftStoppedAtOneInstant) {
  start(2, 2, [&] {
    nodes_[0]->leave(/*stopped=*/true, false, kStart + 5'000'000'000);
    hosts_[1]->leave(/*stopped=*/true, false, kStart + 5'000'000'000);
  });
  const std::vector<fake::Agent*> left = {nodes_[0], hosts_[1]};
  expect_rolled_back_together(left, kStart - 1);
  for (auto* a : {nodes_[1], hosts_[0]}) EXPECT_TRUE(a->calls().empty()) << a->what();
  for (auto* a : all()) EXPECT_EQ(a->lease_ns(), 0) << a->what();
  ASSERT_EQ(notes_.size(), 1u);
  EXPECT_THAT(notes_[0], HasSubstr("delay node dn1, vm host h2 stopped"));
  // Nothing is "already frozen": the next checkpoint runs.
  auto m = checkpoint();
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
}

TEST_F(ExperimentTest, StartWithAnAgentDownSaysSoAndResumesTheOthers) {
  start(1, 1, [&] {
    nodes_[0]->leave(true, false, kStart + 5'000'000'000);
    hosts_[0]->leave(true, false, kStart + 5'000'000'000);
    hosts_[0]->set_unreachable(true);
  });
  EXPECT_EQ(nodes_[0]->calls_of(Op::kRollBack).size(), 1u);
  EXPECT_TRUE(hosts_[0]->calls().empty());
  EXPECT_TRUE(std::any_of(notes_.begin(), notes_.end(), [](const std::string& n) {
    return n.find("vm host h1 did not answer") != std::string::npos &&
           n.find("its lease resumes it") != std::string::npos;
  }));
}

TEST_F(ExperimentTest, StartOfASwappedOutExperimentTouchesNothingAndSaysSo) {
  start(1, 1);
  CheckpointRequest swap_out;
  swap_out.set_swap_out(true);
  auto m = checkpoint(swap_out);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  // The controller restarts; the node holds its frames, the VMs are gone.
  start(1, 1, [&] {
    nodes_[0]->leave(true, false, 0);
    hosts_[0]->leave(false, true, 0);
  });
  for (auto* a : all()) EXPECT_TRUE(a->calls().empty()) << a->what();
  EXPECT_TRUE(nodes_[0]->stopped());
  ASSERT_EQ(notes_.size(), 1u);
  EXPECT_THAT(notes_[0], HasSubstr("swapped out (checkpoint " + m->id() + ")"));
  EXPECT_EQ(experiment_->status().state(), "swapped out");
}

TEST_F(ExperimentTest, RestoreAfterSwapOutLoadsWithoutStoppingAnything) {
  start(1, 2);
  CheckpointRequest swap_out;
  swap_out.set_swap_out(true);
  auto m = checkpoint(swap_out);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  forget_calls();
  auto r = restore(m->id());
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  const std::vector<Op> ops = {Op::kRunning, Op::kLoad, Op::kResumeAt};
  for (auto* a : all()) EXPECT_EQ(a->ops(), ops) << a->what();
  EXPECT_EQ(experiment_->status().state(), "running");
}

TEST_F(ExperimentTest, RestoreWithOneLoadFailingLeavesTheExperimentDown) {
  start(1, 2);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  forget_calls();
  hosts_[1]->set(Op::kLoad, Outcome::kFail);
  auto r = restore(m->id());
  ASSERT_FALSE(r.is_ok());
  EXPECT_THAT(r.status().message(), HasSubstr("restore: vm host h2"));
  EXPECT_THAT(r.status().message(), HasSubstr("the experiment is down"));
  for (auto* a : all()) {
    EXPECT_EQ(a->calls_of(Op::kLoad).size(), 1u) << a->what();
    EXPECT_TRUE(a->calls_of(Op::kResumeAt).empty()) << a->what();
  }
  // Down for good, not until the restore's leases end.
  for (auto* a : all()) {
    EXPECT_EQ(a->ops().back(), Op::kShutdown) << a->what();
    EXPECT_EQ(a->lease_ns(), 0) << a->what();
  }
  EXPECT_EQ(experiment_->status().state(), "swapped out");
  auto refused = checkpoint();
  ASSERT_FALSE(refused.is_ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("swapped out"));
}

TEST_F(ExperimentTest, AnAgentTheFailedRestoreCouldNotShutDownIsShutDownWhenItAnswersAgain) {
  // Its agent died mid-load: the VMs it loaded would resume when their
  // lease ends under the agent that adopts them, while the store says
  // swapped out (fault matrix failure 3).
  start(1, 2);
  experiment_->start_background();
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  hosts_[1]->set(Op::kLoad, Outcome::kFail);
  // It shuts its running VMs down before the load, then is gone.
  hosts_[1]->on(Op::kLoad, [&] { hosts_[1]->set(Op::kShutdown, Outcome::kFail); });
  auto r = restore(m->id());
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(experiment_->status().state(), "swapped out");
  const auto shut = [&] { return hosts_[1]->calls_of(Op::kShutdown).size(); };
  const size_t first = shut();
  ASSERT_TRUE(eventually([&] { return shut() > first; })) << "not tried again";
  hosts_[1]->set(Op::kShutdown, Outcome::kSucceed);  // its agent is back
  EXPECT_TRUE(eventually([&] { return log_says("vm host h2 answers again: shut down"); }));
  EXPECT_EQ(hosts_[1]->lease_ns(), 0);
  const size_t n = shut();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(shut(), n) << "shut down again after it answered";
}

// #16 fault matrix failure 1: a controller that died mid-restore left the
// VMs shut down or half loaded and the nodes frozen; the leases then ran
// the experiment without its VMs and nobody said so. STATE says a restore
// is under way from the first step that touches the experiment until it
// ends; the next controller finishes it.
std::string state_file_of(const std::string& root) {
  std::ifstream in(root + "/unit/STATE");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(ExperimentTest, ARestoreUnderWaySaysSoInTheStoreUntilItEnds) {
  auto state_file = [&] { return state_file_of(root_); };
  start(1, 1);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  std::string during;
  hosts_[0]->on(Op::kLoad, [&] { during = state_file(); });
  ASSERT_TRUE(restore(m->id()).is_ok());
  EXPECT_THAT(during, HasSubstr("restoring: \"" + m->id() + "\""));
  EXPECT_THAT(state_file(), Not(HasSubstr("restoring")));
  // A restore refused before it touched anything leaves no mark.
  nodes_[0]->set(Op::kStopAt, Outcome::kFail);
  ASSERT_FALSE(restore(m->id()).is_ok());
  EXPECT_THAT(state_file(), Not(HasSubstr("restoring")));
  EXPECT_EQ(experiment_->status().state(), "running");
}

TEST_F(ExperimentTest, TheNextControllerFinishesARestoreAnEarlierOneLeftHalfDone) {
  start(1, 2);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  // It died while loading: the node froze, h1's VMs are gone, h2 loaded
  // and waits paused for a resume that never came.
  start(1, 2, [&] {
    leave_restoring(m->id());
    nodes_[0]->leave(/*stopped=*/true, false, kStart + 5'000'000'000);
    hosts_[0]->leave(false, /*down=*/true, 0);
    hosts_[1]->leave(/*stopped=*/true, false, kStart + 5'000'000'000);
  });
  // Not rolled back into a half-restored experiment: restored again.
  for (auto* a : all()) {
    EXPECT_TRUE(a->calls_of(Op::kRollBack).empty()) << a->what();
    ASSERT_EQ(a->calls_of(Op::kLoad).size(), 1u) << a->what();
    EXPECT_EQ(a->last(Op::kLoad)->dir, root_ + "/unit/" + m->id()) << a->what();
    EXPECT_EQ(a->calls_of(Op::kResumeAt).size(), 1u) << a->what();
    EXPECT_FALSE(a->stopped()) << a->what();
  }
  EXPECT_TRUE(hosts_[0]->calls_of(Op::kShutdown).empty());   // nothing ran there
  EXPECT_EQ(hosts_[1]->calls_of(Op::kShutdown).size(), 1u);  // its half-loaded VMs
  EXPECT_TRUE(std::any_of(notes_.begin(), notes_.end(), [&](const std::string& n) {
    return n.find("a restore of " + m->id() + " was interrupted") != std::string::npos;
  }));
  EXPECT_TRUE(std::any_of(notes_.begin(), notes_.end(), [&](const std::string& n) {
    return n.find("restored " + m->id()) != std::string::npos;
  }));
  EXPECT_EQ(experiment_->status().state(), "running");
  EXPECT_TRUE(checkpoint().is_ok());
}

TEST_F(ExperimentTest, ARestoreTheNextControllerCannotFinishIsReportedAndBlocksCheckpoints) {
  start(1, 1);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  start(1, 1, [&] {
    leave_restoring(m->id());
    hosts_[0]->leave(false, /*down=*/true, 0);
    nodes_[0]->set(Op::kRunning, Outcome::kFail);  // its agent does not answer yet
  });
  EXPECT_TRUE(std::any_of(notes_.begin(), notes_.end(), [&](const std::string& n) {
    return n.find("restoring " + m->id() + " again failed") != std::string::npos &&
           n.find("(amberctl restore " + m->id() + ")") != std::string::npos;
  })) << ::testing::PrintToString(notes_);
  EXPECT_EQ(experiment_->status().state(), "restore of " + m->id() + " interrupted: restore again");
  auto refused = checkpoint();
  ASSERT_FALSE(refused.is_ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("a restore of " + m->id() + " did not finish"));
  // The operator's restore, once the node answers, ends it.
  nodes_[0]->set(Op::kRunning, Outcome::kSucceed);
  ASSERT_TRUE(restore(m->id()).is_ok());
  EXPECT_EQ(experiment_->status().state(), "running");
}

TEST_F(ExperimentTest, RestoreOfAChangedFileTouchesNothing) {
  start(1, 2);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  forget_calls();
  std::ofstream(root_ + "/unit/" + m->id() + "/vms/vm3/state.bin", std::ios::app) << "changed";
  auto r = restore(m->id());
  ASSERT_FALSE(r.is_ok());
  EXPECT_THAT(r.status().message(), HasSubstr("checksum mismatch"));
  EXPECT_THAT(r.status().message(), HasSubstr("nothing was touched"));
  for (auto* a : all()) EXPECT_TRUE(a->calls().empty()) << a->what();
}

// ---- Scheduled link events in experiment time ----

constexpr int64_t kS = 1'000'000'000;

ScheduledEvent scheduled(const char* node, const char* link, const char* dir, int64_t at_ns,
                         const char* change) {
  return ScheduledEvent{node, link, dir, at_ns, change};
}

class ExperimentEventsTest : public ExperimentTest {
 protected:
  void SetUp() override {
    ExperimentTest::SetUp();
    keep_start_calls_ = true;
    events_ = {scheduled("dn1", "lfn", "a_to_b", 30 * kS, "delay=200ms"),
               scheduled("dn1", "lfn", "", 60 * kS, "down"),
               scheduled("dn2", "lan", "b_to_a", 62 * kS, "up")};
  }
  // The events a node was sent, as "link/dir@virtual_ns change".
  static std::vector<std::string> sent(const fake::Agent& node) {
    std::vector<std::string> out;
    for (const auto& call : node.calls_of(Op::kScheduleEvents)) {
      for (const auto& c : call.events.cancel())
        out.push_back(cat("cancel ", c.link(), "/", c.direction()));
      for (const auto& e : call.events.events()) {
        out.push_back(cat(e.pipe().link(), "/", e.pipe().direction(), "@", e.at_virtual_ns(), " ",
                          e.change()));
      }
    }
    return out;
  }
};

// Experiment time 0 is one master instant just ahead; each node's virtual
// clock there (they differ) is its epoch, and its events go out on it.
TEST_F(ExperimentEventsTest, EventsGoToEachNodeOnItsOwnClockFromOneInstant) {
  start(2, 1, [&] {
    nodes_[0]->set_virtual_offset(5 * kS);
    nodes_[1]->set_virtual_offset(7 * kS);
  });
  auto asked0 = nodes_[0]->calls_of(Op::kVirtualTime);
  auto asked1 = nodes_[1]->calls_of(Op::kVirtualTime);
  ASSERT_EQ(asked0.size(), 1u);
  ASSERT_EQ(asked1.size(), 1u);
  const int64_t zero = asked0[0].at_ns;
  EXPECT_EQ(asked1[0].at_ns, zero) << "one instant for every node";
  EXPECT_GT(zero, kStart) << "ahead of now: an event at 0 must not have passed on arrival";
  const int64_t epoch0 = zero - 5 * kS, epoch1 = zero - 7 * kS;
  EXPECT_EQ(sent(*nodes_[0]),
            (std::vector<std::string>{cat("lfn/a_to_b@", epoch0 + 30 * kS, " delay=200ms"),
                                      cat("lfn/@", epoch0 + 60 * kS, " down")}));
  EXPECT_EQ(sent(*nodes_[1]),
            (std::vector<std::string>{cat("lan/b_to_a@", epoch1 + 62 * kS, " up")}));
  EXPECT_TRUE(hosts_[0]->calls().empty());
  ASSERT_TRUE(std::any_of(notes_.begin(), notes_.end(), [](const std::string& n) {
    return n.starts_with("experiment time 0") &&
           n.find("delay node dn1 (2 events)") != std::string::npos;
  })) << ::testing::PrintToString(notes_);

  // Kept in the store and in every manifest.
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->epoch_virtual_ns().at("dn1"), epoch0);
  EXPECT_EQ(m->epoch_virtual_ns().at("dn2"), epoch1);

  // Status: experiment time now, from a node's clock.
  clock_->advance(40 * kS);
  StatusReply status = experiment_->status();
  ASSERT_TRUE(status.has_experiment_ns());
  EXPECT_EQ(status.experiment_ns(), kStart + 40 * kS - zero);
}

// Started once: a controller started again (or with its STATE rebuilt
// from the manifests) sends no event twice; the nodes and their images
// hold them. It reads their clocks (a node that started afresh meanwhile
// would be mapped again), nothing more.
TEST_F(ExperimentEventsTest, AControllerStartedAgainSendsNoEventTwice) {
  start(2, 0);
  ASSERT_EQ(sent(*nodes_[0]).size(), 2u);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  start(2, 0);
  for (auto* n : nodes_) {
    EXPECT_EQ(n->calls_of(Op::kVirtualTime).size(), 1u) << n->what();
    EXPECT_TRUE(n->calls_of(Op::kScheduleEvents).empty()) << n->what();
  }
  EXPECT_TRUE(notes_.empty()) << ::testing::PrintToString(notes_);
  experiment_.reset();
  fs::remove(root_ + "/unit/STATE");
  start(2, 0);
  for (auto* n : nodes_) EXPECT_TRUE(n->calls_of(Op::kScheduleEvents).empty()) << n->what();
}

// A node that does not answer at the start gets no epoch: the others
// start, and once it answers it joins at the experiment time the others
// stand at (their clocks say), its events on that mapping.
TEST_F(ExperimentEventsTest, ANodeThatDidNotAnswerJoinsAtTheExperimentTimeOfTheOthers) {
  start(2, 0, [&] {
    nodes_[0]->set_virtual_offset(5 * kS);
    nodes_[1]->set(Op::kVirtualTime, Outcome::kFail);
  });
  const int64_t zero = nodes_[0]->calls_of(Op::kVirtualTime).at(0).at_ns;
  EXPECT_EQ(sent(*nodes_[0]).size(), 2u);
  EXPECT_TRUE(sent(*nodes_[1]).empty());
  EXPECT_TRUE(std::any_of(notes_.begin(), notes_.end(), [](const std::string& n) {
    return n.find("delay node dn2: virtual_time refused") != std::string::npos &&
           n.find("trying again") != std::string::npos;
  })) << ::testing::PrintToString(notes_);
  clock_->advance(12 * kS);
  for (auto* n : nodes_) n->forget_calls();
  nodes_[1]->set(Op::kVirtualTime, Outcome::kSucceed);
  nodes_[1]->set_virtual_offset(-3 * kS);
  std::vector<std::string> notes;
  experiment_->tend_experiment_time(&notes);
  const int64_t at = nodes_[1]->calls_of(Op::kVirtualTime).at(0).at_ns;
  const int64_t experiment_ns = at - zero;  // dn1's clock less its epoch
  EXPECT_EQ(experiment_ns, 12 * kS);        // the lead is the same at both instants
  EXPECT_TRUE(sent(*nodes_[0]).empty());
  EXPECT_EQ(
      sent(*nodes_[1]),
      (std::vector<std::string>{cat("lan/b_to_a@", at + 3 * kS + 62 * kS - experiment_ns, " up")}));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_THAT(notes[0], HasSubstr("delay node dn2 joined at experiment time"));
  EXPECT_THAT(notes[0], HasSubstr("from delay node dn1"));
  StatusReply status = experiment_->status();
  EXPECT_THAT(status.agents(1).timeline(), HasSubstr("joined at experiment time"));
}

// A delay node whose process started afresh (its clock id changed; not
// restored) reads real time again: experiment time is mapped onto its new
// clock from a node that kept its own. The topology's events still ahead
// go out at their instants, the past ones apply at once, in order; the
// store keeps the new epoch and clock, so the next look sends nothing.
TEST_F(ExperimentEventsTest, ANodeStartedAfreshIsMappedFromANodeThatKeptItsClock) {
  events_.push_back(scheduled("dn1", "lfn", "a_to_b", 10 * kS, "delay=100ms"));
  start(2, 0, [&] {
    nodes_[0]->set_virtual_offset(5 * kS);
    nodes_[1]->set_virtual_offset(7 * kS);
  });
  const int64_t zero = nodes_[0]->calls_of(Op::kVirtualTime).at(0).at_ns;
  clock_->advance(40 * kS);
  nodes_[0]->set_clock_id(77);
  nodes_[0]->set_virtual_offset(0);
  // While the node that kept its clock stands frozen (an operator's
  // freeze), experiment time stands still: nothing is mapped from it.
  nodes_[1]->leave(/*stopped=*/true, false, 0);
  for (auto* n : nodes_) n->forget_calls();
  std::vector<std::string> notes;
  experiment_->tend_experiment_time(&notes);
  EXPECT_TRUE(sent(*nodes_[0]).empty());
  nodes_[1]->leave(false, false, 0);
  for (auto* n : nodes_) n->forget_calls();
  experiment_->tend_experiment_time(&notes);
  const int64_t at = nodes_[0]->calls_of(Op::kVirtualTime).at(0).at_ns;
  const int64_t experiment_ns = at - zero;  // from dn2: (at - 7 s) - (zero - 7 s)
  // 10 s and 30 s are past: at once, in time order; 60 s still ahead.
  EXPECT_EQ(sent(*nodes_[0]),
            (std::vector<std::string>{cat("lfn/a_to_b@", at, " delay=100ms"),
                                      cat("lfn/a_to_b@", at, " delay=200ms"),
                                      cat("lfn/@", at + 60 * kS - experiment_ns, " down")}));
  EXPECT_TRUE(sent(*nodes_[1]).empty());
  ASSERT_EQ(notes.size(), 1u) << ::testing::PrintToString(notes);
  EXPECT_THAT(notes[0], HasSubstr("delay node dn1 started afresh: experiment time"));
  EXPECT_THAT(notes[0], HasSubstr("from delay node dn2; 1 event, 2 past ones applied at once"));
  EXPECT_EQ(experiment_->status().experiment_ns(), kStart + 40 * kS - zero);

  nodes_[0]->forget_calls();
  notes.clear();
  experiment_->tend_experiment_time(&notes);
  EXPECT_TRUE(sent(*nodes_[0]).empty());
  EXPECT_TRUE(notes.empty()) << ::testing::PrintToString(notes);
  // Kept across a controller started again.
  start(2, 0, [&] {
    nodes_[0]->set_clock_id(77);
    nodes_[1]->set_virtual_offset(7 * kS);
  });
  EXPECT_TRUE(sent(*nodes_[0]).empty());
  EXPECT_TRUE(notes_.empty()) << ::testing::PrintToString(notes_);
}

// With one delay node there is no other clock to ask: the controller's
// last reading of experiment time maps the new clock, as long as the
// network has not frozen since (a checkpoint's pause would make it wrong).
// Then the node waits, its status says why, and no experiment time is
// read from it; a restore brings its timeline back with the image's clock.
TEST_F(ExperimentEventsTest,
       AloneANodeStartedAfreshIsMappedFromTheLastReadingUnlessTheNetworkFroze) {
  start(1, 1);
  const int64_t zero = nodes_[0]->calls_of(Op::kVirtualTime).at(0).at_ns;
  clock_->advance(45 * kS);
  nodes_[0]->set_clock_id(2);
  nodes_[0]->set_virtual_offset(-9 * kS);
  nodes_[0]->forget_calls();
  std::vector<std::string> notes;
  experiment_->tend_experiment_time(&notes);
  int64_t at = nodes_[0]->calls_of(Op::kVirtualTime).at(0).at_ns;
  EXPECT_EQ(sent(*nodes_[0]),
            (std::vector<std::string>{cat("lfn/a_to_b@", at + 9 * kS, " delay=200ms"),
                                      cat("lfn/@", at + 9 * kS + 60 * kS - (at - zero), " down")}));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_THAT(notes[0], HasSubstr("from the controller's reading of"));

  auto m = checkpoint();  // the network freezes: the reading no longer holds
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->clock_id().at("dn1"), 2u);
  nodes_[0]->set_clock_id(3);
  nodes_[0]->forget_calls();
  notes.clear();
  experiment_->tend_experiment_time(&notes);
  EXPECT_TRUE(sent(*nodes_[0]).empty());
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_THAT(notes[0], HasSubstr("no delay node kept its clock and the network froze since"));
  experiment_->tend_experiment_time(&notes);
  EXPECT_EQ(notes.size(), 1u) << "said once";
  StatusReply status = experiment_->status();
  EXPECT_FALSE(status.has_experiment_ns());
  EXPECT_THAT(status.agents(0).timeline(), HasSubstr("restore a checkpoint"));

  // Restored: the node's clock is the image's again (clock 2), and the
  // manifest's epoch maps it.
  nodes_[0]->set_clock_id(2);
  ASSERT_TRUE(restore(m->id()).is_ok());
  nodes_[0]->forget_calls();
  notes.clear();
  experiment_->tend_experiment_time(&notes);
  EXPECT_TRUE(sent(*nodes_[0]).empty());
  EXPECT_TRUE(notes.empty()) << ::testing::PrintToString(notes);
  status = experiment_->status();
  EXPECT_TRUE(status.has_experiment_ns());
  EXPECT_EQ(status.agents(0).timeline(), "");
}

// A restore maps experiment time as the checkpoint did: a checkpoint taken
// before a node started afresh brings back the epoch it had then.
TEST_F(ExperimentEventsTest, ARestoreTakesTheEpochsOfItsCheckpoint) {
  start(2, 0);
  auto m = checkpoint();
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  const int64_t epoch = m->epoch_virtual_ns().at("dn1");
  clock_->advance(20 * kS);
  nodes_[0]->set_clock_id(9);
  nodes_[0]->set_virtual_offset(-4 * kS);
  experiment_->tend_experiment_time(nullptr);
  auto c2 = checkpoint();
  ASSERT_TRUE(c2.is_ok()) << c2.status().to_string();
  EXPECT_NE(c2->epoch_virtual_ns().at("dn1"), epoch);
  EXPECT_EQ(c2->clock_id().at("dn1"), 9u);
  nodes_[0]->set_clock_id(1);  // the image of the first checkpoint
  ASSERT_TRUE(restore(m->id()).is_ok());
  auto c3 = checkpoint();
  ASSERT_TRUE(c3.is_ok()) << c3.status().to_string();
  EXPECT_EQ(c3->epoch_virtual_ns().at("dn1"), epoch);
  EXPECT_EQ(c3->clock_id().at("dn1"), 1u);
}

// A swapped-out experiment's nodes stand frozen for a restore: experiment
// time does not start on them meanwhile.
TEST_F(ExperimentEventsTest, ASwappedOutExperimentStartsNoEvents) {
  start(1, 1, [&] { nodes_[0]->set(Op::kVirtualTime, Outcome::kFail); });
  CheckpointRequest swap;
  swap.set_swap_out(true);
  ASSERT_TRUE(checkpoint(swap).is_ok());
  start(1, 1);  // the node answers now
  EXPECT_TRUE(nodes_[0]->calls_of(Op::kVirtualTime).empty());
  EXPECT_TRUE(nodes_[0]->calls_of(Op::kScheduleEvents).empty());
}

TEST_F(ExperimentEventsTest, ScheduleMapsExperimentTimeOntoTheNodeAndRefusesBadRequests) {
  events_.clear();
  start(2, 0, [&] { nodes_[0]->set_virtual_offset(3 * kS); });
  const int64_t epoch = nodes_[0]->calls_of(Op::kVirtualTime).at(0).at_ns - 3 * kS;
  nodes_[0]->forget_calls();
  ScheduleRequest req;
  req.set_link("lfn");
  req.set_at_experiment_ns(90 * kS);
  req.set_change("rate=10Mbit delay=20ms");
  auto done = experiment_->schedule(req);
  ASSERT_TRUE(done.is_ok()) << done.status().to_string();
  EXPECT_EQ(
      *done,
      "lfn (both directions) on delay node dn1: rate=10Mbit delay=20ms at experiment time 90s");
  EXPECT_EQ(sent(*nodes_[0]),
            (std::vector<std::string>{cat("lfn/@", epoch + 90 * kS, " rate=10Mbit delay=20ms")}));

  req.set_direction("a_to_b");
  req.set_clear(true);
  ASSERT_TRUE(experiment_->schedule(req).is_ok());
  EXPECT_EQ(sent(*nodes_[0]).back(), "cancel lfn/a_to_b");

  const struct {
    const char* link;
    const char* direction;
    int64_t at_ns;
    const char* change;
    const char* message;
  } bad[] = {
      {"nope", "", kS, "down", "schedule: link 'nope' is listed for no delay node of the topology"},
      {"wan", "", kS, "down", "schedule: link 'wan' is on 2 delay nodes: say which (--node)"},
      {"lfn", "up", kS, "down", "schedule: direction 'up': a_to_b, b_to_a or none for both"},
      {"lfn", "", -kS, "down", "schedule: experiment time starts at 0"},
      {"lfn", "", kS, "seed=4", "schedule: event: unknown key 'seed'"},
  };
  nodes_[0]->forget_calls();
  for (const auto& b : bad) {
    ScheduleRequest r;
    r.set_link(b.link);
    r.set_direction(b.direction);
    r.set_at_experiment_ns(b.at_ns);
    r.set_change(b.change);
    auto refused = experiment_->schedule(r);
    ASSERT_FALSE(refused.is_ok()) << b.message;
    EXPECT_THAT(refused.status().message(), ::testing::StartsWith(b.message));
  }
  EXPECT_TRUE(nodes_[0]->calls().empty()) << "nothing sent for a refused request";
  // A node refusing (an instant already past there) says so.
  nodes_[0]->set(Op::kScheduleEvents, Outcome::kFail);
  req.set_clear(false);
  auto refused = experiment_->schedule(req);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_THAT(refused.status().message(),
              HasSubstr("schedule: delay node dn1: schedule_events refused"));
}

}  // namespace
}  // namespace amber::controller
