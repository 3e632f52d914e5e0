"""avafn: audio-visual attentive fusion network for emotion recognition in conversation."""

__version__ = "0.1.0"
