// The checkpoint store of one experiment: <store>/<experiment>/
//   LOCK                 flock()ed by the one controller using the store
//   STATE                branch, head, id counters (ExperimentState, text)
//   c0007/MANIFEST       written last, atomically: a checkpoint exists iff
//                        its MANIFEST does
//   c0007/vms/<vm>/      VM states and disk layers (written by VM hosts)
//   c0007/delaynodes/<id>.img  delay-node images
// Folders without a MANIFEST are partial checkpoints: removed when the
// store is opened and when a checkpoint fails. Ids are never reused (STATE
// and the folders on disk both count, and an existing folder is never
// taken), so branches cannot overwrite each other.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "proto/controller.pb.h"
#include "rpc/files.h"

namespace amber::controller {

class CheckpointStore {
 public:
  // Creates <root>/<experiment>/ if needed, locks it (refused while
  // another controller holds it), removes partial checkpoints (named in
  // `removed`), reads STATE and reconciles it with the folders on disk
  // (what it corrected in `notes`).
  static Result<std::unique_ptr<CheckpointStore>> open(const std::string& root,
                                                       const std::string& experiment,
                                                       std::vector<std::string>* removed,
                                                       std::vector<std::string>* notes = nullptr);
  ~CheckpointStore();
  CheckpointStore(const CheckpointStore&) = delete;
  CheckpointStore& operator=(const CheckpointStore&) = delete;

  const std::string& dir() const { return dir_; }
  std::string path_of(const std::string& id) const { return dir_ + "/" + id; }

  ExperimentState state() const;
  // Reserves the next id (persisted first: a crash never reuses it) and
  // creates its folder with vms/ and delaynodes/ inside; an id whose
  // folder exists is skipped.
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
  // Both end a restore that began (set_restoring).
  Result<std::string> restored(const std::string& id);
  Status set_swapped_out(bool swapped_out);
  // A restore of `id` is about to touch the experiment ("": it did not,
  // after all): STATE says so until restored() or set_swapped_out().
  Status set_restoring(const std::string& id);
  // Records when experiment time 0 was on these delay nodes' virtual
  // clocks (node id -> virtual ns) and which timeline each clock follows
  // (node id -> clock id; 0: not known), beside those recorded before.
  Status set_epochs(const std::map<std::string, int64_t>& epochs,
                    const std::map<std::string, uint64_t>& clock_ids);

 private:
  CheckpointStore(std::string dir, int lock_fd) : dir_(std::move(dir)), lock_fd_(lock_fd) {}
  Status write_state(const ExperimentState& state);

  const std::string dir_;
  const int lock_fd_;  // holds the flock
  mutable std::mutex mutex_;
  ExperimentState state_;
};

}  // namespace amber::controller
