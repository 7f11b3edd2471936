#include "link-emulator/loss_process.h"

#include <variant>

namespace amber::link {

LossProcess::LossProcess(const LossConfig& config) {
  if (auto* r = std::get_if<RandomLoss>(&config)) {
    kind_ = r->probability > 0 ? Kind::kRandom : Kind::kNone;
    a_ = Chance(r->probability);
  } else if (auto* ge = std::get_if<GilbertElliottLoss>(&config)) {
    kind_ = Kind::kGilbertElliott;
    state_ = 0;
    a_ = Chance(ge->p);
    b_ = Chance(ge->r);
    c_ = Chance(ge->loss_bad);
    d_ = Chance(ge->loss_good);
  } else if (auto* m = std::get_if<MarkovLoss>(&config)) {
    kind_ = Kind::kMarkov;
    state_ = 1;
    p13_ = m->p13;
    p14_ = m->p14;
    p31_ = m->p31;
    p32_ = m->p32;
    e_ = Chance(m->p23);
  }
}

// The state moves first, then the frame is lost with the loss probability of
// the state it is in now. (netem draws the loss against the old state's
// probability after moving; moving first is the textbook model.)
bool LossProcess::lose_gilbert_elliott(Rng& rng) {
  if (state_ == 0) {
    if (a_.draw(rng)) state_ = 1;
  } else {
    if (b_.draw(rng)) state_ = 0;
  }
  return state_ == 1 ? c_.draw(rng) : d_.draw(rng);
}

// Transitions: 1 -> 3 (p13), 1 -> 4 (p14), else stay; 2 -> 3 (p23), else
// stay; 3 -> 1 (p31), 3 -> 2 (p32), else stay; 4 -> 1 always. A frame is
// lost when the chain lands in state 3 or 4.
bool LossProcess::lose_markov(Rng& rng) {
  switch (state_) {
    case 1: {
      double u = rng.unit();
      if (u < p13_)
        state_ = 3;
      else if (u < p13_ + p14_)
        state_ = 4;
      break;
    }
    case 2:
      if (e_.draw(rng)) state_ = 3;
      break;
    case 3: {
      double u = rng.unit();
      if (u < p31_)
        state_ = 1;
      else if (u < p31_ + p32_)
        state_ = 2;
      break;
    }
    default:  // 4: an isolated loss is always followed by a reception
      state_ = 1;
      break;
  }
  return state_ == 3 || state_ == 4;
}

}  // namespace amber::link
