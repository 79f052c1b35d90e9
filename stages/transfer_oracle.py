"""Stage `transfer_oracle`: the motion measures' ceiling, on exact transfers in the phantom."""

from echomotion.stage import start
from echomotion.tasks.transfer_oracle.run import run


def main() -> None:
    run(start("transfer_oracle"))


if __name__ == "__main__":
    main()
