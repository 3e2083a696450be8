"""The benchmark protocol: worst-case choice on dev only, oracle per setting, seed-paired verdicts."""

import pandas as pd
import pytest

from kibble import KibbleError
from kibble.benchmarks.protocol import choose, oracle, paired


def _table(rows):
    out = []
    for setting, ranking, family, values in rows:
        for seed, v in enumerate(values):
            out.append({"setting": setting, "seed": seed, "ranking": ranking, "family": family, "AUPRC": v})
    return pd.DataFrame(out)


TABLE = _table([
    ("devA", "steady", "kibble", [0.90, 0.90, 0.90]), ("devB", "steady", "kibble", [0.80, 0.80, 0.80]),
    ("devA", "spiky", "kibble", [0.99, 0.99, 0.99]), ("devB", "spiky", "kibble", [0.60, 0.60, 0.60]),
    ("devA", "cl", "cleanlab", [0.95, 0.95, 0.95]), ("devB", "cl", "cleanlab", [0.70, 0.70, 0.70]),
    ("test", "steady", "kibble", [0.50, 0.52, 0.51]), ("test", "spiky", "kibble", [0.99, 0.99, 0.99]),
    ("test", "cl", "cleanlab", [0.60, 0.61, 0.62]),
])


def test_choose_takes_the_best_worst_case_on_dev_and_ignores_test():
    # spiky is best on devA but worst on devB; steady has the better worst case (test, never consulted, favours spiky)
    name, board = choose(TABLE, ["devA", "devB"], "kibble")
    assert name == "steady"
    assert board.loc["steady", "worst"] == pytest.approx(0.9 / 0.99)
    assert choose(TABLE, ["devA", "devB"], "cleanlab")[0] == "cl"
    with pytest.raises(KibbleError, match="no results"):
        choose(TABLE, ["devC"], "kibble")


def test_oracle_and_paired_verdicts():
    assert oracle(TABLE, "test", "kibble") == ("spiky", pytest.approx(0.99))
    lose = paired(TABLE, "test", "steady", "cl")
    assert lose["verdict"] == "loss" and lose["wins"] == 0 and lose["diff"] == pytest.approx(-0.1)
    tie = paired(_table([("s", "a", "k", [0.5, 0.6, 0.55]), ("s", "b", "c", [0.56, 0.54, 0.55])]), "s", "a", "b")
    assert tie["verdict"] == "tie"
