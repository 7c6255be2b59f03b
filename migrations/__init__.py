"""The migration steps of flambe_compat, one module per step (see `flambe_compat.migrate`).

Each module defines `SOURCE` and `TARGET` revisions and `migrate(archive) -> archive`,
a plain function whose docstring says what changed in flambe and why. Steps are pure
and idempotent: they return a new `Archive` and never touch the one given.
"""
