// The management message codec against bytes captured from linuxptp 3.1.1
// (pmc -u talking to ptp4l --free_running=1, seen with strace), and against
// malformed variants of them.
#include "clock-sync/pmc_message.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/clock-sync/captured.h"

namespace amber::clock_sync {
namespace {

using namespace captured;

Response parse_ok(const std::vector<uint8_t>& bytes, ManagementId id, uint16_t seq) {
  auto r = parse_response(bytes, {id, seq});
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return r.is_ok() ? *r : Response{};
}

TEST(PmcMessage, GetRequestMatchesPmcOnTheWire) {
  // pmc's GET CURRENT_DATA_SET from pid 0x2821, sequence id 0.
  const std::vector<uint8_t> pmc = {
      0x0d, 0x02, 0x00, 0x48, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x28, 0x21,
      0x00, 0x00, 0x04, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x14, 0x20, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(encode_get(ManagementId::kCurrentDataSet, 0, 0x2821), pmc);
  // TIME_STATUS_NP carries 50 bytes of data: 104 in all, as pmc sends.
  const auto ts = encode_get(ManagementId::kTimeStatusNp, 1, 0x2821);
  EXPECT_EQ(ts.size(), 104u);
  EXPECT_EQ(ts[31], 1);
  EXPECT_EQ(ts[52], 0xc0);
}

TEST(PmcMessage, DecodesCurrentDataSet) {
  const Response r = parse_ok(kCurrentReply, ManagementId::kCurrentDataSet, 0);
  EXPECT_EQ(clock_identity_string(r.source.clock), "fe0695.fffe.2609f8");
  auto ds = decode_current_data_set(r.data);
  ASSERT_TRUE(ds.is_ok()) << ds.status().to_string();
  EXPECT_EQ(ds->steps_removed, 1);
  EXPECT_DOUBLE_EQ(ds->offset_from_master_ns, 456.0);
  EXPECT_DOUBLE_EQ(ds->mean_path_delay_ns, 2043.0);
}

TEST(PmcMessage, DecodesTimeStatus) {
  const Response r = parse_ok(kTimeStatusReply, ManagementId::kTimeStatusNp, 1);
  auto ts = decode_time_status(r.data);
  ASSERT_TRUE(ts.is_ok()) << ts.status().to_string();
  EXPECT_EQ(ts->master_offset_ns, 456);
  EXPECT_EQ(ts->ingress_time_ns, 1795316242838644328);
  EXPECT_TRUE(ts->gm_present);
  EXPECT_EQ(clock_identity_string(ts->gm_identity), "de66dd.fffe.594df2");
}

TEST(PmcMessage, DecodesParentDataSet) {
  const Response r = parse_ok(kParentReply, ManagementId::kParentDataSet, 2);
  auto ds = decode_parent_data_set(r.data);
  ASSERT_TRUE(ds.is_ok()) << ds.status().to_string();
  EXPECT_EQ(clock_identity_string(ds->parent_port.clock), "de66dd.fffe.594df2");
  EXPECT_EQ(ds->parent_port.port, 1);
  EXPECT_EQ(ds->grandmaster_priority1, 128);
  EXPECT_EQ(ds->grandmaster_clock_class, 248);
  EXPECT_EQ(ds->grandmaster_clock_accuracy, 0xfe);
  EXPECT_EQ(ds->grandmaster_offset_scaled_log_variance, 0xffff);
  EXPECT_EQ(ds->grandmaster_priority2, 128);
  EXPECT_EQ(clock_identity_string(ds->grandmaster_identity), "de66dd.fffe.594df2");
}

TEST(PmcMessage, DecodesPortDataSet) {
  const Response r = parse_ok(kPortReply, ManagementId::kPortDataSet, 3);
  EXPECT_EQ(r.source.port, 1);
  auto ds = decode_port_data_set(r.data);
  ASSERT_TRUE(ds.is_ok()) << ds.status().to_string();
  EXPECT_EQ(ds->state, PortState::kUncalibrated);
  EXPECT_EQ(port_state_name(ds->state), "UNCALIBRATED");
  EXPECT_EQ(ds->port.port, 1);
  EXPECT_EQ(ds->version, 2);
}

// Every malformed variant is refused with a message naming what is wrong.
void expect_rejected(const std::vector<uint8_t>& bytes, const Expected& expected,
                     const std::string& words) {
  auto r = parse_response(bytes, expected);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().to_string();
}

TEST(PmcMessage, RejectsTruncatedReplies) {
  for (size_t keep : {0, 10, 33, 51}) {
    std::vector<uint8_t> cut(kCurrentReply.begin(), kCurrentReply.begin() + long(keep));
    expect_rejected(cut, {ManagementId::kCurrentDataSet, 0}, "truncated");
  }
  // Header intact, data cut: messageLength promises more than arrived.
  std::vector<uint8_t> cut(kCurrentReply.begin(), kCurrentReply.end() - 6);
  expect_rejected(cut, {ManagementId::kCurrentDataSet, 0}, "messageLength 72 but 66 bytes");
  // A self-consistent message whose data set is too short.
  cut[3] = 66;
  cut[51] = 14;
  auto r = parse_response(cut, {ManagementId::kCurrentDataSet, 0});
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto ds = decode_current_data_set(r->data);
  ASSERT_FALSE(ds.is_ok());
  EXPECT_EQ(ds.status().message(), "CURRENT_DATA_SET: data is 12 bytes, expected 18");
}

TEST(PmcMessage, RejectsWrongSequenceId) {
  expect_rejected(kCurrentReply, {ManagementId::kCurrentDataSet, 7}, "sequence id 0, expected 7");
}

TEST(PmcMessage, RejectsWrongTlvAndId) {
  auto bad_type = kCurrentReply;
  bad_type[49] = 0x08;  // PATH_TRACE
  expect_rejected(bad_type, {ManagementId::kCurrentDataSet, 0}, "TLV type 0x0008");
  // A well-formed reply, but to another question.
  expect_rejected(kCurrentReply, {ManagementId::kPortDataSet, 0}, "carries CURRENT_DATA_SET");
  auto overrun = kCurrentReply;
  overrun[51] = 0x40;
  expect_rejected(overrun, {ManagementId::kCurrentDataSet, 0}, "TLV length 64 overruns");
}

TEST(PmcMessage, RejectsOtherMessagesAndActions) {
  auto announce = kCurrentReply;
  announce[0] = 0x0b;
  expect_rejected(announce, {ManagementId::kCurrentDataSet, 0}, "message type 11");
  auto v1 = kCurrentReply;
  v1[1] = 0x01;
  expect_rejected(v1, {ManagementId::kCurrentDataSet, 0}, "PTP version 1");
  auto get = kCurrentReply;
  get[46] = 0x00;  // our own GET echoed back
  expect_rejected(get, {ManagementId::kCurrentDataSet, 0}, "action 0, expected 2 (RESPONSE)");
  auto bad_state = kPortReply;
  bad_state[54 + 10] = 0x2a;
  auto r = parse_response(bad_state, {ManagementId::kPortDataSet, 3});
  ASSERT_TRUE(r.is_ok());
  EXPECT_FALSE(decode_port_data_set(r->data).is_ok());
}

TEST(PmcMessage, ManagementErrorStatusBecomesItsError) {
  // ptp4l's answer to an ID it does not know: MANAGEMENT_ERROR_STATUS
  // NOT_SUPPORTED for TIME_STATUS_NP.
  std::vector<uint8_t> reply(kCurrentReply.begin(), kCurrentReply.begin() + 48);
  reply.insert(reply.end(), {0x00, 0x02, 0x00, 0x08, 0x00, 0x06, 0xc0, 0x00, 0, 0, 0, 0});
  reply[3] = static_cast<uint8_t>(reply.size());
  auto r = parse_response(reply, {ManagementId::kTimeStatusNp, 0});
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(),
            "TIME_STATUS_NP: ptp4l answered NOT_SUPPORTED for TIME_STATUS_NP");
}

}  // namespace
}  // namespace amber::clock_sync
