"""Checkpoint series as trajectories (public checkpoint series, e.g. Pythia revisions) and
sketched snapshots (a seeded sparse JL projection per block).

* `sources`: discover a series (step<N>/ folders, a HF cache repo, a (step, path) list) and read
  checkpoints piecewise (safetensors, torch files with weights_only=True);
* `trunk_rules`: which foreign tensors form the trunk (presets gpt_neox, llama, gpt2, ours; globs);
* `reader`: `SeriesReader`, the trajectory-reader interface over a series (analysed in place);
* `sketch`: the sparse JL sketch (numpy and torch, identical hashes) and its error bound;
* `sketch_series`: a series sketched into a small trajectory store;
* `hub`: fetch revisions of a hub repository (``huggingface_hub``);
* `cli`: ``python -m backbone_lab.analyze SERIES trunk=<preset> [sketch_dim=k] [out=...]``.
"""
