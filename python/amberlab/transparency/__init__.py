"""The transparency evaluation (bench/transparency/README.md): the host side
of the guest probe (guest), the evaluation driver (evaluate, repeat), its
analysis (analysis, packets, threads, vm_rings), the report (report, plots)
and a synthetic evaluation with known effects for the self-check
(synthetic). Runnable: transparency.evaluate, .repeat, .report, .guest,
.threads and .vm_rings (scripts/amber-py NAME --help)."""
