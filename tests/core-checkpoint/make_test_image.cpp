// Writes a small valid image of a frozen test node: seeds for the fuzz
// target and sample input for trying amber-image.
//
//   make_test_image PATH [FRAMES_PER_PIPE] [PIPES]
#include <cstdio>
#include <cstdlib>

#include "image_fixture.h"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: make_test_image PATH [FRAMES_PER_PIPE] [PIPES]\n");
    return 2;
  }
  amber::checkpoint::testing::NodeSpec spec;
  if (argc > 2) spec.frames_per_pipe = std::strtoul(argv[2], nullptr, 10);
  if (argc > 3) spec.pipes = std::strtoul(argv[3], nullptr, 10);
  auto node = amber::checkpoint::testing::make_frozen_node(spec);
  amber::Status s = amber::checkpoint::testing::write_image(node, argv[1], {.sync = false});
  if (!s) {
    std::fprintf(stderr, "make_test_image: %s\n", s.to_string().c_str());
    return 1;
  }
  return 0;
}
