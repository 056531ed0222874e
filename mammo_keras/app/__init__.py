"""The screening framework: classify a new mammogram from the command line or a local web page.

    recipe.py    how a saved model wants its input (recorded in the model folder's manifest)
    predict.py   pure functions: load a model folder, read an image, cut the ROI as training did,
                 class probabilities, Grad-CAM overlay PNG, result rows
    server.py    `mammo-keras serve`: a small Flask app on 127.0.0.1

Reference: Chougrad et al. 2018, Sec. 3.4 (the GUI on Inceptionv3-MD for new images).
"""
