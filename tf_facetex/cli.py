"""Shared command-line plumbing for scripts/: absl flags, one-line errors, quiet TensorFlow.

Every script calls `run(main)`. Expected failures (`FaceTexError`, and `OSError` such as an unwritable
output folder) print one readable line and exit with status 2; with ``--verbose`` the traceback is shown too. Tracebacks of anything else are bugs and
always shown.
"""
import dataclasses
import errno
import math
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
            refuse_non_finite_float_flags()
            return main(argv)
        except (FaceTexError, OSError) as err:  # OSError: unwritable output folder, full disk, ...
            if flags.FLAGS.verbose:
                raise
            print("error: " + " ".join(str(err).split()) + _os_error_hint(err), file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    app.run(wrapped)


def _os_error_hint(err) -> str:
    """What to do about the common OS errors (files already finished are never removed by a failed write)."""
    hints = {errno.ENOSPC: "the disk is full: free some space and run again (finished results are kept)",
             errno.EDQUOT: "the disk quota is exceeded: free some space and run again (finished results are kept)",
             errno.EROFS: "the file system is read-only: choose another output location",
             errno.EACCES: "permission denied: choose a location you can write to"}
    hint = hints.get(getattr(err, "errno", None)) if isinstance(err, OSError) else None
    return f" ({hint})" if hint else ""


def require_finite(name: str, value, low=None, high=None):
    """Checks a numeric flag: None passes; NaN, +-Inf or a value outside [low, high] -> one-line FaceTexError."""
    if value is None:
        return value
    bounds = (f" >= {low:g}" if low is not None else "") + (f" and <= {high:g}" if high is not None else "")
    if high is not None and low is None:
        bounds = f" <= {high:g}"
    if not math.isfinite(float(value)):
        raise FaceTexError(f"--{name}={value}: must be a finite number{bounds}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise FaceTexError(f"--{name}={value}: must be{bounds.replace(' and', ',')}")
    return value


def refuse_non_finite_float_flags(flag_values=None):
    """Every float flag given on the command line or in a flagfile must be finite: absl parses 'nan' and 'inf'
    happily, and its bounds checks let NaN through (every comparison with NaN is false)."""
    flag_values = flag_values or flags.FLAGS
    for name in flag_values:
        flag = flag_values[name]
        if flag.present and flag.flag_type() == "float" and flag.value is not None:
            require_finite(name, flag.value)


def check_ranges(ranges: dict, flag_values=None):
    """{flag name: (low, high, low_open, high_open)} -> FaceTexError naming the first flag outside its range."""
    flag_values = flag_values or flags.FLAGS
    for name, (low, high, low_open, high_open) in ranges.items():
        value = flag_values[name].value
        if value is None:
            continue
        require_finite(name, value)
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            left = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
            right = "" if high is None else f"{high:g}" + (")" if high_open else "]")
            interval = f"in {left}, {right}" if low is not None and high is not None else (
                f"{'>' if low_open else '>='} {low:g}" if low is not None else f"{'<' if high_open else '<='} {high:g}")
            raise FaceTexError(f"--{name}={value:g}: must be {interval}")


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
        if not math.isfinite(values[name.strip()]):
            raise ValueError(f"{pair!r}: the value must be a finite number")
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


def _field_default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _comparable(value):
    if value is None:
        return ""                       # a required string flag (default None) stands for the field's ""
    if isinstance(value, list):
        return tuple(value)
    return value


def flag_default_mismatches(config_class, flag_values=None, renamed=None, skip=()) -> dict:
    """{field: (flag default, field default)} for every field of ``config_class`` with a flag of the same name
    (or ``renamed[field]``) whose default differs: flags and config defaults must have one source."""
    flag_values = flag_values or flags.FLAGS
    renamed = renamed or {}
    out = {}
    for field in dataclasses.fields(config_class):
        name = renamed.get(field.name, field.name)
        if field.name in skip or name not in flag_values:
            continue
        flag_default, field_default = _comparable(flag_values[name].default), _comparable(_field_default(field))
        if flag_default != field_default:
            out[field.name] = (flag_values[name].default, _field_default(field))
    return out


def config_from_flags(config_class, flag_values=None, renamed=None, **values):
    """A config dataclass filled from the flags of the same name (``renamed`` maps field -> flag name); ``values``
    give the fields whose value is not a flag's value as is (parsed lists, derived settings).

    Raises ValueError when a flag's default differs from its field's default (so the two cannot drift apart).
    """
    flag_values = flag_values or flags.FLAGS
    renamed = renamed or {}
    drift = flag_default_mismatches(config_class, flag_values, renamed, skip=values)
    if drift:
        raise ValueError(f"flag defaults differ from {config_class.__name__}'s: " + ", ".join(
            f"--{renamed.get(k, k)} {flag!r} vs {field!r}" for k, (flag, field) in drift.items()))
    kwargs = dict(values)
    for field in dataclasses.fields(config_class):
        name = renamed.get(field.name, field.name)
        if field.name in kwargs or name not in flag_values:
            continue
        value = flag_values[name].value
        if value is None:
            value = _field_default(field)
        elif isinstance(value, list) and isinstance(_field_default(field), tuple):
            value = tuple(value)
        kwargs[field.name] = value
    return config_class(**kwargs)
