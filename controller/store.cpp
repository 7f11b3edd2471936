#include "controller/store.h"

#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/strings.h"
#include "controller/files.h"
#include "controller/topology.h"

namespace amber::controller {
namespace fs = std::filesystem;
namespace {

constexpr const char* kManifest = "MANIFEST";
constexpr const char* kState = "STATE";

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

// Removes checkpoint folders without a MANIFEST: what a failed checkpoint
// (or an agent still writing after the controller gave up) left behind.
void sweep_partial(const std::string& dir, std::vector<std::string>* removed) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename();
    if (name.size() < 2 || name[0] != 'c') continue;
    if (fs::exists(entry.path() / kManifest)) continue;
    std::error_code rm;
    fs::remove_all(entry.path(), rm);
    if (removed) removed->push_back(name);
  }
}

}  // namespace

Result<std::unique_ptr<CheckpointStore>> CheckpointStore::open(const std::string& root,
                                                               const std::string& experiment,
                                                               std::vector<std::string>* removed) {
  const std::string dir = cat(root, "/", experiment);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return unavailable(cat("store ", dir, ": cannot create: ", ec.message()));
  if (::access(dir.c_str(), W_OK) != 0) {
    return failed_precondition(cat("store ", dir, ": not writable"));
  }
  ExperimentState state;
  const std::string state_path = cat(dir, "/", kState);
  if (fs::exists(state_path, ec)) {
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
  sweep_partial(dir, removed);
  std::unique_ptr<CheckpointStore> store(new CheckpointStore(dir, state));
  if (!fs::exists(state_path)) AMBER_RETURN_IF_ERROR(store->write_state(state));
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
  ExperimentState next = state_;
  const std::string id = id_string(next.next_id());
  next.set_next_id(next.next_id() + 1);
  AMBER_RETURN_IF_ERROR(write_state(next));
  state_ = next;
  std::error_code ec;
  for (const char* sub : {"vms", "delaynodes"}) {
    fs::create_directories(cat(dir_, "/", id, "/", sub), ec);
    if (ec) {
      fs::remove_all(cat(dir_, "/", id), ec);
      return unavailable(cat("store ", dir_, "/", id, ": cannot create: ", ec.message()));
    }
  }
  return id;
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
  fs::remove_all(path_of(id), ec);
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
  AMBER_RETURN_IF_ERROR(write_state(next));
  state_ = next;
  return next.branch();
}

Status CheckpointStore::set_swapped_out(bool swapped_out) {
  std::lock_guard lock(mutex_);
  ExperimentState next = state_;
  next.set_swapped_out(swapped_out);
  AMBER_RETURN_IF_ERROR(write_state(next));
  state_ = next;
  return Status::ok();
}

}  // namespace amber::controller
