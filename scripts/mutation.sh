#!/usr/bin/env bash
# Mutation testing of the sans-IO session core (session_fsm/core/*.py and the transition table
# session_fsm/table.py) with mutmut (not part of CI).
#
#   bash scripts/mutation.sh                                # every mutant (4-5 hours on 2 cores)
#   bash scripts/mutation.sh "session_fsm.core.relogin*"    # a subset, by mutmut's name globs
#   bash scripts/mutation.sh --results                      # the verdicts so far
#
# Runs on a copy of the committed tree (git archive HEAD) in $MUTATION_DIR (default
# /tmp/session_fsm-mutation), which mutmut needs for its mutants/ folder and setup.cfg. The copy
# is kept between runs so verdicts accumulate; FRESH=1 starts over. Needs mutmut 3.x in the
# environment of $PYTHON (pip install -e '.[test,mutation]'). docs/mutation.md has the scores.
# Changing the test list below in an existing folder makes mutmut forget every verdict; to keep
# them, delete $MUTATION_DIR/mutants/mutmut-stats.json as well (docs/mutation.md, "How to run it").
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${MUTATION_DIR:-/tmp/session_fsm-mutation}
python=${PYTHON:-python}
mutmut=("$python" -m mutmut)

if [[ ${1:-} == --results ]]; then
    cd "$work" && exec "${mutmut[@]}" results --all true
fi
if [[ ${FRESH:-0} == 1 || ! -f $work/setup.cfg ]]; then
    rm -rf "$work" && mkdir -p "$work"
    git -C "$repo" archive HEAD | tar -x -C "$work"
    # The tests that exercise the core through the sync driver (the ones present in this
    # checkout). Left out: test_properties (the stateful property test takes about 2 minutes
    # under the ci profile, which every surviving mutant would pay), test_secrets and
    # test_error_secrets (about 20 s each, and they test redaction, not the core's decisions).
    # mutmut copies only session_fsm/ and tests/ into mutants/, so the benchmark smoke test
    # (which imports benchmarks/) is deselected below. test_layout is left out too: its import
    # checks run in subprocesses (about 33 s), where no mutant is active. A mutant that makes a
    # flow wait on a lock forever uses no CPU, so only mutmut's wall-clock limit ends it:
    # (the covering tests' time + timeout_constant) x timeout_multiplier. The tests' time is
    # the sum of their call durations, without the sandbox started per module and on a loaded
    # machine up to 3x slower, hence the large constant: (t + 60) x 1.5.
    tests=""
    for t in test_machine test_relogin test_core_fixes test_core_mutants test_core_mutants2 \
             test_core_mutants3 test_core_mutants3_answers test_core_mutants3_races \
             test_refresh_races test_request_hot_path test_strict_answers \
             test_edge_calls test_transition_records test_table test_model_paths \
             test_fault_matrix test_deadlines test_logging_fast_path test_config test_metrics \
             test_heartbeat test_wire test_fast_send test_requests_auth_contract \
             test_relogin_waiters test_refresh_providers test_core_mutants4 test_httpx_auth \
             test_core_overhead; do
        [[ -f $work/tests/$t.py ]] && tests+=$'\n'"    tests/$t.py"
    done
    mutate=""
    for m in "$work"/session_fsm/core/*.py "$work"/session_fsm/table.py; do
        [[ $(basename "$m") == __init__.py ]] && continue   # a docstring only
        mutate+=$'\n'"    ${m#"$work"/}"
    done
    cat > "$work/setup.cfg" <<CFG
[mutmut]
source_paths = session_fsm
only_mutate =$mutate
pytest_add_cli_args_test_selection =$tests
pytest_add_cli_args =
    -p
    no:cacheprovider
    --deselect
    tests/test_fast_send.py::test_benchmark_runs_at_smoke_size
use_git_change_detection = false
timeout_multiplier = 1.5
timeout_constant = 60
CFG
fi
cd "$work"
# The ci profile is derandomized: a mutant's verdict is reproducible.
HYPOTHESIS_PROFILE=ci exec "${mutmut[@]}" run --max-children "${MUTATION_CHILDREN:-2}" "$@"
