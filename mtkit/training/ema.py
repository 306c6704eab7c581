"""An exponential moving average of the weights (``train.ema_decay``), scored and saved.

After every optimizer update the average moves towards the model's weights:
``ema = decay * ema + (1 - decay) * weights``, the first update copying them
(:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`). Buffers, such as the output
vocabulary ``output_ids``, are copied, not averaged. The average is validated beside the
model, saved as the ordinary checkpoint ``ema.pt`` at each validation, and carried in
``last.pt`` so that a resumed run continues it exactly.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, cast

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from mtkit.corpus.layout import CorpusSplit
from mtkit.model.checkpoint import load_model
from mtkit.model.seq2seq import Seq2Seq
from mtkit.training.validation import Scorer

log = logging.getLogger("mtkit")

EMA_FILE = "ema.pt"


class MovingAverage:
    """The moving average of one model's weights, on the model's device."""

    def __init__(self, model: Seq2Seq, decay: float) -> None:
        self.decay = decay
        self.averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False
        )
        self.averaged.module.requires_grad_(False)

    @property
    def model(self) -> Seq2Seq:
        """The averaged weights as a model of their own (to score or save)."""
        return cast(Seq2Seq, self.averaged.module)

    @property
    def updates(self) -> int:
        """How many updates the average has seen."""
        return int(self.averaged.n_averaged.item())

    def update(self, model: Seq2Seq) -> None:
        """Move the average towards ``model``'s weights (after an optimizer update)."""
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights and the update count, for ``last.pt``."""
        return {k: v.detach().cpu() for k, v in self.averaged.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        """Continue a saved average; without one (a run resumed from a ``last.pt`` that kept
        none), start the average afresh at the next update."""
        if state is None:
            log.info("the resumed checkpoint holds no moving average: it starts afresh")
            self.averaged.n_averaged.zero_()
            return
        self.averaged.load_state_dict(state)


def validate_average(
    scorer: Scorer, average: MovingAverage, split: CorpusSplit, step: int, with_bleu: bool
) -> dict[str, float]:
    """The average's validation loss, perplexity and BLEU (NaN unless ``with_bleu``) as
    the ``ema_val_*`` columns of metrics.csv (rounded as the model's), logged."""
    loss, ppl = scorer.loss(average.model, split)
    columns = {"ema_val_loss": round(loss, 5), "ema_val_ppl": round(ppl, 3)}
    columns["ema_val_bleu"] = math.nan
    message = f"step {step} EMA validation: loss {loss:.4f} ppl {ppl:.2f}"
    if with_bleu:
        score = scorer.bleu(average.model, split)
        columns["ema_val_bleu"] = round(score.score, 2)
        message += f" BLEU {score.score:.2f}"
    log.info(message)
    return columns


def score_saved_average(scorer: Scorer, saved: Path, split: CorpusSplit) -> dict[str, Any]:
    """Greedy BLEU of the saved average (``ema.pt``) on the test ``split``; logged."""
    model, codec, _ = load_model(saved)
    score = scorer.bleu(model.to(scorer.device), split, codec=codec)
    log.info("test (%s, greedy): BLEU %.2f (%s)", saved.name, score.score, score.signature)
    return {"bleu_greedy": round(score.score, 2), "signature": score.signature}
