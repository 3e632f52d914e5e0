"""The AVAFN network: CAM fusion (fusion.py), dialogue recurrence (dialogue.py), whole model."""

from .avafn import AVAFN, AVAFNConfig

__all__ = ["AVAFN", "AVAFNConfig"]
