"""Whole-image mass detection (Hamed et al. 2020, Table 3): items with boxes, training and scoring."""
