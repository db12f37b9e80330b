"""What the ``odezoo`` commands do: ``train``, ``evaluate``, ``sweep``, ``reproduce`` (and ``report``), ``demo``.

Each command's module has ``run(args)`` (the parsed command line, see `odezoo_cli`) and
``main(argv)`` (the same from a list of flags, for scripts and tests); ``run_folder`` (what a
train may do with its folder) and ``train_loop`` (the epochs) are ``train``'s parts.  The parsing lives in
``odezoo_cli`` so that ``--help`` never imports torch; no command imports a recipe file.
"""
