#!/usr/bin/env bash
# Sets up .venv (first run: a few minutes) and runs the test suite.
#   bash scripts/run_tests.sh          # default suite (fast; what CI runs)
#   bash scripts/run_tests.sh slow     # only the slow tests (long comparisons, training runs)
#   bash scripts/run_tests.sh all      # everything
#   bash scripts/run_tests.sh -- -k sh # extra pytest arguments after --
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
target=${1:-fast}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
case "$target" in
  fast) marker=(-m "not slow") ;;
  slow) marker=(-m "slow") ;;
  all) marker=() ;;
  *) echo "usage: $0 [fast|slow|all] [-- pytest args]" >&2; exit 2 ;;
esac
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q -rs --durations=15 "${marker[@]}" "$@"
