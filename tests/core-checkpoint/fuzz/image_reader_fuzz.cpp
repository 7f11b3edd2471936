// libFuzzer target: the image reader (and the frame decoder behind
// amber-image frames) on arbitrary bytes must refuse or read, never crash,
// overread or allocate without bound.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include "core-checkpoint/frame_summary.h"
#include "core-checkpoint/image.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = ::memfd_create("amber-image-fuzz", MFD_CLOEXEC);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) {
      ::close(fd);
      return 0;
    }
    done += static_cast<size_t>(n);
  }
  ::lseek(fd, 0, SEEK_SET);
  auto reader = amber::checkpoint::ImageReader::open_fd(fd, "fuzz-input", std::nullopt);
  if (!reader) return 0;
  size_t pipe;
  amber::checkpoint::FrameRecord frame;
  for (int i = 0; i < 100000; ++i) {
    auto more = reader->next_frame(&pipe, &frame);
    if (!more || !*more) break;
    if (pipe >= reader->pipes().size()) __builtin_trap();
    (void)amber::checkpoint::summarize_frame(frame.bytes);
  }
  return 0;
}
