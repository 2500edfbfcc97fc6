"""`python -m pacsflow.synth head-ct ...`: the `pacsflow synth` commands without the main CLI."""

import sys

from pacsflow.synth.cli import main

sys.exit(main(["synth", *sys.argv[1:]]))
