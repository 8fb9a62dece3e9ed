"""Run the ceusfusion CLI in-process and get its exit code, as a shell would."""

from ceusfusion.cli import main


def exit_code(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
