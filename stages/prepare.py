"""Stage `prepare`: an EchoNet-Dynamic-layout root (params data.root) -> data/prepared/,
metrics/prepare.json and the source fps / frame-size histograms in plots/prepare/."""

from echomotion.stage import start
from echomotion.tasks.prepare.run import run


def main() -> None:
    run(start("prepare"))


if __name__ == "__main__":
    main()
