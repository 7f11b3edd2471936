// What the gRPC clients of both kinds of agents share (delaynode_client.cpp,
// vmhost_client.cpp): call failures as Status naming the agent, the
// "instant has passed" answer, and a trigger watch over a server stream.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "common/strings.h"
#include "controller/agent.h"
#include "proto/agent.pb.h"
#include "rpc/grpc_status.h"

namespace amber::controller {

// "delay node dn1 unreachable: ...", "... did not answer in time".
inline Status agent_error(const std::string& what, const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return unavailable(cat(what, " unreachable: ", s.error_message()));
  }
  if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return deadline_exceeded(cat(what, " did not answer in time"));
  }
  return from_grpc(s, cat(what, ": "));
}

// The agent refused an instant because it had passed when it got it.
inline bool instant_passed(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
         s.error_message().find("past") != std::string::npos;
}

// A WatchFrames or WatchConsole call: `start(context)` opens it, to end by
// `deadline_ns` from now at the latest (DEADLINE_EXCEEDED). The channel's
// keepalive (grpc_status.h) ends it sooner if the agent vanishes.
class TriggerCall final : public TriggerStream {
 public:
  template <typename Start>
  TriggerCall(Start start, int64_t deadline_ns)
      : reader_(start(with_deadline(context_, deadline_ns))) {}
  ~TriggerCall() override {
    if (finished_) return;
    context_.TryCancel();
    reader_->Finish();
  }

  bool next(agent::TriggerEvent* event) override { return reader_->Read(event); }
  void cancel() override { context_.TryCancel(); }
  Status finish() override {
    finished_ = true;
    return from_grpc(reader_->Finish(), "");
  }

 private:
  static grpc::ClientContext* with_deadline(grpc::ClientContext& context, int64_t ns) {
    set_deadline(context, ns);
    return &context;
  }

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<agent::TriggerEvent>> reader_;  // after the context it uses
  bool finished_ = false;
};

}  // namespace amber::controller
