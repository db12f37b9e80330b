"""The built-in solver families of odezoo, one module per family.

Each module is a pluggy plugin: it implements ``odezoo_register_families`` exactly as a
third-party package would.  They are listed here, once; odezoo registers them before the
third-party plugins of the ``odezoo`` entry-point group (so ``ODEZOO_DISABLE_PLUGIN_AUTOLOAD=1``
still leaves the built-ins).
"""

BUILTIN_FAMILY_MODULES = (
    "odezoo_families.rk2_u",
    "odezoo_families.rk3_uv",
    "odezoo_families.rk4_u1",
    "odezoo_families.rk4_u2",
    "odezoo_families.rk4_u3",
    "odezoo_families.rk4_uv",
    "odezoo_families.rk2_u_adaptive",
    "odezoo_families.tsit5",
    "odezoo_families.dop853",
)
