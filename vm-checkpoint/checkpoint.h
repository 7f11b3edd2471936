// A VM checkpoint on disk: one directory holding
//   state.bin    the device and RAM state (migration stream of the stopped VM)
//   disk.qcow2   the VM's overlay as it was at the stop (read-only; its
//                backing file is the shared base)
//   meta.json    what it was taken from
// A checkpoint directory exists only complete: it is built under a
// temporary name and renamed into place.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"
#include "vm-checkpoint/vm.h"

namespace amber::vm {

// A new qcow2 `path` whose backing file is `backing` (never written through
// it). Paths are made absolute so the overlay works from any directory.
Status create_overlay(const std::string& backing, const std::string& path);

struct CheckpointReport {
  std::string dir;
  SaveReport save;
  Clock::duration disk_copy{};
  Clock::duration total{};
};

// Checkpoints the stopped `vm` into `dir`, which must not exist yet.
Result<CheckpointReport> save_checkpoint(Vm& vm, const std::string& dir,
                                         const ProgressFn& progress = {});

// Restores the checkpoint in `dir` with `config` (its command line must
// match the one saved, except paths). If the checkpoint has a disk, a fresh
// overlay over it is created at `config.disk`, so every restore ("branch")
// writes its own disk. The VM is left paused.
Result<std::unique_ptr<Vm>> restore_checkpoint(const std::string& dir, const VmConfig& config,
                                               RestoreReport* report = nullptr);

}  // namespace amber::vm
