"""reliable_lalm: reproduction toolkit for 'Towards Reliable Large Audio Language Model'."""
__version__ = "0.1.0"
