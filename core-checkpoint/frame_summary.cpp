#include "core-checkpoint/frame_summary.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstring>

#include "common/strings.h"

namespace amber::checkpoint {
namespace {

// A bounds-checked view: every read says whether the bytes were there.
class Cursor {
 public:
  explicit Cursor(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  size_t size() const { return bytes_.size(); }
  bool has(size_t offset, size_t n) const {
    return offset <= bytes_.size() && n <= bytes_.size() - offset;
  }
  uint8_t u8(size_t offset) const { return bytes_[offset]; }
  uint16_t u16(size_t offset) const {
    return static_cast<uint16_t>(bytes_[offset] << 8 | bytes_[offset + 1]);
  }
  uint32_t u32(size_t offset) const {
    return static_cast<uint32_t>(u16(offset)) << 16 | u16(offset + 2);
  }
  const uint8_t* at(size_t offset) const { return bytes_.data() + offset; }

 private:
  std::span<const uint8_t> bytes_;
};

std::string ipv4_text(const uint8_t* a) {
  char text[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, a, text, sizeof(text));
  return text;
}

std::string ipv6_text(const uint8_t* a) {
  char text[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, a, text, sizeof(text));
  return text;
}

std::string mac_text(const uint8_t* m) {
  char text[18];
  std::snprintf(text, sizeof(text), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
                m[5]);
  return text;
}

std::string hex16(uint16_t v) {
  char text[8];
  std::snprintf(text, sizeof(text), "0x%04x", v);
  return text;
}

// tcpdump's flag letters: S F R P U E W, '.' for ACK.
std::string tcp_flags(uint8_t flags) {
  std::string out;
  if (flags & 0x02) out += 'S';
  if (flags & 0x01) out += 'F';
  if (flags & 0x04) out += 'R';
  if (flags & 0x08) out += 'P';
  if (flags & 0x20) out += 'U';
  if (flags & 0x40) out += 'E';
  if (flags & 0x80) out += 'W';
  if (flags & 0x10) out += '.';
  if (out.empty()) out = "none";
  return out;
}

// Layer 4 from `offset`, `length` bytes of payload as the IP header says
// (clipped to what was captured).
std::string transport(const Cursor& c, size_t offset, size_t length, uint8_t proto,
                      const std::string& src, const std::string& dst, bool v6) {
  auto sep = [&](const std::string& addr, uint16_t port) {
    return v6 ? cat("[", addr, "]:", port) : cat(addr, ":", port);
  };
  switch (proto) {
    case 6: {  // TCP
      if (!c.has(offset, 20)) return cat(src, " > ", dst, " TCP (truncated)");
      size_t header = static_cast<size_t>(c.u8(offset + 12) >> 4) * 4;
      if (header < 20) return cat(src, " > ", dst, " TCP (bad header length ", header, ")");
      size_t payload = length > header ? length - header : 0;
      return cat(sep(src, c.u16(offset)), " > ", sep(dst, c.u16(offset + 2)), " TCP [",
                 tcp_flags(c.u8(offset + 13)), "] seq=", c.u32(offset + 4),
                 " ack=", c.u32(offset + 8), " win=", c.u16(offset + 14), " len=", payload);
    }
    case 17: {  // UDP
      if (!c.has(offset, 8)) return cat(src, " > ", dst, " UDP (truncated)");
      uint16_t ulen = c.u16(offset + 4);
      return cat(sep(src, c.u16(offset)), " > ", sep(dst, c.u16(offset + 2)),
                 " UDP len=", ulen >= 8 ? ulen - 8 : 0);
    }
    case 1:
    case 58: {  // ICMP, ICMPv6
      const char* name = proto == 1 ? "ICMP" : "ICMPv6";
      if (!c.has(offset, 4)) return cat(src, " > ", dst, " ", name, " (truncated)");
      uint8_t type = c.u8(offset);
      const char* what = nullptr;
      if (proto == 1) {
        what = type == 8    ? "echo request"
               : type == 0  ? "echo reply"
               : type == 3  ? "unreachable"
               : type == 11 ? "time exceeded"
                            : nullptr;
      } else {
        what = type == 128   ? "echo request"
               : type == 129 ? "echo reply"
               : type == 135 ? "neighbor solicitation"
               : type == 136 ? "neighbor advertisement"
               : type == 133 ? "router solicitation"
               : type == 134 ? "router advertisement"
                             : nullptr;
      }
      std::string out = cat(src, " > ", dst, " ", name, " ");
      if (what != nullptr) {
        out += what;
      } else {
        out += cat("type ", static_cast<int>(type), " code ", static_cast<int>(c.u8(offset + 1)));
      }
      if ((what != nullptr && std::strncmp(what, "echo", 4) == 0) && c.has(offset, 8)) {
        out += cat(" id=", c.u16(offset + 4), " seq=", c.u16(offset + 6));
      }
      return out;
    }
    default:
      return cat(src, " > ", dst, " proto ", static_cast<int>(proto), " len=", length);
  }
}

std::string ipv4(const Cursor& c, size_t offset) {
  if (!c.has(offset, 20)) return "IPv4 (truncated)";
  uint8_t vihl = c.u8(offset);
  if (vihl >> 4 != 4) return cat("IPv4 (version ", static_cast<int>(vihl >> 4), ")");
  size_t ihl = static_cast<size_t>(vihl & 0xf) * 4;
  if (ihl < 20) return cat("IPv4 (bad header length ", ihl, ")");
  size_t total = c.u16(offset + 2);
  std::string src = ipv4_text(c.at(offset + 12));
  std::string dst = ipv4_text(c.at(offset + 16));
  uint16_t frag = c.u16(offset + 6);
  uint8_t proto = c.u8(offset + 9);
  size_t payload = total > ihl ? total - ihl : 0;
  std::string out = "IPv4 ";
  if ((frag & 0x1fff) != 0) {
    return cat(out, src, " > ", dst, " fragment offset=", (frag & 0x1fff) * 8, " proto ",
               static_cast<int>(proto), " len=", payload);
  }
  out += transport(c, offset + ihl, payload, proto, src, dst, false);
  if (frag & 0x2000) out += " (first fragment)";
  if (c.u8(offset + 8) <= 1) out += cat(" ttl=", static_cast<int>(c.u8(offset + 8)));
  return out;
}

std::string ipv6(const Cursor& c, size_t offset) {
  if (!c.has(offset, 40)) return "IPv6 (truncated)";
  if (c.u8(offset) >> 4 != 6)
    return cat("IPv6 (version ", static_cast<int>(c.u8(offset) >> 4), ")");
  size_t length = c.u16(offset + 4);
  uint8_t next = c.u8(offset + 6);
  std::string src = ipv6_text(c.at(offset + 8));
  std::string dst = ipv6_text(c.at(offset + 24));
  size_t at = offset + 40;
  // Skip the common extension headers (hop-by-hop, routing, destination
  // options); a bounded number of them, as garbage may chain forever.
  for (int i = 0; i < 8 && (next == 0 || next == 43 || next == 60); ++i) {
    if (!c.has(at, 2)) return cat("IPv6 ", src, " > ", dst, " (truncated extension header)");
    size_t ext = (static_cast<size_t>(c.u8(at + 1)) + 1) * 8;
    next = c.u8(at);
    at += ext;
    length = length > ext ? length - ext : 0;
  }
  if (next == 44) return cat("IPv6 ", src, " > ", dst, " fragment len=", length);
  return cat("IPv6 ", transport(c, at, length, next, src, dst, true));
}

std::string arp(const Cursor& c, size_t offset) {
  if (!c.has(offset, 28)) return "ARP (truncated)";
  if (c.u16(offset) != 1 || c.u16(offset + 2) != 0x0800 || c.u8(offset + 4) != 6 ||
      c.u8(offset + 5) != 4) {
    return cat("ARP (hardware ", c.u16(offset), ", protocol ", hex16(c.u16(offset + 2)), ")");
  }
  uint16_t op = c.u16(offset + 6);
  std::string sender_ip = ipv4_text(c.at(offset + 14));
  std::string target_ip = ipv4_text(c.at(offset + 24));
  if (op == 1) return cat("ARP who-has ", target_ip, " tell ", sender_ip);
  if (op == 2) return cat("ARP reply ", sender_ip, " is-at ", mac_text(c.at(offset + 8)));
  return cat("ARP op ", op, " ", sender_ip, " > ", target_ip);
}

}  // namespace

std::string summarize_frame(std::span<const uint8_t> bytes) {
  Cursor c(bytes);
  if (!c.has(0, 14)) return cat("runt frame len=", bytes.size());
  size_t offset = 12;
  uint16_t type = c.u16(offset);
  std::string vlans;
  // 802.1Q / 802.1ad tags, stacked (QinQ); at most a few.
  for (int i = 0; i < 4 && (type == 0x8100 || type == 0x88a8 || type == 0x9100); ++i) {
    if (!c.has(offset + 2, 4)) return cat(vlans, "VLAN (truncated) len=", bytes.size());
    vlans += cat("vlan ", c.u16(offset + 2) & 0x0fff, " ");
    offset += 4;
    type = c.u16(offset);
  }
  offset += 2;
  std::string out;
  switch (type) {
    case 0x0800:
      out = ipv4(c, offset);
      break;
    case 0x86dd:
      out = ipv6(c, offset);
      break;
    case 0x0806:
      out = arp(c, offset);
      break;
    default:
      if (type < 0x0600) {
        out = cat("802.3 ", mac_text(c.at(6)), " > ", mac_text(c.at(0)), " length ", type);
      } else {
        out = cat("ethertype ", hex16(type), " ", mac_text(c.at(6)), " > ", mac_text(c.at(0)));
      }
  }
  return cat(vlans, out, " (", bytes.size(), " bytes)");
}

}  // namespace amber::checkpoint
