"""Stage `evaluate`: synthetic dataset + real videos (+ the EchoNet root's LV tracings) +
trained networks -> metrics/eval.json."""

from echomotion.stage import start
from echomotion.tasks.evaluate.run import run


def main() -> None:
    run(start("evaluate"))


if __name__ == "__main__":
    main()
