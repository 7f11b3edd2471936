// Loss models over long runs with fixed seeds: observed rates and burst
// statistics against the values the model's definition gives.
#include <gtest/gtest.h>

#include <array>
#include <cmath>

#include "link-emulator/loss_process.h"
#include "link-emulator/pipe.h"
#include "link-emulator/rng.h"

namespace amber::link {
namespace {

constexpr size_t kFrames = 2'000'000;

struct BurstStats {
  double loss_rate;
  double mean_burst;  // mean run length of consecutive losses
};

BurstStats observe(const LossConfig& config, uint64_t seed) {
  LossProcess loss(config);
  Rng rng(seed);
  size_t lost = 0, bursts = 0;
  bool previous = false;
  for (size_t i = 0; i < kFrames; ++i) {
    bool l = loss.lose(rng);
    lost += l;
    if (l && !previous) ++bursts;
    previous = l;
  }
  return {double(lost) / kFrames, bursts ? double(lost) / bursts : 0.0};
}

TEST(Loss, RandomLossConvergesToItsProbability) {
  for (double p : {0.001, 0.01, 0.1, 0.5}) {
    BurstStats s = observe(RandomLoss{p}, 1234);
    EXPECT_NEAR(s.loss_rate, p, 4 * std::sqrt(p * (1 - p) / kFrames)) << "p=" << p;
  }
}

TEST(Loss, ProbabilityZeroAndOneAreExact) {
  EXPECT_EQ(observe(RandomLoss{0.0}, 1).loss_rate, 0.0);
  EXPECT_EQ(observe(RandomLoss{1.0}, 1).loss_rate, 1.0);
}

TEST(Loss, GilbertElliottBurstsHaveTheModelsLengthAndRate) {
  // Pure Gilbert (bad state always loses, good never): bursts are the bad
  // sojourns, geometric with mean 1/r; the loss rate is p / (p + r).
  const double p = 0.01, r = 0.25;
  BurstStats s = observe(GilbertElliottLoss{p, r, 1.0, 0.0}, 99);
  EXPECT_NEAR(s.loss_rate, p / (p + r), 0.002);
  EXPECT_NEAR(s.mean_burst, 1 / r, 0.1);
  // Compared with random loss of the same rate, the losses come in bursts.
  BurstStats flat = observe(RandomLoss{p / (p + r)}, 99);
  EXPECT_LT(flat.mean_burst, 1.1);
}

TEST(Loss, GilbertElliottWithLossInBothStates) {
  const double p = 0.05, r = 0.2, bad = 0.6, good = 0.01;
  BurstStats s = observe(GilbertElliottLoss{p, r, bad, good}, 5);
  const double pi_bad = p / (p + r);
  EXPECT_NEAR(s.loss_rate, pi_bad * bad + (1 - pi_bad) * good, 0.002);
}

// Stationary distribution of the 4-state chain, by power iteration of the
// transition matrix written out from the model's definition.
std::array<double, 5> markov_stationary(const MarkovLoss& m) {
  double P[5][5] = {};
  P[1][3] = m.p13, P[1][4] = m.p14, P[1][1] = 1 - m.p13 - m.p14;
  P[2][3] = m.p23, P[2][2] = 1 - m.p23;
  P[3][1] = m.p31, P[3][2] = m.p32, P[3][3] = 1 - m.p31 - m.p32;
  P[4][1] = 1;
  std::array<double, 5> pi{0, 1, 0, 0, 0};
  for (int it = 0; it < 100'000; ++it) {
    std::array<double, 5> next{};
    for (int i = 1; i <= 4; ++i)
      for (int j = 1; j <= 4; ++j) next[j] += pi[i] * P[i][j];
    pi = next;
  }
  return pi;
}

TEST(Loss, MarkovFourStateLossRateMatchesItsStationaryDistribution) {
  MarkovLoss m{0.02, 0.3, 0.4, 0.1, 0.01};
  auto pi = markov_stationary(m);
  BurstStats s = observe(m, 77);
  EXPECT_NEAR(s.loss_rate, pi[3] + pi[4], 0.003);
  EXPECT_GT(s.mean_burst, 1.2);  // state 3 makes bursts
}

TEST(Loss, LossModelStateIsPartOfTheFuture) {
  // Two processes with the same RNG state but different Markov states
  // decide differently; restoring the state makes them agree.
  GilbertElliottLoss ge{0.1, 0.1, 1.0, 0.0};
  LossProcess a(ge), b(ge);
  Rng ra(3), rb(3);
  for (int i = 0; i < 1000; ++i) a.lose(ra);
  rb.set_state(ra.state());
  b.set_state(a.state());
  for (int i = 0; i < 10'000; ++i) ASSERT_EQ(a.lose(ra), b.lose(rb));
}

TEST(Rng, SavedStateReproducesTheSequence) {
  Rng rng(2024);
  for (int i = 0; i < 100; ++i) rng.next();
  Rng::State saved = rng.state();
  std::vector<uint64_t> first;
  for (int i = 0; i < 1000; ++i) first.push_back(rng.next());
  Rng other(1);
  other.set_state(saved);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(other.next(), first[i]);
}

TEST(Rng, SeedsGiveDifferentStreamsAndTheSameSeedTheSameOne) {
  Rng a(1), b(1), c(2);
  uint64_t x = a.next();
  EXPECT_EQ(x, b.next());
  EXPECT_NE(x, c.next());
}

TEST(Rng, BelowStaysInRange) {
  Rng rng(5);
  for (int i = 0; i < 100'000; ++i) ASSERT_LT(rng.below(12'000), 12'000u);
}

}  // namespace
}  // namespace amber::link
