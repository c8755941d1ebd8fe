"""The `index` run: scan, diff, decode and detect in workers, embed, commit."""
