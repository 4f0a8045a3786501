"""backbone_lab: optimizer-induced low-dimensional drift ("backbone") in transformer training.

Train GPT-style decoders with a composite LM + codeword-probe loss (Hydra + Lightning),
dump trunk parameters along the way, and analyse the geometry of the trajectory with pure
numpy/torch functions that run on any saved trajectory.
"""

__version__ = "0.1.0"
