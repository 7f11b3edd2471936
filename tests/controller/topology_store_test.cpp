// The controller's topology file (errors name the file and line) and its
// checkpoint store (ids never reused, manifests written last, partial
// checkpoints swept, branches that never overwrite each other).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "controller/store.h"
#include "controller/topology.h"
#include "proto/agent.grpc.pb.h"
#include "rpc/grpc_status.h"

namespace amber::controller {
namespace {

namespace fs = std::filesystem;

constexpr const char* kGood = R"(experiment: "lfn-1"
listen: "unix:/run/amber/controller.sock"
store: "/var/lib/amber/store"
ptp_socket: "/var/run/ptp4l"
margin: "30ms"
delay_node { id: "dn1" address: "unix:/run/amber/dn1.sock" link: "lfn"
             attach { link: "lfn" end: "a" vm: "vm1" } attach { link: "lfn" end: "b" vm: "vm2" } }
vm_host { id: "h1" address: "127.0.0.1:7401" vm: "vm1" vm: "vm2" }
periodic { interval: "10s" keep: 3 }
trigger { name: "syn" frame { delay_node: "dn1" link: "lfn" hex: "47 45 54" } }
trigger { name: "oops" console { vm_host: "h1" vm: "vm2" contains: "Oops" } cooldown: "30s" }
)";

TEST(Topology, GoodFileParses) {
  auto t = parse_topology(kGood, "topo.conf");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->proto.experiment(), "lfn-1");
  EXPECT_EQ(t->durations.margin_ns, 30'000'000);
  EXPECT_EQ(t->durations.run_on_ns, 0);  // off unless asked
  EXPECT_EQ(t->durations.step_deadline_ns, 10'000'000'000);
  EXPECT_EQ(t->durations.periodic_interval_ns, 10'000'000'000);
  ASSERT_EQ(t->durations.trigger_pattern.size(), 2u);
  EXPECT_EQ(t->durations.trigger_pattern[0], "GET");
  EXPECT_EQ(t->durations.trigger_pattern[1], "Oops");
  EXPECT_EQ(t->durations.trigger_cooldown_ns[0], 10'000'000'000);
  EXPECT_EQ(t->durations.trigger_cooldown_ns[1], 30'000'000'000);
  ASSERT_EQ(t->proto.delay_node(0).attach_size(), 2);
  EXPECT_EQ(t->proto.delay_node(0).attach(1).vm(), "vm2");
  auto on = parse_topology(std::string(kGood) + "run_on: \"100ms\"\n", "topo.conf");
  ASSERT_TRUE(on.is_ok()) << on.status().to_string();
  EXPECT_EQ(on->durations.run_on_ns, 100'000'000);
  auto off = parse_topology(std::string(kGood) + "run_on: \"off\"\n", "topo.conf");
  ASSERT_TRUE(off.is_ok()) << off.status().to_string();
  EXPECT_EQ(off->durations.run_on_ns, 0);
}

struct Bad {
  std::string text;
  std::string expected;  // a substring of the message
};

TEST(Topology, ErrorsNameTheFileLineAndProblem) {
  const std::string head =
      "experiment: \"x\"\nlisten: \"unix:/tmp/c.sock\"\nstore: \"/tmp/s\"\n"
      "allow_unsynchronized: true\n";
  const std::string node = "delay_node { id: \"dn1\" address: \"unix:/tmp/d.sock\" link: \"l\" }\n";
  const Bad cases[] = {
      {"experiment: \"x\"\nbogus: 1\n", "t.conf:2:"},
      {"experiment: \"a/b\"\n", "experiment 'a/b'"},
      {"experiment: \"x\"\nstore: \"/s\"\nallow_unsynchronized: true\n" + node, "listen"},
      {head + "delay_node { id: \"dn1\" address: \"10.0.0.5:7400\" }\n", "t.conf:5:1: "},
      {head + "delay_node { id: \"dn1\" address: \"10.0.0.5:7400\" }\n", "loopback"},
      {"experiment: \"x\"\nlisten: \"unix:/c\"\nstore: \"relative\"\nallow_unsynchronized: true\n" +
           node,
       "absolute path"},
      {head, "no delay_node"},
      {head + node + node, "'dn1' used twice"},
      {head + node + "vm_host { id: \"h\" address: \"unix:/h\" }\n", "list its VMs"},
      {head + node +
           "vm_host { id: \"h\" address: \"unix:/h\" vm: \"a\" }\n"
           "vm_host { id: \"g\" address: \"unix:/g\" vm: \"a\" }\n",
       "VM 'a' listed on two hosts"},
      {"experiment: \"x\"\nlisten: \"unix:/c\"\nstore: \"/s\"\n" + node, "no ptp_socket"},
      {head + node + "margin: \"soon\"\n", "t.conf:6:1: margin"},
      {head + node + "periodic { interval: \"100ms\" }\n", "at least 1s"},
      {head + node + "run_on: \"2s\"\n", "run_on '2s': at most 1s"},
      {head + node + "run_on: \"later\"\n", "run_on"},
      {head + node + "trigger { name: \"t\" frame { delay_node: \"dn9\" hex: \"aa\" } }\n",
       "delay_node 'dn9' is not in the topology"},
      {head + node + "trigger { name: \"t\" frame { delay_node: \"dn1\" hex: \"abc\" } }\n",
       "even number of hex digits"},
      {head + node + "trigger { name: \"t\" frame { delay_node: \"dn1\" hex: \"zz\" } }\n",
       "'zz' is not a hex byte"},
      {head + node +
           "trigger { name: \"t\" frame { delay_node: \"dn1\" hex: \"aa\" text: \"b\" } }\n",
       "exactly one of hex and text"},
      {head + node +
           "trigger { name: \"t\" console { vm_host: \"h\" vm: \"v\" contains: \"x\" } }\n",
       "is not in the topology"},
      {head + node + "trigger { frame { delay_node: \"dn1\" hex: \"aa\" } }\n", "unique name"},
      {head + node + "tls { ca: \"/ca.pem\" }\n", "all three of ca, cert and key"},
      {head + "delay_node { id: \"dn1\" address: \"unix:/d\" link: \"l\" attach { link: \"m\" "
              "end: \"a\" vm: \"v\" } }\nvm_host { id: \"h\" address: \"unix:/h\" vm: \"v\" }\n",
       "link 'm' is not listed for the node"},
      {head + "delay_node { id: \"dn1\" address: \"unix:/d\" link: \"l\" attach { link: \"l\" "
              "end: \"left\" vm: \"v\" } }\nvm_host { id: \"h\" address: \"unix:/h\" vm: \"v\" }\n",
       "end: give \"a\""},
      {head + "delay_node { id: \"dn1\" address: \"unix:/d\" link: \"l\" attach { link: \"l\" "
              "end: \"a\" vm: \"w\" } }\nvm_host { id: \"h\" address: \"unix:/h\" vm: \"v\" }\n",
       "VM 'w' is on no vm_host"},
      {head + "delay_node { id: \"dn1\" address: \"unix:/d\" link: \"l\" attach { link: \"l\" "
              "end: \"a\" vm: \"v\" } attach { link: \"l\" end: \"a\" vm: \"v\" } }\n"
              "vm_host { id: \"h\" address: \"unix:/h\" vm: \"v\" }\n",
       "has a VM attached already"},
  };
  for (const Bad& b : cases) {
    auto t = parse_topology(b.text, "t.conf");
    ASSERT_FALSE(t.is_ok()) << b.text;
    EXPECT_NE(t.status().message().find(b.expected), std::string::npos)
        << "expected '" << b.expected << "' in: " << t.status().message();
  }
}

TEST(Topology, LinkEventsParseInExperimentTime) {
  auto t = parse_topology(std::string(kGood) + R"(
event { at: "30s" link: "lfn" direction: "a_to_b" set { delay: "200ms" random_loss { probability: "1 %" } } }
event { at: "1min" link: "lfn" down: true }
event { at: "62s" link: "lfn" delay_node: "dn1" up: true }
event { at: "90s" link: "lfn" start: true }
)",
                          "topo.conf");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  ASSERT_EQ(t->events.size(), 4u);
  EXPECT_EQ(t->events[0].delay_node, "dn1");
  EXPECT_EQ(t->events[0].link, "lfn");
  EXPECT_EQ(t->events[0].direction, "a_to_b");
  EXPECT_EQ(t->events[0].at_ns, 30'000'000'000);
  EXPECT_EQ(t->events[0].change, "delay=200ms loss=1%");
  EXPECT_EQ(t->events[1].direction, "");
  EXPECT_EQ(t->events[1].at_ns, 60'000'000'000);
  EXPECT_EQ(t->events[1].change, "down");
  EXPECT_EQ(t->events[2].change, "up");
  EXPECT_EQ(t->events[3].change, "start");
  EXPECT_EQ(t->events[3].direction, "");
}

TEST(Topology, BadLinkEventsAreRefusedNamingTheLineAndProblem) {
  const std::string head =
      "experiment: \"x\"\nlisten: \"unix:/tmp/c.sock\"\nstore: \"/tmp/s\"\n"
      "allow_unsynchronized: true\n"
      "delay_node { id: \"dn1\" address: \"unix:/tmp/d1.sock\" link: \"l\" link: \"w\" }\n"
      "delay_node { id: \"dn2\" address: \"unix:/tmp/d2.sock\" link: \"w\" }\n";
  const Bad cases[] = {
      {head + "event { at: \"5s\" link: \"nope\" down: true }\n",
       "t.conf:7:1: event { at: \"5s\" link: \"nope\" }: link 'nope' is listed for no delay node"},
      {head + "event { at: \"-5s\" link: \"l\" down: true }\n",
       "t.conf:7:1: event { at: \"-5s\" link: \"l\" }: at: experiment time starts at 0"},
      {head + "event { link: \"l\" down: true }\n", "give at: the experiment time"},
      {head + "event { at: \"soon\" link: \"l\" down: true }\n", "at: 'soon'"},
      {head + "event { at: \"5s\" link: \"w\" down: true }\n",
       "link 'w' is on delay nodes dn1, dn2: say which (delay_node)"},
      {head + "event { at: \"5s\" link: \"l\" delay_node: \"dn2\" down: true }\n",
       "link 'l' is not listed for delay node 'dn2'"},
      {head + "event { at: \"5s\" link: \"l\" direction: \"up\" down: true }\n",
       "direction 'up': a_to_b, b_to_a"},
      {head + "event { at: \"5s\" link: \"l\" down: true up: true }\n",
       "give exactly one of set { ... }, down: true, up: true, start: true"},
      {head + "event { at: \"5s\" link: \"l\" up: true start: true }\n", "give exactly one of set"},
      {head + "event { at: \"5s\" link: \"l\" }\n", "give exactly one of set"},
      {head + "event { at: \"5s\" link: \"l\" set { seed: 3 } }\n",
       "set { seed }: an event sets rate, delay, jitter, queue_frames, queue_bytes or random_loss"},
      {head + "event { at: \"5s\" link: \"l\" set { delay: \"long\" } }\n",
       "t.conf:7:1: event { at: \"5s\" link: \"l\" }: event: delay: "},
      {head + "event { at: \"5s\" link: \"l\" set { } }\n", "give what changes"},
      {head + "event { at: \"5s\" link: \"l\" down: true }\nevent { at: \"1s\" link: \"x\" up: "
              "true }\n",
       "t.conf:8:1: "},
  };
  for (const Bad& b : cases) {
    auto t = parse_topology(b.text, "t.conf");
    ASSERT_FALSE(t.is_ok()) << b.text;
    EXPECT_NE(t.status().message().find(b.expected), std::string::npos)
        << "expected '" << b.expected << "' in: " << t.status().message();
  }
}

TEST(Topology, TlsAllowsAnyAddress) {
  auto t = parse_topology(
      "experiment: \"x\"\nlisten: \"0.0.0.0:7500\"\nstore: \"/s\"\nallow_unsynchronized: true\n"
      "tls { ca: \"/c\" cert: \"/e\" key: \"/k\" }\n"
      "delay_node { id: \"dn1\" address: \"dn1.testbed:7400\" }\n",
      "t.conf");
  EXPECT_TRUE(t.is_ok()) << t.status().to_string();
}

TEST(Topology, MissingFileSaysSo) {
  auto t = load_topology("/nonexistent/topology.conf");
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.status().message().find("/nonexistent/topology.conf"), std::string::npos);
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/amb-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  std::unique_ptr<CheckpointStore> open(std::vector<std::string>* removed = nullptr) {
    auto s = CheckpointStore::open(root_, "exp", removed);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    return std::move(s).value();
  }

  // A checkpoint with one file in it, committed.
  Manifest take(CheckpointStore& store, const std::string& content) {
    auto id = store.begin_checkpoint();
    EXPECT_TRUE(id.is_ok()) << id.status().to_string();
    const std::string file = store.path_of(*id) + "/vms/state.bin";
    std::ofstream(file) << content;
    Manifest m;
    m.set_id(*id);
    m.set_parent(store.state().head());
    m.set_branch(store.state().branch());
    m.set_reason("test");
    Piece* p = m.add_pieces();
    StoredFile* f = p->add_files();
    f->set_path("vms/state.bin");
    f->set_bytes(content.size());
    f->set_sha256(*sha256_file(file));
    EXPECT_TRUE(store.commit(m).is_ok());
    return m;
  }

  std::string root_;
};

TEST_F(StoreTest, IdsAreNeverReusedEvenAfterACrash) {
  auto store = open();
  Manifest a = take(*store, "a");
  auto partial = store->begin_checkpoint();  // "crash" before its manifest
  ASSERT_TRUE(partial.is_ok());
  store.reset();
  std::vector<std::string> removed;
  store = open(&removed);
  ASSERT_EQ(removed, std::vector<std::string>{*partial});
  EXPECT_FALSE(fs::exists(root_ + "/exp/" + *partial));
  Manifest b = take(*store, "b");
  EXPECT_NE(b.id(), a.id());
  EXPECT_NE(b.id(), *partial);
  EXPECT_EQ(store->state().head(), b.id());
  ASSERT_EQ(store->list().size(), 2u);
}

// Issue #16, defect 4: a store whose STATE is missing or older than its
// folders once restarted its ids at c0001 and reused a complete
// checkpoint's folder: the next save overwrote it, and a failure then
// removed it whole.
TEST_F(StoreTest, AMissingStateFileNeverReusesTheIdsOnDisk) {
  auto store = open();
  Manifest a = take(*store, "a");
  Manifest b = take(*store, "b");
  auto branch = store->restored(a.id());  // b2, on disk in c's manifest only
  ASSERT_TRUE(branch.is_ok());
  Manifest c = take(*store, "c");
  store.reset();
  fs::remove(root_ + "/exp/STATE");
  store = open();
  auto id = store->begin_checkpoint();
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_GT(*id, c.id());
  // Where the timeline stood comes back from the newest manifest.
  EXPECT_EQ(store->state().head(), c.id());
  EXPECT_EQ(store->state().branch(), *branch);
  store->discard(*id);
  auto next_branch = store->restored(b.id());
  ASSERT_TRUE(next_branch.is_ok());
  EXPECT_NE(*next_branch, *branch);
  EXPECT_NE(*next_branch, "main");
  for (const Manifest& m : {a, b, c}) {
    EXPECT_EQ(*sha256_file(store->path_of(m.id()) + "/vms/state.bin"),
              m.pieces(0).files(0).sha256())
        << m.id();
  }
}

TEST_F(StoreTest, AStateFileOlderThanTheFoldersNeverReusesAFolder) {
  auto store = open();
  Manifest a = take(*store, "a");
  const std::string old_state = root_ + "/exp/STATE.old";
  fs::copy_file(root_ + "/exp/STATE", old_state);
  Manifest b = take(*store, "b");
  store.reset();
  fs::rename(old_state, root_ + "/exp/STATE");  // a backup put back
  store = open();
  auto id = store->begin_checkpoint();
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_NE(*id, b.id());
  EXPECT_GT(*id, b.id());
  // The new checkpoint fails: only its own folder goes.
  store->discard(*id);
  ASSERT_TRUE(store->manifest(b.id()).is_ok());
  EXPECT_EQ(*sha256_file(store->path_of(b.id()) + "/vms/state.bin"), b.pieces(0).files(0).sha256());
}

TEST_F(StoreTest, AFolderThatAppearedMeanwhileIsNeverTakenOver) {
  auto store = open();
  Manifest a = take(*store, "a");
  // What the next id would be, already there (another writer, a copy).
  const std::string next = "c0002";
  fs::create_directories(root_ + "/exp/" + next);
  std::ofstream(root_ + "/exp/" + next + "/MANIFEST") << "id: \"" << next << "\"\n";
  auto id = store->begin_checkpoint();
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  EXPECT_NE(*id, next);
  store->discard(*id);
  EXPECT_TRUE(fs::exists(root_ + "/exp/" + next + "/MANIFEST"));
}

TEST_F(StoreTest, TwoControllersCannotShareAStore) {
  auto first = open();
  auto second = CheckpointStore::open(root_, "exp", nullptr);
  ASSERT_FALSE(second.is_ok());
  EXPECT_EQ(second.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("another controller"), std::string::npos)
      << second.status().message();
  // Nothing of the first one's was swept or changed meanwhile.
  Manifest a = take(*first, "a");
  first.reset();
  auto again = CheckpointStore::open(root_, "exp", nullptr);
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_EQ((*again)->state().head(), a.id());
}

TEST_F(StoreTest, RestoringAnEarlierCheckpointStartsABranch) {
  auto store = open();
  Manifest a = take(*store, "a");
  Manifest b = take(*store, "b");
  // The latest of the branch continues it.
  auto same = store->restored(b.id());
  ASSERT_TRUE(same.is_ok());
  EXPECT_EQ(*same, "main");
  // An earlier one starts a new branch, and so does the next earlier one.
  auto branch = store->restored(a.id());
  ASSERT_TRUE(branch.is_ok());
  EXPECT_NE(*branch, "main");
  EXPECT_EQ(store->state().head(), a.id());
  Manifest c = take(*store, "c");
  EXPECT_EQ(c.parent(), a.id());
  EXPECT_EQ(c.branch(), *branch);
  auto again = store->restored(a.id());
  ASSERT_TRUE(again.is_ok());
  EXPECT_NE(*again, *branch);
  // b's file is untouched by everything after it.
  EXPECT_EQ(*sha256_file(store->path_of(b.id()) + "/vms/state.bin"), b.pieces(0).files(0).sha256());
}

// A restore under way is kept in STATE until it ends; one of a checkpoint
// that has since gone cannot be finished: the store says swapped out.
TEST_F(StoreTest, ARestoreUnderWayOutlivesTheControllerUnlessItsCheckpointIsGone) {
  auto store = open();
  Manifest a = take(*store, "a");
  Manifest b = take(*store, "b");
  ASSERT_TRUE(store->set_restoring(a.id()).is_ok());
  store.reset();
  store = open();
  EXPECT_EQ(store->state().restoring(), a.id());
  ASSERT_TRUE(store->restored(a.id()).is_ok());
  EXPECT_EQ(store->state().restoring(), "");
  ASSERT_TRUE(store->set_restoring(b.id()).is_ok());
  ASSERT_TRUE(store->set_swapped_out(true).is_ok());  // a failed load ends it too
  EXPECT_EQ(store->state().restoring(), "");

  ASSERT_TRUE(store->set_swapped_out(false).is_ok());
  ASSERT_TRUE(store->set_restoring(b.id()).is_ok());
  ASSERT_TRUE(store->remove(b.id()).is_ok());
  store.reset();
  std::vector<std::string> removed, notes;
  auto again = CheckpointStore::open(root_, "exp", &removed, &notes);
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_EQ((*again)->state().restoring(), "");
  EXPECT_TRUE((*again)->state().swapped_out());
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(
      notes[0].find("a restore of " + b.id() + " was interrupted, but that checkpoint is gone"),
      std::string::npos)
      << notes[0];
}

TEST_F(StoreTest, RemoveFreesAndBadIdsAreRefused) {
  auto store = open();
  Manifest a = take(*store, "0123456789");
  auto freed = store->remove(a.id());
  ASSERT_TRUE(freed.is_ok());
  EXPECT_GE(*freed, 10u);
  EXPECT_FALSE(fs::exists(store->path_of(a.id())));
  EXPECT_EQ(store->manifest(a.id()).status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store->manifest("../etc").status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(StoreTest, ADamagedStateFileIsReportedNotOverwritten) {
  { auto store = open(); }
  std::ofstream(root_ + "/exp/STATE") << "this is { not a state";
  auto s = CheckpointStore::open(root_, "exp", nullptr);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.status().code(), ErrorCode::kDataLoss);
  EXPECT_NE(s.status().message().find("STATE"), std::string::npos);
}

// #16 defect 6: checkpoints hold guest RAM. Folders 0700, files 0600,
// whatever the umask.
mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST_F(StoreTest, FoldersAreTheOwnersOnlyAndSoAreItsFiles) {
  const mode_t umask_was = ::umask(0);
  auto store = open();
  Manifest m = take(*store, "guest RAM");
  ::umask(umask_was);
  EXPECT_EQ(mode_of(root_ + "/exp"), 0700u);
  const std::string dir = store->path_of(m.id());
  for (const std::string& d : {dir, dir + "/vms", dir + "/delaynodes"}) {
    EXPECT_EQ(mode_of(d), 0700u) << d;
  }
  EXPECT_EQ(mode_of(dir + "/MANIFEST"), 0600u);
  EXPECT_EQ(mode_of(root_ + "/exp/STATE"), 0600u);
}

// #16 defect 9: a "127." prefix once let any host name starting with it
// listen in plain text.
TEST(Serving, PlainTextOnlyOnAUnixSocketOrARealLoopbackAddress) {
  for (const char* ok : {"unix:/run/amber/a.sock", "127.0.0.1:7400", "127.1.2.3:0", "[::1]:7400",
                         "localhost:7400"}) {
    EXPECT_TRUE(check_plaintext_address(ok).is_ok()) << ok;
  }
  for (const char* bad :
       {"127.evil.example:7400", "127.0.0.1.nip.io:7400", "0.0.0.0:7400", "10.0.0.1:7400",
        "[::]:7400", "127.0.0.1", "[::1]", "localhost.example:1", "[::2]:7400", "128.0.0.1:7400"}) {
    EXPECT_FALSE(check_plaintext_address(bad).is_ok()) << bad;
  }
}

TEST(Serving, AUnixSocketIsReadAndWrittenByOwnerAndGroupOnly) {
  char tmpl[] = "/tmp/amb-sock-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string socket = std::string(tmpl) + "/agent.sock";
  agent::DelayNodeAgent::Service service;
  const mode_t umask_was = ::umask(0);
  auto serving = serve_plaintext("unix:" + socket, &service);
  ::umask(umask_was);
  ASSERT_TRUE(serving.is_ok()) << serving.status().to_string();
  EXPECT_EQ(mode_of(socket), 0660u);
  stop_serving(serving->server.get());
  fs::remove_all(tmpl);
}

}  // namespace
}  // namespace amber::controller
