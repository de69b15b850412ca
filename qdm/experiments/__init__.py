"""The experiment engine behind ``reproduce`` (qdm.reproduce), ``ablate`` (qdm.ablations) and
``curve`` (qdm.curves):

    protocol.py  how a model is measured (N, sampler, steps, seed, precision) and results names
    scoring.py   sampling a checkpoint and scoring it (FID, KID, SSIM), the reference rows
    cells.py     one cell: train (or resume, or reuse) a model, then score it
    ledger.py    the committed ledger of finished cells (results/<name>_cells.csv)
    stats.py     means over seeds, differences and their standard errors
    grid.py      one grid runner: here, in worker processes, through submitit, or as commands
"""
