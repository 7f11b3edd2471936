// mbufs are the frames: the link model's Frame (intrusive hook and virtual
// timestamps) lives in each mbuf's private area, so holding a frame in a
// pipe costs no allocation and no copy.
#pragma once

#include <rte_mbuf.h>

#include "link-emulator/frame.h"

namespace amber::dataplane {

inline constexpr uint16_t kMbufPrivSize = RTE_ALIGN_CEIL(sizeof(link::Frame), RTE_MBUF_PRIV_ALIGN);

inline link::Frame* frame_of(rte_mbuf* m) {
  return static_cast<link::Frame*>(rte_mbuf_to_priv(m));
}

inline rte_mbuf* mbuf_of(link::Frame* f) {
  return reinterpret_cast<rte_mbuf*>(reinterpret_cast<char*>(f) - sizeof(rte_mbuf));
}
inline const rte_mbuf* mbuf_of(const link::Frame* f) {
  return reinterpret_cast<const rte_mbuf*>(reinterpret_cast<const char*>(f) - sizeof(rte_mbuf));
}

}  // namespace amber::dataplane
