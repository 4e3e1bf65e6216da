"""`merstream train` (see the module that implements it)."""
