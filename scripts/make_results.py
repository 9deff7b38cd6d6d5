"""Regenerates docs/RESULTS.md from the result JSON files in docs/results/ (one command, no TensorFlow).

  .venv/bin/python scripts/make_results.py                       # docs/results/*.json -> docs/RESULTS.md
  .venv/bin/python scripts/make_results.py --results_dir R --out R.md

The page's sections and formatting are `tf_facetex.evaluation.report`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tf_facetex.evaluation.report import DEFAULT_OUT, DEFAULT_RESULTS, make_results  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results_dir", default=str(DEFAULT_RESULTS), help="folder of result JSON files")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the markdown page to (re)write")
    args = parser.parse_args(argv)
    path = make_results(args.results_dir, args.out)
    print(f"[make_results] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
