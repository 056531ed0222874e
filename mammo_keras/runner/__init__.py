"""The experiment runner: `reproduce(config)` runs every (dataset, row) of a config.

    inputs.py   datasets -> prepared, resized, scaled arrays (DatasetInputs)
    rows.py     one row's options, results references, stages and TrainSpec
    kinds.py    the experiment kinds (cv, holdout, transfer, ensemble, detection, baseline): each
                runs one row and returns its predictions table
    paper.py    the paper's numbers (paper_tables.yaml) and declared deviations
    report.py   metrics with CIs per row (ResultRow), tables, plots, run.json
    loop.py     the loop over rows
"""
