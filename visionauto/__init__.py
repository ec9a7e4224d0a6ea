"""visionauto: self-hosted AutoML for computer vision (the open counterpart of Azure AutoML for Images)."""

__version__ = "0.1.0"
