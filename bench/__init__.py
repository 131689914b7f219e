"""covbench: an honest benchmark for COVID-19 lung-lesion segmentation on chest CT."""

__version__ = "0.1.0"
