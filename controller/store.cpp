#include "controller/store.h"

#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/message_differencer.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/strings.h"
#include "controller/topology.h"
#include "rpc/files.h"

namespace amber::controller {
namespace fs = std::filesystem;
namespace {

constexpr const char* kManifest = "MANIFEST";
constexpr const char* kState = "STATE";
constexpr const char* kLock = "LOCK";

Result<std::string> read_text(const std::string& path) {
  std::ifstream in(path);
  if (!in) return not_found(cat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string id_string(uint32_t n) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "c%04u", n);
  return buf;
}

// The number of a checkpoint folder's name ("c0007": 7), 0 if it is none.
uint32_t id_number(const std::string& name) {
  if (name.size() < 2 || name[0] != 'c' || name.size() > 10) return 0;
  uint64_t n = 0;
  for (size_t i = 1; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return 0;
    n = n * 10 + uint64_t(name[i] - '0');
  }
  return n <= UINT32_MAX ? uint32_t(n) : 0;
}

// The number of a branch made by a restore ("b3": 3), 0 for "main".
uint32_t branch_number(const std::string& name) {
  return name.size() >= 2 && name[0] == 'b' ? id_number(cat("c", name.substr(1))) : 0;
}

// Removes checkpoint folders without a MANIFEST: what a failed checkpoint
// (or an agent still writing after the controller gave up) left behind.
void sweep_partial(const std::string& dir, std::vector<std::string>* removed) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename();
    if (id_number(name) == 0) continue;
    if (fs::exists(entry.path() / kManifest)) continue;
    std::error_code rm;
    fs::remove_all(entry.path(), rm);
    if (removed) removed->push_back(name);
  }
}

// STATE can be missing (lost, never copied) or older than the folders (a
// backup put back): what is on disk counts too, so that no id and no
// branch name is ever handed out twice. Returns what changed, for the log.
std::vector<std::string> reconcile_with_disk(const std::string& dir, bool had_state,
                                             ExperimentState* state) {
  std::vector<std::string> notes;
  uint32_t max_id = 0;
  uint32_t max_branch = 0;
  std::vector<Manifest> manifests;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename();
    const uint32_t n = id_number(name);
    if (n == 0) continue;
    max_id = std::max(max_id, n);
    auto text = read_text(cat(dir, "/", name, "/", kManifest));
    Manifest m;
    if (!text || !google::protobuf::TextFormat::ParseFromString(*text, &m)) continue;
    max_branch = std::max(max_branch, branch_number(m.branch()));
    if (m.id() == name) manifests.push_back(std::move(m));
  }
  if (max_id >= state->next_id()) {
    notes.push_back(cat("store ", dir, ": ",
                        had_state ? "STATE is older than the folders" : "no STATE",
                        ": ids continue after ", id_string(max_id), " (on disk)"));
    state->set_next_id(max_id + 1);
  }
  if (max_branch >= state->next_branch()) state->set_next_branch(max_branch + 1);
  if (!state->restoring().empty() &&
      std::none_of(manifests.begin(), manifests.end(),
                   [&](const Manifest& m) { return m.id() == state->restoring(); })) {
    notes.push_back(cat("store ", dir, ": STATE says a restore of ", state->restoring(),
                        " was interrupted, but that checkpoint is gone: restore another"));
    state->clear_restoring();
    state->set_swapped_out(true);
  }
  if (!had_state) {
    // Where the timeline stood: the newest checkpoint that can be restored.
    std::sort(manifests.begin(), manifests.end(),
              [](const Manifest& a, const Manifest& b) { return a.id() < b.id(); });
    for (auto m = manifests.rbegin(); m != manifests.rend(); ++m) {
      if (m->naive()) continue;
      state->set_head(m->id());
      state->set_branch(m->branch());
      state->set_swapped_out(m->swapped_out());
      *state->mutable_epoch_virtual_ns() = m->epoch_virtual_ns();
      *state->mutable_clock_id() = m->clock_id();
      notes.push_back(cat("store ", dir, ": no STATE: head ", m->id(), " on branch ", m->branch(),
                          m->swapped_out() ? " (swapped out)" : "", ", from its manifest"));
      break;
    }
  }
  return notes;
}

}  // namespace

CheckpointStore::~CheckpointStore() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

Result<std::unique_ptr<CheckpointStore>> CheckpointStore::open(const std::string& root,
                                                               const std::string& experiment,
                                                               std::vector<std::string>* removed,
                                                               std::vector<std::string>* notes) {
  const std::string dir = cat(root, "/", experiment);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return unavailable(cat("store ", dir, ": cannot create: ", ec.message()));
  // Checkpoints hold guest RAM: the owner's only (#16 defect 6).
  fs::permissions(dir, fs::perms::owner_all, ec);
  if (ec) return unavailable(cat("store ", dir, ": cannot restrict to its owner: ", ec.message()));
  if (::access(dir.c_str(), W_OK) != 0) {
    return failed_precondition(cat("store ", dir, ": not writable"));
  }
  // One controller per store: another one would sweep this one's
  // checkpoint in progress and hand out the same ids. The lock is the
  // open file's: it goes when this process does, however it ends.
  const std::string lock_path = cat(dir, "/", kLock);
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd < 0) {
    return unavailable(cat("store ", lock_path, ": cannot open: ", std::strerror(errno)));
  }
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd);
    return failed_precondition(cat(
        "store ", dir, ": ",
        err == EWOULDBLOCK ? "in use by another controller (it holds LOCK)" : std::strerror(err)));
  }
  std::unique_ptr<CheckpointStore> store(new CheckpointStore(dir, lock_fd));
  ExperimentState state;
  const std::string state_path = cat(dir, "/", kState);
  const bool had_state = fs::exists(state_path, ec);
  if (had_state) {
    auto text = read_text(state_path);
    if (!text) return text.status();
    if (!google::protobuf::TextFormat::ParseFromString(*text, &state)) {
      return data_loss(cat(state_path,
                           ": not an ExperimentState; the store was not written by "
                           "this version of amber, or the file is damaged"));
    }
  } else {
    state.set_branch("main");
    state.set_next_id(1);
    state.set_next_branch(2);
  }
  const ExperimentState read = state;
  std::vector<std::string> changes = reconcile_with_disk(dir, had_state, &state);
  if (notes) notes->insert(notes->end(), changes.begin(), changes.end());
  sweep_partial(dir, removed);
  store->state_ = state;
  if (!had_state || !google::protobuf::util::MessageDifferencer::Equals(read, state)) {
    AMBER_RETURN_IF_ERROR(store->write_state(state));
  }
  return store;
}

ExperimentState CheckpointStore::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

Status CheckpointStore::write_state(const ExperimentState& state) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(state, &text);
  return write_file_atomically(cat(dir_, "/", kState), text);
}

Result<std::string> CheckpointStore::begin_checkpoint() {
  std::lock_guard lock(mutex_);
  sweep_partial(dir_, nullptr);
  // A folder that is there already belongs to someone else (a copy put
  // into the store): never write into it, nor remove it on a failure.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    ExperimentState next = state_;
    const std::string id = id_string(next.next_id());
    next.set_next_id(next.next_id() + 1);
    AMBER_RETURN_IF_ERROR(write_state(next));
    state_ = next;
    const std::string path = path_of(id);
    if (::mkdir(path.c_str(), 0700) != 0) {
      if (errno == EEXIST) continue;
      return unavailable(cat("store ", path, ": cannot create: ", std::strerror(errno)));
    }
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, ec);
    for (const char* sub : {"vms", "delaynodes"}) {
      fs::create_directory(cat(path, "/", sub), ec);
      if (!ec) fs::permissions(cat(path, "/", sub), fs::perms::owner_all, ec);
      if (ec) {
        fs::remove_all(path, ec);
        return unavailable(cat("store ", path, "/", sub, ": cannot create: ", ec.message()));
      }
    }
    return id;
  }
  return unavailable(cat("store ", dir_, ": no free checkpoint id after 1000 attempts"));
}

Status CheckpointStore::commit(const Manifest& manifest) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(manifest, &text);
  AMBER_RETURN_IF_ERROR(write_file_atomically(cat(path_of(manifest.id()), "/", kManifest), text));
  std::lock_guard lock(mutex_);
  if (manifest.naive()) return Status::ok();
  ExperimentState next = state_;
  next.set_head(manifest.id());
  next.set_swapped_out(manifest.swapped_out());
  AMBER_RETURN_IF_ERROR(write_state(next));
  state_ = next;
  return Status::ok();
}

void CheckpointStore::discard(const std::string& id) {
  std::error_code ec;
  fs::remove_all(path_of(id), ec);
}

Result<Manifest> CheckpointStore::manifest(const std::string& id) const {
  if (!is_plain_name(id)) return invalid_argument(cat("checkpoint id '", id, "': not an id"));
  const std::string path = cat(path_of(id), "/", kManifest);
  auto text = read_text(path);
  if (!text) {
    return not_found(cat("checkpoint '", id, "': no such checkpoint in ", dir_));
  }
  Manifest m;
  if (!google::protobuf::TextFormat::ParseFromString(*text, &m)) {
    return data_loss(cat(path, ": damaged manifest"));
  }
  return m;
}

std::vector<Manifest> CheckpointStore::list() const {
  std::vector<Manifest> all;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (!entry.is_directory()) continue;
    auto m = manifest(entry.path().filename());
    if (m) all.push_back(*std::move(m));
  }
  std::sort(all.begin(), all.end(),
            [](const Manifest& a, const Manifest& b) { return a.id() < b.id(); });
  return all;
}

Result<uint64_t> CheckpointStore::remove(const std::string& id) {
  auto m = manifest(id);
  if (!m) return m.status();
  const uint64_t bytes = tree_bytes(path_of(id));
  // The MANIFEST goes first: a crash halfway leaves a partial folder, which
  // the next open removes, never a manifest naming missing files.
  std::error_code ec;
  fs::remove(cat(path_of(id), "/", kManifest), ec);
  if (ec) return unavailable(cat("checkpoint '", id, "': cannot remove: ", ec.message()));
  // Durable before the folder goes: a manifest back after a power cut
  // would name files that are gone (#16 defect 9).
  AMBER_RETURN_IF_ERROR(fsync_directory(path_of(id)).with_context(cat("checkpoint '", id, "': ")));
  fs::remove_all(path_of(id), ec);
  if (ec) return unavailable(cat("checkpoint '", id, "': cannot remove: ", ec.message()));
  AMBER_RETURN_IF_ERROR(fsync_directory(dir_).with_context(cat("checkpoint '", id, "': ")));
  return bytes;
}

Result<std::string> CheckpointStore::restored(const std::string& id) {
  auto m = manifest(id);
  if (!m) return m.status();
  std::lock_guard lock(mutex_);
  ExperimentState next = state_;
  bool latest_of_branch = true;
  for (const Manifest& other : list()) {
    if (other.branch() == m->branch() && other.id() > id && !other.naive())
      latest_of_branch = false;
  }
  if (!(latest_of_branch && m->branch() == state_.branch())) {
    next.set_branch(cat("b", next.next_branch()));
    next.set_next_branch(next.next_branch() + 1);
  }
  next.set_head(id);
  next.set_swapped_out(false);
  next.clear_restoring();
  AMBER_RETURN_IF_ERROR(write_state(next));
  state_ = next;
  return next.branch();
}

Status CheckpointStore::set_epochs(const std::map<std::string, int64_t>& epochs,
                                   const std::map<std::string, uint64_t>& clock_ids) {
  std::lock_guard lock(mutex_);
  ExperimentState next = state_;
  for (const auto& [node, ns] : epochs) (*next.mutable_epoch_virtual_ns())[node] = ns;
  for (const auto& [node, id] : clock_ids) {
    if (id != 0) {
      (*next.mutable_clock_id())[node] = id;
    } else {
      next.mutable_clock_id()->erase(node);
    }
  }
  AMBER_RETURN_IF_ERROR(write_state(next));
  state_ = next;
  return Status::ok();
}

Status CheckpointStore::set_swapped_out(bool swapped_out) {
  std::lock_guard lock(mutex_);
  ExperimentState next = state_;
  next.set_swapped_out(swapped_out);
  next.clear_restoring();
  AMBER_RETURN_IF_ERROR(write_state(next));
  state_ = next;
  return Status::ok();
}

Status CheckpointStore::set_restoring(const std::string& id) {
  std::lock_guard lock(mutex_);
  ExperimentState next = state_;
  next.set_restoring(id);
  AMBER_RETURN_IF_ERROR(write_state(next));
  state_ = next;
  return Status::ok();
}

}  // namespace amber::controller
