"""An offline diagnostic (`analysis.diagnostics=[slow_analysis_hook:slow_the_first_time]`) that
keeps the end-of-run analysis busy the first time it runs in a run folder (gives a test time to
signal the analysis), and returns at once afterwards."""

import time
from pathlib import Path


def slow_the_first_time(ctx) -> dict:
    flag = Path(ctx.run.root) / "hook_started"
    if flag.exists():
        return {"slept": False}
    flag.write_text("analysis under way\n")
    time.sleep(300)  # a signal handler that raises ends this sleep at once
    return {"slept": True}
