"""Stage `sample`: models/mcdm/pipeline + motion vectors -> data/synthetic/echonet."""

from echomotion.stage import start
from echomotion.tasks.sample.run import run


def main() -> None:
    run(start("sample"))


if __name__ == "__main__":
    main()
