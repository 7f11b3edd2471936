#include "controller/delaynode_agent.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <thread>

#include "common/strings.h"
#include "clock-sync/sync_monitor.h"
#include "controller/grpc_status.h"
#include "core-checkpoint/node_checkpoint.h"
#include "link-emulator/pipe_edit.h"
#include "proto/agent.grpc.pb.h"

namespace amber::controller {
namespace {

const char* stage_name(link::FrameStage stage) {
  switch (stage) {
    case link::FrameStage::kBottleneck: return "bottleneck";
    case link::FrameStage::kDelayLine: return "delay_line";
    case link::FrameStage::kExpress: return "express";
  }
  return "unknown";
}

Status need_pipe(const agent::PipeRef& p) {
  if (p.link().empty() || p.direction().empty()) {
    return invalid_argument("pipe: give a link name and a direction (a_to_b or b_to_a)");
  }
  return Status::ok();
}

class Service final : public agent::DelayNodeAgent::Service {
 public:
  Service(dataplane::DelayNode& node, clock_sync::SyncMonitor* monitor, std::string mode)
      : node_(node), monitor_(monitor), mode_(std::move(mode)) {}

  // A master-time instant on the local clock, or why it cannot be trusted.
  Result<int64_t> local_instant(int64_t master_ns) {
    if (monitor_ == nullptr) return master_ns;
    auto correction = monitor_->correction_ns();
    if (!correction) return correction.status();
    return master_ns + *correction;
  }

  grpc::Status Freeze(grpc::ServerContext*, const agent::FreezeRequest* req,
                      agent::FreezeReply* reply) override {
    auto at = local_instant(req->at_ns());
    if (!at) return to_grpc(at.status());
    Status s = node_.freeze_at(*at);
    if (!s) return to_grpc(s);
    // Report how late each worker froze if the instant is near.
    const int64_t wait = *at - node_.now_ns();
    if (wait < 2'000'000'000) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::max<int64_t>(wait, 0)) +
                                  std::chrono::milliseconds(20));
      auto latencies = node_.freeze_latencies();
      if (latencies) {
        for (int64_t l : *latencies) reply->add_latency_ns(l);
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status Thaw(grpc::ServerContext*, const agent::ThawRequest* req,
                    agent::ThawReply*) override {
    auto at = local_instant(req->at_ns());
    if (!at) return to_grpc(at.status());
    return to_grpc(node_.thaw_at(*at));
  }

  grpc::Status Save(grpc::ServerContext*, const agent::SaveRequest* req,
                    agent::SaveReply* reply) override {
    if (req->path().empty()) return to_grpc(invalid_argument("path: give the image file to write"));
    auto r = checkpoint::save_node(node_, req->path());
    if (!r) return to_grpc(r.status());
    reply->set_frames(r->frames);
    reply->set_bytes(r->bytes);
    reply->set_image_bytes(r->image_bytes);
    reply->set_duration_ns(r->duration_ns);
    return grpc::Status::OK;
  }

  grpc::Status Restore(grpc::ServerContext*, const agent::RestoreRequest* req,
                       agent::RestoreReply* reply) override {
    if (req->path().empty()) return to_grpc(invalid_argument("path: give the image file to read"));
    checkpoint::RestoreOptions options;
    options.allow_other_node = req->allow_other_node();
    auto r = checkpoint::restore_node(node_, req->path(), options);
    if (!r) return to_grpc(r.status());
    reply->set_frames(r->frames);
    reply->set_bytes(r->bytes);
    reply->set_virtual_now_ns(r->virtual_now_ns);
    reply->set_duration_ns(r->duration_ns);
    return grpc::Status::OK;
  }

  grpc::Status ListFrames(grpc::ServerContext*, const agent::ListFramesRequest* req,
                          agent::ListFramesReply* reply) override {
    if (Status s = need_pipe(req->pipe()); !s) return to_grpc(s);
    auto r = checkpoint::list_frames(node_, req->pipe().link(), req->pipe().direction(),
                                     req->offset(), req->limit(), req->with_bytes());
    if (!r) return to_grpc(r.status());
    reply->set_total(r->total);
    reply->set_virtual_now_ns(r->virtual_now_ns);
    for (const auto& f : r->frames) {
      agent::HeldFrame* h = reply->add_frames();
      h->set_index(f.index);
      h->set_stage(stage_name(f.stage));
      h->set_length(f.length);
      h->set_arrival_ns(f.arrival_ns);
      h->set_departure_ns(f.departure_ns);
      h->set_summary(f.summary);
      if (req->with_bytes()) h->set_data(f.bytes.data(), f.bytes.size());
    }
    return grpc::Status::OK;
  }

  grpc::Status EditFrames(grpc::ServerContext*, const agent::EditFramesRequest* req,
                          agent::EditFramesReply* reply) override {
    if (Status s = need_pipe(req->pipe()); !s) return to_grpc(s);
    const std::string& link = req->pipe().link();
    const std::string& dir = req->pipe().direction();
    uint32_t applied = 0;
    for (const agent::FrameEdit& e : req->edits()) {
      Status s;
      auto bytes_of = [](const std::string& data) {
        return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size());
      };
      switch (e.edit_case()) {
        case agent::FrameEdit::kDropIndex:
          s = checkpoint::drop_frame(node_, link, dir, e.drop_index());
          break;
        case agent::FrameEdit::kReplace:
          s = checkpoint::replace_frame(node_, link, dir, e.replace().index(),
                                        bytes_of(e.replace().data()));
          break;
        case agent::FrameEdit::kInject: {
          const auto& in = e.inject();
          std::optional<uint64_t> before;
          std::optional<int64_t> at;
          if (in.where_case() == agent::InjectFrame::kBeforeIndex) before = in.before_index();
          if (in.where_case() == agent::InjectFrame::kDepartureNs) at = in.departure_ns();
          s = checkpoint::inject_frame(node_, link, dir, bytes_of(in.data()), before, at);
          break;
        }
        case agent::FrameEdit::EDIT_NOT_SET:
          s = invalid_argument("an edit needs drop_index, replace or inject");
          break;
      }
      if (!s) return to_grpc(s.with_context(cat("edit ", applied, " (", applied, " applied): ")));
      ++applied;
    }
    reply->set_applied(applied);
    return grpc::Status::OK;
  }

  grpc::Status GetStats(grpc::ServerContext*, const agent::GetStatsRequest*,
                        agent::GetStatsReply* reply) override {
    auto stats = node_.stats();
    if (!stats) return to_grpc(stats.status());
    reply->set_node_id(node_.config().node_id);
    auto frozen = node_.frozen();
    reply->set_frozen(frozen.is_ok() && *frozen);
    agent::ClockHealth* clock = reply->mutable_clock();
    clock->set_synchronized(monitor_ != nullptr);
    if (monitor_) {
      clock_sync::SyncVerdict v = monitor_->verdict();
      clock->set_trustworthy(v.trustworthy);
      clock->set_mode(mode_);
      for (const std::string& r : v.reasons) clock->add_reasons(r);
      if (auto c = monitor_->correction_ns()) clock->set_correction_ns(*c);
    } else {
      clock->set_mode("local clock");
    }
    for (const auto& s : *stats) {
      agent::PipeStats* p = reply->add_pipes();
      p->mutable_pipe()->set_link(s.link);
      p->mutable_pipe()->set_direction(s.direction);
      p->set_config(link::describe(s.config));
      p->set_frames_in(s.pipe.frames_in);
      p->set_frames_out(s.pipe.frames_out);
      p->set_bytes_in(s.pipe.bytes_in);
      p->set_bytes_out(s.pipe.bytes_out);
      p->set_held_frames(s.held_frames);
      p->set_held_bytes(s.held_bytes);
      p->set_queued_frames(s.queued_frames);
      auto& dropped = *p->mutable_dropped();
      for (size_t c = 0; c < link::kDropCauseCount; ++c) {
        dropped[link::drop_cause_name(static_cast<link::DropCause>(c))] = s.pipe.frames_dropped[c];
      }
      dropped["dup_no_mbuf"] = s.node.dup_no_mbuf;
      dropped["oversize"] = s.node.oversize;
      dropped["no_priv_area"] = s.node.no_priv_area;
    }
    return grpc::Status::OK;
  }

  grpc::Status ExportPcap(grpc::ServerContext*, const agent::ExportPcapRequest* req,
                          agent::ExportPcapReply* reply) override {
    if (req->dir().empty()) return to_grpc(invalid_argument("dir: give the folder to write into"));
    auto files = checkpoint::export_node_pcap(node_, req->dir());
    if (!files) return to_grpc(files.status());
    for (const std::string& f : *files) reply->add_files(f);
    return grpc::Status::OK;
  }

  grpc::Status SetLinkParams(grpc::ServerContext*, const agent::SetLinkParamsRequest* req,
                             agent::SetLinkParamsReply* reply) override {
    if (Status s = need_pipe(req->pipe()); !s) return to_grpc(s);
    auto current = node_.pipe_config(req->pipe().link(), req->pipe().direction());
    if (!current) return to_grpc(current.status());
    link::PipeConfig next = *current;
    Status s = link::apply_settings(next, req->settings());
    if (s) s = node_.set_pipe(req->pipe().link(), req->pipe().direction(), next);
    if (!s) return to_grpc(s);
    reply->set_config(link::describe(next));
    return grpc::Status::OK;
  }

 private:
  dataplane::DelayNode& node_;
  clock_sync::SyncMonitor* monitor_;  // null: no PTP
  std::string mode_;
};

}  // namespace

struct DelayNodeAgent::Impl {
  clock_sync::SystemClock clock;
  std::unique_ptr<clock_sync::SyncMonitor> monitor;
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

DelayNodeAgent::DelayNodeAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DelayNodeAgent::~DelayNodeAgent() {
  if (impl_) stop_serving(impl_->server.get());
}

const std::string& DelayNodeAgent::address() const { return impl_->address; }

Result<std::unique_ptr<DelayNodeAgent>> DelayNodeAgent::start(dataplane::DelayNode& node,
                                                              const AgentOptions& options) {
  AMBER_RETURN_IF_ERROR(check_plaintext_address(options.listen));
  auto impl = std::make_unique<Impl>();
  if (!options.ptp_socket.empty()) {
    clock_sync::SyncMonitorOptions sync;
    if (options.ptp_mode == "free-running") sync.policy.mode = clock_sync::SyncMode::kFreeRunning;
    else if (options.ptp_mode == "disciplined") sync.policy.mode = clock_sync::SyncMode::kDisciplined;
    else if (options.ptp_mode == "grandmaster") sync.policy.mode = clock_sync::SyncMode::kGrandmaster;
    else {
      return invalid_argument(cat("ptp mode '", options.ptp_mode,
                                  "': use free-running, disciplined or grandmaster"));
    }
    clock_sync::PmcClientOptions pmc;
    pmc.server_path = options.ptp_socket;
    auto client = clock_sync::PmcClient::create(pmc);
    if (!client) return client.status().with_context("ptp socket: ");
    auto monitor = clock_sync::SyncMonitor::create(
        std::make_unique<clock_sync::PmcSource>(std::move(client).value()), impl->clock, sync);
    if (!monitor) return monitor.status();
    impl->monitor = std::move(monitor).value();
    AMBER_RETURN_IF_ERROR(impl->monitor->start());
  }
  impl->service = std::make_unique<Service>(node, impl->monitor.get(), options.ptp_mode);
  auto serving = serve_plaintext(options.listen, impl->service.get());
  if (!serving) return serving.status();
  impl->server = std::move(serving->server);
  impl->address = serving->address;
  return std::unique_ptr<DelayNodeAgent>(new DelayNodeAgent(std::move(impl)));
}

}  // namespace amber::controller
