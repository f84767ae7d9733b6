"""assayfew: few-shot assay activity prediction with meta-learned models."""

import os as _os

# Busy-waiting OpenMP threads make small torch ops on a shared 2-core machine up to 50x slower; must be set
# before torch is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
