"""Compatibility layers: other libraries' public APIs mapped onto kbnn.

* `kbnn.compat.larq`: larq 0.14's public names (Geiger & Team Plumerai, "Larq", JOSS 2020) on
  Keras 3, so a larq training script ports by changing its import
  (``import kbnn.compat.larq as lq``). See docs/migrating-from-larq.md.

Nothing here is imported by ``import kbnn``.
"""

__all__: list[str] = []
