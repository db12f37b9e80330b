"""The built-in solver families of odezoo, one module per family.

Each module is a pluggy plugin: it implements ``odezoo_register_families`` exactly as a
third-party package would.  They are listed once, in
``odezoo.registry.BUILTIN_FAMILY_MODULES``, and registered before the third-party plugins of
the ``odezoo`` entry-point group (so ``ODEZOO_DISABLE_PLUGIN_AUTOLOAD=1`` still leaves the
built-ins).  The core loads them by name and never imports them.
"""
