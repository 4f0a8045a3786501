"""``python -m backbone_lab.evaluate <run> [ckpt=last|STEP|PATH] [device=cpu] [json=false]``.

The evaluation of training, without training: LM validation loss on the run's fixed crops and the
codeword probe (exact-match accuracy and NLL, in-distribution and OOD gaps) of one checkpoint, on
the same fixed sets the run evaluated (rebuilt from its config and seed), with the same passes
(`data.evaluation`). The numbers of the final step equal the run's last row of eval_metrics.csv.
Nothing is written. A bad run folder or option ends in one line (exit 2).

Caveat: a schedule-free optimizer was evaluated in training at its evaluation weights; a
checkpoint holds the training weights, so its numbers here can differ from the run's CSV.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

USAGE = "usage: python -m backbone_lab.evaluate <run_dir> [ckpt=last|STEP|PATH] [device=cpu] [json=false]"


@dataclass
class EvaluateOptions:
    ckpt: str = "last"
    device: str = "cpu"
    json: bool = False  # print one JSON object instead of a table


def evaluate_run(run_dir, ckpt: str | int | None = "last", device: str = "cpu") -> dict:
    """{step, checkpoint, val_loss, p_in, p_ood, nll_in, nll_ood, lm_ood} of one checkpoint of a run."""
    from backbone_lab.components import build_datamodule
    from backbone_lab.data.evaluation import evaluate_lm, evaluate_probe
    from backbone_lab.run_model import load_run

    loaded = load_run(run_dir, ckpt, device)  # its config in today's layout (datamodule node included)
    dm = build_datamodule(loaded.cfg.datamodule, loaded.conf["data"], seq_len=loaded.conf["model"].seq_len,
                          seed=int(loaded.cfg.seed))
    dm.setup("fit")
    if dm.tokenizer.fingerprint != loaded.tokenizer.fingerprint:
        from backbone_lab.errors import RunDirError

        raise RunDirError(f"{loaded.run.root}: its config rebuilds another tokenizer than its tokenizer.json "
                          "(data changed since training?); cannot rebuild the run's evaluation sets")
    model = loaded.model
    probe_in = evaluate_probe(model, dm.probe_eval_loader("in"), device)
    probe_ood = evaluate_probe(model, dm.probe_eval_loader("ood"), device)
    return {"step": loaded.step, "checkpoint": str(loaded.checkpoint),
            "val_loss": evaluate_lm(model, dm.val_loader(), device),
            "p_in": probe_in["acc"], "p_ood": probe_ood["acc"], "nll_in": probe_in["nll"],
            "nll_ood": probe_ood["nll"], "lm_ood": probe_ood["lm_nll"]}


def main(argv: Sequence[str] | None = None) -> int:
    from backbone_lab.run_model import run_cli

    def show(run_dir: str, opts: EvaluateOptions) -> None:
        result = evaluate_run(run_dir, opts.ckpt, opts.device)
        if opts.json:
            print(json.dumps(result))
            return
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")

    return run_cli(argv, USAGE, EvaluateOptions(), "evaluate", show)


if __name__ == "__main__":
    sys.exit(main())
