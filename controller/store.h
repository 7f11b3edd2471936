// The checkpoint store of one experiment: <store>/<experiment>/
//   STATE                branch, head, id counters (ExperimentState, text)
//   c0007/MANIFEST       written last, atomically: a checkpoint exists iff
//                        its MANIFEST does
//   c0007/vms/<vm>/      VM states and disk layers (written by VM hosts)
//   c0007/delaynodes/<id>.img  delay-node images
// Folders without a MANIFEST are partial checkpoints: removed when the
// store is opened and when a checkpoint fails. Ids are never reused, so
// branches cannot overwrite each other.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "controller/files.h"
#include "proto/controller.pb.h"

namespace amber::controller {

class CheckpointStore {
 public:
  // Creates <root>/<experiment>/ if needed, removes partial checkpoints
  // (named in `removed`), reads STATE.
  static Result<std::unique_ptr<CheckpointStore>> open(const std::string& root,
                                                       const std::string& experiment,
                                                       std::vector<std::string>* removed);

  const std::string& dir() const { return dir_; }
  std::string path_of(const std::string& id) const { return dir_ + "/" + id; }

  ExperimentState state() const;
  // Reserves the next id (persisted first: a crash never reuses it) and
  // creates its folder with vms/ and delaynodes/ inside.
  Result<std::string> begin_checkpoint();
  // Writes the MANIFEST atomically, then STATE (head = id, swapped_out).
  Status commit(const Manifest& manifest);
  // Removes a partial checkpoint's folder.
  void discard(const std::string& id);

  Result<Manifest> manifest(const std::string& id) const;
  // Every complete checkpoint, oldest first.
  std::vector<Manifest> list() const;
  // Removes a complete checkpoint; returns the bytes freed.
  Result<uint64_t> remove(const std::string& id);

  // After restoring `id`: continues the current branch when `id` is its
  // latest checkpoint, else starts a new branch from it. Returns the branch.
  Result<std::string> restored(const std::string& id);
  Status set_swapped_out(bool swapped_out);

 private:
  CheckpointStore(std::string dir, ExperimentState state)
      : dir_(std::move(dir)), state_(std::move(state)) {}
  Status write_state(const ExperimentState& state);

  const std::string dir_;
  mutable std::mutex mutex_;
  ExperimentState state_;
};

}  // namespace amber::controller
