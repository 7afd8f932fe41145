"""Test configuration: statistics need float64, so the tests switch JAX's x64 mode on.

neosx never flips this global switch itself at import; the CLI and the tests do. The CLI's
on-disk cache of compiled programs is off for commands run inside the test process (it is a
process-wide JAX setting, and the tests must not write to the user's cache); the test of the
cache itself runs the command line in subprocesses with a temporary directory.
"""

import copy
import os

import jax

jax.config.update("jax_enable_x64", True)
os.environ["NEOSX_COMPILE_CACHE"] = "off"

import jax.numpy as jnp  # noqa: E402

from neosx.analysis import Analysis  # noqa: E402
from neosx.config import StudyConfig, parse_config  # noqa: E402
from neosx.data import load_events  # noqa: E402


def study(base: dict, **changes: object) -> "StudyConfig":
    """A validated study: a deep copy of ``base`` with top-level ``changes``."""
    raw = copy.deepcopy(base)
    raw.update(changes)
    return parse_config(raw)


def event_arrays(analysis: "Analysis", split: str) -> dict:
    """The study's ``split`` events as JAX arrays, by event set."""
    events = load_events(analysis.config.data, split, analysis.config.seed)
    return {name: jnp.asarray(array) for name, array in events.items()}
