"""Stage `mafe_train`: ED/mid/ES triplets + pseudo flow and ReID labels -> models/mafe/."""

from echomotion.stage import start
from echomotion.tasks.mafe_train.run import run


def main() -> None:
    run(start("mafe_train"))


if __name__ == "__main__":
    main()
