"""Shared command-line plumbing for scripts/: absl flags, one-line errors, quiet TensorFlow.

Every script calls `run(main)`. Expected failures (`FaceTexError`, and `OSError` such as an unwritable
output folder) print one readable line and exit with status 2; with ``--verbose`` the traceback is shown too. Tracebacks of anything else are bugs and
always shown.
"""
import dataclasses
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
