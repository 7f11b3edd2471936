// A delay node with one link between two given ports, started on the
// worker lcores, for the benchmarks. node_options: more node-level
// configuration text (e.g. sizing). nullptr (and the reason on stderr) if
// the configuration or the node is refused.
#pragma once

#include <rte_eal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "config/loader.h"
#include "dataplane/delay_node.h"

namespace amber::bench {

// CPU time a thread of this process has had, from the scheduler's view
// (/proc/self/task/TID/schedstat); 0 if it cannot be read.
inline int64_t thread_cpu_ns(long tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%ld/schedstat", tid);
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  long long ns = 0;
  if (std::fscanf(f, "%lld", &ns) != 1) ns = 0;
  std::fclose(f);
  return ns;
}

// DPDK for a benchmark: lcores 0-1, hugepage memory of `memory_mb`, a file
// prefix of its own (removed again at the end, with the EAL).
class BenchEal {
 public:
  BenchEal(const char* program, const char* memory_mb) {
    char prefix[96];
    std::snprintf(prefix, sizeof prefix, "amb-%s-%d", program, static_cast<int>(getpid()));
    prefix_ = prefix;
    const char* eal[] = {
        program,         "-l",          "0-1",           "--no-pci", "--in-memory", "--file-prefix",
        prefix_.c_str(), "--log-level", "lib.eal:error", "-m",       memory_mb};
    ok_ = rte_eal_init(static_cast<int>(sizeof eal / sizeof eal[0]), const_cast<char**>(eal)) >= 0;
    if (!ok_) std::fprintf(stderr, "%s: EAL init failed (root and hugepages needed)\n", program);
  }
  ~BenchEal() {
    if (!ok_) return;
    rte_eal_cleanup();
    std::error_code ignored;
    std::filesystem::remove_all("/var/run/dpdk/" + prefix_, ignored);
  }
  BenchEal(const BenchEal&) = delete;
  BenchEal& operator=(const BenchEal&) = delete;
  bool ok() const { return ok_; }

 private:
  std::string prefix_;
  bool ok_ = false;
};

inline std::unique_ptr<dataplane::DelayNode> start_bench_node(
    const std::string& port_a, const std::string& port_b, const std::string& pipe,
    const std::string& idle_sleep, const std::string& node_options = "") {
  std::string text = "node_id: \"bench\" idle_sleep: \"" + idle_sleep + "\" " + node_options +
                     " link { name: \"l\" port_a: \"" + port_a + "\" port_b: \"" + port_b +
                     "\" both { " + pipe + " } }";
  auto config = config::parse_node_config(text, "bench");
  if (!config) {
    std::fprintf(stderr, "%s\n", config.status().to_string().c_str());
    return nullptr;
  }
  auto node = dataplane::DelayNode::create(*config);
  if (!node) {
    std::fprintf(stderr, "%s\n", node.status().to_string().c_str());
    return nullptr;
  }
  node.value()->start();
  return std::move(node).value();
}

}  // namespace amber::bench
