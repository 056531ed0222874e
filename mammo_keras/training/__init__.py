"""mammo_keras.training (see DESIGN.md)."""
