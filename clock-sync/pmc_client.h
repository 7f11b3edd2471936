// A client for ptp4l's management interface over its UNIX domain socket
// (ptp4l --uds_address): what `pmc -u` does, without running pmc.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "clock-sync/pmc_message.h"
#include "common/status.h"

namespace amber::clock_sync {

struct PmcClientOptions {
  // ptp4l's --uds_address.
  std::string server_path;
  // Where this client binds; empty: a unique path under /tmp. ptp4l sends
  // its replies to the address a request came from.
  std::string local_path;
  // Every request waits at most this long for its reply.
  int64_t timeout_ns = 500'000'000;
  uint8_t domain = 0;
};

// Everything amber reads from one ptp4l, fetched in one round of requests.
struct PtpSnapshot {
  CurrentDataSet current;
  ParentDataSet parent;
  PortDataSet port;
  TimeStatus time_status;

  // linuxptp moves a port from UNCALIBRATED to SLAVE when its servo locks
  // (never, with free_running 1).
  bool servo_locked() const { return port.state == PortState::kSlave; }
};

class PmcClient {
 public:
  static Result<std::unique_ptr<PmcClient>> create(PmcClientOptions options);
  ~PmcClient();
  PmcClient(const PmcClient&) = delete;
  PmcClient& operator=(const PmcClient&) = delete;

  Result<CurrentDataSet> current_data_set();
  Result<ParentDataSet> parent_data_set();
  // On a clock with several ports, the first port that answers.
  Result<PortDataSet> port_data_set();
  Result<TimeStatus> time_status();
  Result<PtpSnapshot> snapshot();

  const std::string& server_path() const { return options_.server_path; }
  const std::string& local_path() const { return options_.local_path; }

 private:
  PmcClient(PmcClientOptions options, int fd) : options_(std::move(options)), fd_(fd) {}

  // Sends a GET and returns the bytes of the validated reply's data.
  Result<std::vector<uint8_t>> get(ManagementId id);
  void drain();

  PmcClientOptions options_;
  int fd_ = -1;
  uint16_t next_sequence_id_ = 0;
  std::vector<uint8_t> buffer_;
};

}  // namespace amber::clock_sync
