"""`lookalike demo`: the built-in procedurally drawn sample and the run over it."""
