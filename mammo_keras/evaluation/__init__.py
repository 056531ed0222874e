"""mammo_keras.evaluation (see DESIGN.md)."""
