"""`python -m hmq` is the `hmq` command."""

from hmq.cli import main

main(prog_name="hmq")
