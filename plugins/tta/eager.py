"""A graph's torch module run eagerly on numpy feeds, the way the torch backend runs it, for the
plugin's own use (recording calibration feeds) without going through a backend."""

from __future__ import annotations

from typing import Mapping

import numpy as np


class EagerGraph:
    """Runs ``module`` in inference mode: feeds in ``input_names`` order, outputs by ``output_names``."""

    def __init__(self, module, input_names: list[str], output_names: list[str]):
        self.module = module.eval()
        self.input_names = input_names
        self.output_names = output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in self.input_names]
        with torch.inference_mode():
            out = self.module(*args)
        if not isinstance(out, (tuple, list)):
            out = (out,)
        return {name: value.detach().cpu().numpy() for name, value in zip(self.output_names, out)}
