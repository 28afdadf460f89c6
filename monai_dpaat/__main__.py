"""``python -m monai_dpaat <command>``: see :mod:`monai_dpaat.cli` (robustness, demo, gradcam, combine, presets)."""

import sys


def main() -> None:
    from monai_dpaat.cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
