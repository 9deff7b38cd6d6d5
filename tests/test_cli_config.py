"""One source per configuration: a script's flags fill its config dataclass, and their defaults must agree."""
import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags

from tf_facetex import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class _Config:
    name: str = ""
    size: int = 3
    parts: tuple = ("a", "b")
    renamed_field: float = 0.5
    derived: int = 0


def _flag_values(size_default=3):
    values = flags.FlagValues()
    flags.DEFINE_string("name", None, "", flag_values=values)
    flags.DEFINE_integer("size", size_default, "", flag_values=values)
    flags.DEFINE_list("parts", ["a", "b"], "", flag_values=values)
    flags.DEFINE_float("other_name", 0.5, "", flag_values=values)
    values(["prog", "--size=7", "--parts=c"])
    return values


def test_config_from_flags_fills_fields_and_keeps_derived_values():
    config = cli.config_from_flags(_Config, _flag_values(), renamed={"renamed_field": "other_name"}, derived=9)
    assert config == _Config(name="", size=7, parts=("c",), renamed_field=0.5, derived=9)


def test_a_drifted_flag_default_is_refused():
    with pytest.raises(ValueError, match="--size 4 vs 3"):
        cli.config_from_flags(_Config, _flag_values(size_default=4), renamed={"renamed_field": "other_name"})
    assert cli.flag_default_mismatches(_Config, _flag_values(size_default=4)) == {"size": (4, 3)}


CHECK = """
import sys
sys.argv = ["x", "--model_dir=/tmp/unused"]
sys.path.insert(0, "scripts")
import {script} as script
from absl import flags
flags.FLAGS(sys.argv)
config = script.config_from_flags()
print(type(config).__name__, "ok")
"""


@pytest.mark.parametrize("script, config", [("train", "TrainConfig"), ("train_prior", "PriorTrainConfig")])
def test_training_scripts_flags_agree_with_their_configs(script, config):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", CHECK.format(script=script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and f"{config} ok" in done.stdout, done.stderr[-2000:]
