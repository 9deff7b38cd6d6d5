"""Property-based fuzzing of the photo reader: random bytes, truncations and header/body mutations of real JPEG,
PNG, WebP, TIFF, GIF and BMP files never raise anything but ImageError, each input decodes or is refused within a
time bound, and the whole run stays inside an address-space limit (an allocation beyond it is a MemoryError, which
the property counts as a failure).

The fuzzer runs in its own process (tests/fuzz_image_readers.py) so that the memory limit applies to it alone. The
default suite tries a fixed, seeded budget of inputs (seconds); the slow one a larger budget with another seed.
Both print the number of inputs tried."""
import pathlib
import re
import resource
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ADDRESS_SPACE_BYTES = 1536 * 1024 * 1024   # numpy + Pillow + OpenCV + hypothesis fit in ~0.6 GB of it


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))


def fuzz(examples, seed, timeout):
    result = subprocess.run([sys.executable, str(HERE / "fuzz_image_readers.py"), f"--examples={examples}",
                             f"--seed={seed}", "--max_seconds=5"], capture_output=True, text=True,
                            timeout=timeout, preexec_fn=limit_memory, cwd=HERE.parent)
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-4000:])
    line = next(line for line in result.stdout.splitlines() if line.startswith("fuzz: "))
    print(line)
    tried = int(re.match(r"fuzz: (\d+) inputs tried", line).group(1))
    assert tried >= examples, line
    return line


def test_image_reader_fuzz_fixed_budget():
    fuzz(examples=400, seed=0, timeout=120)


@pytest.mark.slow
def test_image_reader_fuzz_large_budget():
    fuzz(examples=20000, seed=1, timeout=1200)
