"""wtal: raw videos to weakly-supervised temporal action detections."""

__version__ = "0.1.0"
