"""Stage `phantom`: the synthetic echo dataset (EchoNet-Dynamic layout + ground truth)."""

from echomotion.stage import start
from echomotion.tasks.phantom.run import run


def main() -> None:
    run(start("phantom"))


if __name__ == "__main__":
    main()
