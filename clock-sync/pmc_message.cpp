#include "clock-sync/pmc_message.h"

#include <cstdio>

#include "common/strings.h"

namespace amber::clock_sync {
namespace {

constexpr uint8_t kMessageTypeManagement = 0x0D;
constexpr uint8_t kVersionPtp = 2;
constexpr uint8_t kControlManagement = 0x04;
constexpr uint8_t kLogIntervalUnused = 0x7F;
constexpr uint8_t kActionGet = 0;
constexpr uint8_t kActionResponse = 2;
constexpr uint16_t kTlvManagement = 0x0001;
constexpr uint16_t kTlvManagementErrorStatus = 0x0002;

constexpr size_t kCurrentDataSetSize = 18;
constexpr size_t kParentDataSetSize = 32;
constexpr size_t kPortDataSetSize = 26;
constexpr size_t kTimeStatusSize = 50;

size_t data_set_size(ManagementId id) {
  switch (id) {
    case ManagementId::kCurrentDataSet:
      return kCurrentDataSetSize;
    case ManagementId::kParentDataSet:
      return kParentDataSetSize;
    case ManagementId::kPortDataSet:
      return kPortDataSetSize;
    case ManagementId::kTimeStatusNp:
      return kTimeStatusSize;
  }
  return 0;
}

// Network-order reads over a bounds-checked view; callers check sizes first.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  uint8_t u8(size_t at) const { return bytes_[at]; }
  uint16_t u16(size_t at) const {
    return static_cast<uint16_t>((uint16_t{bytes_[at]} << 8) | bytes_[at + 1]);
  }
  uint32_t u32(size_t at) const { return (uint32_t{u16(at)} << 16) | u16(at + 2); }
  uint64_t u64(size_t at) const { return (uint64_t{u32(at)} << 32) | u32(at + 4); }
  int64_t i64(size_t at) const { return static_cast<int64_t>(u64(at)); }
  ClockIdentity identity(size_t at) const {
    ClockIdentity id;
    for (size_t i = 0; i < id.size(); ++i) id[i] = bytes_[at + i];
    return id;
  }
  PortIdentity port_identity(size_t at) const { return {identity(at), u16(at + 8)}; }

 private:
  std::span<const uint8_t> bytes_;
};

void put16(std::vector<uint8_t>& out, size_t at, uint16_t value) {
  out[at] = static_cast<uint8_t>(value >> 8);
  out[at + 1] = static_cast<uint8_t>(value);
}

// TimeInterval: a signed 64-bit count of 2^-16 ns.
double time_interval_ns(int64_t scaled) {
  return static_cast<double>(scaled) / 65536.0;
}

Status check_size(std::span<const uint8_t> data, size_t want, ManagementId id) {
  if (data.size() < want) {
    return data_loss(cat(management_id_name(static_cast<uint16_t>(id)), ": data is ", data.size(),
                         " bytes, expected ", want));
  }
  return Status::ok();
}

std::string error_id_name(uint16_t error) {
  switch (error) {
    case 0x0001:
      return "RESPONSE_TOO_BIG";
    case 0x0002:
      return "NO_SUCH_ID";
    case 0x0003:
      return "WRONG_LENGTH";
    case 0x0004:
      return "WRONG_VALUE";
    case 0x0005:
      return "NOT_SETABLE";
    case 0x0006:
      return "NOT_SUPPORTED";
    case 0xFFFE:
      return "GENERAL_ERROR";
    default:
      return cat("error 0x", [error] {
        char buf[8];
        std::snprintf(buf, sizeof buf, "%04x", error);
        return std::string(buf);
      }());
  }
}

}  // namespace

std::string management_id_name(uint16_t id) {
  switch (static_cast<ManagementId>(id)) {
    case ManagementId::kCurrentDataSet:
      return "CURRENT_DATA_SET";
    case ManagementId::kParentDataSet:
      return "PARENT_DATA_SET";
    case ManagementId::kPortDataSet:
      return "PORT_DATA_SET";
    case ManagementId::kTimeStatusNp:
      return "TIME_STATUS_NP";
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "management id 0x%04x", id);
  return buf;
}

std::string port_state_name(PortState state) {
  switch (state) {
    case PortState::kInitializing:
      return "INITIALIZING";
    case PortState::kFaulty:
      return "FAULTY";
    case PortState::kDisabled:
      return "DISABLED";
    case PortState::kListening:
      return "LISTENING";
    case PortState::kPreMaster:
      return "PRE_MASTER";
    case PortState::kMaster:
      return "MASTER";
    case PortState::kPassive:
      return "PASSIVE";
    case PortState::kUncalibrated:
      return "UNCALIBRATED";
    case PortState::kSlave:
      return "SLAVE";
  }
  return cat("port state ", static_cast<int>(state));
}

std::string clock_identity_string(const ClockIdentity& id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%02x%02x%02x.%02x%02x.%02x%02x%02x", id[0], id[1], id[2], id[3],
                id[4], id[5], id[6], id[7]);
  return buf;
}

std::vector<uint8_t> encode_get(ManagementId id, uint16_t sequence_id, uint16_t source_port,
                                uint8_t domain) {
  const size_t data_size = data_set_size(id);
  const size_t length = kManagementPrefixLength + 6 + data_size;
  std::vector<uint8_t> out(length, 0);
  out[0] = kMessageTypeManagement;  // transportSpecific 0
  out[1] = kVersionPtp;
  put16(out, 2, static_cast<uint16_t>(length));
  out[4] = domain;
  // sourcePortIdentity: clockIdentity zero (a management node), port number
  // distinguishing this client as pmc uses its pid.
  put16(out, 28, source_port);
  put16(out, 30, sequence_id);
  out[32] = kControlManagement;
  out[33] = kLogIntervalUnused;
  // targetPortIdentity: all ones, every clock and port.
  for (size_t i = 34; i < 44; ++i) out[i] = 0xFF;
  out[44] = 0;  // startingBoundaryHops
  out[45] = 0;  // boundaryHops
  out[46] = kActionGet;
  put16(out, 48, kTlvManagement);
  put16(out, 50, static_cast<uint16_t>(2 + data_size));
  put16(out, 52, static_cast<uint16_t>(id));
  return out;
}

Result<Response> parse_response(std::span<const uint8_t> bytes, const Expected& expected) {
  const std::string what = management_id_name(static_cast<uint16_t>(expected.id));
  if (bytes.size() < kManagementPrefixLength + 4) {
    return data_loss(cat(what, " reply: truncated, ", bytes.size(), " bytes, shorter than the ",
                         kManagementPrefixLength + 4, " of a management message with a TLV"));
  }
  const Reader r(bytes);
  if ((r.u8(0) & 0x0F) != kMessageTypeManagement) {
    return data_loss(
        cat(what, " reply: message type ", r.u8(0) & 0x0F, ", expected 13 (management)"));
  }
  if ((r.u8(1) & 0x0F) != kVersionPtp) {
    return data_loss(cat(what, " reply: PTP version ", r.u8(1) & 0x0F, ", expected 2"));
  }
  const uint16_t message_length = r.u16(2);
  if (message_length > bytes.size() || message_length < kManagementPrefixLength + 4) {
    return data_loss(cat(what, " reply: messageLength ", message_length, " but ", bytes.size(),
                         " bytes received"));
  }
  const uint16_t sequence_id = r.u16(30);
  if (sequence_id != expected.sequence_id) {
    return data_loss(cat(what, " reply: sequence id ", sequence_id, ", expected ",
                         expected.sequence_id, " (a reply to another request)"));
  }
  const uint8_t action = r.u8(46) & 0x0F;
  if (action != kActionResponse) {
    return data_loss(cat(what, " reply: action ", action, ", expected 2 (RESPONSE)"));
  }
  const uint16_t tlv_type = r.u16(48);
  const uint16_t tlv_length = r.u16(50);
  if (kManagementPrefixLength + 4 + size_t{tlv_length} > message_length) {
    return data_loss(cat(what, " reply: TLV length ", tlv_length, " overruns the message of ",
                         message_length, " bytes"));
  }
  if (tlv_type == kTlvManagementErrorStatus) {
    if (tlv_length < 8) {
      return data_loss(cat(what, " reply: MANAGEMENT_ERROR_STATUS TLV of ", tlv_length,
                           " bytes, expected at least 8"));
    }
    return failed_precondition(cat(what, ": ptp4l answered ", error_id_name(r.u16(52)), " for ",
                                   management_id_name(r.u16(54))));
  }
  if (tlv_type != kTlvManagement) {
    return data_loss(cat(
        what, " reply: TLV type 0x",
        [tlv_type] {
          char buf[8];
          std::snprintf(buf, sizeof buf, "%04x", tlv_type);
          return std::string(buf);
        }(),
        ", expected 0x0001 (MANAGEMENT)"));
  }
  if (tlv_length < 2) {
    return data_loss(cat(what, " reply: MANAGEMENT TLV of ", tlv_length, " bytes has no ID"));
  }
  const uint16_t id = r.u16(52);
  if (id != static_cast<uint16_t>(expected.id)) {
    return data_loss(cat(what, " reply: carries ", management_id_name(id)));
  }
  Response response;
  response.source = r.port_identity(20);
  response.sequence_id = sequence_id;
  response.data = bytes.subspan(kManagementPrefixLength + 6, tlv_length - 2);
  return response;
}

Result<CurrentDataSet> decode_current_data_set(std::span<const uint8_t> data) {
  AMBER_RETURN_IF_ERROR(check_size(data, kCurrentDataSetSize, ManagementId::kCurrentDataSet));
  const Reader r(data);
  CurrentDataSet ds;
  ds.steps_removed = r.u16(0);
  ds.offset_from_master_ns = time_interval_ns(r.i64(2));
  ds.mean_path_delay_ns = time_interval_ns(r.i64(10));
  return ds;
}

Result<ParentDataSet> decode_parent_data_set(std::span<const uint8_t> data) {
  AMBER_RETURN_IF_ERROR(check_size(data, kParentDataSetSize, ManagementId::kParentDataSet));
  const Reader r(data);
  ParentDataSet ds;
  ds.parent_port = r.port_identity(0);
  // 10 parentStats, 11 reserved, 12 variance, 14 phase change rate.
  ds.grandmaster_priority1 = r.u8(18);
  ds.grandmaster_clock_class = r.u8(19);
  ds.grandmaster_clock_accuracy = r.u8(20);
  ds.grandmaster_offset_scaled_log_variance = r.u16(21);
  ds.grandmaster_priority2 = r.u8(23);
  ds.grandmaster_identity = r.identity(24);
  return ds;
}

Result<PortDataSet> decode_port_data_set(std::span<const uint8_t> data) {
  AMBER_RETURN_IF_ERROR(check_size(data, kPortDataSetSize, ManagementId::kPortDataSet));
  const Reader r(data);
  PortDataSet ds;
  ds.port = r.port_identity(0);
  const uint8_t state = r.u8(10);
  if (state < static_cast<uint8_t>(PortState::kInitializing) ||
      state > static_cast<uint8_t>(PortState::kSlave)) {
    return data_loss(cat("PORT_DATA_SET: port state ", state, " is not a PTP port state (1..9)"));
  }
  ds.state = static_cast<PortState>(state);
  ds.peer_mean_path_delay_ns = time_interval_ns(r.i64(12));
  ds.log_sync_interval = static_cast<int8_t>(r.u8(22));
  ds.version = r.u8(25) & 0x0F;
  return ds;
}

Result<TimeStatus> decode_time_status(std::span<const uint8_t> data) {
  AMBER_RETURN_IF_ERROR(check_size(data, kTimeStatusSize, ManagementId::kTimeStatusNp));
  const Reader r(data);
  TimeStatus ts;
  ts.master_offset_ns = r.i64(0);
  ts.ingress_time_ns = r.i64(8);
  ts.cumulative_scaled_rate_offset = static_cast<int32_t>(r.u32(16));
  // 20 scaledLastGmPhaseChange, 24 gmTimeBaseIndicator, 26 lastGmPhaseChange.
  ts.gm_present = r.u32(38) != 0;
  ts.gm_identity = r.identity(42);
  return ts;
}

}  // namespace amber::clock_sync
