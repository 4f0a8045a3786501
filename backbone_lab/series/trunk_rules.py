"""Which tensors of a foreign checkpoint form the trunk, and which block holds each one.

Our trunk rule (paper §3, docs/TRAJECTORY_FORMAT.md "roles"): the weight *matrices* inside the
transformer blocks — attention and MLP projections; embeddings, the LM head, norms and biases are
excluded. The presets spell that rule in each family's parameter names (any prefix allowed, e.g.
a Lightning ``model.`` or ``state_dict`` nesting; the block index is the ``block`` group):

| preset | matches (i = block) |
|---|---|
| ``gpt_neox`` (Pythia) | ``…layers.i.attention.{query_key_value,dense}.weight``, ``…layers.i.mlp.{dense_h_to_4h,dense_4h_to_h}.weight`` |
| ``llama`` (OLMo-hf, TinyLlama, Amber) | ``…layers.i.self_attn.{q,k,v,o}_proj.weight``, ``…layers.i.mlp.{gate,up,down}_proj.weight`` |
| ``gpt2`` | ``…h.i.attn.{c_attn,c_proj}.weight``, ``…h.i.mlp.{c_fc,c_proj}.weight`` |
| ``ours`` (backbone_lab's GPT) | ``…blocks.i.attn.{qkv,out_proj}.weight``, ``…blocks.i.mlp.{w_gate,w_up,w_down}.weight`` |

User rules: ``trunk=<rule>[,<rule>…]`` where a rule is a glob over the dotted name (``*`` matches
anything, dots included: ``blocks.*.attn.*``) or ``re:<regex>`` matched in full (a named group
``block`` gives the block index). Without a ``block`` group the block is the first integer
component of the name (``layout.default_roles``' rule). Pure Python: no torch.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

_P = r"(?:.*\.)?"
PRESETS: dict[str, str] = {
    "gpt_neox": _P + r"layers\.(?P<block>\d+)\.(?:attention\.(?:query_key_value|dense)|mlp\.(?:dense_h_to_4h|dense_4h_to_h))\.weight",
    "llama": _P + r"layers\.(?P<block>\d+)\.(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)\.weight",
    "gpt2": _P + r"h\.(?P<block>\d+)\.(?:attn\.(?:c_attn|c_proj)|mlp\.(?:c_fc|c_proj))\.weight",
    "ours": _P + r"blocks\.(?P<block>\d+)\.(?:attn\.(?:qkv|out_proj)|mlp\.(?:w_gate|w_up|w_down))\.weight",
}
_FIRST_INT = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


@dataclass(frozen=True)
class TrunkRule:
    """A compiled trunk declaration: ``label`` (the preset or the rule text) and its regexes."""

    label: str
    patterns: tuple[re.Pattern, ...]

    def match(self, name: str) -> tuple[bool, int | None]:
        """(in the trunk, block index or None) of one tensor name."""
        for p in self.patterns:
            m = p.fullmatch(name)
            if m:
                if "block" in p.groupindex and m.group("block") is not None:
                    return True, int(m.group("block"))
                b = _FIRST_INT.search(name)
                return True, int(b.group(1)) if b else None
        return False, None

    def select(self, names: Sequence[str]) -> list[tuple[str, int | None]]:
        """The trunk names among ``names`` with their blocks, in (block, name) order."""
        hits = [(n, b) for n, (ok, b) in ((n, self.match(n)) for n in names) if ok]
        return sorted(hits, key=lambda nb: (-1 if nb[1] is None else nb[1], nb[0]))


def parse_trunk_rule(spec: str) -> TrunkRule:
    """A preset name, or comma-separated globs / ``re:`` regexes (module doc)."""
    spec = str(spec).strip()
    if spec in PRESETS:
        return TrunkRule(spec, (re.compile(PRESETS[spec]),))
    if not spec:
        raise ValueError(f"trunk= is empty; give a preset ({', '.join(PRESETS)}) or a glob such as 'blocks.*.attn.*'")
    pats = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            pats.append(re.compile(part[3:] if part.startswith("re:") else fnmatch.translate(part)))
        except re.error as e:
            raise ValueError(f"trunk rule {part!r} is not a valid regex ({e})") from None
    return TrunkRule(spec, tuple(pats))
