// amber-controller: holds the experiment's topology, drives the agents
// through synchronized checkpoints and restores, keeps the checkpoint store,
// and serves proto/controller.proto to amberctl.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>

#include "common/strings.h"
#include "common/units.h"
#include "controller/experiment.h"
#include "controller/topology.h"
#include "proto/controller.grpc.pb.h"
#include "rpc/grpc_status.h"

namespace {

using amber::cat;
using namespace amber::controller;

constexpr const char* kUsage = R"(usage: amber-controller --topology FILE [--check]

The amber controller: checkpoints a whole experiment (endpoint VMs and the
frames in flight inside the delay nodes) at one synchronized instant, saves
it to the checkpoint store, resumes or swaps out, restores any checkpoint
(time travel, branches), takes periodic and triggered checkpoints. amberctl
talks to it (amberctl --controller ADDRESS ...).

  --topology FILE   the experiment: agents, store, clock, periodic and
                    triggered checkpoints (Protobuf text format, message
                    amber.config.Topology in proto/config.proto; a commented
                    example is installed as topology.conf.example)
  --check           load and validate the topology, print a summary, exit
  -h, --help        this text

It listens where the topology's `listen` says: a UNIX socket or loopback in
plain text, anything else only with tls { ca cert key } (mutual TLS; the same
certificate is its client certificate towards the agents).
SIGINT/SIGTERM: stops after the operation in progress.
)";

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) {
  g_stop = 1;
}

class Service final : public amber::controller::Controller::Service {
 public:
  explicit Service(Experiment& experiment) : experiment_(experiment) {}

  grpc::Status GetStatus(grpc::ServerContext*, const StatusRequest*, StatusReply* reply) override {
    *reply = experiment_.status();
    return grpc::Status::OK;
  }

  grpc::Status Checkpoint(grpc::ServerContext*, const CheckpointRequest* req,
                          grpc::ServerWriter<Progress>* writer) override {
    auto m = experiment_.checkpoint(*req, "amberctl", progress_to(writer));
    if (!m) return to_grpc(m.status());
    return finish(writer, *m);
  }

  grpc::Status Restore(grpc::ServerContext*, const RestoreRequest* req,
                       grpc::ServerWriter<Progress>* writer) override {
    auto m = experiment_.restore(*req, progress_to(writer));
    if (!m) return to_grpc(m.status());
    return finish(writer, *m);
  }

  grpc::Status Pause(grpc::ServerContext*, const PauseRequest* req,
                     grpc::ServerWriter<Progress>* writer) override {
    auto m = experiment_.pause(*req, progress_to(writer));
    if (!m) return to_grpc(m.status());
    return finish(writer, *m);
  }

  grpc::Status ListCheckpoints(grpc::ServerContext*, const ListRequest*,
                               ListReply* reply) override {
    *reply = experiment_.list();
    return grpc::Status::OK;
  }

  grpc::Status GetCheckpoint(grpc::ServerContext*, const GetRequest* req,
                             Manifest* reply) override {
    auto m = experiment_.get(req->id());
    if (!m) return to_grpc(m.status());
    *reply = *std::move(m);
    return grpc::Status::OK;
  }

  grpc::Status Schedule(grpc::ServerContext*, const ScheduleRequest* req,
                        ScheduleReply* reply) override {
    auto detail = experiment_.schedule(*req);
    if (!detail) return to_grpc(detail.status());
    reply->set_detail(*detail);
    return grpc::Status::OK;
  }

  grpc::Status DeleteCheckpoint(grpc::ServerContext*, const DeleteRequest* req,
                                DeleteReply* reply) override {
    auto freed = experiment_.remove(req->id());
    if (!freed) return to_grpc(freed.status());
    reply->set_freed_bytes(*freed);
    return grpc::Status::OK;
  }

 private:
  // Progress goes to the caller as it comes; a caller that went away does
  // not stop the protocol (it must finish or roll back).
  ProgressFn progress_to(grpc::ServerWriter<Progress>* writer) {
    auto mutex = std::make_shared<std::mutex>();
    return [writer, mutex](const Progress& p) {
      std::lock_guard lock(*mutex);
      writer->Write(p);
    };
  }
  grpc::Status finish(grpc::ServerWriter<Progress>* writer, const Manifest& m) {
    Progress last;
    last.set_step("done");
    *last.mutable_result() = m;
    writer->Write(last);
    return grpc::Status::OK;
  }

  Experiment& experiment_;
};

void log_line(const std::string& line) {
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  std::fprintf(stderr, "amber-controller: %s\n", line.c_str());
}

int run(int argc, char** argv) {
  std::string topology_path;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--topology" && i + 1 < argc) {
      topology_path = argv[++i];
    } else if (a == "--check") {
      check = true;
    } else {
      std::fprintf(stderr, "amber-controller: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (topology_path.empty()) {
    std::fprintf(stderr, "amber-controller: --topology FILE is required\n%s", kUsage);
    return 2;
  }
  auto topology = load_topology(topology_path);
  if (!topology) {
    std::fprintf(stderr, "amber-controller: %s\n", topology.status().message().c_str());
    return 1;
  }
  const auto& t = topology->proto;
  if (check) {
    std::printf("experiment %s: %d delay node(s), %d vm host(s), store %s/%s, listen %s%s\n",
                t.experiment().c_str(), t.delay_node_size(), t.vm_host_size(), t.store().c_str(),
                t.experiment().c_str(), t.listen().c_str(), t.has_tls() ? " (TLS)" : "");
    return 0;
  }
  // The topology moves into the experiment: keep what serving needs.
  const std::string listen = t.listen();
  const std::string experiment_name = t.experiment();
  TlsFiles tls;
  if (t.has_tls()) tls = {t.tls().ca(), t.tls().cert(), t.tls().key()};
  std::vector<std::string> notes;
  auto experiment = Experiment::create(*std::move(topology), &notes);
  if (!experiment) {
    std::fprintf(stderr, "amber-controller: %s\n", experiment.status().message().c_str());
    return 1;
  }
  for (const auto& n : notes) log_line(n);
  (*experiment)->set_log(log_line);
  Service service(**experiment);
  auto serving = serve(listen, tls, &service);
  if (!serving) {
    std::fprintf(stderr, "amber-controller: %s\n", serving.status().message().c_str());
    return 1;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  (*experiment)->start_background();
  log_line(cat("experiment ", experiment_name, ": serving on ", serving->address));
  while (!g_stop) pause();
  log_line("stopping");
  stop_serving(serving->server.get());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run(argc, argv);
}
