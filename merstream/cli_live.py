"""`merstream live` (see the module that implements it)."""
