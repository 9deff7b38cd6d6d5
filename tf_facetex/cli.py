"""Shared command-line plumbing for scripts/: absl flags, one-line errors, quiet TensorFlow.

Every script calls `run(main)`. Expected failures (`FaceTexError`) print one readable line and exit
with status 2; with ``--verbose`` the traceback is shown too. Tracebacks of anything else are bugs and
always shown.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the way

from absl import app, flags  # noqa: E402

from tf_facetex.errors import FaceTexError  # noqa: E402

flags.DEFINE_bool("verbose", False, "Show full tracebacks and debug logging.")


def run(main):
    """Runs an absl ``main(argv)`` with the project's error policy."""

    def wrapped(argv):
        try:
            return main(argv)
        except FaceTexError as err:
            if flags.FLAGS.verbose:
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    app.run(wrapped)
