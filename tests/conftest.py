"""Test configuration: statistics need float64, so the tests switch JAX's x64 mode on.

neosx never flips this global switch itself at import; the CLI and the tests do. The CLI's
on-disk cache of compiled programs is off for commands run inside the test process (it is a
process-wide JAX setting, and the tests must not write to the user's cache); the test of the
cache itself runs the command line in subprocesses with a temporary directory.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)
os.environ["NEOSX_COMPILE_CACHE"] = "off"
