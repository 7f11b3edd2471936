#include "vm-checkpoint/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/strings.h"
#include "vm-checkpoint/process.h"

namespace amber::vm {
namespace {

namespace fs = std::filesystem;

constexpr std::chrono::milliseconds kToolTimeout{30000};

Status fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return internal_error(cat("open ", path, ": ", std::strerror(errno)));
  int r = ::fsync(fd);
  ::close(fd);
  if (r != 0) return internal_error(cat("fsync ", path, ": ", std::strerror(errno)));
  return Status::ok();
}

// The image at the bottom of `image`'s backing chain.
Result<std::vector<std::string>> backing_chain(const std::string& image) {
  auto out =
      run_tool({"qemu-img", "info", "--output=json", "--backing-chain", "-U", image}, kToolTimeout);
  if (!out) return out.status();
  Json chain = Json::parse(*out, nullptr, false);
  if (chain.is_discarded() || !chain.is_array() || chain.empty()) {
    return internal_error(cat("qemu-img info --backing-chain ", image, ": unexpected output"));
  }
  std::vector<std::string> files;
  for (const Json& layer : chain) files.push_back(layer.value("filename", ""));
  return files;
}

// A VM restored from a checkpoint runs on base <- checkpoint disk <- its
// overlay; the copy of that overlay is rebased onto the base, merging the
// layers between, so every checkpoint depends on the base alone.
Status rebase_onto_base(const std::string& copy) {
  auto chain = backing_chain(copy);
  if (!chain) return chain.status();
  if (chain->size() <= 2) return Status::ok();
  auto r = run_tool(
      {"qemu-img", "rebase", "-q", "-f", "qcow2", "-F", "qcow2", "-b", chain->back(), copy},
      kToolTimeout);
  if (!r) return r.status().with_context(cat("flattening ", copy, " onto ", chain->back(), ": "));
  return Status::ok();
}

}  // namespace

Status create_overlay(const std::string& backing, const std::string& path) {
  std::error_code ec;
  fs::path abs_backing = fs::absolute(backing, ec);
  if (ec || !fs::exists(abs_backing))
    return not_found(cat("overlay backing file ", backing, ": missing"));
  auto r = run_tool({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                     abs_backing.string(), fs::absolute(path).string()},
                    kToolTimeout);
  if (!r) return r.status().with_context(cat("creating overlay ", path, ": "));
  return Status::ok();
}

Result<CheckpointReport> save_checkpoint(Vm& vm, const std::string& dir,
                                         const ProgressFn& progress) {
  const auto t0 = Clock::now();
  std::error_code ec;
  if (fs::exists(dir, ec))
    return Status(ErrorCode::kAlreadyExists, cat("checkpoint ", dir, ": exists"));
  const std::string tmp = cat(dir, ".tmp");
  fs::remove_all(tmp, ec);
  // Not create_directories: a checkpoint folder removed meanwhile (an
  // aborted checkpoint) must not come back half-written.
  fs::create_directory(tmp, ec);
  if (ec) return not_found(cat("create ", tmp, ": ", ec.message()));
  fs::permissions(tmp, fs::perms::owner_all, ec);  // guest RAM inside (#16 defect 6)
  auto fail = [&](const Status& s) -> Status {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    return s.with_context(cat("checkpoint ", dir, ": "));
  };
  CheckpointReport report;
  report.dir = dir;
  auto saved = vm.save_state(cat(tmp, "/state.bin"), progress);
  if (!saved) return fail(saved.status());
  report.save = *saved;
  const bool ram_file = vm.config().save_ram_file;
  if (ram_file) {
    auto ram = vm.save_ram(cat(tmp, "/ram.bin"));
    if (!ram) return fail(ram.status());
    report.save.ram_file_bytes = *ram;
    fs::permissions(cat(tmp, "/ram.bin"), fs::perms::owner_read, ec);
  }
  // After the migration completed QEMU has flushed and released the image,
  // so the overlay file is exactly the disk at the stop.
  const std::string& disk = vm.config().disk;
  if (!disk.empty()) {
    const auto c0 = Clock::now();
    const std::string copy = cat(tmp, "/disk.qcow2");
    fs::copy_file(disk, copy, ec);
    if (ec) return fail(internal_error(cat("copy ", disk, ": ", ec.message())));
    if (Status s = rebase_onto_base(copy); !s) return fail(s);
    if (Status s = fsync_path(copy, false); !s) return fail(s);
    fs::permissions(cat(tmp, "/disk.qcow2"), fs::perms::owner_read, ec);
    report.disk_copy = Clock::now() - c0;
  }
  Json meta = {{"name", vm.config().name},
               {"memory_mib", vm.config().memory_mib},
               {"vcpus", vm.config().vcpus},
               {"accel", accel_name(vm.accel())},
               {"disk", !disk.empty()},
               {"state_bytes", report.save.file_bytes},
               // The RAM beside the stream (VmConfig::save_ram_file).
               {"ram_file", ram_file},
               {"ram_file_bytes", report.save.ram_file_bytes},
               {"stop_lateness_ns",
                std::chrono::duration_cast<std::chrono::nanoseconds>(vm.stop_lateness()).count()}};
  {
    std::ofstream out(cat(tmp, "/meta.json"));
    out << meta.dump(2) << "\n";
    if (!out) return fail(internal_error(cat("write ", tmp, "/meta.json")));
  }
  fs::permissions(cat(tmp, "/meta.json"), fs::perms::owner_read | fs::perms::owner_write, ec);
  if (Status s = fsync_path(cat(tmp, "/meta.json"), false); !s) return fail(s);
  if (Status s = fsync_path(tmp, true); !s) return fail(s);
  fs::rename(tmp, dir, ec);
  if (ec) return fail(internal_error(cat("rename ", tmp, " to ", dir, ": ", ec.message())));
  std::string parent = fs::absolute(dir).parent_path().string();
  AMBER_RETURN_IF_ERROR(fsync_path(parent, true));
  report.total = Clock::now() - t0;
  return report;
}

Result<std::unique_ptr<Vm>> restore_checkpoint(const std::string& dir, const VmConfig& config,
                                               RestoreReport* report) {
  std::error_code ec;
  const std::string meta_path = cat(dir, "/meta.json");
  std::ifstream in(meta_path);
  if (!in) return not_found(cat("checkpoint ", dir, ": no ", meta_path));
  Json meta = Json::parse(in, nullptr, false);
  if (meta.is_discarded() || !meta.is_object()) {
    return data_loss(cat("checkpoint ", dir, ": ", meta_path, " is not valid JSON"));
  }
  if (meta.value("memory_mib", 0) != config.memory_mib) {
    return invalid_argument(cat("checkpoint ", dir, ": saved with ", meta.value("memory_mib", 0),
                                " MiB of RAM, restore asks for ", config.memory_mib));
  }
  const bool has_disk = meta.value("disk", false);
  if (has_disk != !config.disk.empty()) {
    return invalid_argument(cat("checkpoint ", dir,
                                has_disk ? ": has a disk but" : ": has no disk but",
                                " the restore config ", has_disk ? "gives none" : "gives one"));
  }
  if (has_disk) {
    fs::remove(config.disk, ec);
    AMBER_RETURN_IF_ERROR(create_overlay(cat(dir, "/disk.qcow2"), config.disk));
  }
  const bool ram_file = meta.value("ram_file", false);
  auto vm = Vm::restore(config, cat(dir, "/state.bin"), report,
                        ram_file ? cat(dir, "/ram.bin") : std::string());
  if (!vm && has_disk) fs::remove(config.disk, ec);
  // The restored guest clock reads what it read at the stop: resume it with
  // the same offset to the network as the original would have.
  if (vm) (*vm)->set_stop_lateness(std::chrono::nanoseconds(meta.value("stop_lateness_ns", 0LL)));
  return vm;
}

}  // namespace amber::vm
