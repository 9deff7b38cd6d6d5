"""Shared command-line plumbing for scripts/: absl flags, one-line errors, quiet TensorFlow.

Every script calls `run(main)`. Expected failures (`FaceTexError`, and `OSError` such as an unwritable
output folder) print one readable line and exit with status 2; with ``--verbose`` the traceback is shown too. Tracebacks of anything else are bugs and
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
    # Make --verbose show up in every script's --help (absl lists the main module's key flags).
    main_module = sys.modules.get("__main__")
    if main_module is not None:
        for name in ("verbose",):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

    def wrapped(argv):
        from tf_facetex.xla_cache import enable_persistent_xla_cache
        enable_persistent_xla_cache()      # before any XLA compilation: later runs reuse the compiled programs
        try:
            return main(argv)
        except (FaceTexError, OSError) as err:  # OSError: unwritable output folder, full disk, ...
            if flags.FLAGS.verbose:
                raise
            print("error: " + " ".join(str(err).split()), file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    app.run(wrapped)


def parse_name_values(pairs, allowed, what: str = "name") -> dict:
    """['name=value', ...] -> {name: float}; ValueError names the bad pair (e.g. --loss_weights=image=2)."""
    values = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name.strip() not in allowed or not value:
            raise ValueError(f"{pair!r} is not {what}=value with a {what} among {', '.join(allowed)}")
        try:
            values[name.strip()] = float(value)
        except ValueError as err:
            raise ValueError(f"{pair!r}: {err}") from err
    return values


def register_name_values_validator(flag_name: str, allowed, what: str = "name"):
    """Validates a list flag of name=value pairs at parse time (a clear flag error instead of a traceback)."""
    def valid(pairs):
        try:
            parse_name_values(pairs, allowed, what)
        except ValueError as err:
            raise flags.ValidationError(str(err)) from err
        return True

    flags.register_validator(flag_name, valid)
