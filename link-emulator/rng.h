// The per-pipe deterministic random generator: xoshiro256** (Blackman and
// Vigna), seeded through splitmix64. Its whole state is four words that a
// checkpoint saves and restores, so a restored pipe makes the same future
// loss, jitter and corruption decisions as the original would have.
#pragma once

#include <array>
#include <cstdint>

namespace amber::link {

class Rng {
 public:
  using State = std::array<uint64_t, 4>;

  explicit Rng(uint64_t seed = 1) { reseed(seed); }

  void reseed(uint64_t seed) {
    for (uint64_t& word : state_) word = splitmix64(seed);
  }

  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, bound) without modulo bias worth speaking of (Lemire's
  // multiply-shift; the bias is below 2^-32 for the bounds we use).
  uint64_t below(uint64_t bound) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * bound) >> 64);
  }

  // Uniform in [0, 1) with 53 bits.
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  const State& state() const { return state_; }
  void set_state(const State& state) { state_ = state; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  State state_{};
};

// A probability as an integer threshold on 53 random bits: drawing is one
// compare, exact for 0 and 1, and free of floating point on the hot path.
class Chance {
 public:
  Chance() = default;
  explicit Chance(double p) : threshold_(to_threshold(p)) {}

  bool never() const { return threshold_ == 0; }
  bool draw(Rng& rng) const { return (rng.next() >> 11) < threshold_; }

 private:
  static uint64_t to_threshold(double p) {
    if (!(p > 0)) return 0;
    if (p >= 1) return uint64_t{1} << 53;
    return static_cast<uint64_t>(p * 0x1.0p53);
  }
  uint64_t threshold_ = 0;
};

}  // namespace amber::link
