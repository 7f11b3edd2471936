// The PTP management message (IEEE 1588-2008 clause 15) as linuxptp's UNIX
// domain socket speaks it: building GET requests and parsing RESPONSE messages
// into the data sets amber reads. Pure functions over bytes, so every
// malformed reply can be tested without a ptp4l.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace amber::clock_sync {

// Management IDs amber asks for (standard ones, then linuxptp's _NP ones).
enum class ManagementId : uint16_t {
  kCurrentDataSet = 0x2001,
  kParentDataSet = 0x2002,
  kPortDataSet = 0x2004,
  kTimeStatusNp = 0xC000,
};

std::string management_id_name(uint16_t id);

// PTP port states (portState of PORT_DATA_SET).
enum class PortState : uint8_t {
  kInitializing = 1,
  kFaulty = 2,
  kDisabled = 3,
  kListening = 4,
  kPreMaster = 5,
  kMaster = 6,
  kPassive = 7,
  kUncalibrated = 8,
  kSlave = 9,
};

std::string port_state_name(PortState state);

using ClockIdentity = std::array<uint8_t, 8>;

// "de66dd.fffe.594df2", as pmc prints it.
std::string clock_identity_string(const ClockIdentity& id);

struct PortIdentity {
  ClockIdentity clock{};
  uint16_t port = 0;
};

struct CurrentDataSet {
  uint16_t steps_removed = 0;
  // TimeInterval fields carry scaled nanoseconds (ns << 16); these are ns.
  double offset_from_master_ns = 0;
  double mean_path_delay_ns = 0;
};

struct ParentDataSet {
  PortIdentity parent_port;
  uint8_t grandmaster_priority1 = 0;
  uint8_t grandmaster_clock_class = 0;
  uint8_t grandmaster_clock_accuracy = 0;
  uint16_t grandmaster_offset_scaled_log_variance = 0;
  uint8_t grandmaster_priority2 = 0;
  ClockIdentity grandmaster_identity{};
};

struct PortDataSet {
  PortIdentity port;
  PortState state = PortState::kInitializing;
  double peer_mean_path_delay_ns = 0;
  int8_t log_sync_interval = 0;
  uint8_t version = 0;
};

// linuxptp's TIME_STATUS_NP: the servo's latest sample.
struct TimeStatus {
  // Offset of this clock from the master, slave - master, in ns.
  int64_t master_offset_ns = 0;
  // When the last Sync that produced master_offset arrived, in the
  // timestamping clock's time scale (CLOCK_REALTIME for software timestamps).
  int64_t ingress_time_ns = 0;
  int32_t cumulative_scaled_rate_offset = 0;
  bool gm_present = false;
  ClockIdentity gm_identity{};
};

inline constexpr size_t kHeaderLength = 34;
// Header, targetPortIdentity, hops, action, reserved.
inline constexpr size_t kManagementPrefixLength = kHeaderLength + 14;

// A GET request for one management ID. The data field is zero-filled to
// the size of the data set, as pmc sends it by default.
std::vector<uint8_t> encode_get(ManagementId id, uint16_t sequence_id, uint16_t source_port,
                                uint8_t domain = 0);

// What a reply must match: the request it answers.
struct Expected {
  ManagementId id;
  uint16_t sequence_id;
};

// The validated management TLV data of a RESPONSE, with the responder.
struct Response {
  PortIdentity source;
  uint16_t sequence_id = 0;
  std::span<const uint8_t> data;
};

// Checks the header, message type, action, sequence id, TLV type and
// management ID; a MANAGEMENT_ERROR_STATUS TLV becomes its error.
Result<Response> parse_response(std::span<const uint8_t> bytes, const Expected& expected);

Result<CurrentDataSet> decode_current_data_set(std::span<const uint8_t> data);
Result<ParentDataSet> decode_parent_data_set(std::span<const uint8_t> data);
Result<PortDataSet> decode_port_data_set(std::span<const uint8_t> data);
Result<TimeStatus> decode_time_status(std::span<const uint8_t> data);

}  // namespace amber::clock_sync
