"""Parity with the official `rwkv` pip package (test-only dependency), which nobody here wrote.

- Every merged `.pth` loads in the package and gives our adapted model's logits at every position.
- A trained state file gives the same logits in our generate path (`forward_with_state`, sequence and then one
  token at a time) and in the package with the state injected: v7 `state[3i+1] = time_state[i]` as is; v6 the
  package keeps WKV transposed (key rows), or reads `time_state` keys merged into the model file itself.
"""

import copy
import importlib
import os
import sys

import pytest
import torch

from rwkv_peft import load_model, merge
from rwkv_peft.model import read_checkpoint

from .cases import CASES, CONFIGS

pytest.importorskip("rwkv")

# rwkv-reference.md §7.4 measured 3e-6 on L2 C128 fp32 files; logits here have std ~1.
PIP_ATOL = 1e-4


def pip_model(path, version: int):
    """The package's model class for `version` ("cpu fp32"); it reads RWKV_V7_ON at import, so re-import."""
    os.environ["RWKV_V7_ON"] = "1" if version == 7 else "0"
    os.environ["RWKV_CUDA_ON"] = "0"
    sys.modules.pop("rwkv.model", None)
    rwkv_class = importlib.import_module("rwkv.model").RWKV
    if version == 7:
        return rwkv_class(model=str(path).removesuffix(".pth"), strategy="cpu fp32")
    return rwkv_class(model=str(path), strategy="cpu fp32", verbose=False)


def injected_state(state_file, version: int) -> list[torch.Tensor]:
    """The package's state list (per layer: att shift [C], WKV [H, N, N] fp32, ffn shift [C]) with zero shifts
    and each layer's WKV slot taken from a state file ([H, N(value), N(key)])."""
    sd, state = read_checkpoint(state_file), []
    for i in range(len(sd)):
        ts = sd[f"blocks.{i}.att.time_state"]
        H, N, _ = ts.shape
        wkv = ts.float() if version == 7 else ts.float().transpose(-1, -2).contiguous()
        state += [torch.zeros(H * N), wkv, torch.zeros(H * N)]
    return state


@pytest.mark.parametrize("case, version", [pytest.param(c, v, id=f"{c}-v{v}") for c in CASES for v in CONFIGS])
def test_merged_file_in_rwkv_package(trained, case, version, tmp_path):
    t = trained(case, version)
    out = tmp_path / "merged.pth"
    merge(t.base_path, t.adapter_path, out)
    pip = pip_model(out, version)
    tokens = t.tokens[0].tolist()
    state = None
    if t.spec.state and version == 7:
        # The v7 class ignores time_state keys in the model file: runtimes mount the state instead.
        state = injected_state(t.adapter_path if t.spec.layer is None else t.proj_dir / "rwkv-0-state.pth", 7)
    if version == 7:
        logits, _ = pip.forward(tokens, state, full_output=True)
        torch.testing.assert_close(logits.float(), t.adapted_logits[0], atol=PIP_ATOL, rtol=0)
    else:
        # The v6 class returns the last position only; feed growing prefixes to check every position.
        for n in (1, len(tokens) // 2, len(tokens)):
            logits, _ = pip.forward(tokens[:n], None)
            torch.testing.assert_close(logits.float(), t.adapted_logits[0, n - 1], atol=PIP_ATOL, rtol=0)


@pytest.mark.parametrize("version", list(CONFIGS))
def test_state_file_injected_in_rwkv_package(trained, version):
    t = trained("state", version)
    ours = load_model(t.base_path, state=t.adapter_path)
    pip = pip_model(t.base_path, version)
    prompt, next_token = t.tokens[0, :-1].tolist(), int(t.tokens[0, -1])
    with torch.no_grad():
        logits, state = ours.forward_with_state(torch.tensor([prompt]))
        step_logits, _ = ours.forward_with_state(torch.tensor([[next_token]]), state)
    pip_state = injected_state(t.adapter_path, version)
    pip_logits, pip_state = pip.forward(prompt, copy.deepcopy(pip_state))
    torch.testing.assert_close(pip_logits.float(), logits[0, -1], atol=PIP_ATOL, rtol=0)
    for i, (ours_s, pip_s) in enumerate(zip(state.to_pip_list(version), pip_state, strict=True)):
        torch.testing.assert_close(pip_s.float(), ours_s.float(), atol=PIP_ATOL, rtol=0, msg=f"state slot {i}")
    pip_step, _ = pip.forward([next_token], pip_state)
    torch.testing.assert_close(pip_step.float(), step_logits[0, -1], atol=PIP_ATOL, rtol=0)
