// Everything core-checkpoint offers, for callers that want one include: the
// image writer and reader, pcap export, frame summaries and the Protobuf
// conversions.
#pragma once

#include "core-checkpoint/convert.h"
#include "core-checkpoint/frame_summary.h"
#include "core-checkpoint/image.h"
#include "core-checkpoint/pcap_export.h"
