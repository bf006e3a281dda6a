"""msir-keras: MSIR speech emotion detection (Wu et al., IEICE 2024) in Keras."""

__version__ = "0.1.0"
