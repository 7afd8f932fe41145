"""Test configuration: statistics need float64, so the tests switch JAX's x64 mode on.

neosx never flips this global switch itself at import; the CLI and the tests do.
"""

import jax

jax.config.update("jax_enable_x64", True)
