"""One declaration per number: the built-in stages' `numbers` are the only place a number is named;
the docs table, the claim metrics and the Summary accessors follow from them."""
from __future__ import annotations

from pathlib import Path

from backbone_lab.analysis.registry import builtin_numbers, numbers_markdown
from backbone_lab.analysis.stage import Number, numbers_table
from backbone_lab.analysis.summary import Summary

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ANALYSIS.md"


def test_the_docs_table_is_the_declarations():
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("<!-- numbers:begin -->\n", 1)[1].split("<!-- numbers:end -->", 1)[0]
    assert block == numbers_markdown(builtin_numbers()), (
        "docs/ANALYSIS.md's declared-numbers table is stale; regenerate it with numbers_markdown(builtin_numbers())")


def test_one_name_per_number():
    table = builtin_numbers()
    names = set(table)
    aliases = [a for row in table.values() for a in row["aliases"]]
    assert len(aliases) == len(set(aliases)) and not names & set(aliases)
    # no name shadows something Summary has already (a method, a property, a Mapping method)
    assert not (names | set(aliases)) & set(dir(Summary))
    # every built-in stage block holds its own numbers
    assert all(p.startswith(row["stage"] + ".") for row in table.values() for p in row["paths"])


def test_two_stages_cannot_declare_one_name():
    class A:
        name = "a"
        numbers = (Number("x", "v", "u", "about"),)

    class B:
        name = "b"
        numbers = (Number("x", "w", "u", "about"),)

    try:
        numbers_table([A, B])
    except ValueError as err:
        assert "'x' declared twice" in str(err)
    else:
        raise AssertionError("a duplicate number name was accepted")


def test_the_declared_numbers_are_claim_metrics_with_their_unit():
    from backbone_lab.compare.claim_metrics import METRICS

    for name, row in builtin_numbers().items():
        assert METRICS[name].unit == row["unit"] and METRICS[name].about == row["about"]


def test_a_summary_reads_alternative_and_older_paths():
    """update_abs_cos: fixed-lag updates when the run has them, else consecutive snapshots."""
    fixed = Summary({"update_alignment": {"fixed_lag": {"mean_abs_cos": 0.3, "lag": 200}, "consecutive": {"mean_abs_cos": 0.1}}})
    consecutive = Summary({"update_alignment": {"consecutive": {"mean_abs_cos": 0.1}}})
    assert fixed.update_abs_cos == 0.3 and fixed.update_lag == 200 and isinstance(fixed.update_lag, int)
    assert consecutive.update_abs_cos == 0.1 and consecutive.update_mean_abs_cos == 0.1 and consecutive.update_lag is None
    # a file's own numbers table (a user stage) is answered by name
    user = Summary({"mine": {"v": 2}, "numbers": {"my_number": Number("my_number", "v", "u", "about").entry("mine")}})
    assert user.my_number == 2.0 and user.numbers()["my_number"] == 2.0 and Summary().value("pc1_raw_pct") is None
