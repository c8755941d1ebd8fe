"""The collection organised: groups of the same character, near-duplicate pictures."""
