// The running loss model of a pipe: the configured model turned into
// integer thresholds, plus the Markov state a checkpoint must carry.
#pragma once

#include <cstdint>

#include "link-emulator/pipe_config.h"
#include "link-emulator/rng.h"

namespace amber::link {

class LossProcess {
 public:
  enum class Kind : uint8_t { kNone, kRandom, kGilbertElliott, kMarkov };

  LossProcess() = default;
  explicit LossProcess(const LossConfig& config);

  Kind kind() const { return kind_; }

  // Draws the fate of the next frame and advances the model's state.
  bool lose(Rng& rng) {
    switch (kind_) {
      case Kind::kNone:
        return false;
      case Kind::kRandom:
        return a_.draw(rng);
      case Kind::kGilbertElliott:
        return lose_gilbert_elliott(rng);
      case Kind::kMarkov:
        return lose_markov(rng);
    }
    return false;
  }

  // Gilbert–Elliott: 0 good, 1 bad. Markov: 1..4 as in the paper.
  uint8_t state() const { return state_; }
  void set_state(uint8_t state) { state_ = state; }

 private:
  bool lose_gilbert_elliott(Rng& rng);
  bool lose_markov(Rng& rng);

  Kind kind_ = Kind::kNone;
  uint8_t state_ = 0;
  // Meaning per kind: random {a = p}; Gilbert–Elliott {a = p, b = r,
  // c = loss in bad, d = loss in good}; Markov {e = p23}.
  Chance a_, b_, c_, d_, e_;
  // Markov leaves states 1 and 3 with one draw against cumulative bounds.
  double p13_ = 0, p14_ = 0, p31_ = 0, p32_ = 0;
};

}  // namespace amber::link
