// A pause of the whole experiment: every delay node frozen and every VM
// stopped at one instant, all resumed at another, nothing saved
// (controller/README.md).
#include <algorithm>

#include "common/strings.h"
#include "common/units.h"
#include "controller/experiment.h"
#include "controller/experiment_steps.h"

namespace amber::controller {

Result<Manifest> Experiment::pause(const PauseRequest& request, const ProgressFn& progress) {
  return exclusively("pausing", [&] { return pause_locked(request, progress); });
}

Result<Manifest> Experiment::pause_locked(const PauseRequest& request, const ProgressFn& progress) {
  const Durations& d = topology_.durations;
  if (request.duration_ns() <= 0) {
    return invalid_argument("pause: give how long everything stands still (a duration > 0)");
  }
  // The agents resume by themselves when the lease ends: a pause longer
  // than the save deadline would need a lease a vanished controller
  // leaves the experiment stopped for.
  if (request.duration_ns() > d.save_deadline_ns) {
    return invalid_argument(cat(
        "pause: ", format_duration_ns(request.duration_ns()), " is longer than the save deadline (",
        format_duration_ns(d.save_deadline_ns), ", the topology's durations.save_deadline)"));
  }
  const ExperimentState state = store_->state();
  if (Status s = runs_whole(state); !s) return s;
  auto untouched = [](const Status& s) {
    return Status(s.code(), cat(s.message(), ": nothing was touched"));
  };
  if (Status s = await_clock(); !s) return untouched(s);
  auto now = clock_->now_ns();
  if (!now) return untouched(now.status().with_context("master clock: "));
  auto first = first_instant(request.at_ns(), *now, "pause");
  if (!first) return first.status();
  const int64_t at = *first;
  const int64_t resume_at = at + request.duration_ns();
  Manifest m;
  m.set_format(1);
  m.set_experiment(topology_.proto.experiment());
  m.set_label(request.label());
  m.set_reason("pause");
  m.set_freeze_ns(at);

  Crew crew = crew_of(agents_, everyone);
  report(progress, "freeze",
         cat("at +", format_duration_ns(at - *now), " for ",
             format_duration_ns(request.duration_ns())));
  auto stopped = stop_crew(crew, at, resume_at + 2 * d.step_deadline_ns, at - *now);
  if (Status s = first_error(stopped); !s) {
    return rollback(crew, at, s, progress, /*partial_checkpoint=*/false);
  }
  for (size_t i = 0; i < crew.size(); ++i)
    *m.add_steps() = named(*stopped[i], *crew[i].agent, "freeze");

  // The agents returned at the freeze; the resume instant must still be
  // far enough ahead for all of them, or it moves (and the reply says so).
  auto later = clock_->now_ns();
  if (!later)
    return rollback(crew, at, later.status().with_context("master clock: "), progress, false);
  int64_t resume = resume_at;
  if (resume < *later + lead_ns()) {
    resume = *later + lead_ns();
    report(progress, "resume",
           cat("warning: the freeze took until ", format_duration_ns(*later - at),
               " after the instant: resuming ", format_duration_ns(resume - resume_at),
               " later than asked"));
  }
  if (Status s = resume_all(resume, crew, &m, progress); !s) return s;
  return m;
}

}  // namespace amber::controller
