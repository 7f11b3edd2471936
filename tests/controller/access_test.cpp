// Authorization on the agents (#16 defect 5): the rule of every RPC, the
// roles, and paths confined to a folder on real files and symlinks.
#include "rpc/access.h"

#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "proto/agent.pb.h"
#include "proto/vmhost.pb.h"

namespace amber::controller {
namespace {

namespace fs = std::filesystem;

const char* kNode = "amber.agent.DelayNodeAgent";
const char* kHost = "amber.vmhost.VmHostAgent";

TEST(Access, EveryMethodOfBothAgentsHasARule) {
  // Through a message of each file: that links the file's descriptors in.
  const google::protobuf::ServiceDescriptor* services[] = {
      agent::GetStatsRequest::descriptor()->file()->FindServiceByName("DelayNodeAgent"),
      vmhost::VmHost::descriptor()->file()->FindServiceByName("VmHostAgent")};
  for (const auto* service : services) {
    ASSERT_NE(service, nullptr);
    const std::string& name = service->full_name();
    for (int i = 0; i < service->method_count(); ++i) {
      EXPECT_TRUE(rpc_access(name, service->method(i)->name()).has_value())
          << name << "/" << service->method(i)->name() << " has no access rule";
    }
  }
  EXPECT_FALSE(rpc_access(kNode, "Unheard").has_value());
  EXPECT_FALSE(rpc_access(kHost, "GetStats").has_value());  // the node's, not the host's
}

TEST(Access, ReadOnlyCallsAreTheOnlyOnesForOperators) {
  EXPECT_EQ(*rpc_access(kNode, "GetStats"), Access::kRead);
  EXPECT_EQ(*rpc_access(kNode, "ListFrames"), Access::kRead);
  EXPECT_EQ(*rpc_access(kHost, "GetStatus"), Access::kRead);
  EXPECT_EQ(*rpc_access(kHost, "WatchConsole"), Access::kRead);
  EXPECT_EQ(*rpc_access(kNode, "SetLinkParams"), Access::kChangeLinks);
  EXPECT_EQ(*rpc_access(kNode, "ExportPcap"), Access::kExport);
  for (const char* m : {"Prepare", "Freeze", "Thaw", "Shift", "Hold", "Save", "Restore",
                        "EditFrames", "WatchFrames"}) {
    EXPECT_EQ(*rpc_access(kNode, m), Access::kControl) << m;
  }
  for (const char* m : {"Prepare", "StopAt", "Save", "ResumeAt", "Shutdown", "Restore"}) {
    EXPECT_EQ(*rpc_access(kHost, m), Access::kControl) << m;
  }
}

AccessPolicy tls_policy() {
  AccessPolicy p;
  p.tls = true;
  p.controllers = {"ctl"};
  p.operators = {"alice"};
  return p;
}

Authorizer make(const char* service, AccessPolicy policy) {
  auto a = Authorizer::create(service, std::move(policy));
  EXPECT_TRUE(a.is_ok()) << a.status().to_string();
  return *std::move(a);
}

TEST(Access, TheControllerMayCallEverything) {
  const Authorizer a = make(kNode, tls_policy());
  EXPECT_EQ(a.role_of("ctl"), Role::kController);
  for (const char* m : {"Freeze", "Save", "Restore", "SetLinkParams", "ExportPcap", "GetStats"}) {
    EXPECT_TRUE(a.check("ctl", m).is_ok()) << m;
  }
}

TEST(Access, OperatorsReadButNeitherControlNorChangeByDefault) {
  const Authorizer a = make(kNode, tls_policy());
  EXPECT_EQ(a.role_of("alice"), Role::kOperator);
  EXPECT_TRUE(a.check("alice", "GetStats").is_ok());
  EXPECT_TRUE(a.check("alice", "ListFrames").is_ok());
  for (const char* m : {"Freeze", "Thaw", "Save", "Restore", "EditFrames", "WatchFrames", "Prepare",
                        "Hold", "Shift"}) {
    Status s = a.check("alice", m);
    EXPECT_EQ(s.code(), ErrorCode::kPermissionDenied) << m;
    EXPECT_NE(s.message().find(m), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("needs the controller role; certificate 'alice' has the operator"),
              std::string::npos)
        << s.message();
  }
  Status links = a.check("alice", "SetLinkParams");
  EXPECT_EQ(links.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(links.message().find("--operators-may-change-links"), std::string::npos);
  Status pcap = a.check("alice", "ExportPcap");
  EXPECT_EQ(pcap.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(pcap.message().find("--export-dir"), std::string::npos);
}

TEST(Access, OperatorsChangeLinksAndExportWhereTheAgentAllowsIt) {
  AccessPolicy p = tls_policy();
  p.operators_may_change_links = true;
  p.operators_may_export = true;
  const Authorizer a = make(kNode, p);
  EXPECT_TRUE(a.check("alice", "SetLinkParams").is_ok());
  EXPECT_TRUE(a.check("alice", "ExportPcap").is_ok());
  EXPECT_EQ(a.check("alice", "Save").code(), ErrorCode::kPermissionDenied);
}

TEST(Access, AnyOtherCertificateIsRefusedEverything) {
  const Authorizer a = make(kHost, tls_policy());
  for (const char* m : {"GetStatus", "WatchConsole", "Save", "StopAt"}) {
    Status s = a.check("mallory", m);
    EXPECT_EQ(s.code(), ErrorCode::kPermissionDenied) << m;
    EXPECT_NE(s.message().find("'mallory' has no role"), std::string::npos) << s.message();
  }
  EXPECT_EQ(a.check(std::nullopt, "GetStatus").code(), ErrorCode::kPermissionDenied);
  // Names match whole, case and all.
  EXPECT_EQ(a.role_of("Ctl"), Role::kNone);
  EXPECT_EQ(a.role_of("ctl2"), Role::kNone);
  EXPECT_EQ(a.check("ctl", "NoSuchCall").code(), ErrorCode::kPermissionDenied);
}

TEST(Access, TlsWithoutControllerIdentityDefaultsToTheNameController) {
  AccessPolicy p;
  p.tls = true;
  const Authorizer a = make(kHost, p);
  EXPECT_EQ(a.role_of(std::string(kDefaultControllerIdentity)), Role::kController);
  EXPECT_EQ(a.role_of("h1"), Role::kNone);
  EXPECT_NE(a.describe().find("the default"), std::string::npos) << a.describe();
}

TEST(Access, PlainTextCallersAreLocalAndHaveTheControllerRole) {
  const Authorizer a = make(kNode, AccessPolicy{});
  EXPECT_EQ(a.role_of(std::nullopt), Role::kController);
  EXPECT_TRUE(a.check(std::nullopt, "Save").is_ok());
  EXPECT_NE(a.describe().find("plain text"), std::string::npos);
}

TEST(Access, ANameWithTwoRolesOrNoNameIsRefused) {
  AccessPolicy both = tls_policy();
  both.operators.push_back("ctl");
  EXPECT_EQ(Authorizer::create(kNode, both).status().code(), ErrorCode::kInvalidArgument);
  AccessPolicy empty = tls_policy();
  empty.operators.push_back("");
  EXPECT_EQ(Authorizer::create(kNode, empty).status().code(), ErrorCode::kInvalidArgument);
}

// A folder with a store inside and one beside it.
class PathRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/amb-access-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    store_ = base_ + "/store";
    fs::create_directories(store_ + "/e2e/c0001");
    fs::create_directories(base_ + "/outside");
    fs::create_directories(base_ + "/store2");
    std::ofstream(base_ + "/outside/secret") << "x";
  }
  void TearDown() override { fs::remove_all(base_); }

  PathRoot root() const { return PathRoot(store_, "store", "--store"); }
  void expect_refused(const std::string& path, const std::string& says) {
    auto r = root().confine(path);
    ASSERT_FALSE(r.is_ok()) << path << " was let through as " << *r;
    EXPECT_EQ(r.status().code(), ErrorCode::kPermissionDenied) << r.status().to_string();
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(says), std::string::npos) << r.status().message();
  }

  std::string base_, store_;
};

TEST_F(PathRootTest, PathsInsideAreResolved) {
  auto file = root().confine(store_ + "/e2e/c0001/delaynodes/dn1.img");  // not there yet
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  EXPECT_EQ(*file, fs::canonical(store_).string() + "/e2e/c0001/delaynodes/dn1.img");
  auto dir = root().confine(store_ + "/e2e/./c0001/");
  ASSERT_TRUE(dir.is_ok()) << dir.status().to_string();
  EXPECT_EQ(*dir, fs::canonical(store_ + "/e2e/c0001").string());
  EXPECT_TRUE(root().confine(store_).is_ok());
  // A symlink that stays inside is fine.
  fs::create_directory_symlink(store_ + "/e2e", store_ + "/latest");
  auto linked = root().confine(store_ + "/latest/c0001/vms");
  ASSERT_TRUE(linked.is_ok()) << linked.status().to_string();
  EXPECT_EQ(*linked, fs::canonical(store_ + "/e2e/c0001").string() + "/vms");
}

TEST_F(PathRootTest, TheStoreItselfMayBeASymlink) {
  fs::create_directory_symlink(store_, base_ + "/store-link");
  PathRoot linked(base_ + "/store-link", "store", "--store");
  EXPECT_TRUE(linked.confine(base_ + "/store-link/e2e/x.img").is_ok());
  EXPECT_TRUE(linked.confine(store_ + "/e2e/x.img").is_ok());
  EXPECT_FALSE(linked.confine(base_ + "/outside/x.img").is_ok());
}

TEST_F(PathRootTest, DotDotIsRefusedEvenWhenItWouldStayInside) {
  expect_refused(store_ + "/../outside/x.img", "'..'");
  expect_refused(store_ + "/e2e/../e2e/x.img", "'..'");
}

TEST_F(PathRootTest, AbsolutePathsElsewhereAreRefused) {
  expect_refused("/etc/cron.d/amber", "is outside the store " + store_ + " (--store)");
  expect_refused(base_ + "/outside/secret", "is outside");
  // A sibling whose name starts like the store is not inside it.
  expect_refused(base_ + "/store2/x.img", "is outside");
  expect_refused(base_, "is outside");
}

TEST_F(PathRootTest, SymlinksThatLeadOutAreRefused) {
  fs::create_directory_symlink(base_ + "/outside", store_ + "/e2e/out");
  expect_refused(store_ + "/e2e/out/x.img", "with symlinks resolved");
  fs::create_symlink(base_ + "/outside/secret", store_ + "/e2e/c0001/dn1.img");
  expect_refused(store_ + "/e2e/c0001/dn1.img", "is outside");
  // Dangling: a write through it would create the file outside.
  fs::create_symlink(base_ + "/outside/new", store_ + "/e2e/c0001/dn2.img");
  expect_refused(store_ + "/e2e/c0001/dn2.img", "cannot be resolved");
  fs::create_symlink("../../../outside", store_ + "/e2e/c0001/rel");
  expect_refused(store_ + "/e2e/c0001/rel/x", "is outside");
}

TEST_F(PathRootTest, ARelativeFolderIsTakenFromTheWorkingDirectory) {
  const fs::path cwd = fs::current_path();
  fs::current_path(base_);
  PathRoot relative("store/", "store", "--store");
  fs::current_path(cwd);
  EXPECT_EQ(relative.folder(), store_);
  EXPECT_TRUE(relative.confine(store_ + "/e2e/x.img").is_ok());
}

TEST_F(PathRootTest, RelativePathsAndNoFolderAreRefused) {
  expect_refused("e2e/x.img", "not an absolute path");
  PathRoot none("", "store", "--store");
  auto r = none.confine(store_ + "/x.img");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(r.status().message().find("no store is configured on this agent (--store)"),
            std::string::npos)
      << r.status().message();
}

}  // namespace
}  // namespace amber::controller
