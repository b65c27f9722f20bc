"""`warpserve bench kernels` and `warpserve bench accuracy` as subcommands of the CLI."""

from __future__ import annotations

import json

import torch
from torch import nn

from warpserve.bench.accuracy import build_variant
from warpserve.cli import main
from warpserve.quant.linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear, W8A8Linear


def test_bench_kernels_times_every_candidate_and_marks_the_chosen(tmp_path) -> None:
    out = tmp_path / "kernels.json"
    argv = ["bench", "kernels", "--layers", "o_proj", "--tokens", "1", "--reps", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    kernels = {r["kernel"] for r in rows}
    assert {"fp32/linear", "ref/fbgemm_dynamic_per_tensor"} <= kernels
    chosen = {r["kernel"].split("/")[0] for r in rows if r["is_chosen"]}
    assert chosen == {"int8", "int4", "w8a8"}  # one kernel per scheme at M = 1
    assert main(["bench", "kernels", "--from-json", str(out)]) == 0


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down_proj = nn.Linear(64, 64, bias=False)
        self.lm_head = nn.Linear(64, 64, bias=False)
        self.requires_grad_(False)


def test_scheme_specs_build_the_variants_they_name() -> None:
    torch.manual_seed(0)
    model = TwoLayers()
    variant, scheme = build_variant(model, "w8a8~*down_proj")
    assert scheme == "w8a8"
    assert type(variant.down_proj) is Int8WeightOnlyLinear
    assert type(variant.lm_head) is W8A8Linear
    variant, scheme = build_variant(model, "int4-all")
    assert scheme == "int4" and type(variant.lm_head) is Int4WeightOnlyLinear
    variant, _ = build_variant(model, "int4")  # the preset keeps the LM head at int8
    assert type(variant.lm_head) is Int8WeightOnlyLinear
    assert type(model.lm_head) is nn.Linear  # the reference is untouched
