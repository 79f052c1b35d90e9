"""Stage `edes_eval`: label-free ED/ES detection against the phantom's ground truth."""

from echomotion.stage import start
from echomotion.tasks.edes_eval.run import run


def main() -> None:
    run(start("edes_eval"))


if __name__ == "__main__":
    main()
