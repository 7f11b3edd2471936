// A one-line decode of a frame's headers for listings (queue surgery, the
// amber-image CLI): Ethernet, VLAN tags, ARP, IPv4, IPv6, TCP, UDP, ICMP.
// Never reads past the buffer; garbage gives a short description, never a
// crash.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace amber::checkpoint {

// e.g. "IPv4 10.0.0.1:5201 > 10.0.0.2:41234 TCP [S.] seq=1 ack=2 win=512 len=0"
std::string summarize_frame(std::span<const uint8_t> bytes);

}  // namespace amber::checkpoint
