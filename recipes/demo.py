"""`make demo`: placeholder until the recipes land."""
print("odezoo: the recipes (MNIST training and robustness evaluation) are not built yet; "
      "`make test` and `odezoo families` work today.")
