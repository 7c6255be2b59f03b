"""Data files shipped with the package (`schemas/`, `migrations/`), in a wheel or a checkout.

An installed wheel holds them inside the package (`flambe_compat/schemas/`, see the
force-include of pyproject.toml); a source checkout holds them beside it, at the top level.

>>> resource_path("schemas", "2.0.json").name
'2.0.json'
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_path(kind: str, name: str) -> Path:
    """The file `name` of the data folder `kind`, from the wheel layout or the source tree."""
    candidates = [_PACKAGE / kind / name, _PACKAGE.parent / kind / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{kind}/{name} is not shipped (looked in {', '.join(map(str, candidates))})"
    )
