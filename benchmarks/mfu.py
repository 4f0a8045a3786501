"""The benchmarks' name for `backbone_lab.mfu` (the progress bar shows the same MFU during training)."""

from backbone_lab.mfu import PEAK_BF16_TFLOPS, flops_per_token, mfu, peak_tflops  # noqa: F401
