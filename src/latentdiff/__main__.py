"""`python -m latentdiff`: the same as the `latentdiff` command."""

from latentdiff.cli import entry

entry()
