"""mammo_keras: Keras/TensorFlow replications of deep-learning mammography papers."""
__version__ = "0.1.0"

__all__ = ["__version__"]
