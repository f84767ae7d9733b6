"""`python -m assayfew ...` (what `torchrun ... -m assayfew train ...` runs): the command line."""

from assayfew.cli import main

if __name__ == "__main__":
    main()
